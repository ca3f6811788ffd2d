"""ORM models. The schema itself is created only by the alembic migrations in ``db/migrations``."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from advanced_alchemy.base import AdvancedDeclarativeBase, CommonTableAttributes, IdentityAuditBase, orm_registry
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    false,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from db.limits import USER_ID_MAX_LENGTH

IDEMPOTENCY_KEY_MAX_LENGTH = 255
TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 1000
TAG_MAX_LENGTH = 40
MAX_TAGS = 20

# A list of short strings: a native varchar[] on PostgreSQL (``@>``), JSON on SQLite. Deliberately no GIN
# index: every query is narrowed to one owner first, and a prepared statement's generic plan would otherwise
# AND the owner index with a tag index that matches rows of every user (a list that grows with the table).
TagList = JSON().with_variant(ARRAY(String(TAG_MAX_LENGTH)), "postgresql")


class Priority(enum.IntEnum):
    """Stored as its rank, so sorting by priority is sorting a small integer column."""

    low = 1
    medium = 2
    high = 3


metadata = orm_registry.metadata
LIVE: dict[str, Any] = {
    "postgresql_where": text("deleted_at IS NULL"),
    "sqlite_where": text("deleted_at IS NULL"),
}
"""Index options for an index of live tasks only (the ones every list reads)."""


class Task(IdentityAuditBase):
    """One task, owned by exactly one user (``user_id``, the token's subject).

    ``id``, ``created_at`` and ``updated_at`` (UTC) come from the AA base. ``version`` counts the writes to
    the row and is what the API's ``ETag`` names (see ``app/tasks/etags.py``).
    """

    __tablename__ = "tasks"
    __table_args__ = (
        # Newest-first listing of one owner's tasks, optionally by status; PostgreSQL scans these backwards.
        # Every list reads live tasks only (``deleted_at IS NULL``, the repository's default view), so these
        # indexes hold live tasks only: the trash never costs a list anything, and counts stay index-only.
        Index("ix_tasks_user_id_created_at_id", "user_id", "created_at", "id", **LIVE),
        Index("ix_tasks_user_id_completed_created_at_id", "user_id", "completed", "created_at", "id", **LIVE),
        # One index per sort order, so every sorted page is a range scan within one owner's rows.
        Index("ix_tasks_user_id_updated_at_id", "user_id", "updated_at", "id", **LIVE),
        Index("ix_tasks_user_id_title_id", "user_id", "title", "id", **LIVE),
        Index("ix_tasks_user_id_due_date_id", "user_id", "due_date", "id", **LIVE),
        Index("ix_tasks_user_id_priority_id", "user_id", "priority", "id", **LIVE),
        # The change feed (every write, in the order the user's writes committed) and the trash.
        Index("ix_tasks_user_id_change_seq", "user_id", "change_seq"),
        Index("ix_tasks_user_id_deleted_at_id", "user_id", "deleted_at", "id"),
        # Ids are never reused on SQLite either, so a deleted task's URL never names a new task.
        {"sqlite_autoincrement": True},
    )

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX_LENGTH))
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    description: Mapped[str | None] = mapped_column(String(DESCRIPTION_MAX_LENGTH), default=None)
    completed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    priority: Mapped[int] = mapped_column(SmallInteger, default=Priority.medium, server_default=text("2"))
    due_date: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # ``tags`` as the user wrote them (order kept); ``tag_keys`` lower-cased, for filters that ignore case.
    tags: Mapped[list[str]] = mapped_column(TagList, default=list)
    tag_keys: Mapped[list[str]] = mapped_column(TagList, default=list)
    # 1 on insert; every UPDATE that SQLAlchemy emits (core statements, ORM flushes, bulk updates) adds one in
    # its own SET clause, so the increment is atomic with the write. ``OwnedRepository.update_values`` also
    # sets it explicitly and can make the write conditional on it (If-Match).
    version: Mapped[int] = mapped_column(
        Integer, default=1, server_default=text("1"), onupdate=literal_column("version") + 1
    )
    # Where the task stands in its owner's change feed: set by the database on every write (the triggers of
    # migration 0005), never by the application; read by the change feed (``db/feed.py``).
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Set when the task is moved to the trash; every task route sees only rows where it is NULL (``db/owned.py``).
    deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class TaskFeed(CommonTableAttributes, AdvancedDeclarativeBase):
    """One row per user who ever wrote a task: the last change sequence number handed out.

    The triggers take the next number by updating this row, so the row lock orders a user's writes: a write
    with a higher number cannot commit before one with a lower number (the change feed's gap-free guarantee).
    """

    __tablename__ = "task_feeds"

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX_LENGTH), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class TaskTombstone(CommonTableAttributes, AdvancedDeclarativeBase):
    """A task removed for good (purged from the trash): the change feed reports it as deleted until
    ``TOMBSTONE_RETENTION_DAYS`` after its deletion."""

    __tablename__ = "task_tombstones"
    __table_args__ = (
        Index("ix_task_tombstones_user_id_change_seq", "user_id", "change_seq"),
        Index("ix_task_tombstones_deleted_at", "deleted_at"),  # for purging every user's old tombstones
    )

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX_LENGTH), primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    change_seq: Mapped[int] = mapped_column(BigInteger)


class IdempotencyKey(CommonTableAttributes, AdvancedDeclarativeBase):
    """One ``Idempotency-Key`` a user sent with a create, and the response it got (see ``db/idempotency.py``).

    The row is inserted first and the response stored in it within the same transaction as the task, so a
    committed key always has its response. Keys are scoped per user: the primary key is ``(user_id, key)``.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)  # for purging every user's old keys

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_MAX_LENGTH), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the canonical JSON body, hex
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    response_status: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
