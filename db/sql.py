"""SQL that differs by dialect, behind one expression each."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, String, cast, exists, func, literal, select, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import Boolean


class ContainsAll(ColumnElement[bool]):
    """``column`` (a tag list) holds every one of ``values``.

    PostgreSQL: ``column @> ARRAY[...]``. SQLite: one ``EXISTS (… json_each …)`` per value.
    """

    inherit_cache = False
    type = Boolean()

    def __init__(self, column: ColumnElement[Any] | InstrumentedAttribute[Any], values: list[str]) -> None:
        self.column = column
        self.values = values


@compiles(ContainsAll, "postgresql")
def _contains_all_postgresql(element: ContainsAll, compiler: SQLCompiler, **kw: Any) -> str:
    array = type_coerce(element.column, ARRAY(String))
    # An explicit varchar[] so the operator matches the column's type even when values are inlined as literals.
    values = cast(literal(element.values, ARRAY(String)), ARRAY(String))
    return compiler.process(array.contains(values), **kw)


@compiles(ContainsAll)
def _contains_all_default(element: ContainsAll, compiler: SQLCompiler, **kw: Any) -> str:
    each = func.json_each(element.column).table_valued("value")
    value: Any = each.c.value
    clauses = [exists(select(1).select_from(each).where(value == literal(v))) for v in element.values]
    return " AND ".join(f"({compiler.process(clause, **kw)})" for clause in clauses) or "1 = 1"


class FoldedLike(ColumnElement[bool]):
    """``column`` matches a LIKE ``pattern`` (``\\`` escapes) ignoring case, for all of Unicode on both databases.

    PostgreSQL: ``ILIKE`` (Unicode lower-casing). SQLite's own ``lower()``/``LIKE`` fold only ASCII, so there
    both sides go through ``unicode_lower()``, Python's ``str.lower`` registered by ``db.engine`` on every
    SQLite connection: the same folding as PostgreSQL's, so both databases find the same tasks.
    """

    inherit_cache = False
    type = Boolean()

    def __init__(self, column: ColumnElement[Any] | InstrumentedAttribute[Any], pattern: str) -> None:
        self.column = column
        self.pattern = pattern


@compiles(FoldedLike, "postgresql")
def _folded_like_postgresql(element: FoldedLike, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.ilike(element.pattern, escape="\\"), **kw)


@compiles(FoldedLike)
def _folded_like_default(element: FoldedLike, compiler: SQLCompiler, **kw: Any) -> str:
    folded = func.unicode_lower(element.column).like(func.unicode_lower(literal(element.pattern)), escape="\\")
    return compiler.process(folded, **kw)
