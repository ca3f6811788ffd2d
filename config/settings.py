"""Every setting of the service, declared once, read from the environment once and validated.

:data:`SETTINGS` is the one list of settings: name, default, meaning and how a value is read. It drives
parsing (:meth:`Settings.from_env`, which reports every bad value at once, one line each, never echoing a
secret), ``.env.example`` and ``docs/settings.md`` (both rendered from it by ``config/documentation.py``;
a test fails when either differs), and the environment the tests clear before starting a server.

A local ``.env`` file is read here, once; real environment variables win over it. Nothing here imports the
application or the database layer: reading settings loads no driver.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values

from config.database_url import POOLER_MODES, DatabaseURLError, PoolerMode, parse_database_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_SECRET_BYTES = 32
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20
DEV_SECRET_FILE = "dev-secret"  # noqa: S105 - a file name, not a secret
PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_RATE = 1_000_000  # requests per period; keeps the limiter's emission interval at least 1 µs
DEFAULT_REDIS_KEY_PREFIX = "todo-backend:"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_RATE = re.compile(r"(\d+)\s*/\s*([a-z]+)")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

Environment = Literal["development", "production", "test"]
LogFormat = Literal["json", "text"]
ENVIRONMENTS: tuple[Environment, ...] = ("development", "production", "test")


# -- value types (the application and the database layer import them from here) ----------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """A request budget: at most ``limit`` requests per ``period_seconds`` (``600/minute``)."""

    limit: int
    period_seconds: int

    def __str__(self) -> str:
        unit = next(name for name, seconds in PERIODS.items() if seconds == self.period_seconds)
        return f"{self.limit}/{unit}"


@dataclass(frozen=True, slots=True)
class DatabaseLimits:
    """PostgreSQL pool size and time limits: the ``DB_*`` settings (SQLite ignores them).

    Defaults serve one worker at 200 concurrent clients without a wait long enough to fail, keep the
    connections a steady load needs open (no churn), answer 503 within about 2 s when the database cannot
    be reached, and replace connections before Neon's idle cut-off (about 5 minutes).
    """

    pool_size: int = 10  # connections kept open once opened
    max_overflow: int = 10  # further connections under load, closed after a minute unused
    pool_timeout: float = 5.0  # seconds a request waits for a free connection while all are busy
    pool_recycle: int = 300  # seconds before a connection is replaced; 0 keeps it while it works
    connect_timeout: float = 1.5  # seconds to get a working connection: check, connect and its retries
    statement_timeout: float = 10.0  # seconds; PostgreSQL cancels longer statements; 0 is off

    @property
    def statement_timeout_ms(self) -> int:
        """``statement_timeout`` as PostgreSQL reads it (milliseconds; 0 is off)."""
        return round(self.statement_timeout * 1000)


# Migrations and other tools: no statement timeout (a long migration must finish) and a generous connect.
TOOL_LIMITS = DatabaseLimits(connect_timeout=10.0, statement_timeout=0.0)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one client connection may take (``app/http_protocol.py``)."""

    max_head_bytes: int = 16 * 1024  # request line and headers
    head_timeout: float = 10.0  # seconds for a whole head, from the connection's start or the last response
    body_min_rate: int = 1024  # bytes a second a body must average, after the head timeout's grace; 0 off
    max_connections: int = 2048  # open connections per worker
    drain_seconds: float = 1.0  # on shutdown, idle time before a keep-alive connection is closed


class SettingsError(Exception):
    """Raised when one or more settings are invalid; ``problems`` holds one line per bad value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class _InvalidValueError(Exception):
    """One or more lines that say what is wrong with a value (they name the setting)."""

    def __init__(self, *lines: str) -> None:
        super().__init__("; ".join(lines))
        self.lines = list(lines)


# -- the declaration ------------------------------------------------------------------------------------------

Reader = Callable[[str, Mapping[str, Any]], Any]
"""Turns a setting's text (stripped; its default when empty) into its value, given the values read before it
(settings are read in declaration order); raises :class:`_InvalidValueError` when the text is not acceptable."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: its name, how it is read, its default and what it means."""

    name: str
    read: Reader
    default: str
    meaning: str
    group: str
    shown_default: str | None = None  # how the docs show a default that is computed (empty: none)
    secret: bool = False  # never echoed in a message or a log line
    strip: bool = True  # white space around the value is dropped

    @property
    def accepted(self) -> str:
        """The values the settings page lists as accepted (bounds, choices); empty for free text."""
        return str(getattr(self.read, "accepted", ""))

    @property
    def documented_default(self) -> str:
        """The default as the settings page shows it."""
        if self.shown_default is not None:
            return self.shown_default
        return f"`{self.default}`" if self.default else "(empty)"


@dataclass(frozen=True, slots=True)
class _Choice:
    """One of a few words."""

    name: str
    options: tuple[str, ...]
    case: Callable[[str], str] = str.lower

    @property
    def accepted(self) -> str:
        """The values the settings page lists."""
        return ", ".join(f"`{option}`" for option in self.options)

    def __call__(self, text: str, _: Mapping[str, Any]) -> str:
        value = self.case(text)
        if value not in self.options:
            raise _InvalidValueError(f"{self.name} must be one of {', '.join(self.options)} (got {value!r})")
        return value


def _choice(name: str, options: tuple[str, ...], *, case: Callable[[str], str] = str.lower) -> Reader:
    return _Choice(name, options, case)


@dataclass(frozen=True, slots=True)
class _Whole:
    """A whole number within bounds."""

    name: str
    low: int
    high: int
    unit: str = ""

    @property
    def accepted(self) -> str:
        """The bounds the settings page lists."""
        return f"{self.low:,} to {self.high:,}"

    def __call__(self, text: str, _: Mapping[str, Any]) -> int:
        if text.isdigit() and self.low <= int(text) <= self.high:
            return int(text)
        raise _InvalidValueError(
            f"{self.name} must be a whole number{self.unit} from {self.low} to {self.high} (got {text!r})"
        )


def _whole(name: str, low: int, high: int, *, unit: str = "") -> Reader:
    return _Whole(name, low, high, unit)


@dataclass(frozen=True, slots=True)
class _Seconds:
    """A number of seconds within bounds, or 0 for off."""

    name: str
    low: float
    high: float
    zero_is_off: bool = False

    @property
    def accepted(self) -> str:
        """The bounds the settings page lists."""
        return ("`0` (off) or " if self.zero_is_off else "") + f"{self.low:g} to {self.high:g}"

    def __call__(self, text: str, _: Mapping[str, Any]) -> float:
        value = float(text) if _DECIMAL.fullmatch(text) else None
        if value is not None and (self.low <= value <= self.high or (self.zero_is_off and value == 0)):
            return value
        off = "0 (off) or " if self.zero_is_off else ""
        raise _InvalidValueError(
            f"{self.name} must be {off}a number of seconds from {self.low:g} to {self.high:g} (got {text!r})"
        )


def _seconds(name: str, low: float, high: float, *, zero_is_off: bool = False) -> Reader:
    return _Seconds(name, low, high, zero_is_off)


def _text(text: str, _: Mapping[str, Any]) -> str | None:
    return text or None


def _plain(text: str, _: Mapping[str, Any]) -> str:
    return text


@dataclass(frozen=True, slots=True)
class _RateReader:
    """``off`` or ``N/period``."""

    name: str

    @property
    def accepted(self) -> str:
        """The forms the settings page lists."""
        return f"`off` or `N/second`, `N/minute`, `N/hour`, `N/day` (N from 1 to {MAX_RATE:,})"

    def __call__(self, text: str, _: Mapping[str, Any]) -> Rate | None:
        value = text.lower()
        if value == "off":
            return None
        match = _RATE.fullmatch(value)
        if match and match.group(2) in PERIODS and 1 <= int(match.group(1)) <= MAX_RATE:
            return Rate(int(match.group(1)), PERIODS[match.group(2)])
        raise _InvalidValueError(
            f"{self.name} must be off or N/second, N/minute, N/hour or N/day with N from 1 to {MAX_RATE} (got {text!r})"
        )


def _rate(name: str) -> Reader:
    return _RateReader(name)


def _data_dir(text: str, _: Mapping[str, Any]) -> Path:
    path = Path(text)
    return path if path.is_absolute() else PROJECT_ROOT / path


def _database_url(text: str, earlier: Mapping[str, Any]) -> str:
    url = text or f"sqlite:///{earlier['DATA_DIR'] / 'todo.db'}"
    try:
        parse_database_url(url)
    except DatabaseURLError as exc:
        raise _InvalidValueError(str(exc)) from None
    return url


def _migrations_url(text: str, earlier: Mapping[str, Any]) -> str:
    if not text:
        return ""
    try:
        migrations = parse_database_url(text, "MIGRATIONS_DATABASE_URL")
    except DatabaseURLError as exc:
        raise _InvalidValueError(str(exc)) from None
    main = earlier.get("DATABASE_URL")
    if main is not None and migrations.dialect != parse_database_url(main).dialect:
        raise _InvalidValueError("MIGRATIONS_DATABASE_URL must be the same kind of database as DATABASE_URL")
    return text


def _secret(text: str, earlier: Mapping[str, Any]) -> str:
    if earlier.get("APP_ENV") == "production":
        if not text:
            raise _InvalidValueError("BETTER_AUTH_SECRET is required when APP_ENV=production")
        if len(text.encode()) < MIN_SECRET_BYTES:
            raise _InvalidValueError(
                f"BETTER_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes when APP_ENV=production"
            )
    return text


def _jwks_url(text: str, earlier: Mapping[str, Any]) -> str | None:
    if not text:
        return None
    production = earlier.get("APP_ENV") == "production"
    lines = _jwks_url_problems(text, production=production)
    if production:
        # Without them any token this Better Auth instance signs, for any audience, would be accepted.
        lines += [
            f"{name} is required with JWT_JWKS_URL when APP_ENV=production (Better Auth uses its base URL)"
            for name in ("JWT_ISSUER", "JWT_AUDIENCE")
            if not earlier.get(name)
        ]
    if lines:
        raise _InvalidValueError(*lines)
    return text


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


def _cors_origins(text: str, _: Mapping[str, Any]) -> tuple[str, ...]:
    """Comma-separated origins (``*`` or http(s) URLs), trailing slashes dropped."""
    origins: list[str] = []
    lines: list[str] = []
    for origin in filter(None, (o.strip() for o in text.split(","))):
        if origin != "*" and not origin.startswith(("http://", "https://")):
            lines.append(f"CORS_ORIGINS entries must be '*' or start with http:// or https:// ({origin!r})")
        origins.append(origin.rstrip("/"))
    if lines:
        raise _InvalidValueError(*lines)
    return tuple(origins)


def _log_level(text: str, _: Mapping[str, Any]) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise _InvalidValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL (got {level!r})")
    return level


def _log_format(text: str, earlier: Mapping[str, Any]) -> LogFormat:
    value = text.lower() or ("json" if earlier.get("APP_ENV") == "production" else "text")
    if value == "json":
        return "json"
    if value == "text":
        return "text"
    raise _InvalidValueError(f"LOG_FORMAT must be json or text (got {value!r})")


def _flag(name: str) -> Reader:
    def read(text: str, _: Mapping[str, Any]) -> bool:
        value = text.lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off"}:
            return False
        raise _InvalidValueError(f"{name} must be true or false (got {value!r})")

    read.accepted = "`true` or `false`"  # type: ignore[attr-defined]
    return read


def _metrics_token(text: str, earlier: Mapping[str, Any]) -> str | None:
    if text and not earlier.get("METRICS_ENABLED"):
        raise _InvalidValueError("METRICS_TOKEN is set but METRICS_ENABLED is not true")
    if text and len(text) < 16:
        raise _InvalidValueError("METRICS_TOKEN must be at least 16 characters")
    return text or None


def _otlp_endpoint(text: str, _: Mapping[str, Any]) -> str | None:
    if text and not text.startswith(("http://", "https://")):
        raise _InvalidValueError("OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL")
    return text or None


def _redis_url(text: str, _: Mapping[str, Any]) -> str | None:
    """Why a text cannot be a Redis URL is said without repeating it: it may hold a password."""
    if not text:
        return None
    try:
        parts = urlsplit(text)
        scheme, host, _port = parts.scheme.lower(), parts.hostname, parts.port  # .port raises on a bad port
    except ValueError:
        raise _InvalidValueError("REDIS_URL is not a valid URL") from None
    if scheme not in {"redis", "rediss", "unix"}:
        raise _InvalidValueError(
            f"REDIS_URL must start with redis://, rediss:// or unix:// (got {scheme or 'no'} scheme)"
        )
    if scheme != "unix" and not host:
        raise _InvalidValueError("REDIS_URL needs a host, e.g. redis://127.0.0.1:6379/0")
    if scheme == "unix" and not parts.path:
        raise _InvalidValueError("REDIS_URL needs a socket path, e.g. unix:///run/redis/redis.sock")
    return text


def _pooler(text: str, _: Mapping[str, Any]) -> PoolerMode:
    value = text.lower()
    for mode in POOLER_MODES:
        if value == mode:
            return mode
    raise _InvalidValueError(f"DATABASE_POOLER must be one of {', '.join(POOLER_MODES)} (got {value!r})")


_DB = DatabaseLimits()
_CONN = ConnectionLimits()

SETTINGS: tuple[Setting, ...] = (
    # Application
    Setting(
        "APP_ENV",
        _choice("APP_ENV", ENVIRONMENTS, case=str),
        "development",
        "`development`, `production` or `test`. Production refuses to start without a `BETTER_AUTH_SECRET` of at "
        "least 32 bytes, and in JWKS mode without `https://` and `JWT_ISSUER`/`JWT_AUDIENCE`.",
        "Application",
    ),
    Setting(
        "DATA_DIR",
        _data_dir,
        "data",
        "Folder for the SQLite file and the development secret; a relative path is from the project root.",
        "Application",
        shown_default="`./data`",
    ),
    Setting(
        "LOG_LEVEL",
        _log_level,
        "INFO",
        "`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`; at `WARNING` and above there is no access log line "
        "per request.",
        "Application",
    ),
    Setting(
        "LOG_FORMAT",
        _log_format,
        "",
        "`json` (one object per line) or `text`. Every line carries the request id; one access line per request "
        "names the route template, status, duration and the token's user as a keyed hash.",
        "Application",
        shown_default="`json` in production, else `text`",
    ),
    # Database
    Setting(
        "DATABASE_URL",
        _database_url,
        "",
        "`sqlite://…`, `postgres://…` or `postgresql://…`, pasted as Neon prints it (`sslmode`, "
        "`channel_binding`, `connect_timeout`, `application_name` and `options` are understood). Empty: SQLite in "
        "`DATA_DIR`.",
        "Database",
        shown_default="`sqlite:///<DATA_DIR>/todo.db`",
    ),
    Setting(
        "MIGRATIONS_DATABASE_URL",
        _migrations_url,
        "",
        "Where `migrate` and `makemigrations` connect: on Neon the direct host when `DATABASE_URL` is the "
        "`-pooler` one. Empty: `DATABASE_URL`.",
        "Database",
    ),
    Setting(
        "DATABASE_POOLER",
        _pooler,
        "auto",
        "`auto`, `pgbouncer` or `none`: whether a transaction-mode PgBouncer sits in front of PostgreSQL "
        "(`auto`: a host whose first label ends in `-pooler`, like Neon's pooled endpoint).",
        "Database",
    ),
    Setting(
        "DB_POOL_SIZE",
        _whole("DB_POOL_SIZE", 1, 100),
        str(_DB.pool_size),
        "PostgreSQL connections each worker keeps open once opened (they are opened as requests need them).",
        "Database",
    ),
    Setting(
        "DB_MAX_OVERFLOW",
        _whole("DB_MAX_OVERFLOW", 0, 100),
        str(_DB.max_overflow),
        "Further connections a worker may open under load, closed again after a minute unused.",
        "Database",
    ),
    Setting(
        "DB_POOL_TIMEOUT",
        _seconds("DB_POOL_TIMEOUT", 0, 60),
        f"{_DB.pool_timeout:g}",
        "Seconds a request waits for a free connection while all are busy; then a 503 that says the server is busy.",
        "Database",
    ),
    Setting(
        "DB_POOL_RECYCLE",
        _whole("DB_POOL_RECYCLE", 0, 86400, unit=" of seconds"),
        str(_DB.pool_recycle),
        "Seconds before a connection is replaced (Neon closes idle ones after about 5 minutes); `0` keeps it.",
        "Database",
    ),
    Setting(
        "DB_CONNECT_TIMEOUT",
        _seconds("DB_CONNECT_TIMEOUT", 0.1, 60),
        f"{_DB.connect_timeout:g}",
        "Seconds to get a working connection: the check of a pooled one, the connect and its retries while the "
        "database wakes; then a 503. `connect_timeout` in `DATABASE_URL` wins.",
        "Database",
    ),
    Setting(
        "DB_STATEMENT_TIMEOUT",
        _seconds("DB_STATEMENT_TIMEOUT", 0.001, 86400, zero_is_off=True),
        f"{_DB.statement_timeout:g}",
        "Seconds PostgreSQL lets one statement run (lock waits included) before cancelling it (a 503); `0` is "
        "off. `options=-c statement_timeout=…` in `DATABASE_URL` wins.",
        "Database",
    ),
    # Authentication
    Setting(
        "BETTER_AUTH_SECRET",
        _secret,
        "",
        "HS256 secret shared with the frontend; it also signs listing cursors, so production needs it in JWKS "
        "mode too. Empty outside production: a random secret is generated once in `DATA_DIR/dev-secret` (mode "
        "0600), shared by `serve`, every worker and `createtoken`.",
        "Authentication",
        secret=True,
        strip=False,
    ),
    Setting("JWT_USER_CLAIM", _plain, "sub", "The token claim that holds the user id.", "Authentication"),
    Setting("JWT_ISSUER", _text, "", "When set, tokens must carry this `iss`.", "Authentication"),
    Setting(
        "JWT_AUDIENCE",
        _text,
        "",
        "When set, tokens must carry this `aud` (when empty, `aud` is not checked).",
        "Authentication",
    ),
    Setting(
        "JWT_LEEWAY",
        _whole("JWT_LEEWAY", 0, 300, unit=" of seconds"),
        "30",
        "Seconds of clock skew allowed on `exp`, `nbf` and `iat`.",
        "Authentication",
    ),
    Setting(
        "JWT_JWKS_URL",
        _jwks_url,
        "",
        "Better Auth's key set, e.g. `https://app.example.com/api/auth/jwks`: tokens are then verified with its "
        "asymmetric keys only, never with the secret. `https://` in production (plain `http://` only to "
        "localhost). Empty: shared-secret mode.",
        "Authentication",
    ),
    # HTTP
    Setting(
        "CORS_ORIGINS",
        _cors_origins,
        "",
        "Comma-separated browser origins allowed to call the API, e.g. `http://localhost:3000`. Empty: no CORS.",
        "HTTP",
    ),
    Setting(
        "MAX_BODY_BYTES",
        _whole("MAX_BODY_BYTES", 1024, 10 * 1024 * 1024),
        str(DEFAULT_MAX_BODY_BYTES),
        "Request bodies larger than this get a 413 problem before they are parsed.",
        "HTTP",
    ),
    Setting(
        "MAX_REQUEST_HEAD_BYTES",
        _whole("MAX_REQUEST_HEAD_BYTES", 1024, 1024 * 1024),
        str(_CONN.max_head_bytes),
        "Request line and headers; longer is a 431 problem.",
        "HTTP",
    ),
    Setting(
        "REQUEST_HEAD_TIMEOUT",
        _seconds("REQUEST_HEAD_TIMEOUT", 0.1, 300),
        f"{_CONN.head_timeout:g}",
        "Seconds for a whole request head, from the connection's start or the previous response (nothing sent: "
        "closed; part of a head: 408).",
        "HTTP",
    ),
    Setting(
        "REQUEST_BODY_MIN_RATE",
        _whole("REQUEST_BODY_MIN_RATE", 0, 100 * 1024 * 1024),
        str(_CONN.body_min_rate),
        "Bytes a second a request body must average after the first `REQUEST_HEAD_TIMEOUT` seconds (slower: "
        "408); `0` is off.",
        "HTTP",
    ),
    Setting(
        "MAX_CONNECTIONS",
        _whole("MAX_CONNECTIONS", 1, 1_000_000),
        str(_CONN.max_connections),
        "Open client connections per worker; beyond it a new connection gets a 503 problem at once.",
        "HTTP",
    ),
    # Rate limits
    Setting(
        "RATE_LIMIT",
        _rate("RATE_LIMIT"),
        "600/minute",
        "Requests per token user: `N/second`, `N/minute`, `N/hour` or `N/day` (N up to 1000000), or `off`.",
        "Rate limits",
    ),
    Setting(
        "RATE_LIMIT_ANONYMOUS",
        _rate("RATE_LIMIT_ANONYMOUS"),
        "60/minute",
        "Requests per client address without a valid token (401s, `/docs`, `/schema`); same format.",
        "Rate limits",
    ),
    Setting(
        "REDIS_URL",
        _redis_url,
        "",
        "`redis://host:6379/0`, `rediss://…` or `unix:///….sock`: rate limits counted once for every worker and "
        "instance. Empty: counted in memory, separately in each worker. If Redis is unreachable, requests are "
        "served without limits and a warning is logged.",
        "Rate limits",
        secret=True,
    ),
    Setting(
        "REDIS_KEY_PREFIX",
        _plain,
        DEFAULT_REDIS_KEY_PREFIX,
        "Prefix of the Redis keys, so deployments (staging, production) can share one Redis.",
        "Rate limits",
    ),
    # Sync: the trash and the change feed
    Setting(
        "TRASH_RETENTION_DAYS",
        _whole("TRASH_RETENTION_DAYS", 1, 3650, unit=" of days"),
        "30",
        "How long a deleted task stays in the trash, restorable, before `manage.py purgetrash` removes it.",
        "Sync",
    ),
    Setting(
        "TOMBSTONE_RETENTION_DAYS",
        _whole("TOMBSTONE_RETENTION_DAYS", 1, 3650, unit=" of days"),
        "30",
        "How long the change feed remembers a deletion; a feed cursor older than this is answered `410 Gone` "
        "(the client syncs again from the start).",
        "Sync",
    ),
    # Serving
    Setting("HOST", _plain, "127.0.0.1", "Interface `manage.py serve` binds (its `--host` wins).", "Serving"),
    Setting("PORT", _whole("PORT", 1, 65535), "8000", "Port `manage.py serve` binds (its `--port` wins).", "Serving"),
    Setting(
        "WEB_CONCURRENCY",
        _whole("WEB_CONCURRENCY", 1, 64),
        "1",
        "Worker processes of `manage.py serve` (its `--workers` wins); one per core is a good start.",
        "Serving",
    ),
    Setting(
        "SHUTDOWN_GRACE_SECONDS",
        _whole("SHUTDOWN_GRACE_SECONDS", 1, 600, unit=" of seconds"),
        str(DEFAULT_SHUTDOWN_GRACE_SECONDS),
        "On SIGTERM, how long accepted requests may take to finish before the rest are answered 503. Keep it "
        "below the platform's kill timeout.",
        "Serving",
    ),
    Setting(
        "SHUTDOWN_DRAIN_SECONDS",
        _seconds("SHUTDOWN_DRAIN_SECONDS", 0, 60),
        f"{_CONN.drain_seconds:g}",
        "On SIGTERM, how long an idle keep-alive connection stays open for one more request (answered with "
        "`Connection: close`).",
        "Serving",
    ),
)
SETTINGS += (
    # Observability
    Setting(
        "METRICS_ENABLED",
        _flag("METRICS_ENABLED"),
        "false",
        "`true`: Prometheus metrics at `/metrics` (requests by method, route template and status, latency, "
        "database pool, rate-limit refusals), summed over every worker.",
        "Observability",
    ),
    Setting(
        "METRICS_TOKEN",
        _metrics_token,
        "",
        "When set (16 characters or more), `/metrics` answers only `Authorization: Bearer <METRICS_TOKEN>`.",
        "Observability",
        secret=True,
    ),
    Setting(
        "PROMETHEUS_MULTIPROC_DIR",
        _plain,
        "",
        "Folder where workers share their metrics (prometheus_client's multiprocess mode). Empty: `manage.py "
        "serve` makes a temporary one when metrics are on.",
        "Observability",
    ),
    Setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        _otlp_endpoint,
        "",
        "When set, e.g. `http://collector:4318`, each request is traced with OpenTelemetry and the spans are "
        "sent there over OTLP/HTTP. Empty: no tracing.",
        "Observability",
    ),
)
NAMES: tuple[str, ...] = tuple(setting.name for setting in SETTINGS)


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Every setting's value, read in declaration order; :class:`SettingsError` lists every bad one."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = environ.get(setting.name, "")
        text = raw.strip() if setting.strip else raw
        try:
            values[setting.name] = setting.read(text or setting.default, values)
        except _InvalidValueError as exc:
            problems.extend(exc.lines)
    if problems:
        raise SettingsError(problems)
    return values


# -- the settings object ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration. Build it with :meth:`from_env` (or :func:`get_settings`); the defaults
    here are the declared ones (a test checks that the two agree)."""

    app_env: Environment = "development"
    data_dir: Path = PROJECT_ROOT / "data"
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    database_url: str = ""
    migrations_database_url: str = ""
    database_pooler: PoolerMode = "auto"
    db_options: DatabaseLimits = field(default_factory=DatabaseLimits)
    better_auth_secret: str = field(default="", repr=False)
    jwt_user_claim: str = "sub"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = 30
    jwt_jwks_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    rate_limit: Rate | None = Rate(600, 60)  # per authenticated user; None: off
    rate_limit_anonymous: Rate | None = Rate(60, 60)  # per client address, requests without a valid token
    redis_url: str | None = field(default=None, repr=False)  # None: rate limits counted in memory, per process
    redis_key_prefix: str = DEFAULT_REDIS_KEY_PREFIX
    trash_retention_days: int = 30
    tombstone_retention_days: int = 30
    host: str = "127.0.0.1"
    port: int = 8000
    web_concurrency: int = 1
    shutdown_grace_seconds: int = DEFAULT_SHUTDOWN_GRACE_SECONDS
    metrics_enabled: bool = False
    metrics_token: str | None = field(default=None, repr=False)
    prometheus_multiproc_dir: str = ""
    otel_exporter_otlp_endpoint: str | None = None

    @property
    def migrations_url(self) -> str:
        """Where migrations run: ``MIGRATIONS_DATABASE_URL`` when set (Neon's direct host), else ``DATABASE_URL``."""
        return self.migrations_database_url or self.database_url

    @property
    def is_production(self) -> bool:
        """True when ``APP_ENV=production``: no generated secrets, no debug output."""
        return self.app_env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: Path | None = None) -> Settings:
        """Read and validate settings.

        ``environ`` defaults to ``os.environ``; values from ``dotenv`` (default ``.env`` in the project root,
        only when ``environ`` is not given) fill in what the environment leaves unset.
        """
        if environ is None:
            env_file = dotenv if dotenv is not None else PROJECT_ROOT / ".env"
            file_values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
            environ = {**file_values, **os.environ}
        v = read_environment(environ)
        return cls(
            app_env=v["APP_ENV"],
            data_dir=v["DATA_DIR"],
            log_level=v["LOG_LEVEL"],
            log_format=v["LOG_FORMAT"],
            database_url=v["DATABASE_URL"],
            migrations_database_url=v["MIGRATIONS_DATABASE_URL"],
            database_pooler=v["DATABASE_POOLER"],
            db_options=DatabaseLimits(
                pool_size=v["DB_POOL_SIZE"],
                max_overflow=v["DB_MAX_OVERFLOW"],
                pool_timeout=v["DB_POOL_TIMEOUT"],
                pool_recycle=v["DB_POOL_RECYCLE"],
                connect_timeout=v["DB_CONNECT_TIMEOUT"],
                statement_timeout=v["DB_STATEMENT_TIMEOUT"],
            ),
            better_auth_secret=v["BETTER_AUTH_SECRET"],
            jwt_user_claim=v["JWT_USER_CLAIM"],
            jwt_issuer=v["JWT_ISSUER"],
            jwt_audience=v["JWT_AUDIENCE"],
            jwt_leeway_seconds=v["JWT_LEEWAY"],
            jwt_jwks_url=v["JWT_JWKS_URL"],
            cors_origins=v["CORS_ORIGINS"],
            max_body_bytes=v["MAX_BODY_BYTES"],
            connection_limits=ConnectionLimits(
                max_head_bytes=v["MAX_REQUEST_HEAD_BYTES"],
                head_timeout=v["REQUEST_HEAD_TIMEOUT"],
                body_min_rate=v["REQUEST_BODY_MIN_RATE"],
                max_connections=v["MAX_CONNECTIONS"],
                drain_seconds=v["SHUTDOWN_DRAIN_SECONDS"],
            ),
            rate_limit=v["RATE_LIMIT"],
            rate_limit_anonymous=v["RATE_LIMIT_ANONYMOUS"],
            redis_url=v["REDIS_URL"],
            redis_key_prefix=v["REDIS_KEY_PREFIX"],
            trash_retention_days=v["TRASH_RETENTION_DAYS"],
            tombstone_retention_days=v["TOMBSTONE_RETENTION_DAYS"],
            host=v["HOST"],
            port=v["PORT"],
            web_concurrency=v["WEB_CONCURRENCY"],
            shutdown_grace_seconds=v["SHUTDOWN_GRACE_SECONDS"],
            metrics_enabled=v["METRICS_ENABLED"],
            metrics_token=v["METRICS_TOKEN"],
            prometheus_multiproc_dir=v["PROMETHEUS_MULTIPROC_DIR"],
            otel_exporter_otlp_endpoint=v["OTEL_EXPORTER_OTLP_ENDPOINT"],
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env`` (raises :class:`SettingsError`)."""
    return Settings.from_env()
