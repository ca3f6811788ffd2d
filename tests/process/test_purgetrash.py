"""``manage.py purgetrash`` in a real process: what is past retention goes, the rest stays."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from config.settings import DatabaseLimits
from db.database import open_database
from db.engine import create_engine
from db.repositories import TaskRepository
from tests.support.environment import clean_env
from tests.support.servers import manage


async def _trashed(database_url: str, owner: str, age: timedelta) -> int:
    database = open_database(database_url, DatabaseLimits())
    try:
        tasks = TaskRepository(owner_id=owner, executor=database)
        task = await tasks.insert_row({"title": f"trashed {age}", "tags": [], "tag_keys": []})
        await tasks.trash(task["id"], now=datetime.now(UTC) - age)
        return int(task["id"])
    finally:
        await database.close()


async def _state(database_url: str, owner: str) -> tuple[set[int], set[int]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            tasks = await connection.execute(text("SELECT id FROM tasks WHERE user_id = :o"), {"o": owner})
            stones = await connection.execute(
                text("SELECT task_id FROM task_tombstones WHERE user_id = :o"), {"o": owner}
            )
            return {row[0] for row in tasks}, {row[0] for row in stones}
    finally:
        await engine.dispose()


def test_purgetrash_command(database_url: str, tmp_path: Path) -> None:
    owner = f"purge-{uuid.uuid4().hex}"
    older = asyncio.run(_trashed(database_url, owner, timedelta(days=10)))
    newer = asyncio.run(_trashed(database_url, owner, timedelta(days=1)))
    env = clean_env(tmp_path, DATABASE_URL=database_url, TRASH_RETENTION_DAYS="7", TOMBSTONE_RETENTION_DAYS="30")
    result = manage("purgetrash", env=env)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"Deleted [1-9][0-9]* task\(s\) from the trash and forgot [0-9]+ old deletion\(s\)\.\n", result.stdout
    )
    assert asyncio.run(_state(database_url, owner)) == ({newer}, {older})
    # Garbage in a retention setting is named, not guessed.
    bad = manage("purgetrash", env={**env, "TRASH_RETENTION_DAYS": "a week"})
    assert bad.returncode == 1
    assert "TRASH_RETENTION_DAYS must be a whole number of days from 1 to 3650" in bad.stderr
