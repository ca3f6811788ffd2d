"""ORM models. The schema itself is created only by the alembic migrations in ``db/migrations``."""

from __future__ import annotations

from advanced_alchemy.base import IdentityAuditBase, orm_registry
from sqlalchemy import Boolean, Index, String, false
from sqlalchemy.orm import Mapped, mapped_column

USER_ID_MAX_LENGTH = 255
TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 1000

metadata = orm_registry.metadata


class Task(IdentityAuditBase):
    """One task, owned by exactly one user (``user_id``, the token's subject).

    ``id``, ``created_at`` and ``updated_at`` (UTC) come from the AA base.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        # Newest-first listing of one owner's tasks, optionally by status; PostgreSQL scans these backwards.
        Index("ix_tasks_user_id_created_at_id", "user_id", "created_at", "id"),
        Index("ix_tasks_user_id_completed_created_at_id", "user_id", "completed", "created_at", "id"),
        # Ids are never reused on SQLite either, so a deleted task's URL never names a new task.
        {"sqlite_autoincrement": True},
    )

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX_LENGTH))
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    description: Mapped[str | None] = mapped_column(String(DESCRIPTION_MAX_LENGTH), default=None)
    completed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
