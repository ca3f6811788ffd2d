"""Retention: ``manage.py purgetrash`` removes what is past ``TRASH_RETENTION_DAYS`` (leaving tombstones for the
change feed) and tombstones past ``TOMBSTONE_RETENTION_DAYS``; nothing younger, on either database."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from config.settings import DatabaseLimits
from db.database import Database, open_database
from db.engine import create_engine
from db.feed import changes, purge_every_users_old_tombstones, purge_every_users_old_trash
from db.repositories import TaskRepository
from tests.test_cli import UNSET_SETTINGS, manage


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


def test_purgetrash_command(database_url: str, tmp_path: Path) -> None:
    owner = f"purge-{uuid.uuid4().hex}"

    async def setup() -> tuple[int, int]:

        database = open_database(database_url, DatabaseLimits())
        try:
            return await _trashed(database, owner, timedelta(days=10)), await _trashed(
                database, owner, timedelta(days=1)
            )
        finally:
            await database.close()

    older, newer = asyncio.run(setup())
    env = {
        **UNSET_SETTINGS,
        "PATH": "/usr/bin:/bin",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "TRASH_RETENTION_DAYS": "7",
        "TOMBSTONE_RETENTION_DAYS": "30",
    }

    result = manage("purgetrash", env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"Deleted [1-9][0-9]* task\(s\) from the trash and forgot [0-9]+ old deletion\(s\)\.\n", result.stdout
    )
    assert asyncio.run(_state(database_url, [owner])) == ({newer}, {older})
    # Garbage in a retention setting is named, not guessed.
    bad = manage("purgetrash", env={**os.environ, **env, "TRASH_RETENTION_DAYS": "a week"})
    assert bad.returncode == 1
    assert "TRASH_RETENTION_DAYS must be a whole number of days from 1 to 3650" in bad.stderr
