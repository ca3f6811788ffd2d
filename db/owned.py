"""The owner scope: one repository class that confines every statement to one owner's rows.

This module is the only place in the code base that filters by user. Controllers and services build an
``OwnedRepository`` for the authenticated user and never add owner filters themselves.

How the scope is enforced (Advanced Alchemy 1.12):

* Every statement carries the owner condition from one method, :meth:`OwnedRepository._scoped`:
  ``WHERE <owner column> = <owner>``. Advanced Alchemy's own reads, counts, exists, updates and deletes build
  their statements through ``_get_base_stmt``, which this class overrides to call it, including statements
  that callers pass in through ``statement=`` (they must select from the owned table alone: an alias or a
  join would carry the filter on the wrong table).
* The request path (:meth:`~OwnedRepository.page`, :meth:`~OwnedRepository.get_row`,
  :meth:`~OwnedRepository.insert_row`, :meth:`~OwnedRepository.update_values`,
  :meth:`~OwnedRepository.delete_one`) runs statements built once per shape (``db/query.py``) in which the
  owner is a required parameter, and every call supplies this repository's owner: a shared statement has no
  owner of its own to leak. They run through an :class:`~db.database.Executor` (the database in autocommit,
  or a transaction): one round trip each, no ORM session.
* Inserts are stamped with the owner; a row that names another owner, or picks its own primary key (a
  duplicate key would reveal another owner's row), is refused.
* Writes that copy attributes from caller data (``update``, ``update_many``, ``get_and_update``) refuse
  data that names another owner or changes the primary key, so a row can never move to someone else.
* The conditional writes (``update_values`` and ``delete_one`` with ``versions=``, the API's If-Match) put
  the version condition in the same ``UPDATE``/``DELETE … WHERE`` as the owner and the key, so the check and
  the write are one atomic statement; another owner's row is "not found", never "stale".

Filters are code, not data: the WHERE clauses a caller adds narrow the owner's rows, and a caller that
writes its own subquery over the raw table is reading outside the repository. Routes build their filters
from the owned model's columns only.
* Operations that cannot be scoped raise :class:`OwnerScopeError`: the upserts (native ``ON CONFLICT``
  bypasses the WHERE clause, and the fallback turns another owner's id into a conflict, an existence
  oracle), composite-key ``delete_many``, and the repository cache (its keys ignore the owner).

``tests/repository/test_owned_repository.py`` enumerates every public method of this class and fails for any method
it does not exercise with another owner's ids, so a method added by a future AA release cannot slip through.

Tables that need no Advanced Alchemy repository (the idempotency keys) get :class:`OwnedTable` instead: a
handful of statement builders that carry the owner, so their repositories (``db/idempotency.py``) never
write an owner condition of their own. ``tests/api/test_idempotency.py`` probes those the same way.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from types import MappingProxyType, SimpleNamespace
from typing import Any, ClassVar, Generic, Literal, NoReturn, Protocol, Self, TypeVar, cast, get_args

from advanced_alchemy.exceptions import NotFoundError, RepositoryError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import (
    ColumnElement,
    Delete,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    false,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute
from sqlalchemy.orm.strategy_options import _AbstractLoad
from sqlalchemy.sql.schema import CallableColumnDefault, Column, ScalarElementColumnDefault

from db.database import Executor, Row
from db.models import Task
from db.query import Query, QueryCache

ModelT = TypeVar("ModelT", bound=Task)
RowT = TypeVar("RowT", bound=DeclarativeBase)
StatementT = TypeVar("StatementT")

OWNER_PARAM = "owner_id"
"""The name of the owner parameter in every shared statement; only :meth:`OwnedRepository._values` fills it."""


View = Literal["live", "trash", "all"]
"""Which of an owner's rows a repository sees, when its model has a trash (``trash_attribute``)."""
VIEWS: frozenset[str] = frozenset(get_args(View))


class OwnerScopeError(RepositoryError):
    """An operation would reach outside the repository's owner; refused before touching the database."""


class StaleVersionError(RepositoryError):
    """A conditional write found the owner's row at a version other than the ones it was given.

    ``current`` is the row as it is now (read in the same round trip that told stale from missing), so the
    API can answer with the current representation.
    """

    def __init__(self, *args: Any, current: Row | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current = current


class PageSpec(Protocol):
    """A page of a list, as the repository needs it (``app.tasks.listing.ListQuery`` is one).

    Its clauses use named bind parameters only; ``values`` gives their values for one request, and ``shape``
    says which statement they make, so the statement is built once per shape.
    """

    @property
    def shape(self) -> Hashable:
        """Equal for requests whose statements are equal but for their values."""
        ...

    @property
    def after_position(self) -> bool:
        """True when the page starts after a keyset position (a cursor)."""
        ...

    def filters(self) -> list[ColumnElement[bool]]:
        """WHERE clauses of the filters (what the total counts)."""
        ...

    def after(self) -> ColumnElement[bool] | None:
        """The keyset condition, or ``None`` on the first page."""
        ...

    def order_by(self) -> list[ColumnElement[Any]]:
        """The sort, with a unique tie-break."""
        ...

    def values(self) -> dict[str, Any]:
        """The values of the bind parameters in the clauses above."""
        ...


TOTAL = "_total"


class _NoSession:
    """Stands in for the ORM session of a repository built for the request path (``executor`` only).

    Advanced Alchemy's constructor reads a session's dialect and ``info``; nothing else of it is touched
    unless one of Advanced Alchemy's own methods runs, and those then fail at once, saying why, instead of
    opening a second pool's connections behind the request path's back.
    """

    info: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, dialect_name: str) -> None:
        self.bind = SimpleNamespace(dialect=SimpleNamespace(name=dialect_name))

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(
            f"this repository runs on the request path (an executor, no session): session.{name} is not "
            "available; build it with session=… to use Advanced Alchemy's own methods"
        )


_NO_SESSIONS: dict[str, _NoSession] = {}


def no_session(dialect_name: str) -> AsyncSession:
    """The (shared, stateless) stand-in session for request-path repositories on ``dialect_name``."""
    stand_in = _NO_SESSIONS.get(dialect_name)
    if stand_in is None:
        stand_in = _NO_SESSIONS[dialect_name] = _NoSession(dialect_name)
    return cast("AsyncSession", stand_in)


class OwnedRepository(SQLAlchemyAsyncRepository[ModelT]):
    """A repository bound to one owner: it can only see, change, delete and create that owner's rows.

    Subclasses set ``model_type``; ``owner_attribute`` names the owner column (default ``user_id``) and
    ``version_attribute`` the write counter (default ``version``). ``executor`` runs the request path's
    statements (the :class:`~db.database.Database`, or a transaction of it); ``session`` serves Advanced
    Alchemy's own methods.
    """

    owner_attribute: ClassVar[str] = "user_id"
    version_attribute: ClassVar[str] = "version"
    trash_attribute: ClassVar[str | None] = None
    _queries: ClassVar[QueryCache]
    _default_statement: ClassVar[Select[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._queries = QueryCache()  # per model: shapes of one table

    def __init__(
        self,
        *,
        owner_id: str,
        session: AsyncSession | async_scoped_session[AsyncSession] | None = None,
        executor: Executor | None = None,
        view: View = "live",
        **kwargs: Any,
    ) -> None:
        if view not in VIEWS:
            raise OwnerScopeError(detail=f"unknown view {view!r}")
        self.view: View = view
        if session is None:  # the request path: statements through the executor, no ORM session at all
            if executor is None:
                raise TypeError("an owned repository needs a session, an executor, or both")
            session = no_session(executor.dialect_name)
        if not isinstance(owner_id, str) or not owner_id:
            raise OwnerScopeError(detail="an owned repository needs a non-empty owner id")
        if kwargs.get("cache_manager") is not None:
            raise OwnerScopeError(detail="an owned repository cannot be cached: cache keys ignore the owner")
        statement = kwargs.get("statement")
        if statement is not None:
            self._check_statement(statement)  # once here, so the hot path can trust ``self.statement``
        else:  # statements are immutable: one default per class instead of a new select() per request
            kwargs["statement"] = self._class_statement()
        super().__init__(session=session, **kwargs)
        self.owner_id = owner_id
        self.executor = executor
        # AA also picks a cache manager up from ``session.info``; its keys ignore the owner, so never use one.
        self._cache_manager = None

    @classmethod
    def _class_statement(cls) -> Select[Any]:
        statement = cls.__dict__.get("_default_statement")
        if statement is None:
            statement = select(cls.model_type)
            cls._default_statement = statement
        return statement

    @property
    def owner_column(self) -> InstrumentedAttribute[str]:
        """The model attribute that holds the owner id."""
        column: InstrumentedAttribute[str] = getattr(self.model_type, self.owner_attribute)
        return column

    @property
    def _table(self) -> Table:
        return cast("Table", self.model_type.__table__)

    # -- the one place that adds the owner condition -------------------------------------------------------

    def _scoped(self, statement: StatementT, *, shared: bool = False) -> StatementT:
        """``statement`` confined to this owner's rows.

        ``shared``: the statement is built once and run for every owner (the request path), so the owner is
        a required parameter that :meth:`_values` fills from this repository on every call; otherwise it is
        this repository's owner id itself (Advanced Alchemy's methods, run by the session).
        """
        owner: Any = self.owner_id
        if shared:
            owner = bindparam(OWNER_PARAM, type_=self._table.c[self.owner_attribute].type, required=True)
        scoped: StatementT = statement.where(self.owner_column == owner)  # type: ignore[attr-defined]
        if self.trash_attribute is not None and self.view != "all":
            trashed: ColumnElement[Any] = getattr(self.model_type, self.trash_attribute)
            in_view = trashed.is_(None) if self.view == "live" else trashed.is_not(None)
            scoped = scoped.where(in_view)  # type: ignore[attr-defined]
        return scoped

    def _get_base_stmt(  # type: ignore[override]  # AA declares it static; the scope needs the owner.
        self,
        *,
        statement: StatementT,
        loader_options: list[_AbstractLoad] | None,
        execution_options: dict[str, Any] | None,
    ) -> StatementT:
        if statement is not self.statement:  # checked in __init__; ``get_final_froms`` is too slow for every call
            self._check_statement(statement)
        statement = super()._get_base_stmt(
            statement=statement,  # type: ignore[type-var]
            loader_options=loader_options,
            execution_options=execution_options,
        )
        return self._scoped(statement)

    def _check_statement(self, statement: object) -> None:
        # An alias or a join would carry the owner filter on a table other than the one it reads.
        if isinstance(statement, Select) and statement.get_final_froms() != [self.model_type.__table__]:
            raise OwnerScopeError(detail="owned statements must select from the owned table alone")

    def owned(self) -> ColumnElement[bool]:
        """The owner condition itself: ``<owner column> = :owner_id``."""
        return cast("ColumnElement[bool]", self.owner_column == self.owner_id)

    @property
    def version_column(self) -> ColumnElement[int]:
        """The model attribute that counts writes to a row (typed as the SQL expression it is used as)."""
        column: ColumnElement[int] = getattr(self.model_type, self.version_attribute)
        return column

    # -- the request path: shared statements through the executor ------------------------------------------

    def in_view(self, view: View) -> Self:
        """This owner's repository seeing ``view`` of the rows: ``live`` ones, the ``trash``, or ``all``."""
        if view not in VIEWS:
            raise OwnerScopeError(detail=f"unknown view {view!r}")
        seeing = copy.copy(self)
        seeing.view = view
        return seeing

    def bound_to(self, executor: Executor) -> Self:
        """This owner's repository running its statements through ``executor`` (a transaction, say)."""
        bound = copy.copy(self)
        bound.executor = executor
        return bound

    def _executor(self) -> Executor:
        if self.executor is None:
            raise RuntimeError(f"{type(self).__name__} needs an executor (the Database) for this method")
        return self.executor

    def _values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The values of one call of a shared statement, with this repository's owner (never another)."""
        return {**values, OWNER_PARAM: self.owner_id}

    def _query(self, shape: Hashable, build: Callable[[], Any]) -> Query:
        return self._queries.get((self.view, shape), build)  # the view is part of every statement's WHERE

    def _key_param(self) -> Any:
        [pk] = self._table.primary_key.columns
        return pk == bindparam("_key", type_=pk.type)

    @property
    def _columns(self) -> list[Column[Any]]:
        return list(self._table.columns)

    def shared_select(self, *columns: Any) -> Select[Any]:
        """``SELECT columns`` of this view of the owner's rows, the owner a parameter: for statements built once
        (in :meth:`run_shared`) that combine the owned rows with another owned table (the change feed)."""
        return self._scoped(select(*columns) if columns else select(*self._columns), shared=True)

    async def run_shared(
        self, shape: Hashable, build: Callable[[], Any], values: Mapping[str, Any], *, read_only: bool = False
    ) -> list[Row]:
        """Run the statement ``build`` makes (once per ``shape`` and view) with ``values`` and this owner."""
        return await self._executor().fetch(self._query(shape, build), self._values(values), read_only=read_only)

    async def page(self, spec: PageSpec, *, limit: int) -> tuple[list[Row], int]:
        """One page of this owner's rows and how many match the filters in all, in one round trip.

        At most ``limit`` rows (as mappings of column name to value, plus ``_total``) that match the filters
        and the keyset position, in the spec's order; the total ignores the position. Past the last row of a
        cursor's list a second statement counts the total.
        """
        executor = self._executor()

        def build() -> Any:
            table = self._table
            total = (
                self._scoped(select(func.count()).select_from(table), shared=True)
                .where(*spec.filters())
                .correlate(None)  # a count of its own, not one per outer row
                .scalar_subquery()
                .label(TOTAL)
            )
            after = spec.after()
            conditions = spec.filters() if after is None else [*spec.filters(), after]
            statement = select(*table.columns, total).where(*conditions).order_by(*spec.order_by())
            return self._scoped(statement, shared=True).limit(bindparam("_limit"))

        values = self._values(spec.values())
        rows = await executor.fetch(
            self._query(("page", spec.shape), build), {**values, "_limit": limit}, read_only=True
        )
        if rows:
            return rows, int(rows[0][TOTAL])
        if not spec.after_position:  # nothing matches the filters at all
            return [], 0

        def build_count() -> Any:
            table = self._table
            return self._scoped(select(func.count().label(TOTAL)).select_from(table), shared=True).where(
                *spec.filters()
            )

        row = await executor.fetchrow(self._query(("count", spec.shape), build_count), values, read_only=True)
        return [], int(row[TOTAL]) if row else 0

    async def get_row(self, item_id: Any) -> Row:
        """One of this owner's rows by primary key, as a mapping; ``NotFoundError`` when it is not theirs."""

        def build() -> Any:
            return self._scoped(select(*self._columns), shared=True).where(self._key_param())

        values = self._values({"_key": item_id})
        row = await self._executor().fetchrow(self._query(("get",), build), values, read_only=True)
        if row is None:
            raise NotFoundError(detail="No item found when one was expected")
        return row

    async def insert_row(self, values: Mapping[str, Any]) -> Row:
        """Insert one row of this owner in one ``INSERT … RETURNING``; columns not given take their defaults."""
        refused = {self.owner_attribute, *self.pk_attr_names} & set(values)
        if refused:
            raise OwnerScopeError(detail=f"new rows get {', '.join(sorted(refused))} from the repository")
        row_values = {**_python_defaults(self._table, insert=True), **values}
        names = tuple(sorted(row_values))

        def build() -> Any:
            owner = bindparam(OWNER_PARAM, type_=self._table.c[self.owner_attribute].type, required=True)
            columns: dict[str, Any] = {name: bindparam(name) for name in names}
            table = self._table
            return insert(table).values({**columns, self.owner_attribute: owner}).returning(*table.columns)

        row = await self._executor().fetchrow(self._query(("insert", names), build), self._values(row_values))
        if row is None:  # pragma: no cover - INSERT … RETURNING returns its row
            raise RepositoryError(detail="the insert returned nothing")
        return row

    async def update_values(
        self, item_id: Any, values: Mapping[str, Any], *, versions: Collection[int] | None = None
    ) -> Row:
        """Set ``values`` on one of this owner's rows in one ``UPDATE … RETURNING``; its version goes up by 1.

        A value may be a SQL expression (``{"completed": not_(Task.completed)}``), which makes a
        read-modify-write change atomic; pass the same expression object each time (it is part of the
        statement's shape). With ``versions``, the row is changed only if its version is one of them, checked
        in the same statement's WHERE clause. Raises ``NotFoundError`` when the row does not exist or belongs
        to another owner, and ``StaleVersionError`` when it exists at another version.
        """
        protected = {self.owner_attribute, self.version_attribute, *self.pk_attr_names} & set(values)
        if protected:
            raise OwnerScopeError(detail=f"cannot change {', '.join(sorted(protected))}")
        row_values = {**_python_defaults(self._table, insert=False), **values}
        plain = {name: value for name, value in row_values.items() if not isinstance(value, ColumnElement)}
        expressions = tuple(sorted((n, v) for n, v in row_values.items() if isinstance(v, ColumnElement)))
        wanted = sorted(versions) if versions is not None else None
        shape = ("update", tuple(sorted(plain)), tuple((n, id(e)) for n, e in expressions), _count(wanted))

        def build() -> Any:
            table = self._table
            sets: dict[str, Any] = {name: bindparam(f"_set_{name}") for name in plain}
            sets.update(dict(expressions))
            sets[self.version_attribute] = self.version_column + 1
            statement = self._scoped(update(table), shared=True).where(self._key_param())
            return _with_versions(statement, self.version_column, wanted).values(sets).returning(*table.columns)

        call = {f"_set_{name}": value for name, value in plain.items()} | _version_values(wanted)
        executor = self._executor()
        row = await executor.fetchrow(self._query(shape, build), self._values({**call, "_key": item_id}))
        if row is None:
            raise self._stale_or_missing(await self._current(item_id) if wanted is not None else None, True)
        return row

    async def delete_one(self, item_id: Any, *, versions: Collection[int] | None = None) -> None:
        """Delete one of this owner's rows in one ``DELETE`` statement (no read first).

        With ``versions``, only if the row's version is one of them, checked in the same statement. Raises
        ``NotFoundError`` when the row does not exist or belongs to another owner, and ``StaleVersionError``
        when it exists at another version.
        """
        wanted = sorted(versions) if versions is not None else None

        def build() -> Any:
            table = self._table
            statement = self._scoped(delete(table), shared=True).where(self._key_param())
            [pk] = table.primary_key.columns
            return _with_versions(statement, self.version_column, wanted).returning(pk)

        values = self._values({"_key": item_id} | _version_values(wanted))
        if await self._executor().fetchrow(self._query(("delete", _count(wanted)), build), values) is not None:
            return
        raise self._stale_or_missing(await self._current(item_id) if wanted is not None else None, True)

    async def _current(self, item_id: Any) -> Row | None:
        # Asked only after a conditional write changed nothing: is the row gone (404) or elsewhere (412)?
        # The row itself comes along, so that a 412 can show the client what it is now.
        def build() -> Any:
            return self._scoped(select(*self._columns), shared=True).where(self._key_param())

        return await self._executor().fetchrow(self._query(("get",), build), self._values({"_key": item_id}))

    def _stale_or_missing(self, current: Row | None, conditional: bool) -> RepositoryError:
        if conditional and current is not None:
            return StaleVersionError(detail="the row has changed since the expected version", current=current)
        return NotFoundError(detail="No item found when one was expected")

    # -- writes that take rows from the caller -------------------------------------------------------------

    def _refuse_foreign(self, owner: object) -> None:
        if owner is not None and owner != self.owner_id:
            raise OwnerScopeError(detail="the data names another owner")

    def _claim(self, instance: ModelT) -> ModelT:
        """Stamp the owner on a new row, refusing one that names another owner or picks its own key.

        A caller-chosen primary key would fail as a duplicate exactly when another owner's row has it:
        an existence oracle. New rows get their key from the database.
        """
        self._refuse_foreign(getattr(instance, self.owner_attribute, None))
        if any(getattr(instance, name, None) is not None for name in self.pk_attr_names):
            raise OwnerScopeError(detail="new rows get their primary key from the database")
        setattr(instance, self.owner_attribute, self.owner_id)
        return instance

    async def add(self, data: ModelT, **kwargs: Any) -> ModelT:
        """Insert ``data`` as a row of this owner."""
        return await super().add(self._claim(data), **kwargs)

    async def add_many(self, data: list[ModelT], **kwargs: Any) -> list[ModelT]:
        """Insert every row of ``data`` as a row of this owner."""
        return list(await super().add_many([self._claim(item) for item in data], **kwargs))

    async def update(self, data: ModelT, **kwargs: Any) -> ModelT:
        """Update this owner's row with the attributes set on ``data`` (found through the scoped ``get``).

        Only by primary key: finding the row by another attribute would copy ``data``'s key onto it,
        moving the row to a key that another owner may hold.
        """
        if kwargs.get("id_attribute") not in (None, *self.pk_attr_names):
            raise OwnerScopeError(detail="update finds rows by primary key only")
        self._refuse_foreign(getattr(data, self.owner_attribute, None))
        return await super().update(data, **kwargs)

    async def update_many(self, data: list[ModelT], **kwargs: Any) -> list[ModelT]:
        """Bulk-update this owner's rows by primary key; rows of other owners are not touched."""
        for item in data:
            owner = (
                item.get(self.owner_attribute)
                if isinstance(item, Mapping)
                else getattr(item, self.owner_attribute, None)
            )
            self._refuse_foreign(owner)
        # The owner filter is extra WHERE criteria, which bulk UPDATE by primary key only accepts when it
        # does not try to synchronize objects already in the session.
        options = dict(kwargs.pop("execution_options", None) or {})
        options.setdefault("synchronize_session", None)
        options.setdefault("populate_existing", True)
        return await super().update_many(data, execution_options=options, **kwargs)

    async def get_and_update(self, *filters: Any, **kwargs: Any) -> tuple[ModelT, bool]:
        """Find one of this owner's rows and set attributes on it; never another owner or another key."""
        self._refuse_foreign(kwargs.get(self.owner_attribute))
        match_fields = kwargs.get("match_fields")
        if match_fields is not None:
            matched = {match_fields} if isinstance(match_fields, str) else set(match_fields)
            if any(name in kwargs and name not in matched for name in self.pk_attr_names):
                raise OwnerScopeError(detail="cannot change a row's primary key")
        return await super().get_and_update(*filters, **kwargs)

    async def delete_many(self, item_ids: list[Any], **kwargs: Any) -> list[ModelT]:
        """Delete this owner's rows among ``item_ids``; other owners' ids are skipped."""
        if self.has_composite_pk and kwargs.get("id_attribute") is None:
            self._unscoped("delete_many with a composite primary key")
        return list(await super().delete_many(item_ids, **kwargs))

    # -- operations that cannot be confined to one owner ----------------------------------------------------

    @staticmethod
    def _unscoped(operation: str) -> NoReturn:
        raise OwnerScopeError(detail=f"{operation} cannot be confined to one owner and is disabled")

    async def upsert(self, data: ModelT, **kwargs: Any) -> ModelT:
        """Disabled: an upsert on another owner's id would become a conflict, revealing that it exists."""
        self._unscoped("upsert")

    async def upsert_many(self, data: list[ModelT], **kwargs: Any) -> list[ModelT]:
        """Disabled: the native ``INSERT … ON CONFLICT DO UPDATE`` ignores the owner filter."""
        self._unscoped("upsert_many")

    async def get_or_upsert(self, *filters: Any, **kwargs: Any) -> tuple[ModelT, bool]:
        """Disabled for the same reason as :meth:`upsert`."""
        self._unscoped("get_or_upsert")


class OwnedTable(Generic[RowT]):
    """One owner's rows of a table that needs no Advanced Alchemy repository: statement builders with the owner.

    Subclasses set ``model_type``, build every statement once (``_query``) through ``_select``, ``_insert``,
    ``_update`` and ``_delete`` and run it with ``_fetch``/``_fetchrow``: reads, updates and deletes are
    confined to ``owner_id``'s rows, inserts are stamped with it, and no values may name the owner column.
    Put the owner column first in the table's primary key, so an insert's conflict (``ON CONFLICT``) can only
    ever be with the same owner's row.
    """

    model_type: ClassVar[type[DeclarativeBase]]
    owner_attribute: ClassVar[str] = "user_id"
    _queries: ClassVar[QueryCache]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._queries = QueryCache()

    def __init__(self, *, owner_id: str, executor: Executor) -> None:
        if not isinstance(owner_id, str) or not owner_id:
            raise OwnerScopeError(detail="an owned table needs a non-empty owner id")
        self.owner_id = owner_id
        self.executor = executor

    @classmethod
    def _owner(cls) -> Any:
        column: ColumnElement[str] = getattr(cls.model_type, cls.owner_attribute)
        return column, bindparam(OWNER_PARAM, type_=column.type, required=True)

    @classmethod
    def _checked(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        if cls.owner_attribute in values:
            raise OwnerScopeError(detail=f"cannot set {cls.owner_attribute}")
        return dict(values)

    @classmethod
    def _select(cls, *columns: Any) -> Select[Any]:
        statement = select(*columns) if columns else select(cls.model_type)
        if statement.get_final_froms() != [cls.model_type.__table__]:
            raise OwnerScopeError(detail="owned statements must select from the owned table alone")
        column, owner = cls._owner()
        return statement.where(column == owner)

    @classmethod
    def _insert(cls, dialect_name: str, values: Mapping[str, Any]) -> postgresql.Insert | sqlite.Insert:
        # The dialect's own INSERT, for ON CONFLICT; the conflict target always includes the owner column.
        insert_ = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
        _, owner = cls._owner()
        return insert_(cls.model_type).values({**cls._checked(values), cls.owner_attribute: owner})

    @classmethod
    def _update(cls, values: Mapping[str, Any]) -> Update:
        column, owner = cls._owner()
        return update(cls.model_type).where(column == owner).values(cls._checked(values))

    @classmethod
    def _delete(cls) -> Delete:
        column, owner = cls._owner()
        return delete(cls.model_type).where(column == owner)

    def _query(self, shape: Hashable, build: Callable[[], Any]) -> Query:
        return self._queries.get((self.executor.dialect_name, shape), build)

    async def _fetch(self, query: Query, values: Mapping[str, Any]) -> list[Row]:
        return await self.executor.fetch(query, {**values, OWNER_PARAM: self.owner_id})

    async def _fetchrow(self, query: Query, values: Mapping[str, Any]) -> Row | None:
        return await self.executor.fetchrow(query, {**values, OWNER_PARAM: self.owner_id})


def _count(versions: Sequence[int] | None) -> int | None:
    return None if versions is None else len(versions)


def _with_versions(statement: StatementT, column: ColumnElement[int], versions: Sequence[int] | None) -> StatementT:
    """``statement`` limited to rows at one of ``versions`` (as parameters ``_version_0``, …); none: unlimited."""
    if versions is None:
        return statement
    allowed = [bindparam(f"_version_{i}", type_=column.type) for i in range(len(versions))]
    condition = column.in_(allowed) if allowed else false()  # no version can match
    limited: StatementT = statement.where(condition)  # type: ignore[attr-defined]
    return limited


def _version_values(versions: Sequence[int] | None) -> dict[str, Any]:
    return {f"_version_{i}": version for i, version in enumerate(versions or ())}


def _python_defaults(table: Table, *, insert: bool) -> dict[str, Any]:
    """The values SQLAlchemy would fill in itself: Python-side ``default`` (insert) or ``onupdate`` (update).

    Shared statements reach the driver without SQLAlchemy's execution step, so the repository fills them.
    Server-side defaults are left to the database.
    """
    scalars, callables = _python_default_columns(table, insert)
    values = dict(scalars)
    for key, make in callables:
        values[key] = make(cast("Any", None))  # SQLAlchemy wraps the callable to take an execution context
    return values


@functools.cache
def _python_default_columns(
    table: Table, insert: bool
) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Callable[[Any], Any]], ...]]:
    """Which columns of ``table`` have Python-side defaults (once per table, not per request)."""
    scalars: list[tuple[str, Any]] = []
    callables: list[tuple[str, Callable[[Any], Any]]] = []
    for column in table.columns:
        default = column.default if insert else column.onupdate
        if isinstance(default, ScalarElementColumnDefault):
            scalars.append((column.key, default.arg))
        elif isinstance(default, CallableColumnDefault):
            callables.append((column.key, default.arg))
    return tuple(scalars), tuple(callables)
