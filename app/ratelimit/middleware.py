"""Where requests are counted: per token user once authenticated, per client address otherwise.

A request passes three points, all reading the app's :class:`RateLimits` (``app.state.rate_limits``):

1. :class:`RateLimitMiddleware`, outermost on every route, around the bearer middleware. Its only job is
   the request the bearer middleware refuses: a 401 is charged to the client's address, and once that
   budget is spent the answer is a 429 instead. The token is verified once, by the bearer middleware.
2. :func:`enforce_rate_limit`, an app-wide guard, so it runs after authentication and before any other
   guard or the handler: it charges ``request.user`` when there is one, else the client's address
   (``/docs``, ``/schema``). Over budget is a 429 problem with ``Retry-After``.
3. :func:`add_rate_limit_headers`, a ``before_send`` hook: the ``RateLimit-*`` headers of whichever budget
   was charged go on every response, errors included.

Not counted: ``/health`` probes (opt ``rate_limit_exempt``), ``OPTIONS`` (CORS preflights carry no token
and do no work), and requests that match no route (the router answers 404 or 405 before any route runs).

The client address is ``scope["client"]``: behind a proxy, let uvicorn set it from ``X-Forwarded-For`` for
trusted proxies only (``--proxy-headers`` with ``FORWARDED_ALLOW_IPS``); a header a client can write is
never trusted here. IPv6 clients are counted per /64, the block one subscriber usually gets.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.ratelimit.limiter import Clock, Decision, MemoryRateLimiter, RateLimiter
from config.settings import Rate, Settings

RATE_LIMIT_EXEMPT = "rate_limit_exempt"
"""Route ``opt`` key: ``opt={RATE_LIMIT_EXEMPT: True}`` keeps a route out of every budget."""
_DECISION = "rate_limit_decision"  # key in scope["state"]: the Decision charged for this request
IPV6_PREFIX = 64


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The budgets (``None``: not limited) and the limiter that counts them."""

    limiter: RateLimiter
    user: Rate | None
    anonymous: Rate | None

    async def charge(self, scope: Scope) -> Decision | None:
        """Count this request against its user's budget, or its address's when there is no user."""
        user = scope.get("user")
        if user is not None:
            return await self.limiter.hit(f"user:{user}", self.user) if self.user else None
        return await self.limiter.hit(client_key(scope), self.anonymous) if self.anonymous else None

    async def close(self) -> None:
        """Release the limiter's connections (application shutdown)."""
        await self.limiter.close()


def build_rate_limits(settings: Settings, clock: Clock | None = None) -> RateLimits | None:
    """The limits ``settings`` ask for: in Redis when ``REDIS_URL`` is set, else in memory; ``None`` when off."""
    if settings.rate_limit is None and settings.rate_limit_anonymous is None:
        return None
    limiter: RateLimiter
    if settings.redis_url:
        from app.ratelimit.redis_limiter import RedisRateLimiter  # noqa: PLC0415 - loads the client only when used

        limiter = RedisRateLimiter(settings.redis_url, settings.redis_key_prefix, clock)
    else:
        limiter = MemoryRateLimiter(clock or time.monotonic)
    return RateLimits(limiter=limiter, user=settings.rate_limit, anonymous=settings.rate_limit_anonymous)


def client_key(scope: Scope) -> str:
    """The budget key of the client's address (IPv6 by its /64; IPv4-mapped IPv6 as IPv4)."""
    client = scope.get("client")
    host = client[0] if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # not an IP address: a Unix socket peer, a test client
        return f"addr:{host}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"addr:{address.ipv4_mapped}"
        return f"addr:{ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False)}"
    return f"addr:{address}"


def _is_counted(scope: Scope) -> bool:
    if scope["type"] != ScopeType.HTTP or scope.get("method") == "OPTIONS":
        return False
    handler = scope.get("route_handler")
    return not (handler is not None and handler.opt.get(RATE_LIMIT_EXEMPT))


async def _charge(scope: Scope) -> None:
    """Charge the request once; record the decision for the headers; a spent budget raises the 429."""
    limits: RateLimits | None = scope["litestar_app"].state.get("rate_limits")
    if limits is None or _DECISION in scope["state"] or not _is_counted(scope):
        return
    decision = await limits.charge(scope)
    if decision is None:  # this kind of request is not limited, or the store is down (fail open)
        return
    scope["state"][_DECISION] = decision
    if not decision.allowed:
        raise TooManyRequestsException(
            detail=f"Rate limit of {decision.rate} exceeded; retry after {decision.retry_after_seconds} s.",
            headers={**decision.headers(), "Retry-After": str(decision.retry_after_seconds)},
        )


async def enforce_rate_limit(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """App-wide guard (after authentication): charge the token's user, or the client's address."""
    await _charge(connection.scope)


class RateLimitMiddleware:
    """Outermost route middleware: a request the bearer middleware refuses is charged to its address."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the route; on a 401 from authentication, count it, and answer 429 once the address is over."""
        try:
            await self.app(scope, receive, send)
        except NotAuthorizedException:
            await _charge(scope)  # raises TooManyRequestsException, replacing the 401, when over budget
            raise


async def add_rate_limit_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the charged budget's ``RateLimit-*`` headers on the response, whatever it is."""
    if message["type"] != "http.response.start":
        return
    decision: Decision | None = scope.get("state", {}).get(_DECISION)
    if decision is None:
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in decision.headers().items():
        headers[name] = value
