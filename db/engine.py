"""Build the async engine for ``DATABASE_URL`` (one place for driver and pool options)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from db.url import AsyncDatabaseURL, PoolerMode, pooler_connect_args, translate_database_url


def engine_options(database: AsyncDatabaseURL) -> dict[str, Any]:
    """Keyword arguments for ``create_async_engine`` that suit the database behind ``database``."""
    options: dict[str, Any] = {"connect_args": dict(database.connect_args)}
    if database.dialect == "postgresql":
        # Neon drops idle connections; pre-ping replaces a dead one instead of handing it to a request.
        options.update(pool_pre_ping=True, pool_size=10, max_overflow=10, pool_timeout=10, pool_recycle=300)
    else:
        # SQLite: one file, one writer. A busy timeout makes concurrent writers wait instead of failing.
        options["connect_args"].setdefault("timeout", 15)
    return options


def create_engine(database_url: str, *, pooler: PoolerMode = "auto") -> AsyncEngine:
    """Create the async engine for a ``DATABASE_URL`` exactly as a user wrote it.

    ``pooler`` is ``DATABASE_POOLER``: whether a transaction-mode PgBouncer sits in front of the database.
    """
    database = translate_database_url(database_url)
    sqlite_file = database.url.database if database.dialect == "sqlite" else None
    if sqlite_file and sqlite_file != ":memory:":
        Path(sqlite_file).parent.mkdir(parents=True, exist_ok=True)
    options = engine_options(database)
    options["connect_args"].update(pooler_connect_args(database, pooler))
    engine = create_async_engine(database.url, **options)
    if database.dialect == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
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
