"""Build the async engine for ``DATABASE_URL`` (one place for driver and pool options)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from db.connections import RetryingConnect, guard_checkouts
from db.url import AsyncDatabaseURL, PoolerMode, behind_transaction_pooler, pooler_connect_args, translate_database_url

# ``options=-c statement_timeout=…`` in DATABASE_URL (also ``--statement-timeout=…``) names its own value.
_URL_STATEMENT_TIMEOUT = re.compile(r"statement[_-]timeout", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Pool size and time limits for PostgreSQL: the ``DB_*`` settings (SQLite ignores them).

    Defaults suit Neon: a small pool per worker, a request that cannot get a working connection within
    about 2 s gets a 503, connections are replaced before Neon's idle cut-off (about 5 minutes).
    """

    pool_size: int = 5
    max_overflow: int = 5
    pool_timeout: float = 1.0  # seconds a request waits for a free connection
    pool_recycle: int = 300  # seconds before a connection is replaced; 0 keeps it while it works
    connect_timeout: float = 1.5  # seconds to get a working connection: ping, connect and its retries
    statement_timeout: float = 10.0  # seconds; PostgreSQL cancels longer statements; 0 is off

    @property
    def statement_timeout_ms(self) -> int:
        """``statement_timeout`` as PostgreSQL reads it (milliseconds; 0 is off)."""
        return round(self.statement_timeout * 1000)


# Migrations and other tools: no statement timeout (a long migration must finish) and a generous connect.
TOOL_OPTIONS = EngineOptions(connect_timeout=10.0, statement_timeout=0.0)


def engine_options(
    database: AsyncDatabaseURL, options: EngineOptions = TOOL_OPTIONS, *, pooled: bool = False
) -> dict[str, Any]:
    """Keyword arguments for ``create_async_engine`` that suit the database behind ``database``.

    ``pooled``: a transaction-mode PgBouncer sits in front. It refuses startup parameters it does not know,
    ``statement_timeout`` among them, so there the statement timeout is the driver's: asyncpg cancels a
    statement still running after ``DB_STATEMENT_TIMEOUT`` (a 503, like the server's own timeout).
    """
    engine_kwargs: dict[str, Any] = {"connect_args": dict(database.connect_args)}
    connect_args = engine_kwargs["connect_args"]
    if database.dialect == "postgresql":
        # Pre-ping and recycle happen in db.connections (bounded in time), not in SQLAlchemy's pool.
        engine_kwargs.update(
            pool_size=options.pool_size,
            max_overflow=options.max_overflow,
            pool_timeout=options.pool_timeout,
            pool_recycle=-1,
        )
        connect_args["async_creator_fn"] = RetryingConnect(options.connect_timeout)
        server_settings = dict(connect_args.get("server_settings", {}))
        if options.statement_timeout_ms and pooled:
            connect_args["command_timeout"] = options.statement_timeout
        elif options.statement_timeout_ms and not _URL_STATEMENT_TIMEOUT.search(server_settings.get("options", "")):
            server_settings["statement_timeout"] = str(options.statement_timeout_ms)
            # A client-side backstop for a statement whose connection hangs (the server never answers):
            # later than the server's own timeout, which normally wins and keeps the connection usable.
            connect_args["command_timeout"] = options.statement_timeout + 1.0
        if server_settings:
            connect_args["server_settings"] = server_settings
    else:
        # SQLite: one file, one writer. A busy timeout makes concurrent writers wait instead of failing.
        connect_args.setdefault("timeout", 15)
    return engine_kwargs


def create_engine(
    database_url: str, options: EngineOptions = TOOL_OPTIONS, *, pooler: PoolerMode = "auto"
) -> AsyncEngine:
    """Create the async engine for a ``DATABASE_URL`` exactly as a user wrote it.

    The service passes its settings' ``options``; tools (migrations, benchmarks) use ``TOOL_OPTIONS``.
    ``pooler`` is ``DATABASE_POOLER``: whether a transaction-mode PgBouncer sits in front of the database.
    """
    database = translate_database_url(database_url)
    sqlite_file = database.url.database if database.dialect == "sqlite" else None
    if sqlite_file and sqlite_file != ":memory:":
        Path(sqlite_file).parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs = engine_options(database, options, pooled=behind_transaction_pooler(database, pooler))
    engine_kwargs["connect_args"].update(pooler_connect_args(database, pooler))
    engine = create_async_engine(database.url, **engine_kwargs)
    if database.dialect == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        guard_checkouts(engine, budget=options.connect_timeout, recycle=options.pool_recycle)
    return engine


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while a write commits; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Unicode lower-casing for searches (db.sql.FoldedLike): SQLite's lower() folds ASCII only.
    dbapi_connection.create_function("unicode_lower", 1, _unicode_lower, deterministic=True)


def _unicode_lower(value: str | None) -> str | None:
    return None if value is None else value.lower()
