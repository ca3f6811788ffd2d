"""``python manage.py`` as a developer runs it: real processes, a real uvicorn server, real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("check", "createtoken", "makemigrations", "migrate", "serve")


def manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Every setting, set empty: empty means "unset", and a value in the environment beats a developer's .env
# (which manage.py would otherwise load from the project root).
UNSET_SETTINGS = dict.fromkeys(
    [
        "APP_ENV",
        "DATABASE_URL",
        "BETTER_AUTH_SECRET",
        "JWT_USER_CLAIM",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "JWT_LEEWAY",
        "JWT_JWKS_URL",
        "CORS_ORIGINS",
        "LOG_LEVEL",
        "MAX_BODY_BYTES",
        "RATE_LIMIT",
        "RATE_LIMIT_ANONYMOUS",
        "REDIS_URL",
        "REDIS_KEY_PREFIX",
        "DATABASE_POOLER",
        "MIGRATIONS_DATABASE_URL",
        "SHUTDOWN_GRACE_SECONDS",
        "HOST",
        "PORT",
        "WEB_CONCURRENCY",
        "DB_POOL_SIZE",
        "DB_MAX_OVERFLOW",
        "DB_POOL_TIMEOUT",
        "DB_POOL_RECYCLE",
        "DB_CONNECT_TIMEOUT",
        "DB_STATEMENT_TIMEOUT",
        "MAX_REQUEST_HEAD_BYTES",
        "REQUEST_HEAD_TIMEOUT",
        "REQUEST_BODY_MIN_RATE",
        "MAX_CONNECTIONS",
        "SHUTDOWN_DRAIN_SECONDS",
    ],
    "",
)


@pytest.fixture
def fresh_env(tmp_path: Path) -> dict[str, str]:
    """Like a fresh clone: nothing configured, an empty data folder, the default SQLite database."""
    return {**os.environ, **UNSET_SETTINGS, "DATA_DIR": str(tmp_path / "fresh")}


@pytest.fixture
def env(fresh_env: dict[str, str], database_url: str) -> dict[str, str]:
    """No secret configured (the development secret in DATA_DIR is used), on the test's database."""
    return {**fresh_env, "DATABASE_URL": database_url}


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
    assert "4 pending (0001, 0002, 0003, 0004)" in before.stderr

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


class Server:
    """``manage.py serve`` in a subprocess on a free port."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(self.port), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_until_healthy(self, deadline_seconds: float = 30) -> None:
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a condition, bounded by the deadline
        raise AssertionError(f"server not healthy within {deadline_seconds}s:\n{self.stop()}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.output()

    def output(self) -> str:
        return self.process.stdout.read() if self.process.stdout else ""


@pytest.fixture
def server_factory() -> Iterator[type[Server]]:
    started: list[Server] = []

    class Tracked(Server):
        def __init__(self, env: dict[str, str], *args: str) -> None:
            super().__init__(env, *args)
            started.append(self)

    yield Tracked
    for server in started:
        server.stop()


def test_serve_is_the_whole_api_over_real_http(env: dict[str, str], server_factory: type[Server]) -> None:
    """migrate → serve → createtoken → every route, as a new user would do it with curl."""
    assert manage("migrate", env=env).returncode == 0
    user = f"user-{os.getpid()}-{time.monotonic_ns()}"
    token = manage("createtoken", user, env=env).stdout.strip()
    server = server_factory(env)
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


def test_serve_warns_about_pending_migrations(fresh_env: dict[str, str], server_factory: type[Server]) -> None:
    server = server_factory(fresh_env)
    server.wait_until_healthy()
    output = server.stop()
    assert "warning: 4 migration(s) not applied (0001, 0002, 0003, 0004); run `uv run manage.py migrate`" in output


def test_serve_with_two_workers_shares_one_development_secret(
    env: dict[str, str], server_factory: type[Server]
) -> None:
    assert manage("migrate", env=env).returncode == 0
    server = server_factory(env, "--workers", "2")
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
