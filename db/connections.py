"""Opening a PostgreSQL connection within a time budget, or failing fast.

Opening a connection may fail for a moment: a database that scales to zero refuses or answers "starting
up" while it wakes. :class:`RetryingConnect` retries refused, reset and "cannot connect now" attempts with a
short backoff until the budget (``DB_CONNECT_TIMEOUT``) is spent, so the first request after a cold start
succeeds, and a database that stays away costs a request no more than the budget. The request path's pool
(``db.pool``) and SQLAlchemy's engine (tools) both open their connections through it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

logger = logging.getLogger("db.connections")

_FIRST_RETRY_DELAY = 0.05
_MAX_RETRY_DELAY = 0.4
_MIN_ATTEMPT_SECONDS = 0.05  # no point starting an attempt with less time than this

# Connect errors that mean "not now" rather than "never" (bad passwords and unknown databases are never).
_RETRYABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable (an attempt that timed out is not retried: the budget is spent)
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.exceptions.TooManyConnectionsError,  # 53300: a slot may free up in a moment
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.ConnectionDoesNotExistError,  # closed during the handshake
)


class RetryingConnect:
    """A drop-in for ``asyncpg.connect`` that retries transient failures within ``budget`` seconds.

    ``arguments`` are passed to every ``asyncpg.connect`` call (with the caller's own). A ``timeout``
    argument (``connect_timeout`` in ``DATABASE_URL``) replaces the budget: the URL's explicit value wins
    over ``DB_CONNECT_TIMEOUT``.
    """

    def __init__(self, budget: float, arguments: dict[str, Any] | None = None) -> None:
        self.budget = budget
        self.arguments = dict(arguments or {})

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Connect, retrying with backoff while the budget lasts; raise the last error when it is spent."""
        kwargs = {**self.arguments, **kwargs}
        budget = float(kwargs.pop("timeout", None) or self.budget)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        delay = _FIRST_RETRY_DELAY
        attempt = 1
        while True:
            try:
                connection = await asyncpg.connect(*args, timeout=deadline - loop.time(), **kwargs)
            except _RETRYABLE as exc:
                if isinstance(exc, TimeoutError) or deadline - loop.time() < delay + _MIN_ATTEMPT_SECONDS:
                    raise
                logger.debug("database connect attempt %d failed (%s); retrying", attempt, type(exc).__name__)
            else:
                if attempt > 1:
                    logger.info("database connection opened at attempt %d (the database was waking up)", attempt)
                return connection
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_DELAY)
            attempt += 1
