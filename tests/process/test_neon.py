"""Neon as it really is: TLS with ``sslmode=require``, PgBouncer in transaction mode, a separate URL for
migrations. A throwaway cluster with a self-signed certificate and a real PgBouncer, started by the tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.asgi import build_app
from app.errors import handle_unexpected
from config.settings import DatabaseLimits, Settings
from db.engine import create_engine
from db.url import PoolerMode
from tests.support.clusters import Cluster, PgBouncer, running_pgbouncer, self_signed_certificate, throwaway_cluster
from tests.support.servers import Servers, manage, serve_env
from tests.support.tokens import TEST_SECRET, bearer

# --- TLS for real ---------------------------------------------------------------------------------

APP_USER, APP_PASSWORD, APP_DATABASE = "neon_app", "s3cret-Pa55", "neondb"


@pytest.fixture(scope="module")
def certificate() -> tuple[bytes, bytes]:
    return self_signed_certificate("localhost")


@pytest.fixture(scope="module")
def tls_cluster(certificate: tuple[bytes, bytes]) -> Iterator[Cluster]:
    """A cluster like Neon's endpoint: TLS only, password (SCRAM) login, a self-signed certificate."""
    cert, key = certificate
    with throwaway_cluster(
        hba=[
            "hostssl all all 127.0.0.1/32 scram-sha-256",
            "hostnossl all all 0.0.0.0/0 reject",  # no connection without TLS
        ],
        settings={
            "ssl": "on",
            "ssl_cert_file": "'server.crt'",
            "ssl_key_file": "'server.key'",
            "password_encryption": "'scram-sha-256'",
        },
        files={"server.crt": cert, "server.key": key},
    ) as cluster:

        async def create_app_database() -> None:
            # The local socket (trust) is for this setup only; the app comes in over TCP and TLS.
            admin = await asyncpg.connect(host=str(cluster.directory), port=cluster.port, user="postgres")
            try:
                await admin.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
                await admin.execute(f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}")
            finally:
                await admin.close()

        asyncio.run(create_app_database())
        yield cluster


def neon_url(cluster: Cluster, query: str) -> str:
    """The URL as Neon's console prints it, pointing at the throwaway cluster."""
    return f"{cluster.url(APP_DATABASE, APP_USER, APP_PASSWORD)}?{query}"


async def tls_state(database_url: str) -> tuple[bool, str, str]:
    """(encrypted, TLS version, user) of a connection made by the app's engine."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text("SELECT ssl, version, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                )
            ).one()
    finally:
        await engine.dispose()
    return bool(row[0]), str(row[1]), str(row[2])


@pytest.mark.postgres
async def test_a_connection_without_tls_is_refused(tls_cluster: Cluster) -> None:
    with pytest.raises(DBAPIError, match="no encryption"):
        await tls_state(neon_url(tls_cluster, "sslmode=disable"))


@pytest.mark.postgres
@pytest.mark.parametrize("query", ["sslmode=require", "sslmode=require&channel_binding=require"])
async def test_neon_urls_connect_encrypted(tls_cluster: Cluster, query: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    encrypted, version, user = await tls_state(neon_url(tls_cluster, query))
    assert encrypted
    assert version.startswith("TLSv1.")
    assert user == APP_USER


@pytest.mark.postgres
async def test_require_does_not_verify_the_certificate_verify_full_does(
    tls_cluster: Cluster, certificate: tuple[bytes, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg's ``sslmode`` semantics, as the README states them."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    # require: encrypted, but the (self-signed, untrusted) certificate is not checked
    assert (await tls_state(neon_url(tls_cluster, "sslmode=require")))[0]
    # verify-full needs a CA to check against, and refuses without one
    with pytest.raises(DBAPIError, match="root certificate file"):
        await tls_state(neon_url(tls_cluster, "sslmode=verify-full"))
    # ...and against the wrong CA
    (tmp_path / "other.crt").write_bytes(self_signed_certificate("localhost")[0])
    monkeypatch.setenv("PGSSLROOTCERT", str(tmp_path / "other.crt"))
    with pytest.raises(OSError, match="certificate verify failed"):
        await tls_state(neon_url(tls_cluster, "sslmode=verify-full"))
    # with the right CA (Neon: the system's CA bundle) it connects, having checked certificate and host name
    (tmp_path / "root.crt").write_bytes(certificate[0])
    monkeypatch.setenv("PGSSLROOTCERT", str(tmp_path / "root.crt"))
    assert (await tls_state(neon_url(tls_cluster, "sslmode=verify-full")))[0]


@pytest.mark.postgres
async def test_the_whole_api_works_over_tls(tls_cluster: Cluster, tmp_path: Path) -> None:
    url = neon_url(tls_cluster, "sslmode=require&channel_binding=require")
    env = serve_env(url, tmp_path / "data")
    migrated = await asyncio.to_thread(manage, "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    checked = await asyncio.to_thread(manage, "check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "migrations: up to date" in checked.stdout
    assert APP_PASSWORD not in checked.stdout + checked.stderr + migrated.stdout + migrated.stderr

    settings = Settings(app_env="test", data_dir=tmp_path, database_url=url, better_auth_secret=TEST_SECRET)
    user = uuid.uuid4().hex
    async with AsyncTestClient(app=build_app(settings)) as client:
        client.headers.update(bearer(user))
        assert (await client.get("/health/ready")).status_code == 200
        await exercise_api(client, user)


async def exercise_api(http: httpx.AsyncClient, user: str) -> None:
    """Every route once, checking each answer: what a client does with its tasks."""
    tasks = f"/api/{user}/tasks"
    created = []
    for i in range(3):
        body = {"title": f"task {i}", "tags": ["Home", f"t{i}"], "priority": "high", "due_date": f"2030-05-0{i + 1}"}
        response = await http.post(tasks, json=body)
        assert response.status_code == 201, response.text
        created.append(response.json())
    location = f"{tasks}/{created[0]['id']}"
    listed = await http.get(tasks, params={"tag": "home", "sort": "due_date", "limit": 2})
    assert listed.status_code == 200, listed.text
    assert [t["title"] for t in listed.json()] == ["task 0", "task 1"]
    assert listed.headers["x-total-count"] == "3"
    page_two = await http.get(listed.links["next"]["url"])
    assert [t["title"] for t in page_two.json()] == ["task 2"]
    assert (await http.get(tasks, params={"q": "TASK 1"})).json()[0]["title"] == "task 1"
    assert (await http.get(location)).json()["title"] == "task 0"
    assert (await http.put(location, json={"description": "put"})).json()["description"] == "put"
    assert (await http.patch(location, json={"title": "patched"})).json()["title"] == "patched"
    assert (await http.patch(f"{location}/complete")).json()["completed"] is True
    assert (await http.get(tasks, params={"status": "completed"})).json()[0]["title"] == "patched"
    assert (await http.delete(location)).status_code == 204
    assert (await http.get(location)).status_code == 404
    assert (await http.get(tasks)).headers["x-total-count"] == "2"


# --- PgBouncer in transaction mode ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pgbouncer(postgres_server: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the test server, with fewer server connections than clients."""
    with running_pgbouncer(postgres_server, pool_mode="transaction", pool_size=4) as bouncer:
        yield bouncer


@pytest.fixture
def empty_database(postgres_server: str) -> Iterator[str]:
    """A new database without tables on the test server (its direct URL), dropped afterwards."""
    name = f"todo_bouncer_{uuid.uuid4().hex[:12]}"
    admin = make_url(postgres_server).set(drivername="postgresql").render_as_string(hide_password=False)

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def database_name(url: str) -> str:
    return make_url(url).database or ""


async def transaction_load(database_url: str, pooler: PoolerMode, clients: int = 16, rounds: int = 25) -> list[str]:
    """Concurrent transactions through the app's engine; the errors they met."""
    engine = create_engine(database_url, pooler=pooler)
    errors: list[str] = []

    async def client(n: int) -> None:
        for i in range(rounds):
            try:
                async with engine.begin() as connection:
                    await connection.execute(text("SELECT CAST(:n AS integer) + 1"), {"n": n})
                    await connection.execute(text("SELECT relname FROM pg_class WHERE relname = :r"), {"r": f"r{i}"})
            except DBAPIError as exc:
                errors.append(str(exc.orig))

    try:
        await asyncio.gather(*(client(n) for n in range(clients)))
    finally:
        await engine.dispose()
    return errors


@pytest.mark.postgres
async def test_without_the_pooler_settings_pgbouncer_breaks_prepared_statements(
    pgbouncer: PgBouncer, empty_database: str
) -> None:
    """The control: proves the PgBouncer here really is in transaction mode and the settings matter."""
    through_bouncer = pgbouncer.url(database_name(empty_database))
    errors = await transaction_load(through_bouncer, "none")
    assert errors
    assert all("prepared statement" in error for error in errors), errors[:3]
    assert await transaction_load(through_bouncer, "pgbouncer") == []


@pytest.mark.postgres
async def test_the_whole_api_under_load_through_pgbouncer_with_direct_migrations(
    pgbouncer: PgBouncer, empty_database: str, servers: Servers, tmp_path: Path
) -> None:
    """Neon's recommended setup: the app through the pooler, migrations on the direct host."""
    env = serve_env(
        pgbouncer.url(database_name(empty_database)),
        tmp_path / "data",
        DATABASE_POOLER="pgbouncer",
        MIGRATIONS_DATABASE_URL=empty_database,
        LOG_LEVEL="WARNING",
    )
    logins = pgbouncer.log().count("login attempt")
    migrated = await asyncio.to_thread(manage, "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f":{make_url(empty_database).port or 5432}/" in migrated.stderr  # reported: the direct URL
    assert pgbouncer.log().count("login attempt") == logins  # nothing of the migration went through PgBouncer
    checked = await asyncio.to_thread(manage, "check", env=env)  # through PgBouncer: the migrations are there
    assert checked.returncode == 0, checked.stderr
    assert pgbouncer.log().count("login attempt") > logins

    server = servers.start(env, "--workers", "2")
    await asyncio.to_thread(server.wait_until_healthy)
    users = [uuid.uuid4().hex for _ in range(12)]

    async def one_user(user: str) -> None:
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(user), timeout=60) as http:
            for _ in range(2):
                await exercise_api(http, user)
                for task in (await http.get(f"/api/{user}/tasks")).json():
                    assert (await http.delete(f"/api/{user}/tasks/{task['id']}")).status_code == 204

    await asyncio.gather(*(one_user(user) for user in users))
    assert "prepared statement" not in server.output()


@pytest.mark.postgres
async def test_the_statement_timeout_holds_through_pgbouncer(pgbouncer: PgBouncer, empty_database: str) -> None:
    """PgBouncer refuses a ``statement_timeout`` startup parameter, so behind it the driver cancels instead.

    Sending it as PostgreSQL's own setting made every connection through PgBouncer fail; this proves both that
    connections work and that a stuck statement still ends after DB_STATEMENT_TIMEOUT as a 503.
    """
    engine = create_engine(
        pgbouncer.url(database_name(empty_database)), DatabaseLimits(statement_timeout=0.3), pooler="pgbouncer"
    )
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Exception) as stuck:  # noqa: PT011 - whatever the driver raises, mapped below
            async with engine.connect() as connection:
                await connection.execute(text("SELECT pg_sleep(5)"))
        assert loop.time() - started < 2
        response = handle_unexpected(None, stuck.value)  # type: ignore[arg-type]
        assert response.status_code == 503
        async with engine.connect() as connection:  # the pool is still usable afterwards
            assert (await connection.execute(text("SELECT 2"))).scalar() == 2
    finally:
        await engine.dispose()
