"""Concurrent writes for real: ``manage.py serve`` in subprocesses, httpx over TCP, requests in flight together.

On SQLite and PostgreSQL. The If-Match check and the version increment are one ``UPDATE`` statement, so of
20 PATCHes sent at once with the same ETag exactly one wins; without If-Match none is lost.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.test_cli import UNSET_SETTINGS, Server, server_factory

__all__ = ["server_factory"]  # the fixture, shared with test_cli

Auth = Callable[..., dict[str, str]]
CONCURRENT = 20


@pytest.fixture
def server_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """A server on the test's (already migrated) database, signing with the test secret, quiet."""
    return {
        **os.environ,
        **UNSET_SETTINGS,
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": TEST_SECRET,
        "LOG_LEVEL": "WARNING",
    }


async def _create(http: httpx.AsyncClient, user: str, headers: dict[str, str]) -> httpx.Response:
    created = await http.post(f"/api/{user}/tasks", json={"title": "contended"}, headers=headers)
    assert created.status_code == 201, created.text
    return created


async def test_concurrent_patches_with_one_etag_let_exactly_one_through(
    server_env: dict[str, str], server_factory: type[Server], auth: Auth, new_user: Callable[[], str]
) -> None:
    server = server_factory(server_env, "--workers", "2")
    server.wait_until_healthy()
    user = new_user()
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        for _round in range(2):
            created = await _create(http, user, auth(user))
            url, tag = created.headers["location"], created.headers["etag"]
            headers = {**auth(user), "If-Match": tag}
            responses = await asyncio.gather(
                *(http.patch(url, json={"title": f"writer {n}"}, headers=headers) for n in range(CONCURRENT))
            )
            statuses = Counter(r.status_code for r in responses)
            assert statuses == {200: 1, 412: CONCURRENT - 1}, [r.text for r in responses if r.status_code >= 500]
            [winner] = [r for r in responses if r.status_code == 200]
            final = await http.get(url, headers=auth(user))
            assert final.json() == winner.json()  # the one 200 is the write that stuck
            assert final.headers["etag"] == winner.headers["etag"] == tag.replace("-1", "-2")
            assert all(r.json()["type"].endswith("precondition-failed") for r in responses if r.status_code == 412)


async def test_concurrent_unconditional_writes_lose_no_update(
    server_env: dict[str, str], server_factory: type[Server], auth: Auth, new_user: Callable[[], str]
) -> None:
    """20 toggles at once, no If-Match: each is its own atomic read-modify-write, so the version counts all 20."""
    server = server_factory(server_env)
    server.wait_until_healthy()
    user = new_user()
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        created = await _create(http, user, auth(user))
        url = created.headers["location"]
        responses = await asyncio.gather(
            *(http.patch(f"{url}/complete", headers=auth(user)) for _ in range(CONCURRENT))
        )
        assert {r.status_code for r in responses} == {200}
        assert len({r.headers["etag"] for r in responses}) == CONCURRENT  # every write saw its own version
        final = await http.get(url, headers=auth(user))
        task_id = created.json()["id"]
        assert final.headers["etag"] == f'"{task_id}-{CONCURRENT + 1}"'
        assert final.json()["completed"] is False  # an even number of toggles
