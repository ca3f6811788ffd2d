"""Driver and pool options for ``DATABASE_URL``, in one place: SQLAlchemy's engine (tools, SQLite) and the
arguments that open the request path's PostgreSQL connections (``db.pool``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from config.settings import TOOL_LIMITS, DatabaseLimits
from db.connections import RetryingConnect
from db.url import AsyncDatabaseURL, PoolerMode, translate_database_url, uses_transaction_pooler

# ``options=-c statement_timeout=…`` in DATABASE_URL (also ``--statement-timeout=…``) names its own value.
_URL_STATEMENT_TIMEOUT = re.compile(r"statement[_-]timeout", re.IGNORECASE)


def connect_arguments(database: AsyncDatabaseURL, options: DatabaseLimits, *, pooled: bool) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect`` besides the address: TLS, time limits, the pooler's needs.

    ``pooled``: a transaction-mode PgBouncer sits in front. It refuses startup parameters it does not know,
    ``statement_timeout`` among them, so there the statement timeout is the driver's: asyncpg cancels a
    statement still running after ``DB_STATEMENT_TIMEOUT`` (a 503, like the server's own timeout).
    """
    arguments: dict[str, Any] = dict(database.connect_args)
    server_settings = dict(arguments.get("server_settings", {}))
    if options.statement_timeout_ms and pooled:
        arguments["command_timeout"] = options.statement_timeout
    elif options.statement_timeout_ms and not _URL_STATEMENT_TIMEOUT.search(server_settings.get("options", "")):
        server_settings["statement_timeout"] = str(options.statement_timeout_ms)
        # A client-side backstop for a statement whose connection hangs (the server never answers):
        # later than the server's own timeout, which normally wins and keeps the connection usable.
        arguments["command_timeout"] = options.statement_timeout + 1.0
    if server_settings:
        arguments["server_settings"] = server_settings
    if pooled:
        arguments["statement_cache_size"] = 0
    return arguments


def postgres_connector(database_url: str, options: DatabaseLimits, *, pooler: PoolerMode = "auto") -> RetryingConnect:
    """What opens the request path's PostgreSQL connections: ``asyncpg.connect`` with the URL's address and
    :func:`connect_arguments`, retried within ``DB_CONNECT_TIMEOUT`` (see ``db.connections``), or within the
    URL's own ``connect_timeout`` when it has one (its ``budget``)."""
    database = translate_database_url(database_url)
    address: dict[str, Any] = database.url.translate_connect_args(username="user", database="database")
    address.update(database.url.query)
    arguments = {**address, **connect_arguments(database, options, pooled=uses_transaction_pooler(database, pooler))}
    budget = float(arguments.pop("timeout", options.connect_timeout))
    return RetryingConnect(budget, arguments)


def engine_options(
    database: AsyncDatabaseURL, options: DatabaseLimits = TOOL_LIMITS, *, pooled: bool = False
) -> dict[str, Any]:
    """Keyword arguments for ``create_async_engine`` that suit the database behind ``database``."""
    if database.dialect != "postgresql":
        # SQLite: one file, one writer. A busy timeout makes concurrent writers wait instead of failing.
        return {"connect_args": {**database.connect_args, "timeout": database.connect_args.get("timeout", 15)}}
    connect_args = connect_arguments(database, options, pooled=pooled)
    if pooled:
        connect_args["prepared_statement_cache_size"] = 0  # SQLAlchemy's own statement cache, besides asyncpg's
    connect_args["async_creator_fn"] = RetryingConnect(options.connect_timeout)
    return {
        "connect_args": connect_args,
        "pool_size": options.pool_size,
        "max_overflow": options.max_overflow,
        "pool_timeout": options.pool_timeout,
        "pool_recycle": options.pool_recycle or -1,
    }


def create_engine(
    database_url: str, options: DatabaseLimits = TOOL_LIMITS, *, pooler: PoolerMode = "auto"
) -> AsyncEngine:
    """Create SQLAlchemy's async engine for a ``DATABASE_URL`` exactly as a user wrote it.

    Tools (migrations, ``manage.py check``, benchmarks) use it with ``TOOL_LIMITS``; on SQLite it also
    serves the requests (``db.database.SQLiteDatabase``). The request path on PostgreSQL has its own pool
    (``db.pool``). ``pooler`` is ``DATABASE_POOLER``: whether a transaction-mode PgBouncer sits in front.
    """
    database = translate_database_url(database_url)
    sqlite_file = database.url.database if database.dialect == "sqlite" else None
    if sqlite_file and sqlite_file != ":memory:":
        Path(sqlite_file).parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs = engine_options(database, options, pooled=uses_transaction_pooler(database, pooler))
    engine = create_async_engine(database.url, **engine_kwargs)
    if database.dialect == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while a write commits; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Unicode lower-casing for searches (db.dialect_sql.FoldedLike): SQLite's lower() folds ASCII only.
    dbapi_connection.create_function("unicode_lower", 1, _unicode_lower, deterministic=True)


def _unicode_lower(value: str | None) -> str | None:
    return None if value is None else value.lower()
