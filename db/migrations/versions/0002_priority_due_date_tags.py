"""priority, due date and tags; an index per sort order (no tag index: see db/models.py)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SORT_INDEXES = {
    "ix_tasks_user_id_updated_at_id": ["user_id", "updated_at", "id"],
    "ix_tasks_user_id_title_id": ["user_id", "title", "id"],
    "ix_tasks_user_id_due_date_id": ["user_id", "due_date", "id"],
    "ix_tasks_user_id_priority_id": ["user_id", "priority", "id"],
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    tag_type: sa.types.TypeEngine[Any] = postgresql.ARRAY(sa.String(40)) if postgres else sa.JSON()
    no_tags = sa.text("'{}'") if postgres else sa.text("'[]'")
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("priority", sa.SmallInteger(), server_default=sa.text("2"), nullable=False))
        batch.add_column(sa.Column("due_date", advanced_alchemy.types.DateTimeUTC(timezone=True), nullable=True))
        batch.add_column(sa.Column("tags", tag_type, server_default=no_tags, nullable=False))
        batch.add_column(sa.Column("tag_keys", tag_type, server_default=no_tags, nullable=False))
    for name, columns in SORT_INDEXES.items():
        op.create_index(name, "tasks", columns)


def downgrade() -> None:
    for name in SORT_INDEXES:
        op.drop_index(name, table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        for column in ("tag_keys", "tags", "due_date", "priority"):
            batch.drop_column(column)
