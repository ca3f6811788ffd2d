"""Rate limits in the application: one plugin, and the one call that charges a request.

:class:`RateLimitPlugin` builds the budgets the ``RATE_LIMIT*`` and ``REDIS_URL`` settings ask for (in Redis,
or in memory), keeps them in ``app.state.rate_limits`` and closes them at shutdown. ``app.access`` charges
each request with :meth:`RateLimits.charge_user` (a valid token's user) or :meth:`RateLimits.charge_address`
(no valid token): over the budget is a 429 problem with ``Retry-After``. ``app.edge`` puts the charged
budget's ``RateLimit-*`` headers on the response, whatever it is (:func:`response_headers`), and the task
routes document them (:data:`RATE_LIMIT_HEADERS`). The counting itself (GCRA) is ``limiter.py``, the shared
store ``redis_limiter.py``.

Not counted: ``/health`` probes, ``OPTIONS`` (CORS preflights carry no token and do no work), and requests
that match no route (the router answers 404 or 405 before any route runs).

The client address is ``scope["client"]``: behind a proxy, let uvicorn set it from ``X-Forwarded-For`` for
trusted proxies only (``--proxy-headers`` with ``FORWARDED_ALLOW_IPS``); a header a client can write is
never trusted here. IPv6 clients are counted per /64, the block one subscriber usually gets.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from litestar.config.app import AppConfig
from litestar.datastructures import ResponseHeader
from litestar.exceptions import TooManyRequestsException
from litestar.plugins import InitPluginProtocol
from litestar.types import Scope

from app.ratelimit.limiter import Clock, Decision, MemoryRateLimiter, RateLimiter
from config.settings import Rate, Settings

IPV6_PREFIX = 64
_DECISION = "rate_limit_decision"  # key in scope["state"]: the Decision charged for this request

RATE_LIMIT_HEADERS = [
    ResponseHeader(name=name, description=description, documentation_only=True)
    for name, description in (
        ("RateLimit-Limit", "Requests allowed per window (absent when rate limits are off)."),
        ("RateLimit-Remaining", "Requests left right now."),
        ("RateLimit-Reset", "Seconds until the whole budget is available again."),
        ("RateLimit-Policy", "The budget as `limit;w=window-seconds`."),
    )
]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The budgets (``None``: not limited) and the limiter that counts them."""

    limiter: RateLimiter
    user: Rate | None
    anonymous: Rate | None

    async def charge_user(self, scope: Scope, user: str) -> None:
        """Count this request against the token user's budget; over it, a 429."""
        if self.user is not None:
            _enforce(scope, await self.limiter.hit(f"user:{user}", self.user))

    async def charge_address(self, scope: Scope) -> None:
        """Count this request (it has no valid token) against the client address's budget; over it, a 429."""
        if self.anonymous is not None:
            _enforce(scope, await self.limiter.hit(client_key(scope), self.anonymous))

    async def close(self) -> None:
        """Release the limiter's connections (application shutdown)."""
        await self.limiter.close()


def _enforce(scope: Scope, decision: Decision | None) -> None:
    """Record the decision for the response's headers; a spent budget is a 429."""
    if decision is None:  # the shared store is down: fail open (redis_limiter.py)
        return
    scope["state"][_DECISION] = decision
    if not decision.allowed:
        raise TooManyRequestsException(
            detail=f"Rate limit of {decision.rate} exceeded; retry after {decision.retry_after_seconds} s.",
            headers={"Retry-After": str(decision.retry_after_seconds)},
        )


def response_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The ``RateLimit-*`` header lines of the budget this request was charged to (none when it was not)."""
    decision: Decision | None = scope["state"].get(_DECISION)
    if decision is None:
        return []
    return [(name.lower().encode(), value.encode()) for name, value in decision.headers().items()]


class RateLimitPlugin(InitPluginProtocol):
    """Registers the budgets as ``app.state.rate_limits`` (``None`` when both are off) and closes them at stop."""

    def __init__(self, settings: Settings) -> None:
        self.limits = build_rate_limits(settings)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the state and the shutdown hook."""
        app_config.state["rate_limits"] = self.limits
        app_config.on_shutdown.append(self.close)
        return app_config

    async def close(self) -> None:
        """Release the limiter's connections (application shutdown)."""
        if self.limits is not None:
            await self.limits.close()


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
