"""``python manage.py`` as a developer runs it: real processes, a real uvicorn server, real HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import text

from db.engine import create_engine
from db.idempotency import KEY_LIFETIME
from tests.support.idempotency_keys import insert_key
from tests.support.ports import free_port
from tests.support.servers import Servers, manage

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("check", "createtoken", "makemigrations", "migrate", "openapi", "purgekeys", "purgetrash", "serve")


def test_help_lists_every_command_with_a_description(fresh_env: dict[str, str]) -> None:
    result = manage("--help", env=fresh_env)
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ") and line.split()}
    for command in COMMANDS:
        assert command in lines
        assert len(lines[command].split()) > 2  # a description follows the name
        assert "..." not in lines[command]


def test_fresh_clone_check_migrate_check(fresh_env: dict[str, str]) -> None:
    before = manage("check", env=fresh_env)
    assert before.returncode == 1
    assert "settings: ok" in before.stdout
    assert "database: ok" in before.stdout
    assert "5 pending (0001, 0002, 0003, 0004, 0005)" in before.stderr

    migrated = manage("migrate", env=fresh_env)
    assert migrated.returncode == 0, migrated.stderr
    assert (Path(fresh_env["DATA_DIR"]) / "todo.db").exists()

    after = manage("check", env=fresh_env)
    assert after.returncode == 0, after.stderr
    assert "migrations: up to date" in after.stdout

    assert manage("migrate", env=fresh_env).returncode == 0  # idempotent
    nothing = manage("makemigrations", "-m", "no change", env=fresh_env)
    assert nothing.returncode == 0
    assert "No changes detected." in nothing.stdout


def test_makemigrations_refuses_an_outdated_database(fresh_env: dict[str, str]) -> None:
    result = manage("makemigrations", "-m", "x", env=fresh_env)
    assert result.returncode == 1
    assert "apply pending migrations first" in result.stderr
    assert not list((ROOT / "db" / "migrations" / "versions").glob("*_x.py"))


def test_check_reports_an_unreachable_database(fresh_env: dict[str, str]) -> None:
    port = free_port()
    result = manage("check", env={**fresh_env, "DATABASE_URL": f"postgresql://u:hunter2@127.0.0.1:{port}/db"})
    assert result.returncode == 1
    assert "database: cannot connect" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


MISSING_SECRET = "error: BETTER_AUTH_SECRET is required when APP_ENV=production"


@pytest.mark.parametrize(
    ("command", "env_overrides", "expected"),
    [
        ("check", {"APP_ENV": "production"}, MISSING_SECRET),
        ("migrate", {"APP_ENV": "production"}, MISSING_SECRET),
        ("createtoken", {"APP_ENV": "production"}, MISSING_SECRET),
        ("serve", {"APP_ENV": "production"}, MISSING_SECRET),
        (
            "serve",
            {"APP_ENV": "production", "BETTER_AUTH_SECRET": "short"},
            "error: BETTER_AUTH_SECRET must be at least 32 bytes when APP_ENV=production",
        ),
        (
            "serve",
            {"DATABASE_URL": "mysql://x/y"},
            "error: DATABASE_URL: unsupported database 'mysql'; use sqlite://, postgres:// or postgresql://",
        ),
    ],
)
def test_bad_settings_stop_with_one_clear_line(
    fresh_env: dict[str, str], command: str, env_overrides: dict[str, str], expected: str
) -> None:
    args = [command, "someone"] if command == "createtoken" else [command]
    result = manage(*args, env={**fresh_env, **env_overrides})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [expected]


def test_createtoken_signs_with_the_development_secret(fresh_env: dict[str, str]) -> None:
    result = manage("createtoken", "aPpFXN7Svpu4svXqM5NQVR0s0LBvv84X", "--expires", "15m", env=fresh_env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    secret = (Path(fresh_env["DATA_DIR"]) / "dev-secret").read_text().strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["sub"] == "aPpFXN7Svpu4svXqM5NQVR0s0LBvv84X"
    assert 895 <= claims["exp"] - time.time() <= 905


def test_createtoken_uses_the_configured_secret_and_claims(fresh_env: dict[str, str]) -> None:
    secret = "configured-secret-" * 3
    env = {
        **fresh_env,
        "BETTER_AUTH_SECRET": secret,
        "JWT_ISSUER": "iss.example",
        "JWT_AUDIENCE": "aud.example",
    }
    token = manage("createtoken", "u1", env=env).stdout.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"], issuer="iss.example", audience="aud.example")
    assert claims["sub"] == "u1"


def test_createtoken_refuses_in_jwks_mode(fresh_env: dict[str, str]) -> None:
    """The API would refuse an HS256 token there, so printing one would only mislead."""
    env = {
        **fresh_env,
        "BETTER_AUTH_SECRET": "configured-secret-" * 3,
        "JWT_JWKS_URL": "http://localhost:3000/api/auth/jwks",
    }
    result = manage("createtoken", "u1", env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: JWT_JWKS_URL is set, so the API accepts only tokens signed by Better Auth's keys and refuses "
        "HS256 tokens; get one from the frontend (authClient.token()) instead"
    ]


@pytest.mark.parametrize("expires", ["0h", "1y", "-1h", "soon", "1.5h"])
def test_createtoken_rejects_bad_lifetimes(fresh_env: dict[str, str], expires: str) -> None:
    result = manage("createtoken", "u1", "--expires", expires, env=fresh_env)
    assert result.returncode == 2
    assert "--expires" in result.stderr


def test_serve_is_the_whole_api_over_real_http(env: dict[str, str], servers: Servers) -> None:
    """migrate → serve → createtoken → every route, as a new user would do it with curl."""
    assert manage("migrate", env=env).returncode == 0
    user = f"user-{os.getpid()}-{time.monotonic_ns()}"
    token = manage("createtoken", user, env=env).stdout.strip()
    server = servers.start(env)
    server.wait_until_healthy()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert "server" not in http.get("/health").headers  # no version banner
        assert http.get("/health/ready").status_code == 200
        assert http.get("/docs").status_code == 200
        assert http.get("/schema/openapi.json").json()["openapi"].startswith("3.1")
        assert http.get(f"/api/{user}/tasks").status_code == 401
        assert http.get("/api/someone-else/tasks", headers=auth).status_code == 403
        created = http.post(f"/api/{user}/tasks", json={"title": "over the wire"}, headers=auth)
        assert created.status_code == 201
        location = created.headers["location"]
        assert http.get(location, headers=auth).json()["title"] == "over the wire"
        assert http.put(location, json={"description": "put"}, headers=auth).json()["description"] == "put"
        assert http.patch(location, json={"title": "patched"}, headers=auth).json()["title"] == "patched"
        assert http.patch(f"{location}/complete", headers=auth).json()["completed"] is True
        assert [t["id"] for t in http.get(f"/api/{user}/tasks", headers=auth).json()] == [created.json()["id"]]
        assert http.post(f"/api/{user}/tasks", content=b"{", headers=auth).status_code == 400
        assert http.delete(location, headers=auth).status_code == 204
        assert http.get(location, headers=auth).status_code == 404
        http.get(f"/api/{user}/tasks?token={token}")  # a token in the URL must not reach the access log
    output = server.stop()
    assert "Application shutdown complete." in output  # SIGTERM: a graceful stop (uvicorn re-raises it)
    assert token not in output
    assert "GET /api/{user_id}/tasks 401" in output  # the access line names the route, never the query


def test_serve_warns_about_pending_migrations(fresh_env: dict[str, str], servers: Servers) -> None:
    server = servers.start(fresh_env)
    server.wait_until_healthy()
    output = server.stop()
    pending = "5 migration(s) not applied (0001, 0002, 0003, 0004, 0005)"
    assert f"warning: {pending}; run `uv run manage.py migrate`" in output


def test_serve_with_two_workers_shares_one_development_secret(env: dict[str, str], servers: Servers) -> None:
    assert manage("migrate", env=env).returncode == 0
    server = servers.start(env, "--workers", "2")
    server.wait_until_healthy()
    token = manage("createtoken", "u-workers", env=env).stdout.strip()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        # new connections spread over both workers; every one must accept the same token
        statuses = {
            http.get(
                "/api/u-workers/tasks", headers={"Authorization": f"Bearer {token}", "Connection": "close"}
            ).status_code
            for _ in range(20)
        }
    assert statuses == {200}


def test_purgekeys_deletes_every_users_expired_keys(env: dict[str, str], database_url: str) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex}", f"bob-{uuid.uuid4().hex}"

    async def setup_and_read(users: tuple[str, ...], insert: bool) -> set[tuple[str, str]]:
        engine = create_engine(database_url)
        try:
            for user in users if insert else ():
                await insert_key(engine, user, "old", age=KEY_LIFETIME + timedelta(minutes=1))
                await insert_key(engine, user, "new", age=KEY_LIFETIME - timedelta(minutes=1))
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text("SELECT user_id, key FROM idempotency_keys WHERE user_id IN (:a, :b)"), {"a": alice, "b": bob}
                )
                return {(row[0], row[1]) for row in rows}
        finally:
            await engine.dispose()

    assert len(asyncio.run(setup_and_read((alice, bob), insert=True))) == 4
    result = manage("purgekeys", env=env)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"Deleted [1-9][0-9]* expired idempotency key\(s\)\.\n", result.stdout)
    assert asyncio.run(setup_and_read((), insert=False)) == {(alice, "new"), (bob, "new")}
