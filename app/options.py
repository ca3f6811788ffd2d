"""``Allow`` on ``OPTIONS`` answers lists every method of the path.

Litestar 2 builds the automatic ``OPTIONS`` handler when a path's first handler is registered and keeps it as
more handlers join, so ``OPTIONS /api/{user_id}/tasks`` said ``Allow: OPTIONS, POST`` without ``GET``
(litestar-org/litestar#4169, fixed only in Litestar 3). :func:`list_every_allowed_method` rewrites the header from
the routes the app really has; ``app.edge`` calls it for every ``OPTIONS`` answer.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope


def list_every_allowed_method(message: Message, scope: Scope) -> None:
    """On an ``OPTIONS`` answer's ``http.response.start`` that carries ``Allow``, list all of the route's methods."""
    headers = MutableScopeHeaders.from_message(message)
    template = scope.get("path_template")
    if "allow" not in headers or template is None:
        return
    for route in scope["app"].routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            headers["allow"] = ", ".join(sorted(route.methods))
            return
