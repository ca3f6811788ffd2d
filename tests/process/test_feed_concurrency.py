"""The change feed is gap-free under concurrent writers, on PostgreSQL.

The classic way to lose a change: two writes take numbers n and n+1, the second commits first, a reader
reads past n+1, and then n commits behind its back. The first test shows, statement by statement, that the
database does not let that happen (the write numbered n+1 cannot even take its number until n commits). The
second runs real writers against two server processes while a follower reads the feed, and checks that the
follower ends equal to a full listing.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.servers import Servers, serve_env
from tests.support.tokens import bearer

pytestmark = pytest.mark.postgres


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _wait_until_blocked(admin: asyncpg.Connection, pid: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        waiting = await admin.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
        if waiting == "Lock":
            return
        await asyncio.sleep(0.02)  # polling a condition, bounded by the deadline
    raise AssertionError(f"backend {pid} never waited for a lock")


async def test_a_later_number_cannot_commit_before_an_earlier_one(postgres_database: str) -> None:
    dsn = _asyncpg_dsn(postgres_database)
    user = f"order-{uuid.uuid4().hex}"
    first, second, reader = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        ids = [
            await reader.fetchval(
                "INSERT INTO tasks (user_id, title, created_at, updated_at) VALUES ($1, $2, now(), now()) RETURNING id",
                user,
                title,
            )
            for title in ("a", "b")
        ]
        start = await reader.fetchval("SELECT last_seq FROM task_feeds WHERE user_id = $1", user)

        transaction = first.transaction()
        await transaction.start()
        n = await first.fetchval("UPDATE tasks SET title = 'a2' WHERE id = $1 RETURNING change_seq", ids[0])
        assert n == start + 1
        later = asyncio.create_task(
            second.fetchval("UPDATE tasks SET title = 'b2' WHERE id = $1 RETURNING change_seq", ids[1])
        )
        await _wait_until_blocked(reader, second.get_server_pid())
        assert not later.done()  # it cannot take n + 1 while n is uncommitted
        seen = await reader.fetch("SELECT change_seq FROM tasks WHERE user_id = $1 AND change_seq > $2", user, start)
        assert seen == []  # a reader sees neither
        await transaction.commit()
        assert await asyncio.wait_for(later, timeout=10) == n + 1
        seen = await reader.fetch(
            "SELECT change_seq FROM tasks WHERE user_id = $1 AND change_seq > $2 ORDER BY change_seq", user, start
        )
        assert [row[0] for row in seen] == [n, n + 1]
    finally:
        for connection in (first, second, reader):
            await connection.close()


async def _writer(client: httpx.AsyncClient, urls: list[str], user: str, seed: int, operations: int) -> None:
    rng = random.Random(seed)
    headers = bearer(user)
    mine: list[int] = []
    trashed: list[int] = []
    for i in range(operations):
        base = f"{rng.choice(urls)}/api/{user}"
        roll = rng.random()
        if roll < 0.3 or not mine:
            response = await client.post(f"{base}/tasks", json={"title": f"w{seed}-{i}"}, headers=headers)
            assert response.status_code == 201, response.text
            mine.append(response.json()["id"])
        elif roll < 0.55:
            response = await client.patch(f"{base}/tasks/{rng.choice(mine)}", json={"title": f"p{i}"}, headers=headers)
            assert response.status_code == 200, response.text
        elif roll < 0.65:
            task = rng.choice(mine)
            response = await client.patch(f"{base}/tasks/{task}/complete", headers=headers)
            assert response.status_code == 200, response.text
        elif roll < 0.8:
            task = mine.pop(rng.randrange(len(mine)))
            assert (await client.delete(f"{base}/tasks/{task}", headers=headers)).status_code == 204
            trashed.append(task)
        elif roll < 0.88 and trashed:
            task = trashed.pop()
            if rng.random() < 0.5:
                response = await client.post(f"{base}/trash/{task}/restore", headers=headers)
                assert response.status_code == 200, response.text
                mine.append(task)
            else:
                assert (await client.delete(f"{base}/trash/{task}", headers=headers)).status_code == 204
        else:
            operations_ = [
                {"op": "create", "ref": "n", "data": {"title": f"b{seed}-{i}"}},
                {"op": "update", "ref": "n", "data": {"priority": "high"}},
            ]
            response = await client.post(f"{base}/batch", json={"operations": operations_}, headers=headers)
            assert response.status_code == 200, response.text
            mine.append(response.json()["results"][0]["task"]["id"])


async def _follow(client: httpx.AsyncClient, urls: list[str], user: str, state: dict[str, Any]) -> None:
    """Read the feed to ``has_more: false`` once, applying every page to ``state``."""
    while True:
        params: dict[str, Any] = {"limit": 7}
        if state["cursor"] is not None:
            params["cursor"] = state["cursor"]
        response = await client.get(f"{random.choice(urls)}/api/{user}/changes", params=params, headers=bearer(user))
        assert response.status_code == 200, response.text
        body = response.json()
        for task in body["tasks"]:
            state["tasks"][task["id"]] = task
        for gone in body["deleted"]:
            state["tasks"].pop(gone["id"], None)
        state["cursor"] = body["cursor"]
        state["pages"] += 1
        if not body["has_more"]:
            return


def test_a_follower_never_misses_a_change(postgres_database: str, tmp_path: Path) -> None:
    servers = Servers(tmp_path)
    try:
        env = serve_env(postgres_database, tmp_path / "data", RATE_LIMIT="off")
        started = [servers.start(env) for _ in range(2)]
        for server in started:
            server.wait_until_healthy()
        urls = [server.url for server in started]
        user = f"sync-{uuid.uuid4().hex}"

        async def scenario() -> tuple[dict[str, Any], dict[int, Any]]:
            state: dict[str, Any] = {"tasks": {}, "cursor": None, "pages": 0}
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                writers = asyncio.gather(*(_writer(client, urls, user, seed, 60) for seed in range(6)))
                while not writers.done():  # follow while they write
                    await _follow(client, urls, user, state)
                await writers  # re-raise a writer's failure
                await _follow(client, urls, user, state)
                listing: dict[int, Any] = {}
                url: str | None = f"{urls[0]}/api/{user}/tasks?limit=200"
                while url is not None:
                    response = await client.get(url, headers=bearer(user))
                    listing.update({task["id"]: task for task in response.json()})
                    link = response.headers.get("link")
                    url = urls[0] + link[1 : link.index(">")] if link else None
            return state, listing

        state, listing = asyncio.run(scenario())
        assert state["pages"] > 2  # it really followed while the writers wrote
        assert len(listing) > 20
        assert state["tasks"] == listing
    finally:
        servers.stop_all()
