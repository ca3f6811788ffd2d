"""Who may call a route: one check for every route, before any handler code runs.

For each request, in this order:

1. **Exempt** routes (``opt={EXEMPT: True}``: the health probes) and ``OPTIONS`` (CORS preflights, the
   ``Allow`` answer; they carry no token and read no data) pass untouched.
2. **Authentication**, on routes marked ``opt={BEARER: True}`` (the task API): the ``Authorization: Bearer``
   token is verified by the app's :class:`~app.auth.tokens.TokenVerifier` and ``request.user`` becomes its
   user id. A missing or bad token is a 401, charged to the client's address (below), so a client guessing
   tokens runs into a 429.
3. **Rate limit** (``app/ratelimit/plugin.py``): the request is charged to its token's user, or to the
   client's address on routes without a token (``/docs``, ``/schema``); over the budget is a 429 with
   ``Retry-After``. The budget's ``RateLimit-*`` headers go on the response whatever it is.
4. **Path owner**: a valid token may only use its own ``/api/{user_id}/…`` paths; anything else is a 403.

It is the app's ``before_request`` hook: Litestar calls it inside the route, right before it parses
parameters and resolves dependencies, so no extra layer wraps every request. (A route middleware would add
its own exception-handling layer, and Litestar copies the route handler for each guard on every request.)
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.types import Scope

from app.auth.tokens import InvalidTokenError, TokenVerifier, verify_bearer_token
from app.ratelimit.plugin import RateLimits

BEARER = "bearer_token"
"""Route ``opt`` key: ``opt={BEARER: True}`` requires a bearer token whose user owns the path."""
EXEMPT = "access_exempt"
"""Route ``opt`` key: ``opt={EXEMPT: True}`` skips authentication and rate limits (health probes)."""
REALM = 'Bearer realm="todo-backend"'


def authorization_header(scope: Scope) -> str | None:
    """The ``Authorization`` header as sent (the first one), read straight from the ASGI scope."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


async def control_access(request: Request[Any, Any, Any]) -> None:
    """App-wide ``before_request`` hook: authentication, rate limit and path owner (see the module docstring)."""
    scope = request.scope
    opt = scope["route_handler"].opt
    if opt.get(EXEMPT) or scope["method"] == "OPTIONS":
        return
    state = scope["app"].state
    limits: RateLimits | None = state.rate_limits
    if not opt.get(BEARER):
        if limits is not None:
            await limits.charge_address(scope)
        return
    verifier: TokenVerifier = state.token_verifier
    try:
        user = await verify_bearer_token(authorization_header(scope), verifier)
    except InvalidTokenError as exc:
        if limits is not None:
            await limits.charge_address(scope)  # a client guessing tokens runs into a 429
        challenge = REALM if exc.missing else f'{REALM}, error="invalid_token"'
        raise NotAuthorizedException(detail=str(exc), headers={"WWW-Authenticate": challenge}) from None
    scope["user"] = user
    if limits is not None:
        await limits.charge_user(scope, user)
    if scope["path_params"].get("user_id") != user:
        raise PermissionDeniedException(detail="The token's user is not the user in the path.")
