"""Counting requests against a budget: GCRA, and the in-memory store (one process).

GCRA (the generic cell rate algorithm) is a sliding window kept in one number per key: the *theoretical
arrival time* (TAT). A budget of ``limit`` requests per ``period`` lets a request through every
``period / limit`` (the emission interval) and allows a burst of up to ``limit`` at once; the budget
refills smoothly instead of all at once at a window boundary, so there is no double burst around a reset.

Times are whole microseconds so the arithmetic is exact, in Python and in Redis's Lua (whose numbers are
doubles: exact up to 2**53, far above any microsecond timestamp of this century).

The shared store, in Redis, is :mod:`app.ratelimit.redis_limiter` (imported only when ``REDIS_URL`` is set).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from config.settings import Rate

MICROSECONDS = 1_000_000
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


def emission_interval(rate: Rate) -> int:
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
    interval = emission_interval(rate)
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

    ``GCRA_SCRIPT`` in :mod:`app.ratelimit.redis_limiter` is the same step in Lua; keep the two in line.
    """
    interval = emission_interval(rate)
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
