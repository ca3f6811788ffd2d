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


def test_0005_numbers_existing_rows_per_user_and_keeps_ids_unique(empty_database: str) -> None:
    """0005 numbers each user's existing tasks in the order they were last written, starts each user's feed
    there, and from then on (SQLite too) never hands a deleted task's id to a new one."""
    upgrade(empty_database, "0004")

    async def run(*statements: str) -> list[dict[str, object]]:
        engine = create_engine(empty_database)
        try:
            async with engine.begin() as connection:
                rows: list[dict[str, object]] = []
                for sql in statements:
                    result = await connection.execute(text(sql))
                    rows = [dict(row._mapping) for row in result.all()] if result.returns_rows else []
                return rows
        finally:
            await engine.dispose()

    insert = (
        "INSERT INTO tasks (user_id, title, completed, created_at, updated_at)"
        " VALUES ('{user}', '{title}', false, '2026-01-01', '{updated}')"
    )
    asyncio.run(
        run(
            insert.format(user="a", title="a-late", updated="2026-03-01"),
            insert.format(user="a", title="a-early", updated="2026-02-01"),
            insert.format(user="b", title="b-only", updated="2026-01-15"),
            insert.format(user="a", title="a-middle", updated="2026-02-15"),
        )
    )
    upgrade(empty_database, "0005")
    rows = asyncio.run(run("SELECT user_id, title, change_seq FROM tasks ORDER BY user_id, change_seq"))
    assert [(r["user_id"], r["title"], r["change_seq"]) for r in rows] == [
        ("a", "a-early", 1),
        ("a", "a-middle", 2),
        ("a", "a-late", 3),
        ("b", "b-only", 1),
    ]
    feeds = asyncio.run(run("SELECT user_id, last_seq FROM task_feeds ORDER BY user_id"))
    assert [(f["user_id"], f["last_seq"]) for f in feeds] == [("a", 3), ("b", 1)]

    # The next write of "a" is number 4; a deleted task leaves a tombstone and its id is never reused.
    newest = asyncio.run(run("SELECT max(id) AS id FROM tasks"))[0]["id"]
    asyncio.run(run(f"DELETE FROM tasks WHERE id = {newest}"))  # noqa: S608 - an integer from the database
    created = asyncio.run(
        run(
            insert.format(user="a", title="after", updated="2026-04-01"),
            "SELECT id, change_seq FROM tasks WHERE title = 'after'",
        )
    )[0]
    assert int(str(created["id"])) > int(str(newest))
    stones = asyncio.run(run("SELECT user_id, task_id, change_seq FROM task_tombstones"))
    assert [(s["user_id"], s["task_id"]) for s in stones] == [("a", newest)]
    assert (stones[0]["change_seq"], created["change_seq"]) == (4, 5)
