"""Translate ``DATABASE_URL`` as people paste it into what SQLAlchemy's async drivers accept.

Neon prints ``postgresql://user:pass@host/db?sslmode=require&channel_binding=require``. asyncpg rejects
libpq-only query parameters (``sslmode`` raises ``TypeError`` inside ``connect()``), so they are turned
into asyncpg connect arguments here, once, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import URL, make_url

# libpq ``sslmode`` values map one-to-one onto asyncpg's ``ssl`` argument.
_SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
# libpq parameters with no asyncpg equivalent; asyncpg negotiates SCRAM itself.
_DROPPED = frozenset({"channel_binding", "gssencmode", "target_session_attrs"})

PoolerMode = Literal["auto", "pgbouncer", "none"]
POOLER_MODES: tuple[PoolerMode, ...] = ("auto", "pgbouncer", "none")


class DatabaseURLError(ValueError):
    """``DATABASE_URL`` cannot be used; the message says why without echoing the password."""


@dataclass(frozen=True, slots=True)
class AsyncDatabaseURL:
    """A SQLAlchemy URL for an async driver plus the ``connect_args`` it needs."""

    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self.url.get_backend_name()

    def render(self) -> str:
        """The URL with the password hidden, for logs and messages."""
        return self.url.render_as_string(hide_password=True)


def translate_database_url(raw: str, setting: str = "DATABASE_URL") -> AsyncDatabaseURL:
    """Turn a ``sqlite://``, ``postgres://`` or ``postgresql://`` URL into an async-driver URL.

    ``setting`` names the variable the URL came from, in error messages.
    """
    try:
        url = make_url(raw.strip())
    except Exception as exc:  # sqlalchemy raises ArgumentError; never echo the raw value (it has a password)
        raise DatabaseURLError(f"{setting} is not a valid database URL") from exc
    # Read the scheme as text: SQLAlchemy's own lookup would try to load a "postgres" dialect and fail.
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite":
        return AsyncDatabaseURL(url.set(drivername="sqlite+aiosqlite"))
    if backend not in {"postgres", "postgresql"}:
        raise DatabaseURLError(
            f"{setting}: unsupported database {backend!r}; use sqlite://, postgres:// or postgresql://"
        )
    if driver not in {"", "asyncpg", "psycopg2", "psycopg"}:
        raise DatabaseURLError(f"{setting}: unsupported driver {driver!r}; use asyncpg")

    query = dict(url.query)
    connect_args: dict[str, Any] = {}
    sslmode = _single(query.pop("sslmode", None), "sslmode", setting)
    if sslmode is not None:
        if sslmode not in _SSL_MODES:
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
    for name in _DROPPED:
        query.pop(name, None)
    return AsyncDatabaseURL(
        url.set(drivername="postgresql+asyncpg", query=query),
        connect_args,
    )


def _single(value: str | tuple[str, ...] | None, name: str, setting: str) -> str | None:
    if isinstance(value, tuple):
        if len(set(value)) > 1:
            raise DatabaseURLError(f"{setting}: {name} is given more than once")
        return value[0] if value else None
    return value


def behind_transaction_pooler(database: AsyncDatabaseURL, mode: PoolerMode) -> bool:
    """True when connections to ``database`` go through PgBouncer in transaction mode.

    ``mode`` is ``DATABASE_POOLER``: ``pgbouncer`` says so, ``none`` says not, and ``auto`` recognises
    Neon's pooled endpoint by its host name (``ep-…-pooler.<region>.aws.neon.tech``).
    """
    if database.dialect != "postgresql" or mode == "none":
        return False
    if mode == "pgbouncer":
        return True
    return (database.url.host or "").split(".", 1)[0].endswith("-pooler")


def pooler_connect_args(database: AsyncDatabaseURL, mode: PoolerMode) -> dict[str, Any]:
    """The asyncpg connect arguments that a transaction-mode pooler needs (empty when there is none).

    PgBouncer in transaction mode hands each transaction to any server connection, so a statement prepared
    under a name on one is missing (or already taken) on the next: ``prepared statement "__asyncpg_stmt_1__"
    does not exist``. With both statement caches off, asyncpg and SQLAlchemy prepare every statement
    unnamed and asyncpg sends Parse again in the same round trip as Bind and Execute, so nothing outlives
    one message batch on one server connection. (Unique names from ``prepared_statement_name_func``
    also avoid the errors, but each one stays allocated on whichever server connection parsed it:
    measured with PgBouncer 1.18, about 160 leaked statements per server connection after 800
    transactions.)
    """
    if not behind_transaction_pooler(database, mode):
        return {}
    return {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
