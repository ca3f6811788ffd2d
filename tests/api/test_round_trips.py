"""What each route sends to the database, counted: this, not timing, guards the fast path in CI.

PostgreSQL: the app reaches the database through a TCP proxy that reads the protocol (``bench/pg_wire.py``)
and lists every statement (``BEGIN``, ``COMMIT``, ``ROLLBACK`` and pings included) and every round trip.
SQLite: the database's own trace callback lists every statement it runs, ``BEGIN`` and ``COMMIT`` included.

On the success path each route makes one round trip: a list, a get, a create without a key, PUT, PATCH,
complete and delete are one statement each, in autocommit. A create with ``Idempotency-Key`` is one
transaction. Any extra statement (a ping on every checkout, ``BEGIN``/``ROLLBACK`` around a read) fails here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import event
from sqlalchemy.engine import make_url

from app.asgi import build_app
from app.auth.tokens import issue_token
from config.settings import DatabaseLimits, Settings
from db.database import PostgresDatabase, SQLiteDatabase
from tests.support.servers import in_loop_server
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import TEST_SECRET

# Real uvicorn servers on real sockets, PostgreSQL behind a proxy that reads the protocol: about 9 s in all.
pytestmark = pytest.mark.slow

Client = AsyncTestClient[Litestar]
Call = Callable[[Client, str, dict[str, str], int], Awaitable[Any]]


@dataclasses.dataclass
class Counted:
    """A client for one user, and what the database saw since the last :meth:`take`."""

    client: Client | httpx.AsyncClient
    user: str
    headers: dict[str, str]
    take: Callable[[], tuple[list[str], int | None]]  # statements, round trips (None: SQLite has no wire)

    @property
    def tasks(self) -> str:
        return f"/api/{self.user}/tasks"

    async def new_task(self) -> int:
        response = await self.client.post(self.tasks, json={"title": "counted"}, headers=self.headers)
        assert response.status_code == 201, response.text
        task_id: int = response.json()["id"]
        return task_id


def settings_for(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        app_env="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        better_auth_secret=TEST_SECRET,
        # One connection, so every statement runs on one that has prepared it before (asyncpg prepares a
        # statement once per connection: the first run of each costs one more round trip).
        db_options=DatabaseLimits(pool_size=1, max_overflow=0),
    )


def keep_connections_trusted(app: Litestar, alive_window: float) -> None:
    """Set how recently a pooled connection must have been used to be handed out without a ``SELECT 1``."""
    database = app.state.database
    assert isinstance(database, PostgresDatabase)
    database.pool.options = dataclasses.replace(database.pool.options, alive_window=alive_window)


@contextlib.asynccontextmanager
async def served(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` in a real uvicorn server in this event loop (the proxy runs in it too), and a client for it."""
    async with in_loop_server(app) as url, httpx.AsyncClient(base_url=url, timeout=15) as client:
        yield client


@pytest.fixture
async def on_postgres(postgres_database: str, tmp_path: Path) -> AsyncIterator[tuple[Counted, Litestar]]:
    url = make_url(postgres_database)
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432, record=True).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = build_app(settings_for(proxied, tmp_path))
    try:
        async with served(app) as client:
            keep_connections_trusted(app, alive_window=3600)  # no pings: the tests below count statements
            wire = proxy.wire
            assert wire is not None
            yield Counted(client, *_user(), take=wire.take), app
    finally:
        await proxy.close()


@pytest.fixture
async def on_sqlite(sqlite_database: str, tmp_path: Path) -> AsyncIterator[Counted]:
    app = build_app(settings_for(sqlite_database, tmp_path))
    seen: list[str] = []
    async with AsyncTestClient(app=app) as client:
        database = app.state.database
        assert isinstance(database, SQLiteDatabase)
        await database.engine.dispose()  # connections opened from now on are traced

        @event.listens_for(database.engine.sync_engine, "connect")
        def trace(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.driver_connection._conn.set_trace_callback(seen.append)

        def take() -> tuple[list[str], int | None]:
            statements = [s for s in seen if not s.startswith("PRAGMA")]  # once per new connection
            # SQLite reports a statement again for each trigger program it runs (the change feed's numbering):
            # one statement, not several.
            statements = [s for i, s in enumerate(statements) if i == 0 or s != statements[i - 1]]
            seen.clear()
            return statements, None

        yield Counted(client, *_user(), take=take)


def _user() -> tuple[str, dict[str, str]]:
    user = uuid.uuid4().hex
    token = issue_token(Settings(better_auth_secret=TEST_SECRET), user, timedelta(minutes=10))
    return user, {"Authorization": f"Bearer {token}"}


# Each route's call; its expected status and the one statement it sends.
async def list_tasks(c: Counted, task: int) -> Any:
    del task
    return await c.client.get(f"{c.tasks}?limit=20", headers=c.headers)


async def list_with_filters(c: Counted, task: int) -> Any:
    del task
    query = "status=pending&priority=high&priority=low&tag=a&q=count&sort=title&due_before=2030-01-01"
    return await c.client.get(f"{c.tasks}?{query}", headers=c.headers)


async def get_task(c: Counted, task: int) -> Any:
    return await c.client.get(f"{c.tasks}/{task}", headers=c.headers)


async def create_task(c: Counted, task: int) -> Any:
    del task
    body = {"title": "new", "priority": "high", "tags": ["a"], "due_date": "2026-12-24"}
    return await c.client.post(c.tasks, json=body, headers=c.headers)


async def put_task(c: Counted, task: int) -> Any:
    return await c.client.put(f"{c.tasks}/{task}", json={"title": "put"}, headers=c.headers)


async def patch_task(c: Counted, task: int) -> Any:
    return await c.client.patch(f"{c.tasks}/{task}", json={"description": "patched"}, headers=c.headers)


async def patch_if_match(c: Counted, task: int) -> Any:
    current = (await c.client.get(f"{c.tasks}/{task}", headers=c.headers)).headers["etag"]
    c.take()  # the read above is not the request under test
    headers = {**c.headers, "If-Match": current}
    return await c.client.patch(f"{c.tasks}/{task}", json={"completed": True}, headers=headers)


async def toggle_task(c: Counted, task: int) -> Any:
    return await c.client.patch(f"{c.tasks}/{task}/complete", headers=c.headers)


async def complete_task(c: Counted, task: int) -> Any:
    return await c.client.patch(f"{c.tasks}/{task}/complete", json={"completed": True}, headers=c.headers)


async def delete_task(c: Counted, task: int) -> Any:
    return await c.client.delete(f"{c.tasks}/{task}", headers=c.headers)


async def changes_after_cursor(c: Counted, task: int) -> Any:
    del task
    feed = c.tasks.removesuffix("/tasks") + "/changes"
    cursor = (await c.client.get(feed, headers=c.headers)).json()["cursor"]
    c.take()  # the initial sync above (two statements: where it begins, then the page) is not under test
    return await c.client.get(feed, params={"cursor": cursor}, headers=c.headers)


async def list_trash(c: Counted, task: int) -> Any:
    await c.client.delete(f"{c.tasks}/{task}", headers=c.headers)
    c.take()
    return await c.client.get(c.tasks.removesuffix("/tasks") + "/trash", headers=c.headers)


async def restore_task(c: Counted, task: int) -> Any:
    await c.client.delete(f"{c.tasks}/{task}", headers=c.headers)
    c.take()
    return await c.client.post(c.tasks.removesuffix("/tasks") + f"/trash/{task}/restore", headers=c.headers)


async def purge_task(c: Counted, task: int) -> Any:
    await c.client.delete(f"{c.tasks}/{task}", headers=c.headers)
    c.take()
    return await c.client.delete(c.tasks.removesuffix("/tasks") + f"/trash/{task}", headers=c.headers)


ROUTES: dict[str, tuple[Callable[[Counted, int], Awaitable[Any]], int, str]] = {
    "list": (list_tasks, 200, "SELECT"),
    "list with every filter": (list_with_filters, 200, "SELECT"),
    "get": (get_task, 200, "SELECT"),
    "create": (create_task, 201, "INSERT"),
    "put": (put_task, 200, "UPDATE"),
    "patch": (patch_task, 200, "UPDATE"),
    "patch with If-Match": (patch_if_match, 200, "UPDATE"),
    "toggle": (toggle_task, 200, "UPDATE"),
    "complete": (complete_task, 200, "UPDATE"),
    "delete": (delete_task, 204, "UPDATE"),  # to the trash
    "changes": (changes_after_cursor, 200, "SELECT"),
    "trash": (list_trash, 200, "SELECT"),
    "restore": (restore_task, 200, "UPDATE"),
    "purge": (purge_task, 204, "DELETE"),
}


async def measure(counted: Counted, route: str) -> tuple[list[str], int | None]:
    call, status, _ = ROUTES[route]
    task = await counted.new_task()
    counted.take()
    response = await call(counted, task)
    assert response.status_code == status, response.text
    return counted.take()


def verbs(statements: list[str]) -> list[str]:
    return [statement.split(None, 1)[0].upper() for statement in statements]


@pytest.mark.postgres
@pytest.mark.parametrize("route", list(ROUTES))
async def test_each_route_is_one_statement_in_one_round_trip_on_postgresql(
    on_postgres: tuple[Counted, Litestar], route: str
) -> None:
    counted, _ = on_postgres
    await measure(counted, route)  # the first time, asyncpg prepares the statement on this connection
    statements, round_trips = await measure(counted, route)
    assert verbs(statements) == [ROUTES[route][2]], statements
    assert round_trips == 1


@pytest.mark.parametrize("route", list(ROUTES))
async def test_each_route_is_one_statement_on_sqlite(on_sqlite: Counted, route: str) -> None:
    await measure(on_sqlite, route)  # a first connection is opened (its PRAGMAs are not counted)
    statements, _ = await measure(on_sqlite, route)
    assert verbs(statements) == [ROUTES[route][2]], statements


@pytest.mark.postgres
async def test_a_statement_is_prepared_once_per_connection(on_postgres: tuple[Counted, Litestar]) -> None:
    """The first run of a statement on a connection prepares it (one more round trip); later runs do not."""
    counted, _ = on_postgres
    await counted.new_task()
    counted.take()
    rounds = []
    for _ in range(3):
        response = await counted.client.get(f"{counted.tasks}?status=completed&sort=priority", headers=counted.headers)
        assert response.status_code == 200
        statements, round_trips = counted.take()
        assert verbs(statements) == ["SELECT"]
        rounds.append(round_trips)
    assert rounds == [2, 1, 1]


@pytest.mark.postgres
async def test_a_connection_idle_past_the_window_is_checked_once(on_postgres: tuple[Counted, Litestar]) -> None:
    """With a zero window every pooled connection is pinged before use: ``SELECT 1``, then the statement."""
    counted, app = on_postgres
    task = await counted.new_task()
    await get_task(counted, task)
    keep_connections_trusted(app, alive_window=0)
    counted.take()
    response = await get_task(counted, task)
    assert response.status_code == 200
    statements, round_trips = counted.take()
    assert statements[0] == "SELECT 1"
    assert verbs(statements) == ["SELECT", "SELECT"]
    assert round_trips == 2


@pytest.mark.postgres
async def test_a_create_with_idempotency_key_is_one_transaction(on_postgres: tuple[Counted, Litestar]) -> None:
    counted, _ = on_postgres
    headers = {**counted.headers, "Idempotency-Key": "warm-up"}
    assert (await counted.client.post(counted.tasks, json={"title": "k"}, headers=headers)).status_code == 201
    counted.take()
    headers = {**counted.headers, "Idempotency-Key": "counted"}
    assert (await counted.client.post(counted.tasks, json={"title": "k"}, headers=headers)).status_code == 201
    statements, round_trips = counted.take()
    # BEGIN with its lock timeout, expired keys out, the key in, the task in, the response stored, COMMIT.
    assert verbs(statements) == ["BEGIN;", "DELETE", "INSERT", "INSERT", "UPDATE", "COMMIT"], statements
    assert round_trips == len(statements)
    # The replay: BEGIN, expired keys out, the key (already there), the stored response, COMMIT.
    assert (await counted.client.post(counted.tasks, json={"title": "k"}, headers=headers)).status_code == 201
    statements, _ = counted.take()
    assert verbs(statements) == ["BEGIN;", "DELETE", "INSERT", "SELECT", "COMMIT"], statements


@pytest.mark.postgres
async def test_errors_answered_by_the_database_cost_no_extra_statement(on_postgres: tuple[Counted, Litestar]) -> None:
    """A 404 is the one statement that found nothing; a 412 adds the one read that tells 412 from 404."""
    counted, _ = on_postgres
    task = await counted.new_task()
    await get_task(counted, task)
    await get_task(counted, task + 10**9)
    counted.take()
    assert (await get_task(counted, task + 10**9)).status_code == 404
    assert verbs(counted.take()[0]) == ["SELECT"]
    stale = {**counted.headers, "If-Match": f'"{task}-99"'}
    await counted.client.patch(f"{counted.tasks}/{task}", json={"title": "x"}, headers=stale)
    counted.take()
    response = await counted.client.patch(f"{counted.tasks}/{task}", json={"title": "x"}, headers=stale)
    assert response.status_code == 412
    assert verbs(counted.take()[0]) == ["UPDATE", "SELECT"]
