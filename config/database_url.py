"""``DATABASE_URL`` as people paste it: what it names, and what of it a driver cannot take as it is.

Neon prints ``postgresql://user:pass@host/db?sslmode=require&channel_binding=require``. asyncpg rejects
libpq-only query parameters (``sslmode`` raises ``TypeError`` inside ``connect()``), so they are turned into
asyncpg connect arguments here, once, and nowhere else. This module only reads the text (the standard
library's URL parsing), so settings can be validated without loading a database driver; ``db/url.py`` builds
SQLAlchemy's URL from the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

# libpq ``sslmode`` values map one-to-one onto asyncpg's ``ssl`` argument.
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
# libpq parameters with no asyncpg equivalent; asyncpg negotiates SCRAM itself.
DROPPED = frozenset({"channel_binding", "gssencmode", "target_session_attrs"})

PoolerMode = Literal["auto", "pgbouncer", "none"]
POOLER_MODES: tuple[PoolerMode, ...] = ("auto", "pgbouncer", "none")
Dialect = Literal["postgresql", "sqlite"]


class DatabaseURLError(ValueError):
    """``DATABASE_URL`` cannot be used; the message says why without echoing the password."""


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """What a database URL names: its kind, its host, and the driver arguments its libpq parameters become."""

    dialect: Dialect
    host: str | None
    connect_args: dict[str, Any] = field(default_factory=dict)  # asyncpg's: ssl, timeout, server_settings
    query: dict[str, str | tuple[str, ...]] = field(default_factory=dict)  # what stays in the URL

    @property
    def drivername(self) -> str:
        """SQLAlchemy's name for the async driver."""
        return "postgresql+asyncpg" if self.dialect == "postgresql" else "sqlite+aiosqlite"


def parse_database_url(raw: str, setting: str = "DATABASE_URL") -> DatabaseURL:
    """Read a ``sqlite://``, ``postgres://`` or ``postgresql://`` URL; :class:`DatabaseURLError` if unusable.

    ``setting`` names the variable the URL came from, in error messages.
    """
    text = raw.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise DatabaseURLError(f"{setting} is not a valid database URL") from None  # never echo it: a password
    if not parts.scheme or "://" not in text:
        raise DatabaseURLError(f"{setting} is not a valid database URL")
    backend, _, driver = parts.scheme.lower().partition("+")
    if backend == "sqlite":
        return DatabaseURL("sqlite", None)
    if backend not in {"postgres", "postgresql"}:
        raise DatabaseURLError(
            f"{setting}: unsupported database {backend!r}; use sqlite://, postgres:// or postgresql://"
        )
    if driver not in {"", "asyncpg", "psycopg2", "psycopg"}:
        raise DatabaseURLError(f"{setting}: unsupported driver {driver!r}; use asyncpg")

    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    connect_args: dict[str, Any] = {}
    sslmode = _single(query.pop("sslmode", None), "sslmode", setting)
    if sslmode is not None:
        if sslmode not in SSL_MODES:
            raise DatabaseURLError(f"{setting}: unknown sslmode {sslmode!r}")
        connect_args["ssl"] = sslmode
    timeout = _single(query.pop("connect_timeout", None), "connect_timeout", setting)
    if timeout is not None:
        if not timeout.isdigit():
            raise DatabaseURLError(f"{setting}: connect_timeout must be a whole number of seconds")
        connect_args["timeout"] = int(timeout)
    server_settings: dict[str, str] = {}
    application_name = _single(query.pop("application_name", None), "application_name", setting)
    if application_name is not None:
        server_settings["application_name"] = application_name
    options = _single(query.pop("options", None), "options", setting)
    if options is not None:
        # Neon's SNI fallback: ``options=endpoint%3Dep-xxx`` is a startup option, not a GUC to set.
        server_settings["options"] = options
    if server_settings:
        connect_args["server_settings"] = server_settings
    for name in DROPPED:
        query.pop(name, None)
    remaining = {name: values[0] if len(values) == 1 else tuple(values) for name, values in query.items()}
    return DatabaseURL("postgresql", parts.hostname, connect_args, remaining)


def _single(values: list[str] | None, name: str, setting: str) -> str | None:
    if not values:
        return None
    if len(set(values)) > 1:
        raise DatabaseURLError(f"{setting}: {name} is given more than once")
    return values[0]


def behind_transaction_pooler(database: DatabaseURL, mode: PoolerMode) -> bool:
    """True when connections to ``database`` go through PgBouncer in transaction mode.

    ``mode`` is ``DATABASE_POOLER``: ``pgbouncer`` says so, ``none`` says not, and ``auto`` recognises
    Neon's pooled endpoint by its host name (``ep-…-pooler.<region>.aws.neon.tech``).
    """
    if database.dialect != "postgresql" or mode == "none":
        return False
    if mode == "pgbouncer":
        return True
    return (database.host or "").split(".", 1)[0].endswith("-pooler")
