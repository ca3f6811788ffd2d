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
* **Request id**: an ``X-Request-ID`` the client sent (a sane token: 1 to 128 of ``A-Z a-z 0-9 . _ : -``) or
  a new one is the request's id: set in :data:`config.logging.REQUEST_ID` for every log line of the request,
  put in every problem body (``app.errors.problem``) and echoed in the response's ``X-Request-ID``.
* **Access line**: one ``app.access`` record per request (method, route template, status, duration, the
  token's user as a keyed hash), written after the response; never the raw path or the query string.
* **Metrics** (``METRICS_ENABLED``): the request counted and timed by method, route template and status.
* **Cut off by shutdown**: a request still running when the shutdown grace period ends is cancelled by
  uvicorn, which would answer a plain-text 500 and log an error trace; it gets a 503 problem instead (the
  request did not finish: retry it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.routes import HTTPRoute
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, HTTPScope, Message, Receive, Scope, Send

from app.errors import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_PREFIX, ProblemDetail
from app.ratelimit.plugin import response_headers as rate_limit_headers
from config.logging import ACCESS_LOGGER, REQUEST_ID, new_request_id

logger = logging.getLogger("app.serving")
access_logger = logging.getLogger(ACCESS_LOGGER)

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

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
USER_HASH_CONTEXT = b"todo-backend access log user"


def request_id_of(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new id."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.fullmatch(value):
                return value.decode()
            break
    return new_request_id()


def user_hasher(secret: str) -> Callable[[str], str]:
    """The access log's name for a token user: an HMAC of the user id under a key derived from ``secret``, so a
    log reader can follow one user without learning who it is (nor guess it from a list of user ids)."""
    key = hmac.new(secret.encode(), USER_HASH_CONTEXT, hashlib.sha256).digest()
    cache: dict[str, str] = {}

    def user_hash(user: str) -> str:
        hashed = cache.get(user)
        if hashed is None:
            if len(cache) > 10_000:
                cache.clear()
            hashed = cache[user] = hmac.new(key, user.encode(), hashlib.sha256).hexdigest()[:16]
        return hashed

    return user_hash


def _stopped_body(request_id: str | None) -> bytes:
    return msgspec.json.encode(
        ProblemDetail(
            type=PROBLEM_TYPE_PREFIX + "service-unavailable",
            title="Service Unavailable",
            status=503,
            detail="The server is shutting down and stopped this request before it finished; retry it.",
            request_id=request_id,
        )
    )


def _finish_start(message: HTTPResponseStartEvent, scope: HTTPScope, request_id: str) -> None:
    """Add the edge's headers to a ``http.response.start`` message."""
    headers = list(message.get("headers") or ())
    headers.append((REQUEST_ID_HEADER, request_id.encode()))
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

    user_hash: Callable[[str], str] = staticmethod(user_hasher(""))  # build_app sets the server's own
    observe: Callable[[str, str, int, float], None] | None = None  # metrics: method, route, status, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        """Serve one request (or lifespan event) through Litestar, finishing each response on its way out."""
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        http_scope = scope
        request_id = request_id_of(scope)
        token = REQUEST_ID.set(request_id)
        began = time.perf_counter()
        status = 0

        async def edge_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                _finish_start(message, http_scope, request_id)
            await send(message)

        try:
            await super().__call__(scope, receive, edge_send)
        except asyncio.CancelledError:
            if status:
                raise
            logger.warning("%s %s stopped by the end of the shutdown grace period", http_scope["method"], scope["path"])
            await _answer_stopped(edge_send, request_id)
            # Not re-raised: uvicorn cancelled the request only to end it, and it has ended with an answer.
        finally:
            self._record(http_scope, status, time.perf_counter() - began)
            REQUEST_ID.reset(token)

    def _record(self, scope: HTTPScope, status: int, seconds: float) -> None:
        """The access line and the metrics of one finished request (status 0: no response was sent)."""
        route = scope.get("path_template") or None  # never the raw path: it holds user ids
        if self.observe is not None:
            self.observe(scope["method"], route or "(unmatched)", status, seconds)
        if not access_logger.isEnabledFor(logging.INFO):
            return
        user = scope.get("user")
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "user": self.user_hash(user) if isinstance(user, str) else None,
        }
        access_logger.info(
            "%s %s %d %.2fms user=%s",
            fields["method"],
            route or "(unmatched)",
            status,
            fields["duration_ms"],
            fields["user"] or "-",
            extra={"http": fields},
        )


async def _answer_stopped(send: Send, request_id: str) -> None:
    body = _stopped_body(request_id)
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(SHUTDOWN_RETRY_AFTER_SECONDS).encode()),
            (b"connection", b"close"),
        ],
    }
    body_event: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(body_event)
