"""Shared fixtures: a migrated database per backend (SQLite and PostgreSQL), the app, HTTP clients, the
environment of a ``manage.py`` subprocess (``fresh_env``, ``env``) and a Redis key prefix of a test's own.
Helpers that are not fixtures live in ``tests/support``.

Every database-backed test runs once per backend through the parametrised ``database_url`` fixture.
PostgreSQL tests use a throwaway database created for the run on ``TEST_POSTGRES_URL`` (default: the
local server). Outside CI a missing server skips them; with ``CI=true`` it fails the run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import redis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import make_url

from app.asgi import build_app
from app.auth.tokens import issue_token
from config.settings import DatabaseLimits, Settings
from db.database import Database, open_database
from db.schema_migrations import upgrade
from tests.support.environment import IN_CI, clean_env
from tests.support.postgres import admin, postgres_admin_url
from tests.support.redis_server import delete_prefix, ping, redis_test_url
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import TEST_SECRET


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL server (fails in CI when there is none; skips elsewhere)."""
    try:
        asyncio.run(admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {make_url(postgres_admin_url()).render_as_string()} is unreachable: {exc!r}"
        if IN_CI:
            pytest.fail(message + " (CI must run the PostgreSQL tests)")
        pytest.skip(message)
    return postgres_admin_url()


@pytest.fixture(scope="session")
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run, dropped afterwards."""
    name = f"todo_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database file for this test run."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'todo.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each database-backed test runs on SQLite and on PostgreSQL."""
    fixture = "sqlite_database" if request.param == "sqlite" else "postgres_database"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for one test: its database, a temporary data folder, a fixed secret."""
    return Settings(
        app_env="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        better_auth_secret=TEST_SECRET,
        cors_origins=("https://app.example.com",),
    )


@pytest.fixture
def app(settings: Settings) -> Litestar:
    """The application, as ``manage.py serve`` builds it."""
    return build_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An HTTP client talking to the app through its full ASGI stack (middleware, lifespan, errors)."""
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture
def new_user() -> Callable[[], str]:
    """Fresh, unique user ids shaped like Better Auth's, so tests never see each other's rows."""
    return lambda: uuid.uuid4().hex


@pytest.fixture
def auth(settings: Settings) -> Callable[..., dict[str, str]]:
    """``Authorization`` headers for a user, with a valid token signed by the test secret."""

    def headers(user_id: str, expires_in: timedelta = timedelta(minutes=5)) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(settings, user_id, expires_in)}"}

    return headers


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The request path's database (``db.database``) on each backend, as the app opens it."""
    opened = open_database(database_url, DatabaseLimits())
    yield opened
    await opened.close()


@pytest.fixture
def fresh_env(tmp_path: Path) -> dict[str, str]:
    """Like a fresh clone: nothing configured, an empty data folder, the default SQLite database."""
    return clean_env(tmp_path / "fresh")


@pytest.fixture
def env(fresh_env: dict[str, str], database_url: str) -> dict[str, str]:
    """No secret configured (the development secret in DATA_DIR is used), on the test's database."""
    return {**fresh_env, "DATABASE_URL": database_url}


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis (fails in CI when there is none; skips elsewhere)."""
    url = redis_test_url()
    try:
        asyncio.run(ping(url))
    except (OSError, redis.RedisError) as exc:
        message = f"Redis at {url} is unreachable: {exc!r}"
        if IN_CI:
            pytest.fail(message + " (CI must run the Redis tests)")
        pytest.skip(message)
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"todo-backend-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    asyncio.run(delete_prefix(redis_url, prefix))


@pytest.fixture
async def proxy(postgres_database: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the test database's server, forwarding until a test says otherwise."""
    url = make_url(postgres_database)
    running = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    yield running
    await running.close()
