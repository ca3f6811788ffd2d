"""A database that refuses our configuration, or lacks our schema, is named: in ``check``, once in the log, and
as a 503 problem to clients (never a 500, never a traceback, never the password).

The wrong password needs a server that asks for one: a throwaway cluster (``tests/clusters.py``) with
``scram-sha-256`` for every user but its superuser. The schema cases run on both backends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from app.asgi import build_app
from app.auth.tokens import issue_token
from config.settings import NAMES, Settings
from db.schema_migrations import upgrade
from tests.support.clusters import Cluster, throwaway_cluster
from tests.support.postgres import admin
from tests.support.servers import manage
from tests.support.tokens import TEST_SECRET

PASSWORD = "right-horse-battery-staple"
WRONG = "wrong-password-hunter2"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster(
        hba=[
            # trust for the superuser and for the role that does not exist (with a password asked, PostgreSQL
            # would say only "password authentication failed"), a password for every other user
            "host all postgres,nobody_here 127.0.0.1/32 trust",
            "host all all 127.0.0.1/32 scram-sha-256",
        ],
        settings={"password_encryption": "'scram-sha-256'"},
    ) as running:
        asyncio.run(_admin(running, f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"))
        asyncio.run(_admin(running, "CREATE DATABASE todo OWNER app"))
        yield running


async def _admin(cluster: Cluster, sql: str) -> None:
    connection = await asyncpg.connect(cluster.url(), timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


CASES: dict[str, tuple[Callable[[Cluster], str], str]] = {
    "wrong password": (
        lambda c: c.url("todo", user="app", password=WRONG),
        'password authentication failed for user "app"',
    ),
    "unknown role": (lambda c: c.url("todo", user="nobody_here"), 'role "nobody_here" does not exist'),
    "missing database": (
        lambda c: c.url("no_such_db", user="app", password=PASSWORD),
        'database "no_such_db" does not exist',
    ),
}


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    return {**os.environ, **dict.fromkeys(NAMES, ""), "DATA_DIR": str(tmp_path / "data"), **settings}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_prints_the_drivers_own_message(cluster: Cluster, tmp_path: Path, case: str) -> None:
    url, message = CASES[case]
    result = manage("check", env=cli_env(tmp_path, DATABASE_URL=url(cluster)))
    assert result.returncode == 1
    assert "database: cannot connect to postgresql+asyncpg://" in result.stderr
    assert message in result.stderr
    assert WRONG not in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_check_passes_with_the_right_password(cluster: Cluster, tmp_path: Path) -> None:
    url = cluster.url("todo", user="app", password=PASSWORD)
    result = manage("check", env=cli_env(tmp_path, DATABASE_URL=url))
    assert "database: ok" in result.stdout, result.stderr
    assert "migrations: 5 pending" in result.stderr  # reached the database: only the schema is missing


@pytest.mark.parametrize("case", sorted(CASES))
async def test_clients_get_a_503_and_the_log_names_the_cause_once(
    cluster: Cluster, tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    url, message = CASES[case]
    settings = Settings(app_env="test", data_dir=tmp_path, database_url=url(cluster), better_auth_secret=TEST_SECRET)
    user = "someone"
    headers = {"Authorization": f"Bearer {issue_token(settings, user, timedelta(minutes=5))}"}
    caplog.set_level(logging.DEBUG)
    async with AsyncTestClient(app=build_app(settings)) as client:
        for _ in range(3):
            response = await client.get(f"/api/{user}/tasks", headers=headers)
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == "5"
            assert response.json()["detail"] == "The database is unavailable; retry shortly."
            created = await client.post(f"/api/{user}/tasks", json={"title": "x"}, headers=headers)
            assert created.status_code == 503
    named = [r for r in caplog.records if message in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(named) == 1, caplog.text
    assert named[0].levelno == logging.ERROR
    assert named[0].getMessage().startswith("the database refuses our configuration: ")
    assert named[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info], caplog.text  # no traceback anywhere
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == named  # one line, not one per request
    assert WRONG not in caplog.text
    assert PASSWORD not in caplog.text


def test_check_names_a_missing_sqlite_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    result = manage("check", env=cli_env(tmp_path, DATABASE_URL=f"sqlite:///{missing / 'todo.db'}"))
    assert result.returncode == 1
    assert f"database: the folder {missing} of the SQLite file does not exist" in result.stderr
    assert not missing.exists()  # check reports; it does not create


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_check_names_a_read_only_sqlite_folder(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = manage("check", env=cli_env(tmp_path, DATABASE_URL=f"sqlite:///{folder / 'todo.db'}"))
    finally:
        folder.chmod(0o700)
    assert result.returncode == 1
    assert f"database: the folder {folder} of the SQLite file is not writable" in result.stderr


# -- the schema is behind ---------------------------------------------------------------------------------------


@pytest.fixture
def empty_database(request: pytest.FixtureRequest, tmp_path: Path, postgres_server: str) -> Iterator[str]:
    """A database with no tables at all (parametrised: SQLite and PostgreSQL)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"todo_empty_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize("empty_database", ["sqlite", "postgres"], indirect=True)
async def test_an_unmigrated_schema_is_not_ready_and_named_in_the_log(
    empty_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(app_env="test", data_dir=tmp_path, database_url=empty_database, better_auth_secret=TEST_SECRET)
    headers = {"Authorization": f"Bearer {issue_token(settings, 'u1', timedelta(minutes=5))}"}
    caplog.set_level(logging.INFO)
    async with AsyncTestClient(app=build_app(settings)) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["detail"] == (
            "The database schema is behind: 5 migration(s) not applied (0001, 0002, 0003, 0004, 0005); "
            "run `uv run manage.py migrate`."
        )
        for _ in range(2):
            response = await client.get("/api/u1/tasks", headers=headers)
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
        named = [r for r in caplog.records if "the database schema is not migrated" in r.getMessage()]
        assert len(named) == 1, caplog.text
        assert "tasks" in named[0].getMessage()  # "no such table: tasks" / 'relation "tasks" does not exist'
        assert "run `uv run manage.py migrate`" in named[0].getMessage()
        assert not [r for r in caplog.records if r.exc_info], caplog.text

        await asyncio.to_thread(upgrade, empty_database)
        deadline = time.monotonic() + 15
        while (ready := await client.get("/health/ready")).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            await asyncio.sleep(0.2)  # polling readiness, bounded by the deadline
        assert ready.json() == {"status": "ok"}
        assert (await client.get("/api/u1/tasks", headers=headers)).status_code == 200


def test_production_serve_refuses_pending_migrations(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path,
        APP_ENV="production",
        BETTER_AUTH_SECRET=TEST_SECRET,
        DATABASE_URL=f"sqlite:///{tmp_path / 'unmigrated.db'}",
    )
    result = manage("serve", "--port", "1", env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: 5 migration(s) not applied (0001, 0002, 0003, 0004, 0005); run `uv run manage.py migrate` before "
        "serving (APP_ENV=production)"
    )
    assert "Serving on" not in result.stdout
