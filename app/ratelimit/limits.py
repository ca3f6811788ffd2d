"""The budgets: per token user once authenticated, per client address otherwise.

``app.access`` charges each request to one of them; this module says which budgets exist
(:func:`build_rate_limits`, from the ``RATE_LIMIT*`` and ``REDIS_URL`` settings) and how a client's address
becomes a budget key (:func:`client_key`).

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

from litestar.types import Scope

from app.ratelimit.limiter import Clock, Decision, MemoryRateLimiter, RateLimiter
from config.settings import Rate, Settings

IPV6_PREFIX = 64


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The budgets (``None``: not limited) and the limiter that counts them."""

    limiter: RateLimiter
    user: Rate | None
    anonymous: Rate | None

    async def charge_user(self, user: str) -> Decision | None:
        """Count a request against the token user's budget (``None``: not limited, or the store is down)."""
        return await self.limiter.hit(f"user:{user}", self.user) if self.user else None

    async def charge_address(self, scope: Scope) -> Decision | None:
        """Count a request without a valid token against the client address's budget."""
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
