"""The shared store: budgets in Redis, counted atomically by one Lua script per request.

Imported only when ``REDIS_URL`` is set, so a process without Redis never loads the client.

Failure policy: when Redis cannot be reached the limiter *fails open*: requests are served without a
limit and a warning is logged (once per outage), and Redis is not asked again for
:data:`REDIS_RETRY_SECONDS`, so an outage costs one bounded timeout, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.ratelimit.limiter import MICROSECONDS, Clock, Decision, decide, emission_interval
from config.settings import Rate

logger = logging.getLogger("app.ratelimit")

REDIS_TIMEOUT_SECONDS = 0.5  # connect and per-command; a rate-limit check must never hold a request long
REDIS_RETRY_SECONDS = 5.0  # after a failure, requests are let through without asking Redis for this long

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
                allowed, ahead = await self._script(
                    keys=[self._prefix + key], args=[emission_interval(rate), rate.limit, now]
                )
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
