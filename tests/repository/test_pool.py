"""The request path's PostgreSQL pool (``db/pool.py``) against a real PostgreSQL behind a TCP proxy.

Fairness and the wait bound, no churn under a steady load, idle connections beyond the minimum closed,
dead connections retried (reads) or reported (writes), cancelled statements never lending their connection
out again, and waiters failed at once when the database stops answering. Every wait is on a condition with a
bound; the only sleeps let a connection age past a threshold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.engine import make_url

from config.settings import DatabaseLimits
from db.database import PostgresDatabase, open_database
from db.pool import DatabaseUnavailableError, PoolExhaustedError, _LoopLagError, _unless_the_loop_lags
from db.query import Query
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

BACKEND_PID = Query(select(func.pg_backend_pid().label("pid")))
SLEEP = Query(select(func.pg_sleep(bindparam("seconds")).label("slept")))
INSERT = Query(text("INSERT INTO tasks (user_id, title, created_at, updated_at) VALUES (:u, 'pooled', now(), now())"))
COUNT = Query(text("SELECT count(*) AS n FROM tasks WHERE user_id = :u"))


@pytest.fixture
def proxied(postgres_database: str, proxy: TcpProxy) -> str:
    return make_url(postgres_database).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@pytest.fixture
async def open_pool(proxied: str) -> AsyncIterator[Callable[..., PostgresDatabase]]:
    """Open the request path's database on the proxied URL with the given ``DatabaseLimits`` (and pool tweaks)."""
    opened: list[PostgresDatabase] = []

    def make(options: DatabaseLimits | None = None, **pool: Any) -> PostgresDatabase:
        database = open_database(proxied, options or DatabaseLimits())
        assert isinstance(database, PostgresDatabase)
        database.pool.options = dataclasses.replace(database.pool.options, **pool)
        opened.append(database)
        return database

    yield make
    for database in opened:
        await database.close()


async def pid_of(database: PostgresDatabase) -> int:
    row = await database.fetchrow(BACKEND_PID, {}, read_only=True)
    assert row is not None
    return int(row["pid"])


async def eventually(condition: Callable[[], Awaitable[bool] | bool], what: str, within: float = 10) -> None:
    """Poll ``condition`` until it holds (it reads state with no event to wait on); fail after ``within`` s."""
    try:
        async with asyncio.timeout(within):
            while True:
                outcome = condition()
                if await outcome if isinstance(outcome, Awaitable) else outcome:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {within} s: {what}")


async def test_waiters_are_served_in_arrival_order_and_a_long_wait_is_pool_exhausted(
    open_pool: Callable[..., PostgresDatabase],
) -> None:
    database = open_pool(DatabaseLimits(pool_size=1, max_overflow=0, pool_timeout=5))
    pool = database.pool
    held = await pool.acquire()
    order: list[int] = []

    async def wait_turn(n: int) -> None:
        connection = await pool.acquire()
        order.append(n)
        pool.release(connection)

    waiters = []
    for n in range(4):
        waiters.append(asyncio.create_task(wait_turn(n)))
        await eventually(lambda n=n: pool.stats().waiting == n + 1, f"waiter {n} to queue")  # type: ignore[misc]
    pool.release(held)
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert order == [0, 1, 2, 3]

    pool.options = dataclasses.replace(pool.options, wait_timeout=0.2)
    held = await pool.acquire()
    started = time.monotonic()
    with pytest.raises(PoolExhaustedError) as caught:
        await pool.acquire()
    assert 0.2 <= time.monotonic() - started < 1.5
    assert caught.value.stats.in_use == 1
    assert "within 0.2 s" in str(caught.value)
    pool.release(held)
    assert await pid_of(database)  # the pool is fine afterwards


async def test_a_steady_load_opens_no_new_connections(
    open_pool: Callable[..., PostgresDatabase], proxy: TcpProxy
) -> None:
    """Once the connections a load needs are open, it keeps using them: no connection opened or closed."""
    database = open_pool(DatabaseLimits(pool_size=2, max_overflow=4))

    async def round_of_three() -> None:
        pids = await asyncio.gather(*(database.fetchrow(SLEEP, {"seconds": 0.01}) for _ in range(3)))
        assert all(row is not None for row in pids)

    await round_of_three()
    await eventually(lambda: proxy.open_connections == 4, "3 pooled connections and the control one")
    opened = proxy.forwarded
    for _ in range(30):
        await round_of_three()
    assert proxy.forwarded == opened
    assert database.pool.stats().size == 3


async def test_connections_beyond_the_minimum_close_when_idle(open_pool: Callable[..., PostgresDatabase]) -> None:
    database = open_pool(DatabaseLimits(pool_size=1, max_overflow=3), idle_timeout=0.3)
    await asyncio.gather(*(database.fetchrow(SLEEP, {"seconds": 0.05}) for _ in range(4)))
    assert database.pool.stats().size == 4
    await eventually(lambda: database.pool.stats().size == 1, "the overflow connections to close")
    assert await pid_of(database)  # the one kept still serves


async def test_a_read_on_a_silently_dead_connection_is_repeated_on_a_working_one(
    open_pool: Callable[..., PostgresDatabase], proxy: TcpProxy
) -> None:
    """The server side is gone but the client has not heard: the read meets a reset, and runs again."""
    database = open_pool(DatabaseLimits(pool_size=1, max_overflow=1))
    first = await pid_of(database)
    proxy.sever_silently()
    assert await pid_of(database) != first


async def test_a_write_on_a_silently_dead_connection_is_reported_not_repeated(
    open_pool: Callable[..., PostgresDatabase], proxy: TcpProxy, postgres_database: str
) -> None:
    """A write that met a reset may or may not have run, so it is a 503 (never run twice), and here it did not."""
    database = open_pool(DatabaseLimits(pool_size=1, max_overflow=1))
    user = "pool-silent-write"
    await pid_of(database)
    proxy.sever_silently()
    with pytest.raises(DatabaseUnavailableError):
        await database.fetch(INSERT, {"u": user})
    row = await database.fetchrow(COUNT, {"u": user})
    assert row is not None
    assert row["n"] == 0


async def test_a_connection_the_server_ended_is_never_an_error(
    open_pool: Callable[..., PostgresDatabase], postgres_database: str
) -> None:
    """``pg_terminate_backend`` on the pooled connection between two writes: the second write succeeds."""
    database = open_pool(DatabaseLimits(pool_size=1, max_overflow=0))
    user = "pool-terminated"
    await database.fetch(INSERT, {"u": user})
    victim = await pid_of(database)
    admin = await asyncpg.connect(make_url(postgres_database).set(drivername="postgresql").render_as_string(False))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)
    finally:
        await admin.close()
    await database.fetch(INSERT, {"u": user})
    row = await database.fetchrow(COUNT, {"u": user})
    assert row is not None
    assert row["n"] == 2
    assert await pid_of(database) != victim


async def test_a_statement_cut_off_by_cancellation_never_lends_its_connection_again(
    open_pool: Callable[..., PostgresDatabase],
) -> None:
    database = open_pool(DatabaseLimits(pool_size=1, max_overflow=0))
    first = await pid_of(database)
    running = asyncio.create_task(database.fetchrow(SLEEP, {"seconds": 30}))
    await eventually(lambda: database.pool.stats().in_use == 1, "the sleep to hold the connection")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert database.pool.stats().size == 0  # terminated, not given back mid-statement
    assert await pid_of(database) != first


@pytest.mark.slow  # waits out a connect timeout
async def test_waiters_fail_at_once_when_the_database_stops_answering(
    open_pool: Callable[..., PostgresDatabase], proxy: TcpProxy
) -> None:
    """One connection busy on a statement when the network hangs: the watchdog finds the database unreachable,
    and the request on it and those waiting for it get their error within the connect budget, not after
    DB_POOL_TIMEOUT."""
    database = open_pool(DatabaseLimits(pool_size=1, max_overflow=0, pool_timeout=30))
    await pid_of(database)
    await eventually(lambda: proxy.open_connections == 2, "the control connection to open")
    proxy.blackhole()
    started = time.monotonic()
    calls = [asyncio.create_task(database.fetchrow(SLEEP, {"seconds": 0})) for _ in range(4)]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert all(isinstance(outcome, DatabaseUnavailableError) for outcome in outcomes), outcomes
    assert time.monotonic() - started < 2.0
    await proxy.up()
    assert await pid_of(database)  # and it recovers by itself


async def test_a_check_that_times_out_only_counts_when_the_event_loop_kept_time() -> None:
    """A database that does not answer is unavailable; a process too busy to read the answer is not evidence."""
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(DatabaseUnavailableError):
        await _unless_the_loop_lags(asyncio.shield(never), 0.2)

    def hog() -> None:
        time.sleep(0.3)  # the event loop itself is stuck (CPU starvation, a blocking call)

    asyncio.get_running_loop().call_later(0.05, hog)
    with pytest.raises(_LoopLagError):
        await _unless_the_loop_lags(asyncio.shield(never), 0.2)
    never.cancel()
