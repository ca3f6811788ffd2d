"""The database as the request path sees it: run a :class:`~db.query.Query` with values, get rows back.

One :class:`Database` per application (``app.state.database``), made by :func:`open_database`:

* :class:`PostgresDatabase`: the statement goes to an asyncpg connection borrowed from
  :class:`db.pool.ConnectionPool` for just that statement. A read or a single-statement write runs in
  autocommit: one round trip, no ``BEGIN``, ``COMMIT`` or ``ROLLBACK``. A statement that finds its connection
  dead before it ran (closed, or ended by the server: SQLSTATE 57P01-57P03) runs once more on a connection
  that is checked first; a read also when the connection broke while it ran, since a read is safe to repeat.
* :class:`SQLiteDatabase`: SQLAlchemy Core on aiosqlite in autocommit (the zero-config first run).

Both offer :meth:`Database.transaction` for work that needs several statements to commit together (a
create with ``Idempotency-Key``). Rows come back as mappings of column name to value.

Failures leave as three exception types, which ``app.errors`` turns into answers:
:class:`~db.pool.DatabaseUnavailableError` (503), :class:`~db.pool.PoolExhaustedError` (503, "busy") and
:class:`ConstraintViolationError` (409). Anything else is a bug and propagates as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NoReturn, Protocol, cast

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.base import Executable

from config.settings import DatabaseLimits
from db.engine import create_engine, postgres_connector
from db.pool import ConnectionPool, DatabaseUnavailableError, PooledConnection, PoolExhaustedError, PoolOptions
from db.query import POSTGRES_DIALECT, CompiledForPostgres, Query
from db.url import PoolerMode

__all__ = [
    "ConstraintViolationError",
    "Database",
    "DatabaseUnavailableError",
    "Executor",
    "PoolExhaustedError",
    "PostgresDatabase",
    "Row",
    "SQLiteDatabase",
]

Row = Mapping[str, Any]

# SQLSTATEs with which the server ends a session before it ran (or committed) anything of the statement.
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})
# Statements that fail on a constraint: the client's conflict, not the server's fault.
_CONSTRAINT_CLASS = "23"
# A table or column the statement needs is missing: the schema is behind the code (migrations not applied).
SCHEMA_BEHIND_SQLSTATES = frozenset({"42P01", "42703"})


class ConstraintViolationError(Exception):
    """The database refused a write on a constraint (SQLSTATE class 23)."""


class Executor(Protocol):
    """Where a repository sends its statements: the database itself (autocommit) or a transaction."""

    async def fetch(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> list[Row]:
        """Every row the statement returns."""
        ...

    async def fetchrow(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> Row | None:
        """The first row the statement returns, or ``None``."""
        ...

    @property
    def dialect_name(self) -> str:
        """``postgresql`` or ``sqlite``."""
        ...


class Database(ABC):
    """Runs queries for the request path; see the module docstring."""

    dialect_name: str
    engine: AsyncEngine  # SQLAlchemy's engine: tools, and sessions for Advanced Alchemy's own methods

    @property
    def dialect(self) -> Dialect:
        """The SQLAlchemy dialect statements are compiled for."""
        return self.engine.dialect

    @abstractmethod
    async def fetch(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> list[Row]:
        """Run ``query`` in autocommit; every row it returns. ``read_only``: safe to repeat on a broken connection."""

    async def fetchrow(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> Row | None:
        """Run ``query`` in autocommit; its first row, or ``None``."""
        rows = await self.fetch(query, values, read_only=read_only)
        return rows[0] if rows else None

    @abstractmethod
    def transaction(self, *, lock_timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[Executor]:
        """Statements that commit together when the block ends without an exception (else roll back).

        ``lock_timeout`` (seconds, PostgreSQL): how long a statement of it may wait for a lock held by another
        transaction before failing with SQLSTATE 55P03.
        """

    @abstractmethod
    async def check(self, seconds: float) -> None:
        """Raise :class:`DatabaseUnavailableError` unless the database answers within ``seconds``."""

    @abstractmethod
    async def close(self) -> None:
        """Release every connection (application shutdown)."""


class DryRunExecutor:
    """Records each statement and its values instead of running it, and answers no rows: what a repository
    method would send (the benchmark's ``EXPLAIN`` of the list statements uses it)."""

    def __init__(self, dialect_name: str) -> None:
        self.dialect_name = dialect_name
        self.calls: list[tuple[Query, Mapping[str, Any]]] = []

    async def fetch(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> list[Row]:
        """Record the call; no rows."""
        del read_only
        self.calls.append((query, dict(values)))
        return []

    async def fetchrow(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> Row | None:
        """Record the call; no row."""
        await self.fetch(query, values)
        return None


# -- PostgreSQL -------------------------------------------------------------------------------------------------


def _rows(compiled: CompiledForPostgres, records: list[Any]) -> list[Row]:
    if not compiled.json_columns:
        return records  # asyncpg's Records are mappings of column name to value already
    decoded: list[Row] = []
    for record in records:
        row = dict(record.items())
        for name in compiled.json_columns:
            if isinstance(row.get(name), str):
                row[name] = json.loads(row[name])
        decoded.append(row)
    return decoded


def _not_run(exc: BaseException) -> bool:
    """The statement certainly did not run (or was rolled back): the connection was closed before it was
    sent, it was still busy with the end of an exchange the server broke off (asyncpg refuses to start a
    statement then, before sending anything), or the server ended the session (administrator command, crash,
    shutdown)."""
    if isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc):
        return True
    if isinstance(exc, asyncpg.InternalClientError) and "another operation" in str(exc):
        return True
    return any(getattr(current, "sqlstate", None) in _SESSION_ENDED for current in (exc, exc.__cause__))


def _broken(exc: BaseException) -> bool:
    """The connection broke (closed, reset, ended by the server) before the statement had its answer."""
    return isinstance(exc, OSError | asyncpg.ConnectionDoesNotExistError) or _not_run(exc)


def _reraise(exc: Exception, translate: Callable[[Exception], Exception]) -> NoReturn:
    """Raise what ``exc`` means for the request, chained to ``exc`` (or ``exc`` itself when it is not ours)."""
    translated = translate(exc)
    if translated is exc:
        raise exc
    raise translated from exc


def _translated(exc: Exception) -> Exception:
    """What a driver error means for the request (see the module docstring)."""
    if isinstance(exc, DatabaseUnavailableError | PoolExhaustedError):
        return exc
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_CONSTRAINT_CLASS):
        return ConstraintViolationError(f"constraint violated (SQLSTATE {sqlstate})")
    if _broken(exc) or isinstance(exc, TimeoutError) or _transient_sqlstate(sqlstate):
        return DatabaseUnavailableError("the database could not run the statement")
    if sqlstate in SCHEMA_BEHIND_SQLSTATES:
        return DatabaseUnavailableError("the database schema is not migrated")
    return exc


def _transient_sqlstate(sqlstate: object) -> bool:
    # 08 connection exception, 53 insufficient resources, 57 operator intervention (57014: statement_timeout),
    # 55P03 lock not available (lock_timeout), 40001/40P01 serialization failure and deadlock (retry).
    return isinstance(sqlstate, str) and (sqlstate[:2] in {"08", "53", "57"} or sqlstate in {"55P03", "40001", "40P01"})


class PostgresDatabase(Database):
    """PostgreSQL through asyncpg, one pooled connection per statement (or per transaction)."""

    dialect_name = "postgresql"

    def __init__(self, pool: ConnectionPool, engine: AsyncEngine) -> None:
        self.pool = pool
        self.engine = engine

    @property
    def dialect(self) -> Dialect:
        """The dialect :class:`~db.query.Query` compiles for."""
        return POSTGRES_DIALECT

    async def fetch(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> list[Row]:
        """Run ``query`` on a pooled connection in autocommit; once more on a checked one if it was dead."""
        compiled = query.for_postgres()
        arguments = compiled.arguments(values)
        pool = self.pool
        connection = await pool.acquire()
        try:
            return _rows(compiled, await self._run(connection, compiled.sql, arguments))
        except Exception as exc:
            if not (_not_run(exc) or (read_only and _broken(exc))) or pool.declared_down:
                _reraise(exc, _translated)
        finally:
            pool.release(connection)
        # The connection was dead when the statement reached it: nothing ran, so run it on one that answers.
        connection = await pool.acquire(verify=True)
        try:
            return _rows(compiled, await self._run(connection, compiled.sql, arguments))
        except Exception as exc:
            _reraise(exc, _translated)
        finally:
            pool.release(connection)

    async def _run(self, connection: PooledConnection, sql: str, arguments: list[Any] | None) -> list[Any]:
        """One statement; ``arguments`` None: the simple protocol (no rows; several statements allowed)."""
        pool = self.pool
        pool.started(connection)
        try:
            if arguments is None:
                await connection.raw.execute(sql)
                records: list[Any] = []
            else:
                records = await connection.raw.fetch(sql, *arguments)
        except asyncpg.PostgresError as exc:
            # The server answered with an error, and the connection is ready for the next statement, unless the
            # error ended the session (57P01…): then asyncpg is still waiting for the end of the exchange, and the
            # connection must never be lent again (it would fail "another operation is in progress").
            if not _not_run(exc):
                pool.finished(connection, ok=True)
            raise
        # Anything else (the connection broke, a time limit, a cancellation) leaves the connection marked busy,
        # so giving it back closes it.
        pool.finished(connection, ok=True)
        return records

    @contextlib.asynccontextmanager
    async def transaction(self, *, lock_timeout: float | None = None) -> AsyncIterator[Executor]:
        """``BEGIN`` … ``COMMIT`` on one pooled connection; an exception in the block rolls back."""
        begin = "BEGIN"
        if lock_timeout is not None:  # in the same round trip as BEGIN
            begin += f"; SET LOCAL lock_timeout = '{round(lock_timeout * 1000)}ms'"
        pool = self.pool
        connection = await pool.acquire()
        try:
            try:
                await self._run(connection, begin, None)
            except Exception as exc:
                if not _not_run(exc) or pool.declared_down:
                    raise
                pool.discard(connection)
                connection = await pool.acquire(verify=True)
                await self._run(connection, begin, None)
            transaction = _PostgresTransaction(self, connection)
            try:
                yield transaction
            except BaseException:
                if not connection.raw.is_closed():
                    with contextlib.suppress(Exception):
                        await self._run(connection, "ROLLBACK", None)
                raise
            await self._run(connection, "COMMIT", None)
        except Exception as exc:
            _reraise(exc, _translated)
        finally:
            pool.release(connection)

    async def check(self, seconds: float) -> None:
        """``SELECT 1`` on the pool's control connection (never waits for a pooled one)."""
        await self.pool.check(seconds)

    async def close(self) -> None:
        """Close the pool and the engine."""
        await self.pool.close()
        await self.engine.dispose()


class _PostgresTransaction:
    """Statements on the connection of an open transaction (no retries: the transaction is one unit)."""

    dialect_name = "postgresql"

    def __init__(self, database: PostgresDatabase, connection: PooledConnection) -> None:
        self._database = database
        self._connection = connection

    async def fetch(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> list[Row]:
        del read_only  # inside a transaction nothing is repeated
        compiled = query.for_postgres()
        try:
            records = await self._database._run(self._connection, compiled.sql, compiled.arguments(values))
        except Exception as exc:
            _reraise(exc, _translated)
        return _rows(compiled, records)

    async def fetchrow(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> Row | None:
        rows = await self.fetch(query, values)
        return rows[0] if rows else None


# -- SQLite -----------------------------------------------------------------------------------------------------


def _sqlite_translated(exc: Exception) -> Exception:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, sqlite3.IntegrityError):
        return ConstraintViolationError("constraint violated")
    if isinstance(cause, sqlite3.OperationalError | OSError):  # "database is locked", a vanished file
        return DatabaseUnavailableError("the database could not run the statement")
    return exc


class _SQLiteExecutor:
    """Statements on one SQLAlchemy connection."""

    dialect_name = "sqlite"

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def fetch(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> list[Row]:
        del read_only
        try:
            result = await self._connection.execute(cast("Executable", query.statement), dict(values))
        except Exception as exc:
            _reraise(exc, _sqlite_translated)
        return [cast("Row", row._mapping) for row in result] if result.returns_rows else []

    async def fetchrow(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> Row | None:
        rows = await self.fetch(query, values)
        return rows[0] if rows else None


class SQLiteDatabase(Database):
    """SQLite through SQLAlchemy Core on aiosqlite; each statement commits by itself (autocommit)."""

    dialect_name = "sqlite"

    def __init__(self, engine: AsyncEngine) -> None:
        # Autocommit: a single statement is its own transaction, so it needs no BEGIN/COMMIT around it;
        # transaction() says BEGIN IMMEDIATE itself (the write lock first, so two writers cannot deadlock).
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def fetch(self, query: Query, values: Mapping[str, Any], *, read_only: bool = False) -> list[Row]:
        """Run ``query`` on its own connection."""
        try:
            async with self.engine.connect() as connection:
                return await _SQLiteExecutor(connection).fetch(query, values)
        except Exception as exc:
            _reraise(exc, _sqlite_translated)

    @contextlib.asynccontextmanager
    async def transaction(self, *, lock_timeout: float | None = None) -> AsyncIterator[Executor]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; an exception in the block rolls back. Lock waits are bounded by
        the busy timeout instead of ``lock_timeout``."""
        del lock_timeout
        try:
            async with self.engine.connect() as connection:
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield _SQLiteExecutor(connection)
                except BaseException:
                    await connection.exec_driver_sql("ROLLBACK")
                    raise
                await connection.exec_driver_sql("COMMIT")
        except Exception as exc:
            _reraise(exc, _sqlite_translated)

    async def check(self, seconds: float) -> None:
        """The file opens and answers."""
        try:
            async with asyncio.timeout(seconds), self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            raise DatabaseUnavailableError("the SQLite database did not answer") from exc

    async def close(self) -> None:
        """Close the engine's connections."""
        await self.engine.dispose()


def open_database(database_url: str, options: DatabaseLimits, *, pooler: PoolerMode = "auto") -> Database:
    """The :class:`Database` for ``DATABASE_URL``; call it inside the event loop that will use it."""
    engine = create_engine(database_url, options, pooler=pooler)
    if engine.dialect.name == "sqlite":
        return SQLiteDatabase(engine)
    connect = postgres_connector(database_url, options, pooler=pooler)
    pool = ConnectionPool(connect, PoolOptions.from_limits(options, connect_timeout=connect.budget))
    return PostgresDatabase(pool, engine)
