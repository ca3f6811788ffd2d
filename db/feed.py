"""The change feed's reads: one owner's task writes and tombstones in the order the database numbered them.

Every write to a task takes the next number of its owner's sequence, in the database (the triggers of
migration 0005): ``tasks.change_seq`` is the number of the row's latest write, and a task deleted for good
leaves a row in ``task_tombstones`` with the number of its deletion. Taking a number locks the owner's row in
``task_feeds`` until the write commits, so an owner's writes commit in the order of their numbers: a reader
that has seen number n has seen every number below it. That is the whole gap-free argument; the reads here
only have to return rows in number order.

A page is one statement: the owner's tasks (live and trashed) and tombstones numbered after a position,
merged in number order (``UNION ALL … ORDER BY change_seq LIMIT``), each half an ordered range scan of its
``(user_id, change_seq)`` index limited on its own, so its cost does not grow with the table, with other
users' rows, or with how many of the owner's rows come later.

An initial sync (no cursor) reads the live tasks only, plus whatever was deleted after it began
(``since``): a task trashed between two of its pages must still be reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, bindparam, cast, delete, false, null, or_, select, true, union_all

from db.database import Executor, Row
from db.models import Task, TaskFeed, TaskTombstone
from db.owned import OwnedTable
from db.query import Query
from db.repositories import TaskRepository

TOMBSTONE = "_tombstone"
"""The column that tells a tombstone (true) from a task row (false) in a page."""


class Tombstones(OwnedTable[TaskTombstone]):
    """One owner's tombstones (the table's statement builders carry the owner)."""

    model_type: ClassVar[type[TaskTombstone]] = TaskTombstone


class Feeds(OwnedTable[TaskFeed]):
    """One owner's row of ``task_feeds``: the last number handed out."""

    model_type: ClassVar[type[TaskFeed]] = TaskFeed

    async def last_seq(self) -> int:
        """The owner's last change number (0 before their first write)."""
        query = self._query("last", lambda: self._select(TaskFeed.last_seq))
        row = await self._fetchrow(query, {})
        return int(row["last_seq"]) if row else 0


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a page: a task row (live or trashed) or a tombstone (``row`` holds id and deleted_at)."""

    seq: int
    row: Row
    tombstone: bool

    @property
    def deleted(self) -> bool:
        """The client should drop the task: it is in the trash or gone for good."""
        return self.tombstone or self.row["deleted_at"] is not None


async def changes(tasks: TaskRepository, *, after: int, since: int | None, limit: int) -> list[Change]:
    """At most ``limit`` changes of ``tasks``' owner numbered after ``after``, in number order.

    ``since``: an initial sync that began when the owner's last number was ``since``: trashed tasks and
    tombstones count only when numbered after it (what the client may have been given before).
    """
    everything = tasks.in_view("all")
    tombstones = Tombstones(owner_id=tasks.owner_id, executor=everything._executor())
    initial = since is not None

    def build() -> Any:
        position = bindparam("_after", type_=BigInteger())
        task_columns = [*Task.__table__.columns, false().label(TOMBSTONE)]
        live_tasks = everything.shared_select(*task_columns).where(Task.change_seq > position)
        gone = tombstones._select(*_tombstone_columns()).where(TaskTombstone.change_seq > position)
        if initial:
            began = bindparam("_since", type_=BigInteger())
            live_tasks = live_tasks.where(or_(Task.deleted_at.is_(None), Task.change_seq > began))
            gone = gone.where(TaskTombstone.change_seq > began)
        # Each half limited on its own, in feed order: an ordered range scan of its index that stops after
        # ``limit`` rows, never a read of all the user's rows to sort them.
        halves = [
            select(half.order_by(half.selected_columns.change_seq).limit(bindparam("_limit")).subquery())
            for half in (live_tasks, gone)
        ]
        merged = union_all(*halves).subquery()
        return select(merged).order_by(merged.c.change_seq).limit(bindparam("_limit"))

    values: dict[str, Any] = {"_after": after, "_limit": limit}
    if initial:
        values["_since"] = since
    rows = await everything.run_shared(("changes", initial), build, values, read_only=True)
    return [Change(seq=int(row["change_seq"]), row=row, tombstone=bool(row[TOMBSTONE])) for row in rows]


def _tombstone_columns() -> list[Any]:
    """A tombstone in the shape of a task row: its id, owner, deletion time and number; the rest null."""
    given: Mapping[str, Any] = {
        "id": TaskTombstone.task_id,
        "user_id": TaskTombstone.user_id,
        "deleted_at": TaskTombstone.deleted_at,
        "change_seq": TaskTombstone.change_seq,
    }
    columns = [
        given[column.key].label(column.key) if column.key in given else cast(null(), column.type).label(column.key)
        for column in Task.__table__.columns
    ]
    return [*columns, true().label(TOMBSTONE)]


async def last_seq(tasks: TaskRepository) -> int:
    """The owner's last change number: where an initial sync begins."""
    return await Feeds(owner_id=tasks.owner_id, executor=tasks._executor()).last_seq()


_OLD_TOMBSTONES = Query(
    delete(TaskTombstone)
    .where(TaskTombstone.deleted_at < bindparam("before", type_=TaskTombstone.__table__.c.deleted_at.type))
    .returning(TaskTombstone.__table__.c.task_id)
)
_OLD_TRASH = Query(
    delete(Task)
    .where(Task.deleted_at < bindparam("before", type_=Task.__table__.c.deleted_at.type))
    .returning(Task.__table__.c.id)
)


async def purge_every_users_old_trash(executor: Executor, *, before: datetime) -> int:
    """Maintenance (``manage.py purgetrash``): delete every user's tasks trashed before ``before``.

    Not owner-scoped on purpose: it returns nothing of a row but its count. The database leaves a tombstone
    for each, so followers of the feed still learn of the deletion.
    """
    return len(await executor.fetch(_OLD_TRASH, {"before": before}))


async def purge_every_users_old_tombstones(executor: Executor, *, before: datetime) -> int:
    """Maintenance (``manage.py purgetrash``): forget every user's deletions older than ``before``."""
    return len(await executor.fetch(_OLD_TOMBSTONES, {"before": before}))
