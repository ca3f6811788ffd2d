"""Database faults, for real: PostgreSQL cut off by a TCP proxy the test controls (tests/support/tcp_proxy.py).

The app runs in a real uvicorn server in the test's event loop (one test also runs ``manage.py serve`` in
its own process), and is called over real HTTP. Between it and PostgreSQL sits the proxy, which refuses,
black-holes, severs, or plays a database that is waking up. No mocks.

What is proven: with the database unreachable, API calls answer 503 problem+json with ``Retry-After``
within 2 s and ``/health/ready`` 503 while ``/health`` stays 200; the app recovers by itself within 5 s,
and the first request after connections were severed succeeds; a burst on an exhausted pool gets 503s
after the pool timeout, never a hang or a 500; ``statement_timeout`` turns a stuck statement into a 503;
the first request after a cold start succeeds; the password in ``DATABASE_URL`` is never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from app.asgi import build_app
from app.auth.tokens import issue_token
from config.settings import DatabaseLimits, Settings
from db.database import PostgresDatabase, open_database
from db.engine import create_engine
from db.query import Query
from tests.support.servers import ServeProcess, in_loop_server, serve_env
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import TEST_SECRET, bearer

UNAVAILABLE_WITHIN = 2.0  # seconds: the issue's bound for a 503 while the database is unreachable
RECOVERED_WITHIN = 5.0  # seconds after the database is back
MARKER_PASSWORD = "pw-never-shown-8c1f2e"  # used when TEST_POSTGRES_URL has none (trust auth ignores it)

pytestmark = pytest.mark.postgres


# -- fixtures and helpers --------------------------------------------------------------------------------


@pytest.fixture
def db_password(postgres_database: str) -> str:
    """The password the app's DATABASE_URL carries: the real one if there is one."""
    return make_url(postgres_database).password or MARKER_PASSWORD


@pytest.fixture
def proxied_url(postgres_database: str, proxy: TcpProxy, db_password: str) -> str:
    """The test database, reached through the proxy, with a password in the URL."""
    url = make_url(postgres_database).set(host="127.0.0.1", port=proxy.port, password=db_password)
    return url.render_as_string(hide_password=False)


def direct_dsn(database_url: str) -> str:
    """An asyncpg DSN straight to the server (not through the proxy)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def app_settings(database_url: str, tmp_path: Path, options: DatabaseLimits | None = None) -> Settings:
    return Settings(
        app_env="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        better_auth_secret=TEST_SECRET,
        db_options=options or DatabaseLimits(),
    )


class LogRecorder(logging.Handler):
    """Every log record of the process while installed, and a way to wait for one."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(self.format(record) for record in self.records)

    def count(self, logger: str, fragment: str) -> int:
        return sum(1 for r in self.records if r.name == logger and fragment in r.getMessage())


@contextlib.contextmanager
def recorded_logs() -> Iterator[LogRecorder]:
    """Record everything logged (DEBUG for db.connections) until the block ends.

    Start it after the app is built: building it configures logging, which replaces the root's handlers.
    """
    recorder = LogRecorder()
    root = logging.getLogger()
    connections = logging.getLogger("db.connections")
    level = connections.level
    root.addHandler(recorder)
    connections.setLevel(logging.DEBUG)
    try:
        yield recorder
    finally:
        root.removeHandler(recorder)
        connections.setLevel(level)


class Api:
    """An HTTP client for a running server, with a token for one user."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings, logs: LogRecorder | None = None) -> None:
        self.client = client
        self.logs = logs or LogRecorder()
        self.user = uuid.uuid4().hex
        token = issue_token(settings, self.user, timedelta(minutes=10))
        self.headers = {"Authorization": f"Bearer {token}"}
        self.tasks = f"/api/{self.user}/tasks"

    async def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.client.request(method, path, json=body, headers=self.headers)

    async def timed(self, method: str, path: str, body: Any = None) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = await self.call(method, path, body)
        return response, time.monotonic() - started

    async def create(self, title: str = "a task") -> int:
        response = await self.call("POST", self.tasks, {"title": title})
        assert response.status_code == 201, response.text
        task_id: int = response.json()["id"]
        return task_id


@contextlib.asynccontextmanager
async def serve(settings: Settings, proxy: TcpProxy) -> AsyncIterator[Api]:
    """The app in a real uvicorn server on a free port, in this event loop (so the proxy keeps running)."""
    async with in_loop_server(build_app(settings)) as url:
        try:
            with recorded_logs() as logs:
                async with httpx.AsyncClient(base_url=url, timeout=15) as client:
                    yield Api(client, settings, logs)
        finally:
            await proxy.up()  # whatever the test left broken, let the pool close its connections


def assert_unavailable(response: httpx.Response, elapsed: float, password: str) -> None:
    """A 503 problem with Retry-After, quickly, that shows nothing of the connection."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"].isdigit()
    body = response.json()
    assert body["status"] == 503
    assert body["type"].endswith(":service-unavailable")
    assert elapsed < UNAVAILABLE_WITHIN, f"503 after {elapsed:.2f} s"
    assert password not in response.text
    assert password not in str(response.headers)


async def cut_off(proxy: TcpProxy, outage: str) -> None:
    """``refused``: nothing listens, open connections are cut. ``blackholed``: nothing flows, anywhere."""
    if outage == "refused":
        await proxy.refuse()
    else:
        proxy.blackhole()


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 10) -> None:
    """Poll ``condition`` until it holds; fail after ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while not await condition():  # noqa: ASYNC110 - the condition lives outside this process
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def row_locked(database_url: str, task_id: int) -> AsyncIterator[asyncpg.Connection]:
    """Hold a lock on one task row from another connection, so that writes to it block until released."""
    connection = await asyncpg.connect(direct_dsn(database_url), timeout=5)
    transaction = connection.transaction()
    await transaction.start()
    try:
        assert await connection.fetchval("SELECT id FROM tasks WHERE id = $1 FOR UPDATE", task_id) == task_id
        yield connection
    finally:
        await transaction.rollback()
        await connection.close()


async def lock_waiters(database_url: str) -> int:
    """Backends of the test database that wait for a lock right now."""
    connection = await asyncpg.connect(direct_dsn(database_url), timeout=5)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return count
    finally:
        await connection.close()


# -- unreachable, then back ------------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["refused", "blackholed"])
async def test_unreachable_database_is_a_quick_503_and_the_app_recovers_by_itself(
    outage: str, proxy: TcpProxy, proxied_url: str, db_password: str, tmp_path: Path
) -> None:
    """Default settings. Refused: nothing listens and open connections are cut. Black-holed: the port
    accepts, but nothing flows on new or pooled connections, so only time limits can answer."""
    async with serve(app_settings(proxied_url, tmp_path), proxy) as api:
        task_id = await api.create()
        # Several pooled connections, so that stale ones would be around to be handed out later.
        warm = await asyncio.gather(*(api.call("GET", f"{api.tasks}/{task_id}") for _ in range(4)))
        assert [r.status_code for r in warm] == [200] * 4

        await cut_off(proxy, outage)
        # One request alone (it meets a pooled connection first), then a burst of every kind at once.
        response, elapsed = await api.timed("GET", f"{api.tasks}/{task_id}")
        assert_unavailable(response, elapsed, db_password)
        burst = await asyncio.gather(
            api.timed("GET", api.tasks),
            api.timed("POST", api.tasks, {"title": "during the outage"}),
            api.timed("PATCH", f"{api.tasks}/{task_id}", {"title": "during the outage"}),
            api.timed("DELETE", f"{api.tasks}/{task_id}"),
            api.timed("GET", "/health/ready"),
            api.timed("GET", "/health"),
        )
        for response, elapsed in burst[:-1]:
            assert_unavailable(response, elapsed, db_password)
        live, elapsed = burst[-1]
        assert live.status_code == 200
        assert elapsed < 1.0  # liveness never waits for the database

        await proxy.up()
        back = time.monotonic()
        first = await api.call("GET", f"{api.tasks}/{task_id}")
        assert first.status_code == 200, first.text  # the very next request: no stale connection
        assert first.json()["title"] == "a task"  # nothing from the outage was written
        for _ in range(5):
            pair = await asyncio.gather(
                api.call("GET", api.tasks), api.call("PATCH", f"{api.tasks}/{task_id}", {"completed": True})
            )
            assert [r.status_code for r in pair] == [200, 200], [r.text for r in pair]
        assert (await api.call("GET", "/health/ready")).status_code == 200
        assert time.monotonic() - back < RECOVERED_WITHIN
    assert api.logs.count("app.errors", "database unavailable") == 5  # the API calls; /health/ready logs nothing
    assert db_password not in api.logs.text()


async def test_connections_the_server_severed_are_never_handed_to_a_request(
    proxy: TcpProxy, proxied_url: str, tmp_path: Path
) -> None:
    """Neon drops idle connections: every pooled one dies while idle, and the next requests still succeed."""
    async with serve(app_settings(proxied_url, tmp_path), proxy) as api:
        task_id = await api.create()
        for _ in range(3):
            before = proxy.forwarded
            warm = await asyncio.gather(*(api.call("GET", f"{api.tasks}/{task_id}") for _ in range(5)))
            assert [r.status_code for r in warm] == [200] * 5
            assert proxy.open_connections >= 2
            proxy.sever()
            for _ in range(3):
                response = await api.call("GET", f"{api.tasks}/{task_id}")
                assert response.status_code == 200, response.text
            burst = await asyncio.gather(*(api.call("GET", api.tasks) for _ in range(5)))
            assert [r.status_code for r in burst] == [200] * 5
            assert proxy.forwarded > before  # the dead connections were replaced by new ones


async def test_manage_py_serve_answers_503_while_the_database_is_away_and_recovers(
    proxy: TcpProxy, proxied_url: str, db_password: str, tmp_path: Path
) -> None:
    """The deployed shape: ``manage.py serve`` in its own process, with the default settings."""
    env = serve_env(proxied_url, tmp_path / "data", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    log_path = tmp_path / "serve.log"
    server = ServeProcess(env, log_path)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:

            async def healthy() -> bool:
                assert server.process.poll() is None, server.output()
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get("/health")).status_code == 200
                return False

            await wait_for(healthy, "manage.py serve to answer /health", seconds=30)
            api = Api(client, app_settings(proxied_url, tmp_path))
            task_id = await api.create()

            for outage in ("refused", "blackholed"):
                await cut_off(proxy, outage)
                burst = await asyncio.gather(
                    api.timed("GET", f"{api.tasks}/{task_id}"), api.timed("GET", "/health/ready")
                )
                for response, elapsed in burst:
                    assert_unavailable(response, elapsed, db_password)
                assert (await client.get("/health")).status_code == 200
                await proxy.up()
                back = time.monotonic()
                for _ in range(3):
                    response = await api.call("GET", f"{api.tasks}/{task_id}")
                    assert response.status_code == 200, response.text
                assert time.monotonic() - back < RECOVERED_WITHIN
    finally:
        await asyncio.to_thread(server.stop)
    output = log_path.read_text()
    assert "database unavailable" in output
    assert db_password not in output


# -- pool exhaustion and statement timeout ---------------------------------------------------------------


async def test_a_burst_on_an_exhausted_pool_waits_the_pool_timeout_then_gets_503_busy(
    proxy: TcpProxy, proxied_url: str, postgres_database: str, db_password: str, tmp_path: Path
) -> None:
    """One connection, held by a write blocked on a row lock: the others wait DB_POOL_TIMEOUT, then a 503 that
    says the server is busy (not that the database is away); readiness does not queue behind them."""
    options = DatabaseLimits(pool_size=1, max_overflow=0, pool_timeout=0.5, statement_timeout=0)
    async with serve(app_settings(proxied_url, tmp_path, options), proxy) as api:
        task_id = await api.create()
        async with asyncio.timeout(20), row_locked(postgres_database, task_id):
            blocked = asyncio.create_task(api.call("PATCH", f"{api.tasks}/{task_id}", {"title": "after the lock"}))
            await wait_for(lambda: _has_lock_waiter(postgres_database), "the PATCH to wait for the row lock")

            burst = await asyncio.gather(
                *(api.timed("GET", api.tasks) for _ in range(6)), api.timed("GET", "/health/ready")
            )
            for response, elapsed in burst[:-1]:
                assert response.status_code == 503, response.text
                body = response.json()
                assert body["type"].endswith(":server-busy")
                assert "busy" in body["detail"]
                assert response.headers["retry-after"].isdigit()
                assert options.pool_timeout * 0.9 <= elapsed < UNAVAILABLE_WITHIN  # it waited for a connection
                assert db_password not in response.text
            ready, _ = burst[-1]
            assert ready.status_code == 200  # the database is fine: only the pool is busy
            assert not blocked.done()
        # The lock is released: the held request finishes, and the pool serves again.
        patched = await asyncio.wait_for(blocked, 10)
        assert patched.status_code == 200, patched.text
        assert patched.json()["title"] == "after the lock"
        assert (await api.call("GET", api.tasks)).status_code == 200
    assert api.logs.count("app.errors", "database pool exhausted") == 6
    assert api.logs.count("app.errors", "database unavailable") == 0  # the log does not blame the database


async def _has_lock_waiter(database_url: str) -> bool:
    return await lock_waiters(database_url) >= 1


async def test_statement_timeout_turns_a_stuck_statement_into_a_503(
    proxy: TcpProxy, proxied_url: str, postgres_database: str, db_password: str, tmp_path: Path
) -> None:
    """PostgreSQL cancels the blocked UPDATE after DB_STATEMENT_TIMEOUT (SQLSTATE 57014): 503, not 500."""
    options = DatabaseLimits(pool_size=1, max_overflow=0, statement_timeout=0.3)
    async with serve(app_settings(proxied_url, tmp_path, options), proxy) as api:
        task_id = await api.create()
        async with asyncio.timeout(20), row_locked(postgres_database, task_id):
            for method, body in (("PATCH", {"title": "stuck"}), ("DELETE", None)):
                response, elapsed = await api.timed(method, f"{api.tasks}/{task_id}", body)
                assert_unavailable(response, elapsed, db_password)
                assert elapsed >= options.statement_timeout
            # Reads do not wait for row locks; the one connection is still healthy.
            assert (await api.call("GET", f"{api.tasks}/{task_id}")).json()["title"] == "a task"
        # The lock is gone: the cancelled statements left nothing behind, and writes work again.
        assert (await api.call("GET", f"{api.tasks}/{task_id}")).json()["title"] == "a task"
        response = await api.call("PATCH", f"{api.tasks}/{task_id}", {"title": "unstuck"})
        assert response.status_code == 200, response.text
    assert api.logs.count("app.errors", "[57014]") == 2


async def test_statement_timeout_reaches_postgresql_and_the_url_can_override_it(postgres_database: str) -> None:
    async def shown(url: str, options: DatabaseLimits) -> str:
        """What a request's connection says, checked against what the tools' engine says."""
        database = open_database(url, options)
        engine = create_engine(url, options)
        try:
            row = await database.fetchrow(Query(select(func.current_setting("statement_timeout").label("s"))), {})
            assert row is not None
            async with engine.connect() as connection:
                assert (await connection.execute(text("SHOW statement_timeout"))).scalar() == row["s"]
            return str(row["s"])
        finally:
            await database.close()
            await engine.dispose()

    assert await shown(postgres_database, DatabaseLimits()) == "10s"
    assert await shown(postgres_database, DatabaseLimits(statement_timeout=0.25)) == "250ms"
    assert await shown(postgres_database, DatabaseLimits(statement_timeout=0)) == "0"
    # DATABASE_URL's own ``options=-c statement_timeout=…`` wins over DB_STATEMENT_TIMEOUT.
    in_url = f"{postgres_database}?options=-c%20statement_timeout%3D1234"
    assert await shown(in_url, DatabaseLimits(statement_timeout=5)) == "1234ms"
    # Tools (migrations) run without a statement timeout.
    engine = create_engine(postgres_database)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SHOW statement_timeout"))).scalar() == "0"
    finally:
        await engine.dispose()


async def test_old_connections_are_replaced_and_young_ones_kept(proxy: TcpProxy, proxied_url: str) -> None:
    """DB_POOL_RECYCLE: a pooled connection older than that is closed and replaced when next taken."""
    database = open_database(proxied_url, DatabaseLimits(pool_recycle=1))
    assert isinstance(database, PostgresDatabase)
    backend = Query(select(func.pg_backend_pid().label("pid")))

    async def pid() -> int:
        row = await database.fetchrow(backend, {})
        assert row is not None
        return int(row["pid"])

    async def gone(backend_pid: int) -> bool:
        connection = await asyncpg.connect(direct_dsn(proxied_url), timeout=5)
        try:
            return not await connection.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend_pid)
        finally:
            await connection.close()

    try:
        first = await pid()
        assert await pid() == first  # young: the same connection is reused
        await asyncio.sleep(1.1)  # let it age past DB_POOL_RECYCLE (a threshold, not a race)
        assert await pid() != first
        await wait_for(lambda: gone(first), "the old connection to be closed")
    finally:
        await database.close()


# -- cold start ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("waking", ["starting-up", "reset", "slow"])
async def test_the_first_request_after_a_cold_start_succeeds(
    waking: str, proxy: TcpProxy, proxied_url: str, tmp_path: Path
) -> None:
    """The first connection attempts fail (PostgreSQL's 57P03 "starting up", or a reset) or are slow;
    the connect is retried within DB_CONNECT_TIMEOUT and the request succeeds."""
    async with serve(app_settings(proxied_url, tmp_path), proxy) as api:
        if waking == "slow":
            proxy.delay_next(1, 0.5)
        else:
            proxy.reject_next(2, "starting-up" if waking == "starting-up" else "reset")
        assert proxy.accepted == 0  # nothing connected yet: this is the first request's connection
        response, elapsed = await api.timed("POST", api.tasks, {"title": "first"})
        assert response.status_code == 201, response.text
        assert elapsed < UNAVAILABLE_WITHIN
        if waking == "slow":
            assert elapsed >= 0.5
        else:
            assert proxy.rejected == 2
            assert api.logs.count("db.connections", "opened at attempt 3") == 1


async def test_the_first_request_succeeds_when_connections_were_refused_for_a_moment(
    proxy: TcpProxy, proxied_url: str, tmp_path: Path
) -> None:
    """Refused for real (nothing listens) until the app has tried twice, then the database is up."""
    async with serve(app_settings(proxied_url, tmp_path), proxy) as api:
        await proxy.refuse()
        request = asyncio.create_task(api.timed("POST", api.tasks, {"title": "first"}))

        async def refused_twice() -> bool:
            return api.logs.count("db.connections", "failed (ConnectionRefusedError)") >= 2

        await wait_for(refused_twice, "two refused connection attempts", seconds=UNAVAILABLE_WITHIN)
        await proxy.up()
        response, elapsed = await request
        assert response.status_code == 201, response.text
        assert elapsed < UNAVAILABLE_WITHIN


@pytest.mark.parametrize("how", ["starting-up", "reset"])
async def test_a_database_that_does_not_wake_in_time_is_a_503(
    how: str, proxy: TcpProxy, proxied_url: str, db_password: str, tmp_path: Path
) -> None:
    async with serve(app_settings(proxied_url, tmp_path), proxy) as api:
        proxy.reject_next(1000, "starting-up" if how == "starting-up" else "reset")
        response, elapsed = await api.timed("GET", api.tasks)
        assert_unavailable(response, elapsed, db_password)
        assert proxy.rejected >= 3  # retried, with backoff, within the budget


# -- connections dropped under load, readiness under load -------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
async def test_connections_terminated_under_load_end_in_answers_or_503s_never_a_plain_500(
    workers: int, postgres_database: str, tmp_path: Path
) -> None:
    """``pg_terminate_backend`` on every connection of the app, four times a second, while 16 clients read and
    write: each answer is the right one, or a 503 problem with Retry-After (a statement whose connection was
    killed under it twice running); never a 500, never plain text, never a trace in the log."""
    app_name = f"drop-{uuid.uuid4().hex[:8]}"
    url = f"{postgres_database}?application_name={app_name}"
    env = serve_env(url, tmp_path / "data", RATE_LIMIT="off")
    process = ServeProcess(env, tmp_path / "serve.log", "--workers", str(workers))
    admin = await asyncpg.connect(direct_dsn(postgres_database), timeout=5)
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    try:
        await asyncio.to_thread(process.wait_until_healthy)
        user = uuid.uuid4().hex
        headers = bearer(user)
        tasks = f"{process.url}/api/{user}/tasks"

        async with httpx.AsyncClient(timeout=30, headers=headers) as http:  # before the fault starts
            seeded = [(await http.post(tasks, json={"title": f"seed {n}"})).json()["id"] for n in range(16)]

        async def client(n: int) -> None:
            task_id = seeded[n]
            async with httpx.AsyncClient(timeout=30, headers=headers) as http:
                while not stop.is_set():
                    for method, path, body in (
                        ("GET", tasks, None),
                        ("GET", f"{tasks}/{task_id}", None),
                        ("PATCH", f"{tasks}/{task_id}", {"title": "x"}),
                        ("POST", tasks, {"title": "y"}),
                    ):
                        response = await http.request(method, path, json=body)
                        outcomes[_judge(response)] += 1

        async def killer() -> int:
            killed = 0
            while not stop.is_set():
                killed += await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                    app_name,
                )
                await asyncio.sleep(0.25)  # the pace of the fault under test, not a wait for a condition
            return killed

        clients = [asyncio.create_task(client(n)) for n in range(16)]
        killing = asyncio.create_task(killer())
        try:
            await wait_for(lambda: _enough(outcomes, 400), "400 answers under the fault", seconds=60)
        finally:
            stop.set()
            killed = await asyncio.wait_for(killing, 10)
            await asyncio.wait_for(asyncio.gather(*clients), 30)
        assert killed >= 10
        assert set(outcomes) <= {"ok", "503 problem"}, outcomes
        assert outcomes["ok"] > 0
        async with httpx.AsyncClient(timeout=10, headers=headers) as http:  # and it serves normally after
            assert (await http.get(tasks)).status_code == 200
    finally:
        stop.set()
        await admin.close()
        process.stop()
    assert "Traceback" not in process.output()


def _judge(response: httpx.Response) -> str:
    if response.is_success:
        return "ok"
    if (
        response.status_code == 503
        and response.headers.get("content-type") == "application/problem+json"
        and response.headers.get("retry-after", "").isdigit()
    ):
        return "503 problem"
    return f"{response.status_code} {response.headers.get('content-type')}: {response.text[:100]}"


async def _enough(outcomes: Counter[str], count: int) -> bool:
    return sum(outcomes.values()) >= count


async def test_readiness_answers_200_under_200_concurrent_requests(postgres_database: str, tmp_path: Path) -> None:
    """The pool is busy, the database is fine: /health/ready does not queue behind the requests."""
    env = serve_env(postgres_database, tmp_path / "data", RATE_LIMIT="off")
    process = ServeProcess(env, tmp_path / "serve.log")
    stop = asyncio.Event()
    try:
        await asyncio.to_thread(process.wait_until_healthy)
        user = uuid.uuid4().hex
        headers = bearer(user)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        answered = 0

        async def hammer(http: httpx.AsyncClient) -> None:
            nonlocal answered
            while not stop.is_set():
                assert (await http.get(f"{process.url}/api/{user}/tasks")).status_code == 200
                answered += 1

        async with httpx.AsyncClient(timeout=30, headers=headers, limits=limits) as http:
            load = [asyncio.create_task(hammer(http)) for _ in range(200)]
            try:
                await wait_for(lambda: _count_at_least(lambda: answered, 400), "the load to get going", seconds=60)
                async with httpx.AsyncClient(timeout=10) as probe:
                    for _ in range(50):
                        started = time.monotonic()
                        ready = await probe.get(f"{process.url}/health/ready")
                        assert ready.status_code == 200, ready.text
                        assert time.monotonic() - started < 1.5
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*load), 60)
    finally:
        process.stop()


async def _count_at_least(count: Callable[[], int], target: int) -> bool:
    return count() >= target
