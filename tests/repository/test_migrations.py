"""Migrations: up from empty and back down on both databases; the models and migrations agree."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from db.engine import create_engine
from db.models import metadata
from db.schema_migrations import downgrade, head_revisions, pending_revisions, upgrade
from tests.support.postgres import admin


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: str = request.getfixturevalue("postgres_server")
    name = f"todo_migrate_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _inspect(url: str) -> tuple[set[str], set[str], list[str], list[object]]:
    def read(connection: Connection) -> tuple[set[str], set[str], list[str], list[object]]:
        inspector = inspect(connection)
        tables = set(inspector.get_table_names())
        indexes = {ix["name"] for ix in inspector.get_indexes("tasks")} if "tasks" in tables else set()
        heads = list(MigrationContext.configure(connection).get_current_heads())
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, metadata) if "tasks" in tables else []
        return tables, {str(i) for i in indexes}, heads, diff

    async def run() -> tuple[set[str], set[str], list[str], list[object]]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


async def _pending(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        return await pending_revisions(engine)
    finally:
        await engine.dispose()


def test_up_from_empty_down_to_base_and_up_again(empty_database: str) -> None:
    assert asyncio.run(_pending(empty_database)) == ["0001", "0002", "0003", "0004", "0005"]

    upgrade(empty_database)
    tables, indexes, heads, diff = _inspect(empty_database)
    assert {"tasks", "idempotency_keys"} <= tables
    assert indexes >= {
        "ix_tasks_user_id_created_at_id",
        "ix_tasks_user_id_completed_created_at_id",
        "ix_tasks_user_id_priority_id",
    }
    assert set(heads) == head_revisions()
    assert diff == []  # the models and the migrations describe the same schema
    assert asyncio.run(_pending(empty_database)) == []

    downgrade(empty_database, "base")
    tables, _, heads, _ = _inspect(empty_database)
    assert not {"tasks", "idempotency_keys"} & tables
    assert heads == []

    upgrade(empty_database)
    assert "tasks" in _inspect(empty_database)[0]


def test_task_version_starts_at_1_for_existing_rows(empty_database: str) -> None:
    """0003 adds the write counter behind the ETag; tasks created before it read as version 1."""
    upgrade(empty_database, "0002")

    async def run(sql: str) -> list[dict[str, object]]:
        engine = create_engine(empty_database)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(text(sql))
                return [dict(row._mapping) for row in result.all()] if result.returns_rows else []
        finally:
            await engine.dispose()

    asyncio.run(
        run(
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at)"
            " VALUES ('u', 'old', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
    )
    upgrade(empty_database, "0003")
    [row] = asyncio.run(run("SELECT * FROM tasks"))
    assert (row["title"], row["version"]) == ("old", 1)
    downgrade(empty_database, "0002")
    [row] = asyncio.run(run("SELECT * FROM tasks"))
    assert "version" not in row
