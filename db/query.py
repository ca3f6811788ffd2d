"""Statements built once and compiled once: what the request path sends to the database.

A :class:`Query` wraps a SQLAlchemy Core statement whose values are all named bind parameters
(``bindparam("title")``); a request supplies the values. SQLAlchemy builds and compiles the statement once,
and each request pays only for its values: no statement objects, cache keys or compiler runs per request.

On PostgreSQL the compiled SQL (``$1``-style placeholders with their casts) goes straight to asyncpg, which
prepares it once per connection and from then on sends one Bind/Execute/Sync per call: one round trip. On
SQLite the statement is executed by SQLAlchemy Core (its compiled cache keeps the compiled form).

Repositories build every :class:`Query` through their owner-scoped builders and pass the owner's id with
every call (see ``db/owned.py``); a statement here never carries a value of its own for a required
parameter, so running one without the owner fails instead of reading someone else's rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, cast

import msgspec
from sqlalchemy import JSON, BindParameter
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import iterate
from sqlalchemy.types import TypeEngine

POSTGRES_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
_json_encode = msgspec.json.Encoder().encode


class MissingParameterError(KeyError):
    """A statement ran without a value for one of its parameters (a programming error)."""


class UnsupportedStatementError(ValueError):
    """A statement that cannot be built once and run many times (an ``IN`` over a list, say)."""


class CompiledForPostgres:
    """SQL text with ``$n`` placeholders, and how to turn named values into asyncpg's positional arguments."""

    __slots__ = ("_arguments", "json_columns", "sql")

    def __init__(self, statement: ClauseElement) -> None:
        compiled = cast("SQLCompiler", statement.compile(dialect=POSTGRES_DIALECT))
        self.sql = str(compiled)
        arguments: list[tuple[str, bool, Any, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            # JSON values travel as text: asyncpg has no JSON codec unless one is registered per connection.
            convert = _json_text if _is_json(bind.type) else None
            arguments.append((name, bind.required, bind.effective_value, convert))
        self._arguments = tuple(arguments)
        columns: Any = getattr(statement, "selected_columns", None) or getattr(statement, "exported_columns", ())
        self.json_columns = tuple(c.key for c in columns if _is_json(getattr(c, "type", None)))

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for ``values`` (literal binds of the statement keep their own value)."""
        result = []
        for name, required, literal, convert in self._arguments:
            if required:
                try:
                    value = values[name]
                except KeyError:
                    raise MissingParameterError(name) from None
            else:
                value = values.get(name, literal)
            result.append(value if convert is None or value is None else convert(value))
        return result


def _is_json(type_: TypeEngine[Any] | None) -> bool:
    """A JSON column on PostgreSQL (a type with a PostgreSQL variant counts as that variant)."""
    return type_ is not None and isinstance(type_.dialect_impl(POSTGRES_DIALECT), JSON)


def _json_text(value: Any) -> str:
    return _json_encode(value).decode()


class Query:
    """A statement built once; :meth:`for_postgres` compiles it for asyncpg on first use."""

    __slots__ = ("_postgres", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        # ``column.in_([...])`` renders its list only when it runs; one parameter per value works everywhere.
        if any(isinstance(element, BindParameter) and element.expanding for element in iterate(statement)):
            raise UnsupportedStatementError("a statement built once cannot hold an expanding IN list")
        self.statement = statement
        self._postgres: CompiledForPostgres | None = None

    def for_postgres(self) -> CompiledForPostgres:
        """The statement compiled for asyncpg (once)."""
        compiled = self._postgres
        if compiled is None:
            compiled = self._postgres = CompiledForPostgres(self.statement)
        return compiled

    def __repr__(self) -> str:
        return f"Query({str(self.statement)!r})"


class QueryCache:
    """Queries by shape: built on first use by ``build``; at most ``size`` kept (the oldest dropped first)."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._queries: OrderedDict[Hashable, Query] = OrderedDict()
        self._lock = threading.Lock()  # building is pure; the lock only keeps the dict consistent

    def get(self, shape: Hashable, build: Callable[[], ClauseElement]) -> Query:
        """The query for ``shape``, building its statement with ``build`` the first time."""
        query = self._queries.get(shape)
        if query is not None:
            return query
        query = Query(build())
        with self._lock:
            self._queries[shape] = query
            if len(self._queries) > self._size:
                self._queries.popitem(last=False)
        return query

    def __len__(self) -> int:
        return len(self._queries)
