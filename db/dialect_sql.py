"""SQL that differs by dialect, behind one expression each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, String, cast, exists, func, literal, select, type_coerce
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import Boolean


class ContainsAll(ColumnElement[bool]):
    """``column`` (a tag list) holds every one of ``values`` (strings, or bound parameters that hold them).

    PostgreSQL: ``column @> ARRAY[...]::VARCHAR[]``. SQLite: one ``EXISTS (… json_each …)`` per value.
    """

    inherit_cache = False
    type = Boolean()

    def __init__(
        self, column: ColumnElement[Any] | InstrumentedAttribute[Any], values: Sequence[str | BindParameter[Any]]
    ) -> None:
        self.column = column
        self.values = [v if isinstance(v, BindParameter) else literal(v, String()) for v in values]


@compiles(ContainsAll, "postgresql")
def _contains_all_postgresql(element: ContainsAll, compiler: SQLCompiler, **kw: Any) -> str:
    column = type_coerce(element.column, ARRAY(String))
    # An explicit varchar[] so the operator matches the column's type whatever the values' own types.
    values = cast(postgresql.array([type_coerce(v, String()) for v in element.values]), ARRAY(String))
    return compiler.process(column.contains(values), **kw)


@compiles(ContainsAll)
def _contains_all_default(element: ContainsAll, compiler: SQLCompiler, **kw: Any) -> str:
    each = func.json_each(element.column).table_valued("value")
    value: Any = each.c.value
    clauses = [exists(select(1).select_from(each).where(value == v)) for v in element.values]
    return " AND ".join(f"({compiler.process(clause, **kw)})" for clause in clauses) or "1 = 1"


class FoldedLike(ColumnElement[bool]):
    """``column`` matches a LIKE ``pattern`` (``\\`` escapes; a string or a bound parameter) ignoring case, for
    all of Unicode on both databases.

    PostgreSQL: ``ILIKE`` (Unicode lower-casing). SQLite's own ``lower()``/``LIKE`` fold only ASCII, so there
    both sides go through ``unicode_lower()``, Python's ``str.lower`` registered by ``db.engine`` on every
    SQLite connection: the same folding as PostgreSQL's, so both databases find the same tasks.
    """

    inherit_cache = False
    type = Boolean()

    def __init__(
        self, column: ColumnElement[Any] | InstrumentedAttribute[Any], pattern: str | BindParameter[Any]
    ) -> None:
        self.column = column
        self.pattern = pattern if isinstance(pattern, BindParameter) else literal(pattern, String())


@compiles(FoldedLike, "postgresql")
def _folded_like_postgresql(element: FoldedLike, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.ilike(element.pattern, escape="\\"), **kw)


@compiles(FoldedLike)
def _folded_like_default(element: FoldedLike, compiler: SQLCompiler, **kw: Any) -> str:
    folded = func.unicode_lower(element.column).like(func.unicode_lower(element.pattern), escape="\\")
    return compiler.process(folded, **kw)
