"""Concurrent writes for real: two ``manage.py serve`` processes on one database, httpx over TCP, requests in
flight together. On SQLite (one file) and PostgreSQL.

- If-Match: the check and the version increment are one ``UPDATE``, so of 20 PATCHes sent at once with the
  same ETag, spread over both processes, exactly one wins; without If-Match, no write is lost.
- Idempotency-Key: keys live in the database, so the same key sent to both processes at once creates one task
  and every response carries the same 201 body.

Two separate processes rather than ``--workers 2``: uvicorn's supervisor restarts a worker that takes over
5 s to start, and a loaded test machine must not make these tests flaky. The pair is started once per
database for the whole module.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.servers import ServeProcess, serve_env

CONCURRENT = 20
KEYS = 8
COPIES_PER_SERVER = 3


@pytest.fixture(scope="module")
def servers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServeProcess]]:
    """Two single-process servers on the (already migrated) test database, signing with the test secret."""
    folder = tmp_path_factory.mktemp("servers")
    env = serve_env(database_url, folder / "data", LOG_LEVEL="WARNING")
    pair = [ServeProcess(env, folder / f"serve-{n}.log") for n in range(2)]
    try:
        for server in pair:
            server.wait_until_healthy()
        yield pair
    finally:
        for server in pair:
            server.stop()


def http_client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    return httpx.AsyncClient(timeout=30, limits=limits)


async def _create(http: httpx.AsyncClient, base: str, user: str, headers: dict[str, str]) -> httpx.Response:
    created = await http.post(f"{base}/api/{user}/tasks", json={"title": "contended"}, headers=headers)
    assert created.status_code == 201, created.text
    return created


async def test_concurrent_patches_with_one_etag_let_exactly_one_through(
    servers: list[ServeProcess], auth: Callable[..., dict[str, str]], new_user: Callable[[], str]
) -> None:
    user = new_user()
    async with http_client() as http:
        for _round in range(2):
            created = await _create(http, servers[0].url, user, auth(user))
            path, tag = created.headers["location"], created.headers["etag"]
            headers = {**auth(user), "If-Match": tag}
            responses = await asyncio.gather(  # half to each process
                *(
                    http.patch(f"{servers[n % 2].url}{path}", json={"title": f"writer {n}"}, headers=headers)
                    for n in range(CONCURRENT)
                )
            )
            statuses = Counter(r.status_code for r in responses)
            assert statuses == {200: 1, 412: CONCURRENT - 1}, [r.text for r in responses if r.status_code >= 500]
            [winner] = [r for r in responses if r.status_code == 200]
            final = await http.get(f"{servers[1].url}{path}", headers=auth(user))
            assert final.json() == winner.json()  # the one 200 is the write that stuck
            assert final.headers["etag"] == winner.headers["etag"] == tag.replace("-1", "-2")
            assert all(r.json()["type"].endswith("precondition-failed") for r in responses if r.status_code == 412)


async def test_concurrent_unconditional_writes_lose_no_update(
    servers: list[ServeProcess], auth: Callable[..., dict[str, str]], new_user: Callable[[], str]
) -> None:
    """20 toggles at once, no If-Match: each is its own atomic read-modify-write, so the version counts all 20."""
    user = new_user()
    async with http_client() as http:
        created = await _create(http, servers[0].url, user, auth(user))
        path = created.headers["location"]
        responses = await asyncio.gather(
            *(http.patch(f"{servers[n % 2].url}{path}/complete", headers=auth(user)) for n in range(CONCURRENT))
        )
        assert {r.status_code for r in responses} == {200}
        assert len({r.headers["etag"] for r in responses}) == CONCURRENT  # every write saw its own version
        final = await http.get(f"{servers[0].url}{path}", headers=auth(user))
    assert final.headers["etag"] == f'"{created.json()["id"]}-{CONCURRENT + 1}"'
    assert final.json()["completed"] is False  # an even number of toggles


async def test_the_same_key_on_two_instances_at_once_creates_one_task(
    servers: list[ServeProcess], auth: Callable[..., dict[str, str]], new_user: Callable[[], str]
) -> None:
    user = new_user()
    headers = auth(user)

    async def send(http: httpx.AsyncClient, base: str, key: int) -> tuple[int, httpx.Response]:
        body = {"title": f"task for key {key}", "tags": ["retry"]}
        response = await http.post(
            f"{base}/api/{user}/tasks", json=body, headers={**headers, "Idempotency-Key": f"key-{key}"}
        )
        return key, response

    async with http_client() as http:
        results = await asyncio.gather(
            *(
                send(http, server.url, key)
                for key in range(KEYS)
                for server in servers
                for _ in range(COPIES_PER_SERVER)
            )
        )
        listing = await http.get(f"{servers[0].url}/api/{user}/tasks", headers=headers)

    by_key: dict[int, list[httpx.Response]] = defaultdict(list)
    for key, response in results:
        by_key[key].append(response)
    for key, responses in by_key.items():
        assert [r.status_code for r in responses] == [201] * len(responses), [r.text for r in responses]
        assert len({r.content for r in responses}) == 1, key  # identical bodies, byte for byte
        assert len({(r.headers["location"], r.headers["etag"]) for r in responses}) == 1, key
        originals = [r for r in responses if "idempotent-replayed" not in r.headers]
        assert len(originals) == 1, key  # one request created the task; every other one replayed it
    assert int(listing.headers["x-total-count"]) == KEYS
    assert {task["id"] for task in listing.json()} == {responses[0].json()["id"] for responses in by_key.values()}
