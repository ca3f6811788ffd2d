"""Getting a working PostgreSQL connection within a time budget, or failing fast.

A request that needs the database gets a connection from the pool. Two things can go wrong, and both are
bounded by one budget, ``connect_timeout`` (the ``DB_CONNECT_TIMEOUT`` setting):

* A pooled connection may be dead: Neon drops idle connections and restarts computes, and a network path
  can hang. Before a pooled connection is handed out it is pinged (one round trip, ``SELECT 1`` in the
  simple protocol, so it also works behind PgBouncer); a ping that fails or takes longer than a third of
  the budget means the connection is aborted at once and a new one is opened in what is left of the budget.
  SQLAlchemy's own ``pool_pre_ping`` is not used: it has no time bound (a hung connection would hang the
  request) and takes three round trips (BEGIN, ``;``, ROLLBACK).
* Opening a connection may fail for a moment: a database that scales to zero refuses or answers "starting
  up" while it wakes. :class:`RetryingConnect` retries refused, reset and "cannot connect now" attempts with
  a short backoff until the budget is spent, so the first request after a cold start succeeds, and a
  database that stays away costs a request no more than the budget.

Connections older than ``recycle`` seconds are replaced at checkout in the same way (closed politely, but
never waiting on a dead peer for longer than the budget allows).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

logger = logging.getLogger("db.connections")

_FRESH = "db.connections.fresh"
_OPENED_AT = "db.connections.opened_at"
_FIRST_RETRY_DELAY = 0.05
_MAX_RETRY_DELAY = 0.4
_MIN_ATTEMPT_SECONDS = 0.05  # no point starting an attempt with less time than this
# Set by the checkout check when it throws a pooled connection away, read by the connect that replaces it:
# the ping and the new connection share one budget. The pool does both in the same task, so a context
# variable carries the deadline from one to the other.
_checkout_deadline: ContextVar[float | None] = ContextVar("db_checkout_deadline", default=None)

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

    A ``timeout`` argument (``connect_timeout`` in ``DATABASE_URL``) replaces the budget: the URL's
    explicit value wins over ``DB_CONNECT_TIMEOUT``.
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Connect, retrying with backoff while the budget lasts; raise the last error when it is spent."""
        budget = float(kwargs.pop("timeout", None) or self.budget)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        shared = _checkout_deadline.get()
        if shared is not None:
            _checkout_deadline.set(None)
            deadline = min(deadline, max(shared, loop.time() + _MIN_ATTEMPT_SECONDS))
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


def guard_checkouts(engine: AsyncEngine, *, budget: float, recycle: int) -> None:
    """Ping pooled connections (bounded by ``budget``) and recycle old ones on checkout.

    ``recycle`` is in seconds; 0 keeps connections for as long as they work.
    """
    ping_timeout = budget / 3

    @event.listens_for(engine.sync_engine.pool, "connect")
    def mark_fresh(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info[_FRESH] = True
        record.info[_OPENED_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def check(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _: PoolProxiedConnection) -> None:
        if record.info.pop(_FRESH, False):  # just opened (perhaps replacing a dead one): no need to ping
            _checkout_deadline.set(None)
            return
        driver = record.driver_connection
        if driver is None:  # pragma: no cover - the pool hands out records with a connection
            return
        deadline = asyncio.get_running_loop().time() + budget
        if recycle and time.monotonic() - record.info.get(_OPENED_AT, 0.0) > recycle:
            reason = "recycled"
            await_only(_close_politely(driver, ping_timeout))
        else:
            try:
                await_only(_ping(driver, ping_timeout))
            except Exception as exc:
                driver.terminate()  # never wait on a dead peer to say goodbye
                reason = f"failed its ping ({type(exc).__name__})"
            else:
                return
        _checkout_deadline.set(deadline)
        # The pool invalidates this connection and opens a new one (in what is left of the budget).
        raise DisconnectionError(f"pooled connection {reason}")


async def _ping(driver: Any, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        await driver.execute("SELECT 1")


async def _close_politely(driver: Any, seconds: float) -> None:
    try:
        await driver.close(timeout=seconds)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        driver.terminate()
