"""Settings: validation with one clear line per bad value, .env loading, and the development secret."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest

from config.settings import DEFAULT_SHUTDOWN_GRACE_SECONDS, ConnectionLimits, DatabaseLimits, Settings, SettingsError


def load(**env: str) -> Settings:
    return Settings.from_env(env)


def problems(**env: str) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    return caught.value.problems


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = load(DATA_DIR=str(tmp_path))
    assert settings.app_env == "development"
    assert settings.database_url == f"sqlite:///{tmp_path / 'todo.db'}"
    assert settings.jwt_user_claim == "sub"
    assert settings.jwt_leeway_seconds == 30
    assert settings.cors_origins == ()


def test_max_body_bytes() -> None:
    assert load().max_body_bytes == 64 * 1024
    assert load(MAX_BODY_BYTES="2048").max_body_bytes == 2048
    for bad in ("10", "99999999999", "64k", "-1"):
        assert problems(MAX_BODY_BYTES=bad) == [
            f"MAX_BODY_BYTES must be a whole number from 1024 to 10485760 (got {bad!r})"
        ]


def test_production_refuses_a_missing_or_short_secret() -> None:
    assert problems(APP_ENV="production") == ["BETTER_AUTH_SECRET is required when APP_ENV=production"]
    assert problems(APP_ENV="production", BETTER_AUTH_SECRET="x" * 31) == [
        "BETTER_AUTH_SECRET must be at least 32 bytes when APP_ENV=production"
    ]
    assert load(APP_ENV="production", BETTER_AUTH_SECRET="x" * 32).is_production


def test_every_bad_value_gets_its_own_line() -> None:
    lines = problems(
        APP_ENV="staging",
        JWT_LEEWAY="-5",
        CORS_ORIGINS="https://ok.example.com, ftp://bad",
        LOG_LEVEL="loud",
        DATABASE_URL="mysql://db/x",
    )
    assert len(lines) == 5
    assert any(line.startswith("APP_ENV") for line in lines)
    assert any(line.startswith("JWT_LEEWAY") for line in lines)
    assert any(line.startswith("CORS_ORIGINS") for line in lines)
    assert any(line.startswith("LOG_LEVEL") for line in lines)
    assert any(line.startswith("DATABASE_URL: unsupported database") for line in lines)


def test_secret_never_appears_in_repr_or_errors() -> None:
    secret = "s3cr3t-" * 8
    assert secret not in repr(load(BETTER_AUTH_SECRET=secret))
    assert secret not in str(SettingsError(problems(APP_ENV="production", BETTER_AUTH_SECRET=secret[:10])))


def test_cors_origins_and_jwt_options_are_parsed() -> None:
    settings = load(
        CORS_ORIGINS="https://a.example.com/, http://localhost:3000",
        JWT_ISSUER="https://auth.example.com",
        JWT_AUDIENCE="https://api.example.com",
        JWT_USER_CLAIM="uid",
        JWT_LEEWAY="0",
    )
    assert settings.cors_origins == ("https://a.example.com", "http://localhost:3000")
    assert (settings.jwt_issuer, settings.jwt_audience, settings.jwt_user_claim) == (
        "https://auth.example.com",
        "https://api.example.com",
        "uid",
    )
    assert settings.jwt_leeway_seconds == 0


def test_dotenv_fills_in_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("JWT_USER_CLAIM=from_file\nLOG_LEVEL=debug\n")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.delenv("JWT_USER_CLAIM", raising=False)
    settings = Settings.from_env(dotenv=env_file)
    assert settings.jwt_user_claim == "from_file"
    assert settings.log_level == "WARNING"


def test_configured_secret_is_used_as_is(tmp_path: Path) -> None:
    settings = load(DATA_DIR=str(tmp_path), BETTER_AUTH_SECRET="x" * 40)
    assert settings.signing_secret() == "x" * 40
    assert not (tmp_path / "dev-secret").exists()


def test_development_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    first = load(DATA_DIR=str(tmp_path)).signing_secret()
    second = load(DATA_DIR=str(tmp_path)).signing_secret()
    assert first == second
    assert len(first.encode()) >= 32
    assert stat.S_IMODE((tmp_path / "dev-secret").stat().st_mode) == 0o600


def _secret_in_process(data_dir: str, barrier: object) -> str:
    barrier.wait()  # type: ignore[attr-defined]
    return load(DATA_DIR=data_dir).signing_secret()


@pytest.mark.slow  # six spawned Python processes
def test_workers_racing_at_start_agree_on_one_secret(tmp_path: Path) -> None:
    workers = 6
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(workers)
        with context.Pool(workers) as pool:
            secrets = pool.starmap(_secret_in_process, [(str(tmp_path), barrier)] * workers)
    assert len(set(secrets)) == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "dev-secret"]  # no temporary files left behind


def test_jwks_url_switches_on_jwks_mode() -> None:
    assert load().jwt_jwks_url is None
    url = "https://app.example.com/api/auth/jwks"
    assert load(JWT_JWKS_URL=url).jwt_jwks_url == url
    assert load(JWT_JWKS_URL="http://localhost:3000/api/auth/jwks").jwt_jwks_url  # plain http outside production


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("app.example.com/api/auth/jwks", "must be an http:// or https:// URL with a host"),
        ("ftp://app.example.com/jwks", "must be an http:// or https:// URL with a host"),
        ("https:///api/auth/jwks", "must be an http:// or https:// URL with a host"),
        ("https://app.example.com/api/auth/ jwks", "must be an http:// or https:// URL with a host"),
        ("https://app.example.com:99999/jwks", "is not a valid URL"),
        ("https://user:hunter2@app.example.com/jwks", "must not contain credentials"),
    ],
)
def test_bad_jwks_urls_get_one_line(value: str, line: str) -> None:
    lines = problems(JWT_JWKS_URL=value)
    assert len(lines) == 1
    assert lines[0].startswith(f"JWT_JWKS_URL {line}")
    assert "hunter2" not in lines[0]


def test_production_jwks_mode_needs_https_issuer_and_audience() -> None:
    production = {"APP_ENV": "production", "BETTER_AUTH_SECRET": "x" * 32}
    assert problems(**production, JWT_JWKS_URL="http://frontend:3000/api/auth/jwks") == [
        "JWT_JWKS_URL must use https:// when APP_ENV=production (got 'http://frontend:3000/api/auth/jwks')",
        "JWT_ISSUER is required with JWT_JWKS_URL when APP_ENV=production (Better Auth uses its base URL)",
        "JWT_AUDIENCE is required with JWT_JWKS_URL when APP_ENV=production (Better Auth uses its base URL)",
    ]
    claims = {"JWT_ISSUER": "https://app.example.com", "JWT_AUDIENCE": "https://app.example.com"}
    settings = load(**production, **claims, JWT_JWKS_URL="https://app.example.com/api/auth/jwks")
    assert settings.jwt_jwks_url == "https://app.example.com/api/auth/jwks"
    # Loopback never leaves the machine, so plain http is fine there.
    assert load(**production, **claims, JWT_JWKS_URL="http://127.0.0.1:3000/api/auth/jwks").jwt_jwks_url


# -- settings of the database pool, the pooler, the HTTP protocol and shutdown ------------------------------

NEON_DIRECT = "postgresql://alex:AbC123dEf@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require"
NEON_POOLED = NEON_DIRECT.replace("ep-cool-darkness-123456", "ep-cool-darkness-123456-pooler")


def test_shutdown_grace_seconds_setting() -> None:
    assert Settings.from_env({}).shutdown_grace_seconds == DEFAULT_SHUTDOWN_GRACE_SECONDS == 20
    assert Settings.from_env({"SHUTDOWN_GRACE_SECONDS": "45"}).shutdown_grace_seconds == 45
    for bad in ("0", "601", "1.5", "soon"):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({"SHUTDOWN_GRACE_SECONDS": bad})
        assert caught.value.problems == [
            f"SHUTDOWN_GRACE_SECONDS must be a whole number of seconds from 1 to 600 (got {bad!r})"
        ]


def test_database_settings_defaults_and_values() -> None:
    assert Settings.from_env({}).db_options == DatabaseLimits(
        pool_size=10, max_overflow=10, pool_timeout=5.0, pool_recycle=300, connect_timeout=1.5, statement_timeout=10.0
    )
    options = Settings.from_env(
        {
            "DB_POOL_SIZE": "2",
            "DB_MAX_OVERFLOW": "0",
            "DB_POOL_TIMEOUT": "0.25",
            "DB_POOL_RECYCLE": "0",
            "DB_CONNECT_TIMEOUT": "3",
            "DB_STATEMENT_TIMEOUT": "0",
        }
    ).db_options
    assert options == DatabaseLimits(
        pool_size=2, max_overflow=0, pool_timeout=0.25, pool_recycle=0, connect_timeout=3.0, statement_timeout=0
    )
    assert Settings.from_env({"DB_STATEMENT_TIMEOUT": "2.5"}).db_options.statement_timeout_ms == 2500


def test_bad_database_settings_get_one_line_each() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {
                "DB_POOL_SIZE": "0",
                "DB_MAX_OVERFLOW": "-1",
                "DB_POOL_TIMEOUT": "soon",
                "DB_POOL_RECYCLE": "1.5",
                "DB_CONNECT_TIMEOUT": "0",
                "DB_STATEMENT_TIMEOUT": "0.0001",
            }
        )
    assert caught.value.problems == [
        "DB_POOL_SIZE must be a whole number from 1 to 100 (got '0')",
        "DB_MAX_OVERFLOW must be a whole number from 0 to 100 (got '-1')",
        "DB_POOL_TIMEOUT must be a number of seconds from 0 to 60 (got 'soon')",
        "DB_POOL_RECYCLE must be a whole number of seconds from 0 to 86400 (got '1.5')",
        "DB_CONNECT_TIMEOUT must be a number of seconds from 0.1 to 60 (got '0')",
        "DB_STATEMENT_TIMEOUT must be 0 (off) or a number of seconds from 0.001 to 86400 (got '0.0001')",
    ]


def test_the_connection_limits_are_settings() -> None:
    assert Settings.from_env({}).connection_limits == ConnectionLimits(
        max_head_bytes=16384, head_timeout=10.0, body_min_rate=1024, max_connections=2048, drain_seconds=1.0
    )
    custom = Settings.from_env(
        {
            "MAX_REQUEST_HEAD_BYTES": "8192",
            "REQUEST_HEAD_TIMEOUT": "2.5",
            "REQUEST_BODY_MIN_RATE": "0",
            "MAX_CONNECTIONS": "100",
            "SHUTDOWN_DRAIN_SECONDS": "0.5",
        }
    ).connection_limits
    assert custom == ConnectionLimits(8192, 2.5, 0, 100, 0.5)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"MAX_REQUEST_HEAD_BYTES": "10", "REQUEST_HEAD_TIMEOUT": "never", "MAX_CONNECTIONS": "0"})
    assert len(caught.value.problems) == 3


def test_database_pooler_and_migrations_url_settings() -> None:
    settings = Settings.from_env({"DATABASE_URL": NEON_POOLED})
    assert settings.database_pooler == "auto"
    assert settings.migrations_url == NEON_POOLED
    settings = Settings.from_env(
        {"DATABASE_URL": NEON_POOLED, "MIGRATIONS_DATABASE_URL": NEON_DIRECT, "DATABASE_POOLER": "PgBouncer"}
    )
    assert settings.database_pooler == "pgbouncer"
    assert settings.migrations_url == NEON_DIRECT

    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATABASE_POOLER": "yes", "MIGRATIONS_DATABASE_URL": "postgresql://h/db?sslmode=maybe"})
    assert caught.value.problems == [
        "MIGRATIONS_DATABASE_URL: unknown sslmode 'maybe'",
        "DATABASE_POOLER must be one of auto, pgbouncer, none (got 'yes')",
    ]
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATABASE_URL": NEON_DIRECT, "MIGRATIONS_DATABASE_URL": "sqlite:///x.db"})
    assert caught.value.problems == ["MIGRATIONS_DATABASE_URL must be the same kind of database as DATABASE_URL"]
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"MIGRATIONS_DATABASE_URL": "postgresql://u:hunter2@h:port/db"})
    assert caught.value.problems == ["MIGRATIONS_DATABASE_URL is not a valid database URL"]
