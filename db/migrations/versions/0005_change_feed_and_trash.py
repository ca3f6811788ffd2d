"""change feed and trash: a per-user change sequence on every task write, tombstones, soft delete

Every write to a task takes the next number of its owner's sequence (``task_feeds.last_seq``) in the
database itself, by triggers, so no code path can forget it. Taking the number updates the owner's row in
``task_feeds``, whose lock is held until the write commits: a user's writes commit in the order of their
numbers, which is what makes the feed gap-free (a reader never sees number n+1 without number n).
A task deleted for good (purged from the trash) leaves a tombstone with a number of its own.

Existing rows are numbered per user in the order they were last written.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("deleted_at IS NULL")
_LIST_INDEXES = {
    "ix_tasks_user_id_created_at_id": ["user_id", "created_at", "id"],
    "ix_tasks_user_id_completed_created_at_id": ["user_id", "completed", "created_at", "id"],
    "ix_tasks_user_id_updated_at_id": ["user_id", "updated_at", "id"],
    "ix_tasks_user_id_title_id": ["user_id", "title", "id"],
    "ix_tasks_user_id_due_date_id": ["user_id", "due_date", "id"],
    "ix_tasks_user_id_priority_id": ["user_id", "priority", "id"],
}

_POSTGRES_TRIGGERS = [
    """
    CREATE FUNCTION tasks_next_change_seq() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO task_feeds AS f (user_id, last_seq) VALUES (NEW.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET last_seq = f.last_seq + 1
        RETURNING f.last_seq INTO NEW.change_seq;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER tasks_change_seq BEFORE INSERT OR UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_next_change_seq()
    """,
    """
    CREATE FUNCTION tasks_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        seq bigint;
    BEGIN
        INSERT INTO task_feeds AS f (user_id, last_seq) VALUES (OLD.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET last_seq = f.last_seq + 1
        RETURNING f.last_seq INTO seq;
        INSERT INTO task_tombstones (user_id, task_id, deleted_at, change_seq)
        VALUES (OLD.user_id, OLD.id, COALESCE(OLD.deleted_at, now()), seq)
        ON CONFLICT (user_id, task_id) DO UPDATE SET change_seq = EXCLUDED.change_seq;
        RETURN OLD;
    END $$
    """,
    """
    CREATE TRIGGER tasks_tombstone AFTER DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_tombstone()
    """,
]

# SQLite has no BEFORE trigger that can change NEW: an AFTER trigger numbers the row it has just written
# (``WHEN`` keeps that second UPDATE from numbering itself again). SQLite runs one writer at a time, so the
# order of numbers is the order of commits.
_SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER tasks_change_seq_insert AFTER INSERT ON tasks
    BEGIN
        INSERT INTO task_feeds (user_id, last_seq) VALUES (NEW.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET last_seq = last_seq + 1;
        UPDATE tasks SET change_seq = (SELECT last_seq FROM task_feeds WHERE user_id = NEW.user_id)
        WHERE id = NEW.id;
    END
    """,
    """
    CREATE TRIGGER tasks_change_seq_update AFTER UPDATE ON tasks
    WHEN NEW.change_seq = OLD.change_seq
    BEGIN
        INSERT INTO task_feeds (user_id, last_seq) VALUES (NEW.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET last_seq = last_seq + 1;
        UPDATE tasks SET change_seq = (SELECT last_seq FROM task_feeds WHERE user_id = NEW.user_id)
        WHERE id = NEW.id;
    END
    """,
    """
    CREATE TRIGGER tasks_tombstone AFTER DELETE ON tasks
    BEGIN
        INSERT INTO task_feeds (user_id, last_seq) VALUES (OLD.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET last_seq = last_seq + 1;
        INSERT INTO task_tombstones (user_id, task_id, deleted_at, change_seq)
        VALUES (OLD.user_id, OLD.id, COALESCE(OLD.deleted_at, strftime('%Y-%m-%d %H:%M:%f000', 'now')),
                (SELECT last_seq FROM task_feeds WHERE user_id = OLD.user_id))
        ON CONFLICT (user_id, task_id) DO UPDATE SET change_seq = excluded.change_seq;
    END
    """,
]


def upgrade() -> None:
    columns = [
        sa.Column("change_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("deleted_at", advanced_alchemy.types.DateTimeUTC(timezone=True), nullable=True),
    ]
    if op.get_bind().dialect.name == "sqlite":
        # An earlier migration's batch copy of the SQLite table lost its AUTOINCREMENT, so SQLite could hand a
        # deleted task's id to a new one; the feed's tombstones need ids never to come back. Copy it once more,
        # declared as it should be (SQLite then goes on from the highest id in the table).
        with op.batch_alter_table("tasks", recreate="always", table_kwargs={"sqlite_autoincrement": True}) as batch:
            for column in columns:
                batch.add_column(column)
    else:
        for column in columns:
            op.add_column("tasks", column)
    # The list indexes hold live tasks only (every list reads ``deleted_at IS NULL``): trashed tasks never
    # cost a list anything, and a list's count stays an index-only scan.
    for name, indexed in _LIST_INDEXES.items():
        op.drop_index(name, table_name="tasks")
        op.create_index(name, "tasks", indexed, postgresql_where=_LIVE, sqlite_where=_LIVE)
    op.create_index("ix_tasks_user_id_change_seq", "tasks", ["user_id", "change_seq"])
    op.create_index("ix_tasks_user_id_deleted_at_id", "tasks", ["user_id", "deleted_at", "id"])
    op.create_table(
        "task_feeds",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_task_feeds")),
    )
    op.create_table(
        "task_tombstones",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", advanced_alchemy.types.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "task_id", name=op.f("pk_task_tombstones")),
    )
    op.create_index("ix_task_tombstones_user_id_change_seq", "task_tombstones", ["user_id", "change_seq"])
    op.create_index("ix_task_tombstones_deleted_at", "task_tombstones", ["deleted_at"])
    # Number the existing rows per user in the order they were last written, then start each feed there.
    # One pass over the table (UPDATE … FROM a numbered copy, a hash join): a correlated subquery would number
    # the whole table again for every row.
    op.execute(
        """
        UPDATE tasks SET change_seq = numbered.seq
        FROM (
            SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY updated_at, id) AS seq FROM tasks
        ) AS numbered
        WHERE numbered.id = tasks.id
        """
    )
    op.execute("INSERT INTO task_feeds (user_id, last_seq) SELECT user_id, max(change_seq) FROM tasks GROUP BY user_id")
    triggers = _POSTGRES_TRIGGERS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tasks_tombstone ON tasks")
        op.execute("DROP TRIGGER tasks_change_seq ON tasks")
        op.execute("DROP FUNCTION tasks_tombstone()")
        op.execute("DROP FUNCTION tasks_next_change_seq()")
    else:
        for name in ("tasks_tombstone", "tasks_change_seq_update", "tasks_change_seq_insert"):
            op.execute(f"DROP TRIGGER {name}")
    # Trashed tasks were deleted as far as the API of 0004 knows.
    op.execute("DELETE FROM tasks WHERE deleted_at IS NOT NULL")
    op.drop_index("ix_task_tombstones_deleted_at", table_name="task_tombstones")
    op.drop_index("ix_task_tombstones_user_id_change_seq", table_name="task_tombstones")
    op.drop_table("task_tombstones")
    op.drop_table("task_feeds")
    op.drop_index("ix_tasks_user_id_deleted_at_id", table_name="tasks")
    op.drop_index("ix_tasks_user_id_change_seq", table_name="tasks")
    for name, indexed in _LIST_INDEXES.items():
        op.drop_index(name, table_name="tasks")
        op.create_index(name, "tasks", indexed)
    with op.batch_alter_table("tasks", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("change_seq")
