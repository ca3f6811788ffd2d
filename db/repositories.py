"""Concrete owner-scoped repositories, one per owned model."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

from db.database import Row
from db.models import Task
from db.owned import OwnedRepository


class TaskRepository(OwnedRepository[Task]):
    """One user's tasks. A deleted task goes to the trash (``deleted_at`` set): the default view sees only
    live tasks, ``in_view("trash")`` only the trash, ``in_view("all")`` both (the change feed)."""

    model_type = Task
    trash_attribute = "deleted_at"

    async def trash(self, task_id: Any, *, now: datetime, versions: Collection[int] | None = None) -> Row:
        """Move one live task to the trash (one ``UPDATE``); 404/412 as :meth:`update_values`."""
        return await self.in_view("live").update_values(task_id, {"deleted_at": now}, versions=versions)

    async def restore(self, task_id: Any, *, versions: Collection[int] | None = None) -> Row:
        """Bring one task back from the trash with its id (one ``UPDATE``); ``NotFoundError`` if not there."""
        return await self.in_view("trash").update_values(task_id, {"deleted_at": None}, versions=versions)

    async def purge(self, task_id: Any) -> None:
        """Delete one trashed task for good (one ``DELETE``; the database leaves a tombstone for the feed)."""
        await self.in_view("trash").delete_one(task_id)

    async def lock(self, task_ids: Collection[int]) -> None:
        """In a transaction, lock these of the owner's rows (any view) in id order before writing them.

        A write locks its row, then the owner's feed row (the change-feed trigger). A transaction that writes
        several tasks would otherwise hold the feed row while it waits for a task row that a single write holds
        while waiting for the feed row: a deadlock. Locking its rows first, in one order, means it never waits
        for a row while it holds the feed row. SQLite needs none of this: one writer at a time.
        """
        executor = self._executor()
        if not task_ids or executor.dialect_name != "postgresql":
            return
        everything = self.in_view("all")

        def build() -> Any:
            ids = bindparam("_ids", type_=ARRAY(BigInteger()))
            return everything.shared_select(Task.id).where(Task.id == any_(ids)).order_by(Task.id).with_for_update()

        await everything.run_shared(("lock",), build, {"_ids": sorted(set(task_ids))})
