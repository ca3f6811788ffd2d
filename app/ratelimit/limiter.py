"""Counting requests against a budget: GCRA, in memory (one process) or in Redis (shared, atomic).

GCRA (the generic cell rate algorithm) is a sliding window kept in one number per key: the *theoretical
arrival time* (TAT). A budget of ``limit`` requests per ``period`` lets a request through every
``period / limit`` (the emission interval) and allows a burst of up to ``limit`` at once; the budget
refills smoothly instead of all at once at a window boundary, so there is no double burst around a reset.

Times are whole microseconds so the arithmetic is exact, in Python and in Redis's Lua (whose numbers are
doubles: exact up to 2**53, far above any microsecond timestamp of this century).

Failure policy: when Redis cannot be reached the limiter *fails open*: requests are served without a
limit and a warning is logged (once per outage), and Redis is not asked again for
:data:`REDIS_RETRY_SECONDS`, so an outage costs one bounded timeout, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from config.settings import Rate

logger = logging.getLogger("app.ratelimit")

MICROSECONDS = 1_000_000
REDIS_TIMEOUT_SECONDS = 0.5  # connect and per-command; a rate-limit check must never hold a request long
REDIS_RETRY_SECONDS = 5.0  # after a failure, requests are let through without asking Redis for this long
MEMORY_SWEEP_AT = 10_000  # the in-memory store drops expired keys whenever it grows past this (then 2x)

Clock = Callable[[], float]
"""Seconds on a clock that only moves forward, like :func:`time.monotonic` (tests inject their own)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request against one budget, and what to tell the client about it."""

    allowed: bool
    rate: Rate
    remaining: int
    reset_seconds: int  # until the whole budget is available again
    retry_after_seconds: int  # until the next request would be allowed (0 when this one was)

    def headers(self) -> dict[str, str]:
        """The IETF draft's ``RateLimit-*`` fields (draft-ietf-httpapi-ratelimit-headers-07)."""
        return {
            "RateLimit-Limit": str(self.rate.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": f"{self.rate.limit};w={self.rate.period_seconds}",
        }


class RateLimiter(Protocol):
    """Counts one request for ``key`` against ``rate``; ``None`` means "could not count: let it through"."""

    async def hit(self, key: str, rate: Rate) -> Decision | None:
        """Count a request and decide whether it may proceed."""
        ...

    async def close(self) -> None:
        """Release connections (at application shutdown)."""
        ...


def _interval(rate: Rate) -> int:
    """Microseconds between two requests at the steady rate (at least 1; settings cap ``limit``)."""
    return max(1, rate.period_seconds * MICROSECONDS // rate.limit)


def _ceil_seconds(microseconds: int) -> int:
    return -(-microseconds // MICROSECONDS)


def decide(rate: Rate, *, allowed: bool, ahead: int) -> Decision:
    """Turn a GCRA outcome into a :class:`Decision`.

    ``ahead`` is how far the key's TAT is ahead of now, in microseconds: after counting this request when it
    was allowed, as stored (unchanged) when it was refused. A full burst puts the TAT ``limit`` intervals
    ahead; each interval of idle time gives one request back.
    """
    interval = _interval(rate)
    capacity = interval * rate.limit
    if allowed:
        return Decision(
            allowed=True,
            rate=rate,
            remaining=max(0, (capacity - ahead) // interval),
            reset_seconds=_ceil_seconds(ahead),
            retry_after_seconds=0,
        )
    return Decision(
        allowed=False,
        rate=rate,
        remaining=0,
        reset_seconds=_ceil_seconds(ahead),
        retry_after_seconds=max(1, _ceil_seconds(ahead + interval - capacity)),
    )


def gcra(rate: Rate, tat: int | None, now: int) -> tuple[bool, int, int]:
    """One GCRA step: ``(allowed, new stored TAT, ahead)`` for a request at ``now`` (all in microseconds).

    :data:`GCRA_SCRIPT` is the same step in Lua; keep the two in line.
    """
    interval = _interval(rate)
    start = now if tat is None or tat < now else tat
    new_tat = start + interval
    if new_tat - now > interval * rate.limit:
        return False, start, start - now
    return True, new_tat, new_tat - now


class MemoryRateLimiter:
    """Budgets in this process's memory: exact for one worker; with N workers each keeps its own count.

    Safe without a lock: a hit never awaits between reading and writing its key.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:  # a wall-clock step back must not lock anyone out
        self._clock = clock
        self._tats: dict[str, int] = {}
        self._sweep_at = MEMORY_SWEEP_AT

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count a request for ``key``."""
        now = round(self._clock() * MICROSECONDS)
        allowed, tat, ahead = gcra(rate, self._tats.get(key), now)
        self._tats[key] = tat
        if len(self._tats) >= self._sweep_at:
            self._sweep(now)
        return decide(rate, allowed=allowed, ahead=ahead)

    def _sweep(self, now: int) -> None:
        """Forget keys whose budget is full again (their TAT has passed): they behave exactly like new keys."""
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        self._sweep_at = max(MEMORY_SWEEP_AT, 2 * len(self._tats))

    async def close(self) -> None:
        """Nothing to release."""


# KEYS[1]: the key. ARGV: emission interval (µs), limit, now (µs; empty: Redis's own clock, so every
# instance agrees on the time). Returns {allowed (1/0), ahead (µs)}. The same step as ``gcra`` above.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval
if new_tat - now > interval * limit then
  return {0, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, new_tat - now}
"""


def redis_location(url: str) -> str:
    """``scheme://host:port`` of a Redis URL, for log lines: never the password or user name."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"


async def ping_redis(url: str) -> None:
    """Raise unless the Redis at ``url`` answers within the limiter's timeouts (``manage.py check``)."""
    client = Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS)
    try:
        async with asyncio.timeout(2 * REDIS_TIMEOUT_SECONDS):
            await client.ping()
    finally:
        await client.aclose()


class RedisRateLimiter:
    """Budgets in Redis, shared by every worker and instance that uses the same Redis and key prefix.

    Each hit is one Lua script run: read, decide and write happen atomically inside Redis, so concurrent
    requests on any number of processes are counted exactly once each.
    """

    def __init__(self, url: str, prefix: str, clock: Clock | None = None) -> None:
        self._redis = Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 1),  # one immediate reconnect, for a pooled connection Redis dropped
        )
        self._script = self._redis.register_script(GCRA_SCRIPT)
        self._prefix = prefix + "ratelimit:"
        self._clock = clock
        self._location = redis_location(url)
        self._down_until = 0.0  # monotonic time until which Redis is not asked (after a failure)

    async def hit(self, key: str, rate: Rate) -> Decision | None:
        """Count a request for ``key``; ``None`` (let it through) while Redis is unreachable."""
        if self._down_until and time.monotonic() < self._down_until:
            return None
        now = "" if self._clock is None else str(round(self._clock() * MICROSECONDS))
        try:
            async with asyncio.timeout(2 * REDIS_TIMEOUT_SECONDS):  # the whole call, reconnect included
                allowed, ahead = await self._script(keys=[self._prefix + key], args=[_interval(rate), rate.limit, now])
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._down_until:
                logger.warning(
                    "rate limits are not enforced: Redis at %s is unreachable (%s); retrying every %.0f s",
                    self._location,
                    type(exc).__name__,
                    REDIS_RETRY_SECONDS,
                )
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            return None
        if self._down_until:
            logger.warning("rate limits are enforced again: Redis at %s answers", self._location)
            self._down_until = 0.0
        return decide(rate, allowed=bool(allowed), ahead=int(ahead))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
