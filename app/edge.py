"""The edge: the one place every HTTP response passes on its way out, and what it adds there.

:class:`EdgeApp` is the Litestar application with one wrapper around each HTTP request (not one per feature):

* **Security headers** for a JSON API (never sniff, frame, cache or run a response as a page), or the
  relaxed set for the docs page, on every response, errors from the router and the guard included. The
  header lines are encoded once, at import.
* **Rate-limit headers**: the ``RateLimit-*`` fields of the budget the request was charged to
  (``app/ratelimit/plugin.py``), whatever the answer is.
* **``Allow`` on ``OPTIONS``** lists every method of the path. Litestar 2 builds the automatic ``OPTIONS``
  handler when a path's first handler is registered and keeps it as more join, so ``OPTIONS
  /api/{user_id}/tasks`` said ``Allow: OPTIONS, POST`` without ``GET`` (litestar-org/litestar#4169, fixed only
  in Litestar 3); the header is rewritten from the routes the app really has.
* **Cut off by shutdown**: a request still running when the shutdown grace period ends is cancelled by
  uvicorn, which would answer a plain-text 500 and log an error trace; it gets a 503 problem instead (the
  request did not finish: retry it).
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from litestar import Litestar
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.routes import HTTPRoute
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, HTTPScope, Message, Receive, Scope, Send

from app.errors import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_PREFIX, ProblemDetail
from app.ratelimit.plugin import response_headers as rate_limit_headers

logger = logging.getLogger("app.serving")

SHUTDOWN_RETRY_AFTER_SECONDS = 5
# What a browser should do with an API response: never sniff, frame, cache, or run it as a page.
API_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
# The docs page runs Swagger UI, served by the app itself (app/openapi.py): its policy lets it load scripts,
# styles and the OpenAPI document from this origin only (images also from data: URLs, which Swagger UI's
# stylesheet uses for its icons), and nothing else.
DOCS_HEADERS = {
    **{key: API_HEADERS[key] for key in ("x-content-type-options", "x-frame-options", "referrer-policy")},
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
}
DOCS_PATHS = ("/docs",)
_API_LINES = [(name.encode(), value.encode()) for name, value in API_HEADERS.items()]
_DOCS_LINES = [(name.encode(), value.encode()) for name, value in DOCS_HEADERS.items()]

_STOPPED = msgspec.json.encode(
    ProblemDetail(
        type=PROBLEM_TYPE_PREFIX + "service-unavailable",
        title="Service Unavailable",
        status=503,
        detail="The server is shutting down and stopped this request before it finished; retry it.",
    )
)


def _finish_start(message: HTTPResponseStartEvent, scope: HTTPScope) -> None:
    """Add the edge's headers to a ``http.response.start`` message."""
    headers = list(message.get("headers") or ())
    headers += _DOCS_LINES if scope["path"].startswith(DOCS_PATHS) else _API_LINES
    headers += rate_limit_headers(scope)
    message["headers"] = headers
    if scope["method"] == "OPTIONS":
        list_every_allowed_method(message, scope)


def list_every_allowed_method(message: HTTPResponseStartEvent, scope: HTTPScope) -> None:
    """On an ``OPTIONS`` answer that carries ``Allow``, list every method of the route."""
    headers = MutableScopeHeaders.from_message(message)
    template = scope.get("path_template")
    if "allow" not in headers or template is None:
        return
    for route in scope["app"].routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            headers["allow"] = ", ".join(sorted(route.methods))
            return


class EdgeApp(Litestar):
    """Litestar, with the edge around every HTTP request (see the module docstring)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        """Serve one request (or lifespan event) through Litestar, finishing each response on its way out."""
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        http_scope = scope
        started = False

        async def edge_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                _finish_start(message, http_scope)
            await send(message)

        try:
            await super().__call__(scope, receive, edge_send)
        except asyncio.CancelledError:
            if started:
                raise
            logger.warning("%s %s stopped by the end of the shutdown grace period", http_scope["method"], scope["path"])
            await _answer_stopped(edge_send)
            # Not re-raised: uvicorn cancelled the request only to end it, and it has ended with an answer.


async def _answer_stopped(send: Send) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(_STOPPED)).encode()),
            (b"retry-after", str(SHUTDOWN_RETRY_AFTER_SECONDS).encode()),
            (b"connection", b"close"),
        ],
    }
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": _STOPPED, "more_body": False}
    await send(start)
    await send(body)
