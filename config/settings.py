"""Every setting of the service, read from the environment once and validated.

A local ``.env`` file (see ``.env.example``) is loaded first; real environment variables win over it.
Each bad value produces one clear line; all of them are reported together by :class:`SettingsError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values

from db.engine import EngineOptions
from db.url import POOLER_MODES, DatabaseURLError, PoolerMode, translate_database_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_SECRET_BYTES = 32
DEFAULT_MAX_BODY_BYTES = 64 * 1024
_BODY_LIMITS = (1024, 10 * 1024 * 1024)
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20
_SHUTDOWN_GRACE_LIMITS = (1, 600)
DEV_SECRET_FILE = "dev-secret"  # noqa: S105 - a file name, not a secret
PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_RATE = 1_000_000  # requests per period; keeps the limiter's emission interval at least 1 µs
_RATE = re.compile(r"(\d+)\s*/\s*([a-z]+)")
DEFAULT_REDIS_KEY_PREFIX = "todo-backend:"

Environment = Literal["development", "production", "test"]
_ENVIRONMENTS: tuple[Environment, ...] = ("development", "production", "test")


@dataclass(frozen=True, slots=True)
class Rate:
    """A request budget: at most ``limit`` requests per ``period_seconds`` (``600/minute``)."""

    limit: int
    period_seconds: int

    def __str__(self) -> str:
        unit = next(name for name, seconds in PERIODS.items() if seconds == self.period_seconds)
        return f"{self.limit}/{unit}"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one client connection may take (``app/http_protocol.py``); each is a setting."""

    max_head_bytes: int = 16 * 1024  # MAX_REQUEST_HEAD_BYTES: request line and headers
    head_timeout: float = 10.0  # REQUEST_HEAD_TIMEOUT: seconds for a whole head, from connect or last response
    body_min_rate: int = 1024  # REQUEST_BODY_MIN_RATE: bytes a second, after the head timeout's grace; 0 off
    max_connections: int = 2048  # MAX_CONNECTIONS: open connections per worker
    drain_seconds: float = 1.0  # SHUTDOWN_DRAIN_SECONDS: idle time before a keep-alive connection closes on stop


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
    jwt_jwks_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    rate_limit: Rate | None = Rate(600, 60)  # per authenticated user; None: off
    rate_limit_anonymous: Rate | None = Rate(60, 60)  # per client address, requests without a valid token
    redis_url: str | None = field(default=None, repr=False)  # None: rate limits counted in memory, per process
    redis_key_prefix: str = DEFAULT_REDIS_KEY_PREFIX
    db_options: EngineOptions = field(default_factory=EngineOptions)
    database_pooler: PoolerMode = "auto"
    migrations_database_url: str = ""
    shutdown_grace_seconds: int = DEFAULT_SHUTDOWN_GRACE_SECONDS
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)

    @property
    def migrations_url(self) -> str:
        """Where migrations run: ``MIGRATIONS_DATABASE_URL`` when set (Neon's direct host), else ``DATABASE_URL``."""
        return self.migrations_database_url or self.database_url

    @property
    def is_production(self) -> bool:
        """True when ``APP_ENV=production``: no generated secrets, no debug output."""
        return self.app_env == "production"

    @classmethod
    def from_env(  # noqa: PLR0915 - one statement per setting, read in order
        cls, environ: dict[str, str] | None = None, *, dotenv: Path | None = None
    ) -> Settings:
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

        jwks_url = get("JWT_JWKS_URL") or None
        if jwks_url:
            problems.extend(_jwks_problems(jwks_url, get, production=app_env == "production"))

        cors_origins = _cors_origins(get("CORS_ORIGINS"), problems)

        log_level = (get("LOG_LEVEL") or "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            problems.append(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL (got {log_level!r})")

        max_body_bytes = _whole_number(
            "MAX_BODY_BYTES", get("MAX_BODY_BYTES"), DEFAULT_MAX_BODY_BYTES, _BODY_LIMITS, problems
        )

        rate_limit = _rate("RATE_LIMIT", get("RATE_LIMIT"), Rate(600, 60), problems)
        rate_limit_anonymous = _rate("RATE_LIMIT_ANONYMOUS", get("RATE_LIMIT_ANONYMOUS"), Rate(60, 60), problems)
        redis_url = get("REDIS_URL") or None
        if redis_url is not None and (problem := _redis_url_problem(redis_url)):
            problems.append(problem)
        db_options = _engine_options(get, problems)
        shutdown_grace = _whole_number(
            "SHUTDOWN_GRACE_SECONDS",
            get("SHUTDOWN_GRACE_SECONDS"),
            DEFAULT_SHUTDOWN_GRACE_SECONDS,
            _SHUTDOWN_GRACE_LIMITS,
            problems,
            unit=" of seconds",
        )

        connection_limits = _connection_limits(get, problems)

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
            jwt_jwks_url=jwks_url,
            cors_origins=tuple(cors_origins),
            log_level=log_level,
            max_body_bytes=max_body_bytes,
            rate_limit=rate_limit,
            rate_limit_anonymous=rate_limit_anonymous,
            redis_url=redis_url,
            redis_key_prefix=get("REDIS_KEY_PREFIX") or DEFAULT_REDIS_KEY_PREFIX,
            db_options=db_options,
            database_pooler=database_pooler,
            migrations_database_url=migrations_database_url,
            shutdown_grace_seconds=shutdown_grace,
            connection_limits=connection_limits,
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


def _cors_origins(raw: str, problems: list[str]) -> list[str]:
    """``CORS_ORIGINS``: comma-separated origins (``*`` or http(s) URLs), trailing slashes dropped."""
    origins: list[str] = []
    for origin in filter(None, (o.strip() for o in raw.split(","))):
        if origin != "*" and not origin.startswith(("http://", "https://")):
            problems.append(f"CORS_ORIGINS entries must be '*' or start with http:// or https:// ({origin!r})")
        origins.append(origin.rstrip("/"))
    return origins


def _jwks_problems(url: str, get: Callable[[str], str], *, production: bool) -> list[str]:
    """What is wrong with JWKS mode's settings: its URL, and in production a missing issuer or audience."""
    problems = _jwks_url_problems(url, production=production)
    if production:
        # Without them any token this Better Auth instance signs, for any audience, would be accepted.
        problems.extend(
            f"{name} is required with JWT_JWKS_URL when APP_ENV=production (Better Auth uses its base URL)"
            for name in ("JWT_ISSUER", "JWT_AUDIENCE")
            if not get(name)
        )
    return problems


def _jwks_url_problems(url: str, *, production: bool) -> list[str]:
    """What is wrong with ``JWT_JWKS_URL``: an http(s) URL with a host, no credentials, https in production."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return ["JWT_JWKS_URL is not a valid URL"]  # not echoed: it might hold credentials
    if parts.username is not None or parts.password is not None:
        return ["JWT_JWKS_URL must not contain credentials"]
    if parts.scheme not in {"http", "https"} or not host or any(c.isspace() for c in url):
        return [f"JWT_JWKS_URL must be an http:// or https:// URL with a host (got {url!r})"]
    if production and parts.scheme != "https" and host not in _LOOPBACK_HOSTS:
        # Keys fetched over plain HTTP can be swapped in transit, and then anyone can sign tokens.
        return [f"JWT_JWKS_URL must use https:// when APP_ENV=production (got {url!r})"]
    return []


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


def _rate(name: str, raw: str, default: Rate, problems: list[str]) -> Rate | None:
    """``N/second|minute|hour|day`` as a :class:`Rate`; ``off`` is ``None``; empty means ``default``."""
    value = raw.lower()
    if not value:
        return default
    if value == "off":
        return None
    match = _RATE.fullmatch(value)
    if match and match.group(2) in PERIODS and 1 <= int(match.group(1)) <= MAX_RATE:
        return Rate(int(match.group(1)), PERIODS[match.group(2)])
    problems.append(
        f"{name} must be off or N/second, N/minute, N/hour or N/day with N from 1 to {MAX_RATE} (got {raw!r})"
    )
    return default


def _redis_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Redis URL, or ``None``. Never repeats the URL: it may hold a password."""
    try:
        parts = urlsplit(url)
        scheme, host, _ = parts.scheme.lower(), parts.hostname, parts.port  # .port raises on a bad port
    except ValueError:
        return "REDIS_URL is not a valid URL"
    if scheme not in {"redis", "rediss", "unix"}:
        return f"REDIS_URL must start with redis://, rediss:// or unix:// (got {scheme or 'no'} scheme)"
    if scheme != "unix" and not host:
        return "REDIS_URL needs a host, e.g. redis://127.0.0.1:6379/0"
    if scheme == "unix" and not parts.path:
        return "REDIS_URL needs a socket path, e.g. unix:///run/redis/redis.sock"
    return None


def _seconds(
    name: str, raw: str, default: float, bounds: tuple[float, float], problems: list[str], *, zero_is_off: bool = False
) -> float:
    """``raw`` as seconds (decimals allowed) within ``bounds``; with ``zero_is_off``, 0 is accepted too."""
    if not raw:
        return default
    low, high = bounds
    if _DECIMAL.fullmatch(raw) and (low <= float(raw) <= high or (zero_is_off and float(raw) == 0)):
        return float(raw)
    off = "0 (off) or " if zero_is_off else ""
    problems.append(f"{name} must be {off}a number of seconds from {low:g} to {high:g} (got {raw!r})")
    return default


def _engine_options(get: Callable[[str], str], problems: list[str]) -> EngineOptions:
    """The ``DB_*`` settings: pool size, its time limits and PostgreSQL's statement timeout."""
    default = EngineOptions()
    return EngineOptions(
        pool_size=_whole_number("DB_POOL_SIZE", get("DB_POOL_SIZE"), default.pool_size, (1, 100), problems),
        max_overflow=_whole_number("DB_MAX_OVERFLOW", get("DB_MAX_OVERFLOW"), default.max_overflow, (0, 100), problems),
        pool_timeout=_seconds("DB_POOL_TIMEOUT", get("DB_POOL_TIMEOUT"), default.pool_timeout, (0, 60), problems),
        pool_recycle=_whole_number(
            "DB_POOL_RECYCLE", get("DB_POOL_RECYCLE"), default.pool_recycle, (0, 86400), problems, unit=" of seconds"
        ),
        connect_timeout=_seconds(
            "DB_CONNECT_TIMEOUT", get("DB_CONNECT_TIMEOUT"), default.connect_timeout, (0.1, 60), problems
        ),
        statement_timeout=_seconds(
            "DB_STATEMENT_TIMEOUT",
            get("DB_STATEMENT_TIMEOUT"),
            default.statement_timeout,
            (0.001, 86400),
            problems,
            zero_is_off=True,
        ),
    )


def _connection_limits(get: Callable[[str], str], problems: list[str]) -> ConnectionLimits:
    """The limits on one client connection: head size and time, body rate, connections, drain."""
    default = ConnectionLimits()
    return ConnectionLimits(
        max_head_bytes=_whole_number(
            "MAX_REQUEST_HEAD_BYTES",
            get("MAX_REQUEST_HEAD_BYTES"),
            default.max_head_bytes,
            (1024, 1024 * 1024),
            problems,
        ),
        head_timeout=_seconds(
            "REQUEST_HEAD_TIMEOUT", get("REQUEST_HEAD_TIMEOUT"), default.head_timeout, (0.1, 300), problems
        ),
        body_min_rate=_whole_number(
            "REQUEST_BODY_MIN_RATE",
            get("REQUEST_BODY_MIN_RATE"),
            default.body_min_rate,
            (0, 100 * 1024 * 1024),
            problems,
        ),
        max_connections=_whole_number(
            "MAX_CONNECTIONS", get("MAX_CONNECTIONS"), default.max_connections, (1, 1_000_000), problems
        ),
        drain_seconds=_seconds(
            "SHUTDOWN_DRAIN_SECONDS", get("SHUTDOWN_DRAIN_SECONDS"), default.drain_seconds, (0, 60), problems
        ),
    )


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
