"""``POST /api/{user_id}/batch``: results as the single-task routes would give them, atomic all-or-nothing,
refs to earlier creates, conditional writes, limits, and Idempotency-Key replays; on both databases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]


async def _create(client: Client, auth: Auth, user: str, title: str) -> dict[str, Any]:
    response = await client.post(f"/api/{user}/tasks", json={"title": title}, headers=auth(user))
    assert response.status_code == 201
    task: dict[str, Any] = response.json()
    return task


async def _titles(client: Client, auth: Auth, user: str) -> dict[int, str]:
    response = await client.get(f"/api/{user}/tasks", params={"limit": 200}, headers=auth(user))
    return {task["id"]: task["title"] for task in response.json()}


async def test_the_issues_example(client: Client, auth: Auth, new_user: Any) -> None:
    user, other = new_user(), new_user()
    five, six, seven = [await _create(client, auth, user, t) for t in ("five", "six", "seven")]
    theirs = await _create(client, auth, other, "not yours")
    stale_tag = f'"{five["id"]}-1"'
    await client.patch(f"/api/{user}/tasks/{five['id']}", json={"title": "five v2"}, headers=auth(user))
    body = {
        "atomic": False,
        "operations": [
            {"op": "create", "ref": "a", "data": {"title": "Buy milk"}},
            {"op": "update", "ref": "a", "data": {"priority": "high"}},
            {"op": "update", "id": five["id"], "if_match": stale_tag, "data": {"completed": True}},
            {"op": "complete", "id": six["id"]},
            {"op": "delete", "id": seven["id"]},
            {"op": "update", "id": theirs["id"], "data": {"title": "mine now"}},
            {"op": "update", "id": six["id"], "data": {"priority": "urgent"}},
        ],
    }
    response = await client.post(f"/api/{user}/batch", json=body, headers=auth(user))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 200, 412, 200, 204, 404, 400]
    created = results[0]["task"]
    assert (results[0]["ref"], created["title"]) == ("a", "Buy milk")
    assert (results[1]["task"]["id"], results[1]["task"]["priority"]) == (created["id"], "high")
    assert results[2]["problem"]["type"].endswith(":precondition-failed")
    assert results[2]["task"]["title"] == "five v2"  # the current task, to merge with
    assert results[2]["etag"] == f'"{five["id"]}-2"'  # and its tag, for the next if_match
    assert results[0]["etag"] == f'"{created["id"]}-1"'
    assert results[1]["etag"] == f'"{created["id"]}-2"'
    assert results[3]["task"]["completed"] is True
    assert "task" not in results[4]
    assert results[5]["problem"]["status"] == 404
    assert results[6]["problem"]["errors"][0]["field"] == "operations[6].data.priority"
    assert "high" in results[6]["problem"]["errors"][0]["message"]
    titles = await _titles(client, auth, user)
    assert set(titles) == {created["id"], five["id"], six["id"]}
    assert (await _titles(client, auth, other)) == {theirs["id"]: "not yours"}


async def test_an_atomic_batch_writes_nothing_when_one_operation_fails(
    client: Client, auth: Auth, new_user: Any
) -> None:
    user = new_user()
    task = await _create(client, auth, user, "before")
    body: dict[str, Any] = {
        "atomic": True,
        "operations": [
            {"op": "create", "ref": "n", "data": {"title": "never"}},
            {"op": "update", "id": task["id"], "data": {"title": "after"}},
            {"op": "delete", "id": task["id"] + 10_000},
        ],
    }
    feed = (await client.get(f"/api/{user}/changes", headers=auth(user))).json()["cursor"]
    response = await client.post(f"/api/{user}/batch", json=body, headers=auth(user))
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == ["operations[2]"]
    assert "operations[2]" in problem["detail"]
    assert "task" not in problem  # nothing of the rolled-back batch is shown as if it were stored
    assert await _titles(client, auth, user) == {task["id"]: "before"}
    changed = (await client.get(f"/api/{user}/changes", params={"cursor": feed}, headers=auth(user))).json()
    assert (changed["tasks"], changed["deleted"]) == ([], [])  # nothing moved in the feed either

    body["operations"] = body["operations"][:2]
    response = await client.post(f"/api/{user}/batch", json=body, headers=auth(user))
    assert response.status_code == 200
    assert sorted((await _titles(client, auth, user)).values()) == ["after", "never"]


async def test_an_atomic_batch_with_bad_data_names_the_field(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    body = {"atomic": True, "operations": [{"op": "create", "data": {"title": "ok"}}, {"op": "create", "data": {}}]}
    response = await client.post(f"/api/{user}/batch", json=body, headers=auth(user))
    assert response.status_code == 409
    assert [e["field"] for e in response.json()["errors"]] == ["operations[1].data.title"]
    assert await _titles(client, auth, user) == {}


async def test_refs_and_ids(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await _create(client, auth, user, "t")
    cases = [
        ({"op": "update", "ref": "nope", "data": {"title": "x"}}, "operations[0].ref"),
        ({"op": "update", "id": task["id"], "ref": "a", "data": {"title": "x"}}, "operations[0].id"),
        ({"op": "update", "data": {"title": "x"}}, "operations[0].id"),
        ({"op": "create", "id": task["id"], "data": {"title": "x"}}, "operations[0].id"),
        ({"op": "update", "id": task["id"], "if_match": "nonsense", "data": {"title": "x"}}, "operations[0].if_match"),
    ]
    for operation, field in cases:
        response = await client.post(f"/api/{user}/batch", json={"operations": [operation]}, headers=auth(user))
        assert response.status_code == 200, response.text
        [result] = response.json()["results"]
        assert result["status"] == 400, operation
        assert result["problem"]["errors"][0]["field"] == field
    twice = [{"op": "create", "ref": "r", "data": {"title": "1"}}, {"op": "create", "ref": "r", "data": {"title": "2"}}]
    response = await client.post(f"/api/{user}/batch", json={"operations": twice}, headers=auth(user))
    assert [r["status"] for r in response.json()["results"]] == [201, 400]


async def test_restore_and_complete_in_a_batch(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await _create(client, auth, user, "t")
    operations = [
        {"op": "delete", "id": task["id"]},
        {"op": "complete", "id": task["id"]},  # in the trash: 404, as the route would say
        {"op": "restore", "id": task["id"]},
        {"op": "complete", "id": task["id"], "data": {"completed": True}},
        {"op": "restore", "id": task["id"]},  # not in the trash any more
    ]
    response = await client.post(f"/api/{user}/batch", json={"operations": operations}, headers=auth(user))
    assert [r["status"] for r in response.json()["results"]] == [204, 404, 200, 200, 404]
    assert response.json()["results"][3]["task"]["completed"] is True


async def test_batch_limits(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    too_many = {"operations": [{"op": "create", "data": {"title": str(i)}} for i in range(101)]}
    response = await client.post(f"/api/{user}/batch", json=too_many, headers=auth(user))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "operations"
    bad: Any
    for bad in ({}, {"operations": []}, {"operations": [{"op": "explode"}]}, {"operations": 1}, [1]):
        response = await client.post(f"/api/{user}/batch", json=bad, headers=auth(user))
        assert response.status_code == 400, bad
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await _titles(client, auth, user) == {}
    hundred = {"operations": [{"op": "create", "data": {"title": str(i)}} for i in range(100)]}
    assert (await client.post(f"/api/{user}/batch", json=hundred, headers=auth(user))).status_code == 200
    assert len(await _titles(client, auth, user)) == 100


async def test_idempotency_key_replays_a_batch(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    body = {"operations": [{"op": "create", "ref": "a", "data": {"title": "once"}}]}
    headers = {**auth(user), "Idempotency-Key": "batch-1"}
    first = await client.post(f"/api/{user}/batch", json=body, headers=headers)
    again = await client.post(f"/api/{user}/batch", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert list((await _titles(client, auth, user)).values()) == ["once"]
    other = await client.post(f"/api/{user}/batch", json={**body, "atomic": True}, headers=headers)
    assert other.status_code == 422


async def test_a_batch_needs_the_users_own_token(client: Client, auth: Auth, new_user: Any) -> None:
    user, other = new_user(), new_user()
    body = {"operations": [{"op": "create", "data": {"title": "x"}}]}
    assert (await client.post(f"/api/{user}/batch", json=body)).status_code == 401
    assert (await client.post(f"/api/{user}/batch", json=body, headers=auth(other))).status_code == 403


async def test_a_malformed_operation_is_named(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    body = {
        "operations": [
            {"op": "create", "data": {"title": "fine"}},
            {"op": "update", "id": 0, "data": {"title": "x"}},
            {"op": "explode"},
            7,
        ]
    }
    response = await client.post(f"/api/{user}/batch", json=body, headers=auth(user))
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["operations[1].id", "operations[2].op", "operations[3]"]
    assert "complete" in response.json()["errors"][1]["message"]  # the allowed values are listed
    assert await _titles(client, auth, user) == {}  # a body that does not fit the schema writes nothing


async def test_an_integral_number_is_an_integer_id(client: Client, auth: Auth, new_user: Any) -> None:
    """JSON Schema counts 5.0 as an integer; so does the batch. 5.5 is not one."""
    user = new_user()
    task = await _create(client, auth, user, "t")
    tid = task["id"]
    raw = f'{{"operations": [{{"op": "complete", "id": {tid}.0}}, {{"op": "complete", "id": {tid}.5}}]}}'
    response = await client.post(
        f"/api/{user}/batch", content=raw, headers={**auth(user), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["operations[1].id"]
    raw = f'{{"operations": [{{"op": "complete", "id": {tid}.0}}]}}'
    response = await client.post(
        f"/api/{user}/batch", content=raw, headers={**auth(user), "Content-Type": "application/json"}
    )
    assert [r["status"] for r in response.json()["results"]] == [200]


async def test_create_with_if_match_names_if_match(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    body = {"operations": [{"op": "create", "if_match": '"1-1"', "data": {"title": "x"}}]}
    response = await client.post(f"/api/{user}/batch", json=body, headers=auth(user))
    assert response.json()["results"][0]["problem"]["errors"][0]["field"] == "operations[0].if_match"
