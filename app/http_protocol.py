"""The HTTP/1.1 connection, bounded: uvicorn's httptools protocol with the limits a server facing the
internet needs, each a setting (``ConnectionLimits`` in ``config/settings.py``).

uvicorn's httptools protocol (``uvicorn/protocols/http/httptools_impl.py``) has no bound on the request
head: httptools accumulates a header line until it ends, concatenating as it goes, so one client streaming a
100 MB header stalls the event loop and grows the process by as much. It also holds a connection that never
sends a byte, or sends one a second, for as long as the client likes. uvicorn's h11 protocol bounds the head
(``h11_max_incomplete_event_size``) but is pure Python and costs every request; this subclass keeps httptools
and adds, per connection:

* **Request head size**: at most ``MAX_REQUEST_HEAD_BYTES`` (request line and headers). The bytes are counted
  before httptools sees them, and a head that has not ended within the limit is answered ``431`` and the
  connection closed: the cost of a hostile head is bounded by the limit.
* **Request head time**: the whole head must arrive within ``REQUEST_HEAD_TIMEOUT`` seconds of the
  connection opening or of the previous response. A connection that sent nothing is closed; one that sent
  part of a head (slowloris) is answered ``408`` and closed.
* **Request body rate**: a body must arrive at ``REQUEST_BODY_MIN_RATE`` bytes a second on average, counted
  from the end of the head after a grace of ``REQUEST_HEAD_TIMEOUT`` seconds; slower is ``408`` and closed.
* **Connections per worker**: beyond ``MAX_CONNECTIONS`` a new connection is answered ``503`` and closed at
  once, before the process can run out of file descriptors (``app/serving.py`` raises the soft limit to
  the hard one at start).
* **Draining** on shutdown: every answer from then on carries ``Connection: close``, and a keep-alive
  connection with no request in flight is closed only once it has been idle for ``SHUTDOWN_DRAIN_SECONDS``,
  so a client moves to another instance between requests rather than having one cut off.
* **Problem details** for what the server answers itself: malformed HTTP is a ``400`` problem, not uvicorn's
  plain text.

A connection the server refuses gets its answer, then a lingering close: the server stops sending (FIN)
and throws away what the client still sends for up to :data:`LINGER_SECONDS`, so the client can read the
answer rather than meet a reset, which closing a socket with unread data would cause.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.errors import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_PREFIX, ProblemDetail
from config.logging import new_request_id
from config.settings import ConnectionLimits, get_settings

logger = logging.getLogger("app.http")

_SECURITY_HEADERS = (
    b"x-content-type-options: nosniff\r\n"
    b"x-frame-options: DENY\r\n"
    b"referrer-policy: no-referrer\r\n"
    b"cache-control: no-store\r\n"
    b"content-security-policy: default-src 'none'; frame-ancestors 'none'\r\n"
)
_SLUGS = {400: "invalid-request", 408: "request-timeout", 431: "headers-too-large", 503: "service-unavailable"}
LINGER_SECONDS = 2.0


def problem_response(status: int, detail: str, *, retry_after: int | None = None) -> bytes:
    """A complete ``HTTP/1.1`` problem+json response that closes the connection, as raw bytes.

    The request never reached the application, so it gets a new request id (body and ``X-Request-ID``)."""
    request_id = new_request_id()
    body = msgspec.json.encode(
        ProblemDetail(
            type=PROBLEM_TYPE_PREFIX + _SLUGS.get(status, "error"),
            title=HTTPStatus(status).phrase,
            status=status,
            detail=detail,
            request_id=request_id,
        )
    )
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(body)}\r\n"
        + (f"retry-after: {retry_after}\r\n" if retry_after is not None else "")
        + f"x-request-id: {request_id}\r\n"
        + "connection: close\r\n"
    )
    return head.encode() + _SECURITY_HEADERS + b"\r\n" + body


def _limits() -> ConnectionLimits:
    return get_settings().connection_limits


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads, timed heads and bodies, a connection cap and draining."""

    limits: ConnectionLimits | None = None  # tests may set it; else the settings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = self.limits or _limits()
        self._in_head = True  # reading a request head (from the connection's start, or after a message)
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_started = 0.0
        self._body_bytes = 0
        self._draining = False
        self._drain_timer: asyncio.TimerHandle | None = None
        self._lingering = False

    # -- connections ----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; beyond the cap, answer 503 and close at once."""
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            logger.warning(
                "connection refused: the limit of %d open connections is reached", self._limits.max_connections
            )
            self._answer_and_close(503, "The server has too many open connections; retry shortly.", retry_after=1)
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop every timer of the connection."""
        for timer in (self._head_timer, self._body_timer, self._drain_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count head bytes before httptools sees them; a head longer than the limit is a 431."""
        if self._lingering:
            return  # refused: what the client still sends is dropped unread
        if not self._in_head:
            super().data_received(data)
            return
        room = self._limits.max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        self._head_bytes += room
        super().data_received(data[:room])  # the head may end within what is left of the limit
        if self.transport.is_closing() or self._lingering:
            return
        if self._in_head:
            self._answer_and_close(
                431, f"The request line and headers are longer than {self._limits.max_head_bytes} bytes."
            )
            return
        self.data_received(data[room:])

    # -- request heads ----------------------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        """The head is complete: stop its timer; time the body, if there is one."""
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with Connection: close, then closed
        if self._expects_body():
            self._body_started = self.loop.time()
            self._body_bytes = 0
            self._body_timer = self.loop.call_later(1.0, self._check_body_rate)

    def on_body(self, body: bytes) -> None:
        """Count body bytes for the rate check."""
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The request is complete: a next head may start."""
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """The response is sent: the next head has ``REQUEST_HEAD_TIMEOUT`` seconds (or, draining, close when idle)."""
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._draining:
            self._arm_drain_timer()
        elif not self.pipeline:
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a request is still being answered; its successor's time starts after it
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing sent: an idle connection, closed quietly
            return
        logger.info("request head not complete within %g s; connection closed", self._limits.head_timeout)
        self._answer_and_close(408, f"The request head did not arrive within {self._limits.head_timeout:g} s.")

    # -- request bodies ---------------------------------------------------------------------------------------

    def _expects_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in {b"0", b""}
            if name == b"transfer-encoding":
                return True
        return False

    def _check_body_rate(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        elapsed = self.loop.time() - self._body_started
        owed = self._limits.body_min_rate * (elapsed - self._limits.head_timeout)
        if self._limits.body_min_rate and self._body_bytes < owed:
            logger.info("request body too slow (%d bytes in %.1f s); connection closed", self._body_bytes, elapsed)
            if cycle.response_started:
                self.transport.close()
            else:
                self._answer_and_close(
                    408, f"The request body arrived slower than {self._limits.body_min_rate} bytes a second."
                )
            cycle.disconnected = True
            cycle.message_event.set()  # the application's receive() now says "disconnected"
            return
        self._body_timer = self.loop.call_later(1.0, self._check_body_rate)

    # -- shutdown --------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Called by the server when it stops: finish what is in flight with Connection: close; close idle
        keep-alive connections once they have been idle for the drain window."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            self._arm_drain_timer()
        else:
            self.cycle.keep_alive = False

    def _arm_drain_timer(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self._drain_timer = self.loop.call_later(self._limits.drain_seconds, self._drain_if_idle)

    def _drain_if_idle(self) -> None:
        self._drain_timer = None
        if self.transport.is_closing():
            return
        if (self.cycle is None or self.cycle.response_complete) and self._head_bytes == 0:
            self.transport.close()
        # else: a request is arriving or in flight; its response carries Connection: close and ends it

    # -- answers of the server's own ------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP: a 400 problem instead of uvicorn's plain text."""
        del msg  # uvicorn's "Invalid HTTP request received."
        self._answer_and_close(400, "The request is not valid HTTP/1.1.")

    def _answer_and_close(self, status: int, detail: str, *, retry_after: int | None = None) -> None:
        cycle = self.cycle
        if not (cycle is None or cycle.response_complete or not cycle.response_started):
            self.transport.close()  # a response is under way: never write into it
            return
        self.transport.write(problem_response(status, detail, retry_after=retry_after))
        if cycle is not None:
            cycle.disconnected = True  # the application's own answer, if it comes, goes nowhere
        for timer in (self._head_timer, self._body_timer, self._drain_timer):
            if timer is not None:
                timer.cancel()
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()  # read (and drop) what the client still sends, so it sees no reset
        self.loop.call_later(LINGER_SECONDS, self.transport.abort)

    def eof_received(self) -> None:
        """The client finished sending: a lingering close can end now."""
        if self._lingering:
            self.transport.close()
