"""Every setting of the service, read from the environment once and validated.

A local ``.env`` file (see ``.env.example``) is loaded first; real environment variables win over it.
Each bad value produces one clear line; all of them are reported together by :class:`SettingsError`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values

from db.url import POOLER_MODES, DatabaseURLError, PoolerMode, translate_database_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_SECRET_BYTES = 32
DEFAULT_MAX_BODY_BYTES = 64 * 1024
_BODY_LIMITS = (1024, 10 * 1024 * 1024)
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20
_SHUTDOWN_GRACE_LIMITS = (1, 600)
DEV_SECRET_FILE = "dev-secret"  # noqa: S105 - a file name, not a secret

Environment = Literal["development", "production", "test"]
_ENVIRONMENTS: tuple[Environment, ...] = ("development", "production", "test")


class SettingsError(Exception):
    """Raised when one or more settings are invalid; ``problems`` holds one line per bad value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration. Build it with :meth:`from_env` (or :func:`get_settings`)."""

    app_env: Environment = "development"
    data_dir: Path = PROJECT_ROOT / "data"
    database_url: str = ""
    better_auth_secret: str = field(default="", repr=False)
    jwt_user_claim: str = "sub"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = 30
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    database_pooler: PoolerMode = "auto"
    migrations_database_url: str = ""
    shutdown_grace_seconds: int = DEFAULT_SHUTDOWN_GRACE_SECONDS

    @property
    def migrations_url(self) -> str:
        """Where migrations run: ``MIGRATIONS_DATABASE_URL`` when set (Neon's direct host), else ``DATABASE_URL``."""
        return self.migrations_database_url or self.database_url

    @property
    def is_production(self) -> bool:
        """True when ``APP_ENV=production``: no generated secrets, no debug output."""
        return self.app_env == "production"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, *, dotenv: Path | None = None) -> Settings:
        """Read and validate settings.

        ``environ`` defaults to ``os.environ``; values from ``dotenv`` (default ``.env`` in the project root,
        only when ``environ`` is not given) fill in what the environment leaves unset.
        """
        if environ is None:
            env_file = dotenv if dotenv is not None else PROJECT_ROOT / ".env"
            file_values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
            environ = {**file_values, **os.environ}
        problems: list[str] = []

        def get(name: str) -> str:
            return environ.get(name, "").strip()

        app_env_raw = get("APP_ENV") or "development"
        app_env: Environment = "development"
        if app_env_raw in _ENVIRONMENTS:
            app_env = app_env_raw
        else:
            problems.append(f"APP_ENV must be one of {', '.join(_ENVIRONMENTS)} (got {app_env_raw!r})")

        data_dir = Path(get("DATA_DIR") or PROJECT_ROOT / "data")
        if not data_dir.is_absolute():
            data_dir = PROJECT_ROOT / data_dir

        database_url = get("DATABASE_URL") or f"sqlite:///{data_dir / 'todo.db'}"
        dialect: str | None = None
        try:
            dialect = translate_database_url(database_url).dialect
        except DatabaseURLError as exc:
            problems.append(str(exc))

        migrations_database_url = get("MIGRATIONS_DATABASE_URL")
        _check_migrations_url(migrations_database_url, dialect, problems)
        database_pooler = _pooler_mode(get("DATABASE_POOLER"), problems)

        secret = environ.get("BETTER_AUTH_SECRET", "")
        if app_env == "production":
            if not secret:
                problems.append("BETTER_AUTH_SECRET is required when APP_ENV=production")
            elif len(secret.encode()) < MIN_SECRET_BYTES:
                problems.append(f"BETTER_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes when APP_ENV=production")

        user_claim = get("JWT_USER_CLAIM") or "sub"

        leeway = _whole_number("JWT_LEEWAY", get("JWT_LEEWAY"), 30, (0, 300), problems, unit=" of seconds")

        cors_origins: list[str] = []
        for origin in filter(None, (o.strip() for o in get("CORS_ORIGINS").split(","))):
            if origin != "*" and not origin.startswith(("http://", "https://")):
                problems.append(f"CORS_ORIGINS entries must be '*' or start with http:// or https:// ({origin!r})")
            cors_origins.append(origin.rstrip("/"))

        log_level = (get("LOG_LEVEL") or "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            problems.append(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL (got {log_level!r})")

        max_body_bytes = _whole_number(
            "MAX_BODY_BYTES", get("MAX_BODY_BYTES"), DEFAULT_MAX_BODY_BYTES, _BODY_LIMITS, problems
        )

        shutdown_grace = _whole_number(
            "SHUTDOWN_GRACE_SECONDS",
            get("SHUTDOWN_GRACE_SECONDS"),
            DEFAULT_SHUTDOWN_GRACE_SECONDS,
            _SHUTDOWN_GRACE_LIMITS,
            problems,
            unit=" of seconds",
        )

        if problems:
            raise SettingsError(problems)
        return cls(
            app_env=app_env,
            data_dir=data_dir,
            database_url=database_url,
            better_auth_secret=secret,
            jwt_user_claim=user_claim,
            jwt_issuer=get("JWT_ISSUER") or None,
            jwt_audience=get("JWT_AUDIENCE") or None,
            jwt_leeway_seconds=leeway,
            cors_origins=tuple(cors_origins),
            log_level=log_level,
            max_body_bytes=max_body_bytes,
            database_pooler=database_pooler,
            migrations_database_url=migrations_database_url,
            shutdown_grace_seconds=shutdown_grace,
        )

    def signing_secret(self) -> str:
        """The HS256 secret: the configured one, or (outside production) a development secret.

        The development secret is generated once and kept in ``DATA_DIR/dev-secret`` so that ``serve``,
        every worker and ``createtoken`` agree. It is written to a temporary file and hard-linked into
        place, so a reader never sees a half-written file and racing workers all end up with one value.
        """
        if self.better_auth_secret:
            return self.better_auth_secret
        if self.is_production:  # pragma: no cover - from_env refuses this combination
            raise SettingsError(["BETTER_AUTH_SECRET is required when APP_ENV=production"])
        path = self.data_dir / DEV_SECRET_FILE
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=".dev-secret-")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
        return path.read_text().strip()


def _whole_number(
    name: str, raw: str, default: int, bounds: tuple[int, int], problems: list[str], unit: str = ""
) -> int:
    """``raw`` as an int within ``bounds``; empty means ``default``; a bad value adds one line to ``problems``."""
    if not raw:
        return default
    low, high = bounds
    if raw.isdigit() and low <= int(raw) <= high:
        return int(raw)
    problems.append(f"{name} must be a whole number{unit} from {low} to {high} (got {raw!r})")
    return default


def _check_migrations_url(raw: str, dialect: str | None, problems: list[str]) -> None:
    """``MIGRATIONS_DATABASE_URL`` (optional) must be valid and the same kind of database as ``DATABASE_URL``."""
    if not raw:
        return
    try:
        migrations = translate_database_url(raw, "MIGRATIONS_DATABASE_URL")
    except DatabaseURLError as exc:
        problems.append(str(exc))
        return
    if dialect is not None and migrations.dialect != dialect:
        problems.append("MIGRATIONS_DATABASE_URL must be the same kind of database as DATABASE_URL")


def _pooler_mode(raw: str, problems: list[str]) -> PoolerMode:
    """``DATABASE_POOLER``: ``auto`` (default), ``pgbouncer`` or ``none``."""
    value = (raw or "auto").lower()
    for mode in POOLER_MODES:
        if value == mode:
            return mode
    problems.append(f"DATABASE_POOLER must be one of {', '.join(POOLER_MODES)} (got {value!r})")
    return "auto"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (raises :class:`SettingsError`)."""
    return Settings.from_env()
