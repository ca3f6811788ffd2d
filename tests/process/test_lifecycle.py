"""Graceful shutdown, kill -9 durability, failed commits and several workers, for real.

Real ``manage.py serve`` processes get real signals; requests are held in flight deterministically by a
lock that another PostgreSQL connection holds (the test waits until PostgreSQL reports the requests
waiting for it), so "in flight when SIGTERM lands" is a fact, not a timing guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped]  # psutil ships no type information
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from app.asgi import build_app
from config.settings import DEFAULT_SHUTDOWN_GRACE_SECONDS, Settings
from db.engine import create_engine
from db.models import Task
from db.schema_migrations import upgrade
from tests.support.servers import ServeProcess, Servers, serve_env
from tests.support.tokens import TEST_SECRET, bearer

WAIT_SECONDS = 30  # upper bound for every condition these tests wait on (generous: only a failure waits it out)


def asyncpg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def lock_waiters(monitor: asyncpg.Connection, database: str) -> list[int]:
    """Backends of ``database`` waiting for a lock (each autocommit query sees a fresh pg_stat_activity)."""
    rows = await monitor.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", database
    )
    return [row["pid"] for row in rows]


async def wait_for_lock_waiters(monitor: asyncpg.Connection, database: str, count: int) -> list[int]:
    deadline = time.monotonic() + WAIT_SECONDS
    while len(pids := await lock_waiters(monitor, database)) < count:
        assert time.monotonic() < deadline, f"only {len(pids)} of {count} requests reached the database"
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline
    return pids


async def wait_until_refused(port: int) -> None:
    """Wait until a new TCP connection to ``port`` is refused."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=1)
        except ConnectionRefusedError:
            return
        writer.close()
        assert time.monotonic() < deadline, "new connections were still accepted"
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline


async def wait_until(condition: Any, message: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline


async def send(url: str, headers: dict[str, str], method: str, path: str, body: Any) -> httpx.Response:
    """One request on its own connection."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        return await http.request(method, path, json=body)


@pytest.fixture
async def monitor(postgres_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database that watches it (autocommit: every query sees fresh statistics)."""
    connection = await asyncpg.connect(asyncpg_url(postgres_database))
    yield connection
    await connection.close()


@contextlib.asynccontextmanager
async def tasks_locked(database_url: str) -> AsyncIterator[None]:
    """Hold a lock that blocks every INSERT, UPDATE and DELETE on tasks (reads go on) until the block ends."""
    locker = await asyncpg.connect(asyncpg_url(database_url))
    try:
        transaction = locker.transaction()
        await transaction.start()
        try:
            await locker.execute("LOCK TABLE tasks IN SHARE MODE")
            yield
        finally:
            await transaction.rollback()
    finally:
        await locker.close()


class ReadLoad:
    """GETs one after another, each on a new connection, recording (time sent, status or error name)."""

    def __init__(self, url: str, headers: dict[str, str], path: str) -> None:
        self.outcomes: list[tuple[float, int | str]] = []
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(url, {**headers, "Connection": "close"}, path))

    async def _run(self, url: str, headers: dict[str, str], path: str) -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    self.outcomes.append((sent, (await http.get(path)).status_code))
                except httpx.TransportError as exc:
                    self.outcomes.append((sent, type(exc).__name__))
                    await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


def stopping_writes(tasks: str, seeded: list[int]) -> list[tuple[str, str, Any, int]]:
    """(method, path, body, expected status) of writes to be held in flight while the server stops."""
    return [
        *(("POST", tasks, {"title": f"created while stopping {i}"}, 201) for i in range(3)),
        ("PATCH", f"{tasks}/{seeded[0]}", {"title": "patched while stopping"}, 200),
        ("PUT", f"{tasks}/{seeded[1]}", {"description": "put while stopping"}, 200),
        ("PATCH", f"{tasks}/{seeded[2]}/complete", {"completed": True}, 200),
        ("DELETE", f"{tasks}/{seeded[3]}", None, 204),
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_finishes_accepted_requests_refuses_new_ones_and_exits_0(
    workers: int, postgres_database: str, servers: Servers, tmp_path: Path, monitor: asyncpg.Connection
) -> None:
    database = make_url(postgres_database).database or ""
    server = servers.start(serve_env(postgres_database, tmp_path / "data"), "--workers", str(workers))
    await asyncio.to_thread(server.wait_until_healthy)
    await asyncio.to_thread(server.wait_for_output, "Application startup complete.", workers)
    user = uuid.uuid4().hex
    headers = bearer(user)
    tasks = f"/api/{user}/tasks"
    seeded = [(await send(server.url, headers, "POST", tasks, {"title": f"seed {i}"})).json()["id"] for i in range(4)]
    writes = stopping_writes(tasks, seeded)

    async with tasks_locked(postgres_database):
        held = [asyncio.create_task(send(server.url, headers, m, p, b)) for m, p, b, _ in writes]
        await wait_for_lock_waiters(monitor, database, len(writes))  # every write is in flight, for sure
        reads = ReadLoad(server.url, headers, tasks)  # and reads go on throughout
        await wait_until(lambda: len(reads.outcomes) >= 5, "the read load got no answers")

        signalled = server.send(signal.SIGTERM)
        await wait_until_refused(server.port)
        assert server.process.poll() is None, "the server exited with requests in flight"
        assert not any(request.done() for request in held)
    responses = await asyncio.gather(*held)
    await reads.stop()

    assert [(r.status_code, r.text) for r in responses] == [(r.status_code, r.text) for r in responses if r.is_success]
    assert [r.status_code for r in responses] == [expected for *_, expected in writes]
    assert await asyncio.to_thread(server.wait, DEFAULT_SHUTDOWN_GRACE_SECONDS + 10) == 0, server.output()
    assert time.monotonic() - signalled < DEFAULT_SHUTDOWN_GRACE_SECONDS
    assert "timeout graceful shutdown exceeded" not in server.output()
    # Every read the server answered succeeded; reads that failed were all sent after the signal.
    assert {outcome for _, outcome in reads.outcomes if isinstance(outcome, int)} == {200}
    assert all(sent > signalled for sent, outcome in reads.outcomes if isinstance(outcome, str))

    rows = {r["title"]: r for r in await monitor.fetch("SELECT * FROM tasks WHERE user_id = $1", user)}
    assert {f"created while stopping {i}" for i in range(3)} <= rows.keys()
    assert "patched while stopping" in rows
    assert rows["seed 1"]["description"] == "put while stopping"
    assert rows["seed 2"]["completed"] is True
    assert rows["seed 3"]["deleted_at"] is not None  # deleted: in the trash


@pytest.mark.postgres
async def test_requests_running_past_the_grace_period_get_503_and_write_nothing(
    postgres_database: str, servers: Servers, tmp_path: Path, monitor: asyncpg.Connection
) -> None:
    database = make_url(postgres_database).database or ""
    server = servers.start(serve_env(postgres_database, tmp_path / "data", SHUTDOWN_GRACE_SECONDS="1"))
    await asyncio.to_thread(server.wait_until_healthy)
    user = uuid.uuid4().hex
    headers = bearer(user)
    task = (await send(server.url, headers, "POST", f"/api/{user}/tasks", {"title": "before"})).json()

    async with tasks_locked(postgres_database):
        path = f"/api/{user}/tasks/{task['id']}"
        held = asyncio.create_task(send(server.url, headers, "PATCH", path, {"title": "x"}))
        (orphan,) = await wait_for_lock_waiters(monitor, database, 1)
        signalled = server.send(signal.SIGTERM)
        status = await asyncio.to_thread(server.wait, WAIT_SECONDS)
        stopped_after = time.monotonic() - signalled
    assert status == 0, server.output()
    # The grace period, then the app's shutdown; far less than the default grace period.
    assert 1 <= stopped_after < DEFAULT_SHUTDOWN_GRACE_SECONDS / 2, server.output()
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in server.output()
    cut_off = await held  # answered, not dropped: the client learns it may retry
    assert cut_off.status_code == 503
    assert cut_off.headers["content-type"] == "application/problem+json"
    assert cut_off.headers["retry-after"] == "5"
    assert "stopped this request" in cut_off.json()["detail"]
    assert "PATCH /api/" in server.output()
    assert "Exception in ASGI application" not in server.output()
    # The cancelled request's backend gets the lock now, but its transaction can never commit.
    await wait_until_async(lambda: orphan_gone(monitor, orphan), "the cancelled request's backend lingers")
    assert await monitor.fetchval("SELECT title FROM tasks WHERE id = $1", task["id"]) == "before"


async def orphan_gone(monitor: asyncpg.Connection, pid: int) -> bool:
    return not await monitor.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)


async def wait_until_async(condition: Any, message: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline


def task_body(worker: int, n: int) -> dict[str, Any]:
    """A distinct, fully populated create body; the title says which one it is."""
    return {
        "title": f"w{worker}-n{n}",
        "description": f"written by creator {worker}, number {n}",
        "priority": ("low", "medium", "high")[n % 3],
        "due_date": f"2030-01-{1 + n % 28:02d}T12:00:00Z",
        "tags": [f"Creator{worker}", f"n{n}"],
        "completed": n % 2 == 0,
    }


CREATORS = 8


async def test_kill_9_during_creates_loses_no_task_that_was_answered_201(
    database_url: str, servers: Servers, tmp_path: Path
) -> None:
    env = serve_env(database_url, tmp_path / "data", LOG_LEVEL="WARNING")
    server = servers.start(env)
    await asyncio.to_thread(server.wait_until_healthy)
    user = uuid.uuid4().hex
    headers = bearer(user)
    answered: dict[int, dict[str, Any]] = {}

    async def creator(worker: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
            for n in range(10_000):
                try:
                    response = await http.post(f"/api/{user}/tasks", json=task_body(worker, n))
                except httpx.TransportError:
                    return  # killed with this create in flight: it may or may not exist
                assert response.status_code == 201, response.text
                answered[response.json()["id"]] = response.json()

    creators = [asyncio.create_task(creator(worker)) for worker in range(CREATORS)]
    await wait_until(lambda: len(answered) >= 60 or any(c.done() for c in creators), "creates are not answered")
    assert not any(c.done() for c in creators), "a creator stopped before the kill"
    server.send(signal.SIGKILL)
    assert await asyncio.to_thread(server.wait, WAIT_SECONDS) == -signal.SIGKILL
    await asyncio.gather(*creators)

    restarted = servers.start(env)
    await asyncio.to_thread(restarted.wait_until_healthy)
    async with httpx.AsyncClient(base_url=restarted.url, headers=headers, timeout=30) as http:
        for task_id, body in answered.items():
            response = await http.get(f"/api/{user}/tasks/{task_id}")
            assert (response.status_code, response.json()) == (200, body)

    engine = create_engine(database_url)
    try:
        async with AsyncSession(engine) as session:
            rows = (await session.scalars(select(Task).where(Task.user_id == user))).all()
    finally:
        await engine.dispose()
    # Everything answered 201 is there; beyond that at most the creates that were in flight at the kill.
    assert len(answered) <= len(rows) <= len(answered) + CREATORS
    for row in rows:  # and every row is one whole create body, never part of one
        worker, n = (int(part[1:]) for part in row.title.split("-"))
        body = task_body(worker, n)
        assert row.description == body["description"]
        assert row.priority == ("low", "medium", "high").index(body["priority"]) + 1
        assert row.due_date is not None
        assert row.due_date.isoformat().replace("+00:00", "Z") == body["due_date"]
        assert row.tags == body["tags"]
        assert row.tag_keys == [tag.lower() for tag in body["tags"]]
        assert row.completed is body["completed"]
        assert row.created_at is not None
        assert row.updated_at is not None


# Deferred checks run at COMMIT, after the route's INSERT or UPDATE has succeeded: the commit itself fails,
# for real, in three ways. A deferred constraint refuses it (the client's conflict); the database raises an
# error (a server fault); the connection is cut off in the middle of it (the database is unavailable).
COMMIT_FAILURES = """
ALTER TABLE tasks ADD CONSTRAINT one_title_per_user UNIQUE (user_id, title) DEFERRABLE INITIALLY DEFERRED;
CREATE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.title = 'refused at commit' THEN
        RAISE EXCEPTION 'refused at commit';
    ELSIF NEW.title = 'cut off at commit' THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT OR UPDATE ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_at_commit();
"""
FAILED_COMMITS = [("taken", 409), ("refused at commit", 500), ("cut off at commit", 503)]


@pytest.fixture(scope="module")
def failing_commit_database(postgres_server: str) -> Iterator[str]:
    """A migrated database of its own whose COMMIT fails for the titles in ``FAILED_COMMITS``."""
    name = f"todo_commit_{uuid.uuid4().hex[:12]}"
    admin = asyncpg_url(postgres_server)

    async def run(url: str, sql: str) -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run(admin, f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        asyncio.run(run(asyncpg_url(url), COMMIT_FAILURES))
        yield url
    finally:
        asyncio.run(run(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.postgres
async def test_a_failed_commit_is_an_error_response_never_a_success(
    failing_commit_database: str, tmp_path: Path
) -> None:
    settings = Settings(
        app_env="test", data_dir=tmp_path, database_url=failing_commit_database, better_auth_secret=TEST_SECRET
    )
    user = uuid.uuid4().hex
    tasks = f"/api/{user}/tasks"
    async with AsyncTestClient(app=build_app(settings)) as client:
        client.headers.update(bearer(user))
        assert (await client.post(tasks, json={"title": "taken"})).status_code == 201
        kept = await client.post(tasks, json={"title": "kept"})
        assert kept.status_code == 201
        location = kept.headers["location"]

        for title, status in FAILED_COMMITS:
            for method, url in (("POST", tasks), ("PATCH", location), ("PUT", location)):
                response = await client.request(method, url, json={"title": title})
                assert response.status_code == status, (method, title, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert "location" not in response.headers
                if status == 503:
                    assert response.headers["retry-after"]

        # Nothing of the failed commits was kept, and the pool replaced the connections that were cut off.
        assert sorted(task["title"] for task in (await client.get(tasks)).json()) == ["kept", "taken"]
        assert (await client.post(tasks, json={"title": "after"})).status_code == 201


@pytest.mark.postgres
async def test_two_workers_both_serve(postgres_database: str, servers: Servers, tmp_path: Path) -> None:
    """Each worker ends up holding connections of its own database pool: both served API requests."""
    server = servers.start(serve_env(postgres_database, tmp_path / "data", LOG_LEVEL="WARNING"), "--workers", "2")
    await asyncio.to_thread(server.wait_until_healthy)
    await asyncio.to_thread(server.wait_for_output, "Application startup complete.", 2)
    workers = server.workers()
    assert len(workers) == 2
    database_port = make_url(postgres_database).port or 5432

    def serving() -> set[int]:
        return {
            worker.pid
            for worker in workers
            for connection in worker.net_connections(kind="tcp")
            if connection.raddr
            and connection.raddr.port == database_port
            and connection.status == psutil.CONN_ESTABLISHED
        }

    user = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=server.url, headers={**bearer(user), "Connection": "close"}) as http:
        deadline = time.monotonic() + WAIT_SECONDS
        while serving() != {worker.pid for worker in workers}:
            assert time.monotonic() < deadline, f"only workers {serving()} served requests"
            responses = await asyncio.gather(*(http.get(f"/api/{user}/tasks") for _ in range(8)))
            assert {response.status_code for response in responses} == {200}
    await check_exits_cleanly(server)


async def check_exits_cleanly(server: ServeProcess) -> None:
    server.send(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, WAIT_SECONDS) == 0, server.output()


# -- rolling deploys: keep-alive clients move on between requests, never mid-request ------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [1, 2])
async def test_a_rolling_deploy_resets_no_request(
    workers: int, postgres_database: str, servers: Servers, tmp_path: Path, monitor: asyncpg.Connection
) -> None:
    """32 keep-alive clients POST continuously to the old instance, which gets SIGTERM; each moves to the new
    instance when an answer says ``Connection: close`` or the old one refuses. No connection is reset, no
    answer is malformed, every 201 is in the database, and the old instance exits 0."""
    old = servers.start(serve_env(postgres_database, tmp_path / "old", RATE_LIMIT="off"), "--workers", str(workers))
    new = servers.start(serve_env(postgres_database, tmp_path / "new", RATE_LIMIT="off"))
    for server in (old, new):
        await asyncio.to_thread(server.wait_until_healthy)
    await asyncio.to_thread(old.wait_for_output, "Application startup complete.", workers)
    user = uuid.uuid4().hex
    headers = bearer(user)
    created: list[int] = []
    failures: list[str] = []
    moved = 0
    stop = asyncio.Event()

    async def client(n: int) -> None:
        nonlocal moved
        base = old.url
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            while not stop.is_set():
                try:
                    response = await http.post(f"{base}/api/{user}/tasks", json={"title": f"c{n}"}, headers=headers)
                except httpx.ConnectError:
                    if base == new.url:
                        failures.append(f"client {n}: the new instance refused")
                        return
                    base = new.url  # the old one stopped listening: go to the new one
                    moved += 1
                    continue
                except httpx.HTTPError as exc:  # ReadError, RemoteProtocolError, …: a reset or a broken answer
                    failures.append(f"client {n}: {type(exc).__name__}: {exc}")
                    return
                if response.status_code != 201:
                    failures.append(f"client {n}: {response.status_code} {response.text[:200]}")
                    return
                created.append(response.json()["id"])
                if base == old.url and response.headers.get("connection") == "close":
                    base = new.url
                    moved += 1

    clients = [asyncio.create_task(client(n)) for n in range(32)]
    await wait_until(lambda: len(created) >= 200, "200 creates before the signal")
    signalled = old.send(signal.SIGTERM)
    assert await asyncio.to_thread(old.wait, WAIT_SECONDS) == 0, old.output()
    stopped_after = time.monotonic() - signalled
    await wait_until(lambda: moved + len(failures) >= 32, "every client to move to the new instance (or fail)")
    assert failures == []
    after = len(created)
    await wait_until(lambda: len(created) >= after + 100, "the clients to go on on the new instance")
    stop.set()
    await asyncio.wait_for(asyncio.gather(*clients), WAIT_SECONDS)
    assert failures == []
    assert stopped_after < DEFAULT_SHUTDOWN_GRACE_SECONDS
    stored = {row["id"] for row in await monitor.fetch("SELECT id FROM tasks WHERE user_id = $1", user)}
    assert set(created) <= stored
    assert len(set(created)) == len(created)
