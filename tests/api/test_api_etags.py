"""ETag and If-Match over HTTP (the full ASGI stack), on SQLite and PostgreSQL.

Every single-task response carries a strong ``ETag: "<id>-<version>"``; PUT, PATCH, ``/complete`` and DELETE
change the task only when ``If-Match`` names its current tag (or is ``*``), else 412 and nothing changes.
The concurrent case, over a real server, is in ``tests/process/test_concurrency_http.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.support.http import assert_problem, create

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]
STRONG_TAG = re.compile(r'"([1-9][0-9]*)-([1-9][0-9]*)"')

# The four conditional writes: (method, path suffix, body); each succeeds on a task that exists.
WRITES = {
    "put": ("PUT", "", {"title": "put"}),
    "patch": ("PATCH", "", {"title": "patched"}),
    "complete": ("PATCH", "/complete", None),
    "delete": ("DELETE", "", None),
}


def tag_of(response: Any) -> str:
    """The response's ETag, checked to be strong and of the documented form."""
    value: str = response.headers["etag"]
    assert STRONG_TAG.fullmatch(value), value
    return value


async def write(client: Client, auth: Auth, user: str, task_id: int, kind: str, if_match: str | None) -> Any:
    method, suffix, body = WRITES[kind]
    headers = auth(user) if if_match is None else {**auth(user), "If-Match": if_match}
    return await client.request(method, f"/api/{user}/tasks/{task_id}{suffix}", json=body, headers=headers)


async def current(client: Client, auth: Auth, user: str, task_id: int) -> Any:
    return await client.get(f"/api/{user}/tasks/{task_id}", headers=auth(user))


# -- the ETag -----------------------------------------------------------------------------------------------


async def test_every_single_task_response_carries_its_etag(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    created = await client.post(f"/api/{user}/tasks", json={"title": "t"}, headers=auth(user))
    task_id = created.json()["id"]
    assert tag_of(created) == f'"{task_id}-1"'
    got = await current(client, auth, user, task_id)
    assert tag_of(got) == f'"{task_id}-1"'
    assert tag_of(await current(client, auth, user, task_id)) == tag_of(got)  # reading changes nothing

    tags = [tag_of(created)]
    for kind in ("put", "patch", "complete"):
        response = await write(client, auth, user, task_id, kind, None)
        assert response.status_code == 200
        tags.append(tag_of(response))
        assert tag_of(await current(client, auth, user, task_id)) == tags[-1]  # GET agrees with the write
    assert tags == [f'"{task_id}-{version}"' for version in (1, 2, 3, 4)]
    assert "etag" not in (await client.get(f"/api/{user}/tasks", headers=auth(user))).headers  # a list has none


async def test_a_write_that_changes_no_value_still_changes_the_etag(client: Client, auth: Auth, new_user: Any) -> None:
    """The tag counts writes, not values: an identical PATCH is still a write another client must not miss."""
    user = new_user()
    task = await create(client, auth, user, title="same")
    first = await write(client, auth, user, task["id"], "patch", None)
    second = await write(client, auth, user, task["id"], "patch", None)
    assert first.json()["title"] == second.json()["title"]
    assert tag_of(first) != tag_of(second)


# -- If-Match -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(WRITES))
async def test_matching_if_match_writes(client: Client, auth: Auth, new_user: Any, kind: str) -> None:
    user = new_user()
    task = await create(client, auth, user)
    response = await write(client, auth, user, task["id"], kind, f'"{task["id"]}-1"')
    assert response.status_code == (204 if kind == "delete" else 200), response.text
    if kind == "delete":
        assert (await current(client, auth, user, task["id"])).status_code == 404
    else:
        assert tag_of(response) == f'"{task["id"]}-2"'


@pytest.mark.parametrize("kind", sorted(WRITES))
async def test_stale_if_match_is_412_and_changes_nothing(client: Client, auth: Auth, new_user: Any, kind: str) -> None:
    user = new_user()
    task = await create(client, auth, user, title="before")
    stale = f'"{task["id"]}-1"'
    assert (await write(client, auth, user, task["id"], "patch", stale)).status_code == 200  # now at version 2
    before = await current(client, auth, user, task["id"])

    response = await write(client, auth, user, task["id"], kind, stale)

    body = assert_problem(response, 412)
    assert body["type"] == "urn:todo-backend:problem:precondition-failed"
    after = await current(client, auth, user, task["id"])
    assert after.status_code == 200
    assert (after.json(), tag_of(after)) == (before.json(), tag_of(before))


@pytest.mark.parametrize("kind", sorted(WRITES))
@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("*", True),  # any existing task
        (' "{id}-9" , "{id}-1"', True),  # a list: one of them is current
        ('W/"{id}-1"', False),  # weak tags never match for If-Match
        ('"{other}-1"', False),  # another task's tag
        ('"{id}-99999999999"', False),  # a version too large to exist
        ('"something-else"', False),  # a tag this service never made
        ('"a,b", "{id}-1"', True),  # a comma inside a tag does not split it
    ],
)
async def test_if_match_forms(client: Client, auth: Auth, new_user: Any, kind: str, header: str, matches: bool) -> None:
    user = new_user()
    task = await create(client, auth, user)
    response = await write(client, auth, user, task["id"], kind, header.format(id=task["id"], other=task["id"] + 1))
    if matches:
        assert response.status_code in {200, 204}, response.text
    else:
        assert_problem(response, 412)


@pytest.mark.parametrize("kind", sorted(WRITES))
@pytest.mark.parametrize(
    "header", ["12-1", "", "   ", ",", '"with space"', '"1-1" "1-2"', '*, "1-1"', '"unterminated', 'W/ "1-1"']
)
async def test_malformed_if_match_is_400(client: Client, auth: Auth, new_user: Any, kind: str, header: str) -> None:
    user = new_user()
    task = await create(client, auth, user)
    body = assert_problem(await write(client, auth, user, task["id"], kind, header), 400)
    assert body["errors"] == [{"field": "If-Match", "message": body["errors"][0]["message"], "source": "header"}]
    assert (await current(client, auth, user, task["id"])).json() == task


async def test_too_many_entity_tags_is_400(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await create(client, auth, user)
    many = ", ".join(f'"{task["id"]}-{n}"' for n in range(1, 102))
    assert_problem(await write(client, auth, user, task["id"], "patch", many), 400)


@pytest.mark.parametrize("kind", sorted(WRITES))
async def test_missing_or_foreign_task_with_if_match_is_the_same_404(
    client: Client, auth: Auth, new_user: Any, kind: str
) -> None:
    """With or without If-Match, matching or not: someone else's task looks exactly like no task."""
    user, victim = new_user(), new_user()
    victims = await create(client, auth, victim)
    gone = await create(client, auth, user)
    assert (await write(client, auth, user, gone["id"], "delete", None)).status_code == 204
    answers = set()
    for task_id in (victims["id"], gone["id"]):
        for if_match in (None, "*", f'"{task_id}-1"', f'"{task_id}-2"'):
            response = await write(client, auth, user, task_id, kind, if_match)
            assert_problem(response, 404)
            # every header alike but the clock, the request's own id and the caller's own rate-limit budget
            varying = {"date", "x-request-id", "ratelimit-remaining", "ratelimit-reset"}
            headers = tuple(sorted((k, v) for k, v in response.headers.items() if k not in varying))
            body = {k: v for k, v in response.json().items() if k != "request_id"}
            answers.add((json.dumps(body, sort_keys=True), headers))
    assert len({content for content, _ in answers}) == 1
    assert len({headers for _, headers in answers}) == 1
    assert (await current(client, auth, victim, victims["id"])).json() == victims


async def test_without_if_match_the_last_write_wins_as_before(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await create(client, auth, user)
    for title in ("one", "two"):  # no If-Match: both writes apply, the second last
        response = await client.patch(f"/api/{user}/tasks/{task['id']}", json={"title": title}, headers=auth(user))
        assert response.status_code == 200
        assert response.json()["title"] == title


async def test_a_read_modify_write_cycle(client: Client, auth: Auth, new_user: Any) -> None:
    """Two clients read the same version; the second to write is told, re-reads and retries."""
    user = new_user()
    task = await create(client, auth, user)
    url = f"/api/{user}/tasks/{task['id']}"
    alice_tag = bob_tag = tag_of(await client.get(url, headers=auth(user)))
    alice = await client.patch(url, json={"title": "alice"}, headers={**auth(user), "If-Match": alice_tag})
    assert alice.status_code == 200
    bob = await client.patch(url, json={"description": "bob"}, headers={**auth(user), "If-Match": bob_tag})
    assert_problem(bob, 412)
    fresh = await client.get(url, headers=auth(user))
    assert fresh.json()["title"] == "alice"
    bob = await client.patch(url, json={"description": "bob"}, headers={**auth(user), "If-Match": tag_of(fresh)})
    assert bob.status_code == 200
    assert (bob.json()["title"], bob.json()["description"]) == ("alice", "bob")


# -- documentation and CORS ---------------------------------------------------------------------------------


async def test_openapi_documents_etag_and_if_match(client: Client) -> None:
    schema: dict[str, Any] = (await client.get("/schema/openapi.json")).json()
    item, complete = "/api/{user_id}/tasks/{task_id}", "/api/{user_id}/tasks/{task_id}/complete"
    tagged = {
        ("/api/{user_id}/tasks", "post", "201"),
        (item, "get", "200"),
        (item, "put", "200"),
        (item, "patch", "200"),
        (complete, "patch", "200"),
    }
    for path, method, status in tagged:
        assert "ETag" in schema["paths"][path][method]["responses"][status]["headers"], (path, method)
    for path, method in ((item, "put"), (item, "patch"), (complete, "patch"), (item, "delete")):
        operation = schema["paths"][path][method]
        [if_match] = [p for p in operation["parameters"] if p["name"] == "If-Match"]
        assert if_match["in"] == "header"
        assert if_match["required"] is False
        assert "412" in operation["responses"]
        problem = operation["responses"]["412"]["content"]["application/problem+json"]["schema"]
        assert problem == {"$ref": "#/components/schemas/ProblemDetail"}


async def test_cors_lets_a_browser_send_if_match_and_read_the_etag(client: Client, auth: Auth, new_user: Any) -> None:
    origin = {"Origin": "https://app.example.com"}
    preflight = await client.options(
        "/api/u1/tasks/1",
        headers={**origin, "Access-Control-Request-Method": "PATCH", "Access-Control-Request-Headers": "if-match"},
    )
    assert "if-match" in preflight.headers["access-control-allow-headers"].lower()
    user = new_user()
    response = await client.post(f"/api/{user}/tasks", json={"title": "x"}, headers={**origin, **auth(user)})
    assert "etag" in response.headers["access-control-expose-headers"].lower()
