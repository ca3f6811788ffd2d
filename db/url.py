"""``DATABASE_URL`` → SQLAlchemy's async-driver URL and asyncpg's connect arguments.

What a URL may say and what its libpq parameters become is decided in ``config/database_url.py`` (settings
validate URLs with it, without loading a driver); this module builds SQLAlchemy's URL from that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL, make_url

from config.database_url import (
    POOLER_MODES,
    DatabaseURL,
    DatabaseURLError,
    PoolerMode,
    behind_transaction_pooler,
    parse_database_url,
)

__all__ = [
    "POOLER_MODES",
    "AsyncDatabaseURL",
    "DatabaseURLError",
    "PoolerMode",
    "pooler_connect_args",
    "translate_database_url",
    "uses_transaction_pooler",
]


@dataclass(frozen=True, slots=True)
class AsyncDatabaseURL:
    """A SQLAlchemy URL for an async driver plus the ``connect_args`` it needs."""

    url: URL
    source: DatabaseURL
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
    parsed = parse_database_url(raw, setting)
    try:
        url = make_url(raw.strip())
    except Exception as exc:  # sqlalchemy raises ArgumentError; never echo the raw value (it has a password)
        raise DatabaseURLError(f"{setting} is not a valid database URL") from exc
    if parsed.dialect == "sqlite":
        return AsyncDatabaseURL(url.set(drivername=parsed.drivername), parsed)
    return AsyncDatabaseURL(
        url.set(drivername=parsed.drivername, query=parsed.query), parsed, dict(parsed.connect_args)
    )


def uses_transaction_pooler(database: AsyncDatabaseURL, mode: PoolerMode) -> bool:
    """True when connections to ``database`` go through PgBouncer in transaction mode (``DATABASE_POOLER``)."""
    return behind_transaction_pooler(database.source, mode)


def pooler_connect_args(database: AsyncDatabaseURL, mode: PoolerMode) -> dict[str, Any]:
    """The connect arguments that a transaction-mode pooler needs (empty when there is none).

    PgBouncer in transaction mode hands each transaction to any server connection, so a statement prepared
    under a name on one is missing (or already taken) on the next: ``prepared statement "__asyncpg_stmt_1__"
    does not exist``. With both statement caches off, asyncpg and SQLAlchemy prepare every statement
    unnamed and asyncpg sends Parse again in the same round trip as Bind and Execute, so nothing outlives
    one message batch on one server connection. (Unique names from ``prepared_statement_name_func``
    also avoid the errors, but each one stays allocated on whichever server connection parsed it:
    measured with PgBouncer 1.18, about 160 leaked statements per server connection after 800
    transactions.)
    """
    if not uses_transaction_pooler(database, mode):
        return {}
    return {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
