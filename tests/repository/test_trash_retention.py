"""Retention: ``manage.py purgetrash`` removes what is past ``TRASH_RETENTION_DAYS`` (leaving tombstones for the
change feed) and tombstones past ``TOMBSTONE_RETENTION_DAYS``; nothing younger, on either database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from db.database import Database
from db.engine import create_engine
from db.feed import changes, purge_every_users_old_tombstones, purge_every_users_old_trash
from db.repositories import TaskRepository


async def _trashed(database: Database, owner: str, age: timedelta) -> int:
    tasks = TaskRepository(owner_id=owner, executor=database)
    task = await tasks.insert_row({"title": f"trashed {age}", "tags": [], "tag_keys": []})
    await tasks.trash(task["id"], now=datetime.now(UTC) - age)
    return int(task["id"])


async def _state(database_url: str, owners: list[str]) -> tuple[set[int], set[int]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            marks = ", ".join(f":o{i}" for i in range(len(owners)))
            values = {f"o{i}": owner for i, owner in enumerate(owners)}
            tasks = await connection.execute(text(f"SELECT id FROM tasks WHERE user_id IN ({marks})"), values)  # noqa: S608
            stones = await connection.execute(
                text(f"SELECT task_id FROM task_tombstones WHERE user_id IN ({marks})"),  # noqa: S608
                values,
            )
            return {row[0] for row in tasks}, {row[0] for row in stones}
    finally:
        await engine.dispose()


async def test_purging_keeps_what_is_younger_and_leaves_tombstones(
    database: Database, database_url: str, new_user: Any
) -> None:
    alice, bob = new_user(), new_user()
    old = [await _trashed(database, user, timedelta(days=31)) for user in (alice, bob)]
    young = [await _trashed(database, user, timedelta(days=29)) for user in (alice, bob)]
    now = datetime.now(UTC)
    assert await purge_every_users_old_trash(database, before=now - timedelta(days=30)) >= 2
    tasks, stones = await _state(database_url, [alice, bob])
    assert tasks == set(young)
    assert stones == set(old)  # the feed still reports them

    feed = await changes(TaskRepository(owner_id=alice, executor=database), after=0, since=None, limit=10)
    gone = [change for change in feed if change.tombstone]
    assert [change.row["id"] for change in gone] == [old[0]]
    # The tombstone keeps the time of the deletion, not of the purge.
    assert abs(gone[0].row["deleted_at"] - (now - timedelta(days=31))) < timedelta(minutes=1)

    assert await purge_every_users_old_tombstones(database, before=now - timedelta(days=30)) >= 2
    assert await _state(database_url, [alice, bob]) == (set(young), set())
