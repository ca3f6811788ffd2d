"""Security headers for a JSON API, on every response (errors from middleware included)."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

# What a browser should do with an API response: never sniff, frame, cache, or run it as a page.
API_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
# The docs page loads Swagger UI's scripts and styles, so it only gets the headers that do not block them.
DOCS_HEADERS = {key: API_HEADERS[key] for key in ("x-content-type-options", "x-frame-options", "referrer-policy")}
DOCS_PATHS = ("/docs", "/schema")


async def add_security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: add the headers to the start of every HTTP response."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    wanted = DOCS_HEADERS if scope.get("path", "").startswith(DOCS_PATHS) else API_HEADERS
    for name, value in wanted.items():
        if name not in headers:
            headers[name] = value
