"""The owner scope: one repository class that confines every statement to one owner's rows.

This module is the only place in the code base that filters by user. Controllers and services build an
``OwnedRepository`` for the authenticated user and never add owner filters themselves.

How the scope is enforced (Advanced Alchemy 1.12):

* Every read, count, exists, update and delete of ``SQLAlchemyAsyncRepository`` builds its statement
  through ``_get_base_stmt``; overriding it adds ``WHERE <owner column> = :owner_id`` to all of them,
  including statements that callers pass in through ``statement=``, which must select from the owned
  table alone (an alias or a join would carry the filter on the wrong table).
* Inserts (``add``, ``add_many``) are stamped with the owner; a row that names another owner, or picks
  its own primary key (a duplicate key would reveal another owner's row), is refused.
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

``tests/test_owned_repository.py`` enumerates every public method of this class and fails for any method
it does not exercise with another owner's ids, so a method added by a future AA release cannot slip through.

Tables that need no Advanced Alchemy repository (the idempotency keys) get :class:`OwnedTable` instead: a
handful of statement builders that carry the owner, so their repositories (``db/idempotency.py``) never
write an owner condition of their own. ``tests/test_idempotency_keys.py`` probes those the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Generic, NoReturn, TypeVar, cast

from advanced_alchemy.exceptions import NotFoundError, RepositoryError, wrap_sqlalchemy_exception
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import ColumnElement, Delete, Select, Update, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute
from sqlalchemy.orm.strategy_options import _AbstractLoad

from db.models import Task

ModelT = TypeVar("ModelT", bound=Task)
RowT = TypeVar("RowT", bound=DeclarativeBase)
StatementT = TypeVar("StatementT")


class OwnerScopeError(RepositoryError):
    """An operation would reach outside the repository's owner; refused before touching the database."""


class StaleVersionError(RepositoryError):
    """A conditional write found the owner's row at a version other than the ones it was given."""


class OwnedRepository(SQLAlchemyAsyncRepository[ModelT]):
    """A repository bound to one owner: it can only see, change, delete and create that owner's rows.

    Subclasses set ``model_type``; ``owner_attribute`` names the owner column (default ``user_id``) and
    ``version_attribute`` the write counter (default ``version``).
    """

    owner_attribute: ClassVar[str] = "user_id"
    version_attribute: ClassVar[str] = "version"

    def __init__(
        self,
        *,
        owner_id: str,
        session: AsyncSession | async_scoped_session[AsyncSession],
        **kwargs: Any,
    ) -> None:
        if not isinstance(owner_id, str) or not owner_id:
            raise OwnerScopeError(detail="an owned repository needs a non-empty owner id")
        if kwargs.get("cache_manager") is not None:
            raise OwnerScopeError(detail="an owned repository cannot be cached: cache keys ignore the owner")
        super().__init__(session=session, **kwargs)
        self.owner_id = owner_id
        self._check_statement(self.statement)  # once here, so the hot path can trust ``self.statement``
        # AA also picks a cache manager up from ``session.info``; its keys ignore the owner, so never use one.
        self._cache_manager = None

    @property
    def owner_column(self) -> InstrumentedAttribute[str]:
        """The model attribute that holds the owner id."""
        column: InstrumentedAttribute[str] = getattr(self.model_type, self.owner_attribute)
        return column

    # -- the one hook every read, count, update and delete goes through ------------------------------------

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
        scoped: StatementT = statement.where(self.owned())  # type: ignore[attr-defined]
        return scoped

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

    async def page(
        self,
        *filters: ColumnElement[bool],
        after: ColumnElement[bool] | None = None,
        order_by: Sequence[ColumnElement[Any]] = (),
        limit: int,
    ) -> tuple[list[Any], int]:
        """One page of this owner's rows and how many match ``filters`` in all, in one round trip.

        Returns plain rows of the model's columns (no ORM objects: a list does not need them), at most
        ``limit``, that match ``filters`` and ``after`` (the keyset position) in ``order_by``; the total
        ignores ``after``. Both parts carry the owner condition.
        """
        table = self.model_type.__table__
        total = (
            select(func.count())
            .select_from(table)
            .where(self.owned(), *filters)
            .correlate(None)  # a count of its own, not one per outer row
            .scalar_subquery()
            .label("_total")
        )
        conditions = [self.owned(), *filters] if after is None else [self.owned(), *filters, after]
        statement = select(*table.columns, total).where(*conditions).order_by(*order_by).limit(limit)
        with wrap_sqlalchemy_exception(
            error_messages=self.error_messages, dialect_name=self._dialect.name, wrap_exceptions=self.wrap_exceptions
        ):
            rows = list((await self.session.execute(statement)).all())
            if rows:
                return rows, int(rows[0]._total)
            # Past the last row (or nothing matches): the total still counts the filters.
            return [], int(await self.session.scalar(select(total)) or 0)

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

    async def update_values(
        self, item_id: int, values: Mapping[str, Any], *, versions: Collection[int] | None = None
    ) -> ModelT:
        """Set ``values`` on one of this owner's rows in one ``UPDATE … RETURNING`` statement; its version goes up by 1.

        Values may be SQL expressions (``{"completed": ~Task.completed}``), which makes read-modify-write
        changes atomic. With ``versions``, the row is changed only if its version is one of them, checked in
        the same statement's WHERE clause. Raises ``NotFoundError`` when the row does not exist or belongs to
        another owner, and ``StaleVersionError`` when it exists at another version.
        """
        protected = {self.owner_attribute, self.version_attribute, *self.pk_attr_names} & set(values)
        if protected:
            raise OwnerScopeError(detail=f"cannot change {', '.join(sorted(protected))}")
        statement = (
            self._get_base_stmt(
                statement=update(self.model_type),
                loader_options=None,
                execution_options={"synchronize_session": False, "populate_existing": True},
            )
            .where(self._build_pk_filter(item_id))
            .values(**values, **{self.version_attribute: self.version_column + 1})
            .returning(self.model_type)
        )
        if versions is not None:
            statement = statement.where(self.version_column.in_(list(versions)))
        with wrap_sqlalchemy_exception(
            error_messages=self.error_messages,
            dialect_name=self._dialect.name,
            wrap_exceptions=self.wrap_exceptions,
        ):
            instance = (await self.session.scalars(statement)).one_or_none()
            stale = instance is None and versions is not None and await self._exists(item_id)
        if stale:
            raise StaleVersionError(detail="the row has changed since the expected version")
        return self.check_not_found(instance)

    async def delete_one(self, item_id: int, *, versions: Collection[int] | None = None) -> None:
        """Delete one of this owner's rows in one ``DELETE`` statement (no read first).

        With ``versions``, only if the row's version is one of them, checked in the same statement. Raises
        ``NotFoundError`` when the row does not exist or belongs to another owner, and ``StaleVersionError``
        when it exists at another version.
        """
        statement = (
            self._get_base_stmt(
                statement=delete(self.model_type),
                loader_options=None,
                execution_options={"synchronize_session": False},
            )
            .where(self._build_pk_filter(item_id))
            .returning(*(getattr(self.model_type, name) for name in self.pk_attr_names))
        )
        if versions is not None:
            statement = statement.where(self.version_column.in_(list(versions)))
        with wrap_sqlalchemy_exception(
            error_messages=self.error_messages,
            dialect_name=self._dialect.name,
            wrap_exceptions=self.wrap_exceptions,
        ):
            deleted = (await self.session.execute(statement)).first() is not None
            stale = not deleted and versions is not None and await self._exists(item_id)
        if stale:
            raise StaleVersionError(detail="the row has changed since the expected version")
        if not deleted:
            raise NotFoundError(detail="No item found when one was expected")

    async def _exists(self, item_id: int) -> bool:
        # Asked only after a conditional write changed nothing: is the row gone (404) or elsewhere (412)?
        statement = self._get_base_stmt(
            statement=select(self.version_column), loader_options=None, execution_options=None
        ).where(self._build_pk_filter(item_id))
        return await self.session.scalar(statement) is not None

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

    Subclasses set ``model_type`` and build every statement through ``_select``, ``_insert``, ``_update`` and
    ``_delete``: reads, updates and deletes are confined to ``owner_id``'s rows, inserts are stamped with it,
    and no values may name the owner column. Put the owner column first in the table's primary key, so an
    insert's conflict (``ON CONFLICT``) can only ever be with the same owner's row.
    """

    model_type: ClassVar[type[DeclarativeBase]]
    owner_attribute: ClassVar[str] = "user_id"

    def __init__(self, *, owner_id: str, session: AsyncSession) -> None:
        if not isinstance(owner_id, str) or not owner_id:
            raise OwnerScopeError(detail="an owned table needs a non-empty owner id")
        self.owner_id = owner_id
        self.session = session

    def owned(self) -> ColumnElement[bool]:
        """The owner condition: ``<owner column> = :owner_id``."""
        column: ColumnElement[str] = getattr(self.model_type, self.owner_attribute)
        return column == self.owner_id

    def _values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        if self.owner_attribute in values:
            raise OwnerScopeError(detail=f"cannot set {self.owner_attribute}")
        return dict(values)

    def _select(self, *columns: Any) -> Select[Any]:
        statement = select(*columns) if columns else select(self.model_type)
        if statement.get_final_froms() != [self.model_type.__table__]:
            raise OwnerScopeError(detail="owned statements must select from the owned table alone")
        return statement.where(self.owned())

    def _insert(self, values: Mapping[str, Any]) -> postgresql.Insert | sqlite.Insert:
        # The dialect's own INSERT, for ON CONFLICT; the conflict target always includes the owner column.
        insert = postgresql.insert if self.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        return insert(self.model_type).values({**self._values(values), self.owner_attribute: self.owner_id})

    def _update(self, values: Mapping[str, Any]) -> Update:
        return update(self.model_type).where(self.owned()).values(self._values(values))

    def _delete(self) -> Delete:
        return delete(self.model_type).where(self.owned())
