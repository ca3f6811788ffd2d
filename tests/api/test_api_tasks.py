"""The task API over HTTP (the full ASGI stack), on SQLite and PostgreSQL: every row of the contract."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.http import PROBLEM, Auth, Client, assert_problem, create


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value  # ISO 8601 in UTC
    return datetime.fromisoformat(value)


# -- create -------------------------------------------------------------------------------------------------


async def test_create_returns_the_task_and_its_location(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    response = await client.post(
        f"/api/{user}/tasks", json={"title": "  Buy milk  ", "description": "2 litres"}, headers=auth(user)
    )
    assert response.status_code == 201
    task = response.json()
    assert response.headers["location"] == f"/api/{user}/tasks/{task['id']}"
    assert isinstance(task["id"], int)
    assert task["user_id"] == user
    assert task["title"] == "Buy milk"  # trimmed
    assert task["description"] == "2 litres"
    assert task["completed"] is False
    assert parse_time(task["created_at"]) == parse_time(task["updated_at"]) or parse_time(
        task["updated_at"]
    ) >= parse_time(task["created_at"])
    fetched = await client.get(response.headers["location"], headers=auth(user))
    assert fetched.json() == task


async def test_create_with_completed_and_no_description(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await create(client, auth, user, completed=True)
    assert task["completed"] is True
    assert task["description"] is None


async def test_create_ignores_read_only_and_unknown_fields(client: Client, auth: Auth, new_user: Any) -> None:
    user, victim = new_user(), new_user()
    body = {
        "title": "mine",
        "id": 424242,
        "user_id": victim,
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
        "is_admin": True,
    }
    response = await client.post(f"/api/{user}/tasks", json=body, headers=auth(user))
    assert response.status_code == 201
    task = response.json()
    assert task["user_id"] == user
    assert task["id"] != 424242 or (await client.get(f"/api/{victim}/tasks", headers=auth(victim))).json() == []
    assert not task["created_at"].startswith("2000")
    assert "is_admin" not in task
    assert (await client.get(f"/api/{victim}/tasks", headers=auth(victim))).json() == []


# -- list ---------------------------------------------------------------------------------------------------


async def test_list_is_newest_first_and_filters_by_status(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    first = await create(client, auth, user, title="first")
    second = await create(client, auth, user, title="second", completed=True)
    third = await create(client, auth, user, title="third")

    async def ids(query: str = "") -> list[int]:
        response = await client.get(f"/api/{user}/tasks{query}", headers=auth(user))
        assert response.status_code == 200
        return [task["id"] for task in response.json()]

    assert await ids() == [third["id"], second["id"], first["id"]]
    assert await ids("?status=all") == [third["id"], second["id"], first["id"]]
    assert await ids("?status=pending") == [third["id"], first["id"]]
    assert await ids("?status=completed") == [second["id"]]


async def test_list_of_a_new_user_is_empty(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    response = await client.get(f"/api/{user}/tasks", headers=auth(user))
    assert response.status_code == 200
    assert response.json() == []


async def test_list_rejects_an_unknown_status(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    body = assert_problem(await client.get(f"/api/{user}/tasks?status=done", headers=auth(user)), 400)
    assert body["errors"][0]["field"] == "status"


async def test_bodies_are_decoded_strictly_as_documented(client: Client, auth: Auth, new_user: Any) -> None:
    """A boolean is true or false: 1 and "false" are refused, each field named (no lax coercion since issue 12)."""
    user = new_user()
    url = f"/api/{user}/tasks"
    for completed in (1, "false"):
        response = await client.post(url, json={"title": "x", "completed": completed}, headers=auth(user))
        body = assert_problem(response, 400)
        assert body["errors"] == [{"field": "completed", "message": "must be true or false", "source": "body"}]
    assert (await create(client, auth, user, completed=True))["completed"] is True


# -- update -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch"])
async def test_update_changes_only_the_fields_sent(client: Client, auth: Auth, new_user: Any, method: str) -> None:
    user = new_user()
    task = await create(client, auth, user, title="old", description="keep me")
    url = f"/api/{user}/tasks/{task['id']}"

    response = await client.request(method.upper(), url, json={"title": " new "}, headers=auth(user))
    assert response.status_code == 200
    updated = response.json()
    assert updated["title"] == "new"
    assert updated["description"] == "keep me"
    assert updated["completed"] is False
    assert updated["created_at"] == task["created_at"]
    assert parse_time(updated["updated_at"]) > parse_time(task["updated_at"])

    response = await client.request(method.upper(), url, json={"completed": True}, headers=auth(user))
    assert response.json()["completed"] is True
    assert response.json()["title"] == "new"

    response = await client.request(method.upper(), url, json={"description": None}, headers=auth(user))
    assert response.json()["description"] is None  # null clears

    assert (await client.get(url, headers=auth(user))).json() == response.json()


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize("body", [{}, {"id": 5, "user_id": "x", "unknown": 1}])
async def test_update_with_no_field_is_400(
    client: Client, auth: Auth, new_user: Any, method: str, body: dict[str, Any]
) -> None:
    user = new_user()
    task = await create(client, auth, user)
    response = await client.request(method.upper(), f"/api/{user}/tasks/{task['id']}", json=body, headers=auth(user))
    assert_problem(response, 400)


async def test_update_cannot_change_owner_or_id(client: Client, auth: Auth, new_user: Any) -> None:
    user, victim = new_user(), new_user()
    task = await create(client, auth, user)
    response = await client.patch(
        f"/api/{user}/tasks/{task['id']}",
        json={"title": "t", "user_id": victim, "id": task["id"] + 1000},
        headers=auth(user),
    )
    assert response.status_code == 200
    assert response.json()["user_id"] == user
    assert response.json()["id"] == task["id"]


# -- complete -----------------------------------------------------------------------------------------------


async def test_complete_sets_or_toggles(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await create(client, auth, user)
    url = f"/api/{user}/tasks/{task['id']}/complete"

    for _ in range(2):  # setting is idempotent: a retry is harmless
        response = await client.patch(url, json={"completed": True}, headers=auth(user))
        assert response.status_code == 200
        assert response.json()["completed"] is True
    response = await client.patch(url, json={"completed": False}, headers=auth(user))
    assert response.json()["completed"] is False

    assert (await client.patch(url, headers=auth(user))).json()["completed"] is True  # no body: toggle
    assert (await client.patch(url, headers=auth(user))).json()["completed"] is False


@pytest.mark.parametrize("body", [{"completed": "yes"}, {"completed": None}, {}])
async def test_complete_rejects_a_bad_body(client: Client, auth: Auth, new_user: Any, body: Any) -> None:
    user = new_user()
    task = await create(client, auth, user)
    response = await client.patch(f"/api/{user}/tasks/{task['id']}/complete", json=body, headers=auth(user))
    assert_problem(response, 400)


# -- delete -------------------------------------------------------------------------------------------------


async def test_delete_removes_the_task(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    task = await create(client, auth, user)
    url = f"/api/{user}/tasks/{task['id']}"
    response = await client.delete(url, headers=auth(user))
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await client.get(url, headers=auth(user)), 404)
    assert_problem(await client.delete(url, headers=auth(user)), 404)


# -- 404: missing and foreign tasks look the same ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PUT", "", {"title": "x"}),
        ("PATCH", "", {"title": "x"}),
        ("PATCH", "/complete", None),
        ("PATCH", "/complete", {"completed": True}),
        ("DELETE", "", None),
    ],
)
async def test_someone_elses_task_is_indistinguishable_from_a_missing_one(
    client: Client, auth: Auth, new_user: Any, method: str, suffix: str, body: Any
) -> None:
    owner, intruder = new_user(), new_user()
    task = await create(client, auth, owner, title="secret")
    await create(client, auth, intruder)  # the intruder has tasks of their own

    foreign = await client.request(
        method, f"/api/{intruder}/tasks/{task['id']}{suffix}", json=body, headers=auth(intruder)
    )
    missing = await client.request(method, f"/api/{intruder}/tasks/{2**62}{suffix}", json=body, headers=auth(intruder))
    assert_problem(foreign, 404)
    assert foreign.json() | {"request_id": ""} == missing.json() | {"request_id": ""}  # each has its own id
    # every header alike but the clock, the request's id and the caller's rate-limit budget, which each spends
    varying = {"date": "", "x-request-id": "", "ratelimit-remaining": "", "ratelimit-reset": ""}
    assert dict(foreign.headers) | varying == dict(missing.headers) | varying

    unchanged = await client.get(f"/api/{owner}/tasks/{task['id']}", headers=auth(owner))
    assert unchanged.json() == task


# -- isolation between several users ----------------------------------------------------------------------


async def test_users_only_ever_see_their_own_tasks(client: Client, auth: Auth, new_user: Any) -> None:
    users = [new_user() for _ in range(3)]
    owned = {user: {(await create(client, auth, user, title=f"{user}-{n}"))["id"] for n in range(3)} for user in users}
    for user in users:
        listed = (await client.get(f"/api/{user}/tasks", headers=auth(user))).json()
        assert {task["id"] for task in listed} == owned[user]
        assert {task["user_id"] for task in listed} == {user}
        for other in users:
            if other == user:
                continue
            # another user's path with one's own token: 403, whatever the method
            for method in ("GET", "POST"):
                response = await client.request(method, f"/api/{other}/tasks", json={"title": "x"}, headers=auth(user))
                assert_problem(response, 403)
            task_id = next(iter(owned[other]))
            for method, suffix in (("GET", ""), ("PUT", ""), ("PATCH", ""), ("DELETE", ""), ("PATCH", "/complete")):
                response = await client.request(
                    method, f"/api/{other}/tasks/{task_id}{suffix}", json={"title": "x"}, headers=auth(user)
                )
                assert_problem(response, 403)
    for user in users:  # nothing changed hands
        listed = (await client.get(f"/api/{user}/tasks", headers=auth(user))).json()
        assert {task["id"] for task in listed} == owned[user]


# -- validation: 400, never 500 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   \t\n "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": 42}, "title"),
        ({"title": None}, "title"),
        ({"title": ["a"]}, "title"),
        ({"title": "ok", "description": "d" * 1001}, "description"),
        ({"title": "ok", "description": 5}, "description"),
        ({"title": "ok", "completed": "yes"}, "completed"),
        ({"title": "ok", "completed": 2}, "completed"),
        ({"title": "ok", "completed": "maybe"}, "completed"),
        ({"title": "nul\x00byte"}, "title"),
        ({"title": "ok", "description": "nul\x00"}, "description"),
    ],
)
async def test_create_rejects_invalid_bodies(
    client: Client, auth: Auth, new_user: Any, body: dict[str, Any], field: str
) -> None:
    user = new_user()
    problem = assert_problem(await client.post(f"/api/{user}/tasks", json=body, headers=auth(user)), 400)
    assert field in [error["field"] for error in problem["errors"]]
    assert (await client.get(f"/api/{user}/tasks", headers=auth(user))).json() == []


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"[]",
        b'"title"',
        b"null",
        b'{"title": "\\ud800"}',
        b"\xff\xfe",
        b'{"title":"a"' * 1000,
        b'{"title": "\xc3\x28"}',  # invalid UTF-8
        b'{"title": "a", "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",  # nested past the recursion limit, under 64 KiB
    ],
)
async def test_create_rejects_malformed_json(client: Client, auth: Auth, new_user: Any, raw: bytes) -> None:
    user = new_user()
    headers = {**auth(user), "Content-Type": "application/json"}
    assert_problem(await client.post(f"/api/{user}/tasks", content=raw, headers=headers), 400)


@pytest.mark.parametrize(
    "task_id",
    ["abc", "0", "-1", "1.5", "9223372036854775808", "99999999999999999999999999", "1e99", "%20", "0x10"],
)
async def test_bad_task_ids_are_400(client: Client, auth: Auth, new_user: Any, task_id: str) -> None:
    user = new_user()
    for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("PATCH", "/complete")):
        response = await client.request(
            method, f"/api/{user}/tasks/{task_id}{suffix}", json={"title": "x"}, headers=auth(user)
        )
        body = assert_problem(response, 400)
        assert body["errors"][0]["field"] == "task_id"


async def test_largest_task_id_is_a_clean_404(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    assert_problem(await client.get(f"/api/{user}/tasks/{2**63 - 1}", headers=auth(user)), 404)


@pytest.mark.parametrize(
    "title",
    [
        "Émoji 🎉👩‍👩‍👧 done",
        "עברית RTL \u202eoverride",
        "zero\u200bwidth\u200cjoiner\u200d",
        "combining é́́",
        "'; DROP TABLE tasks; --",
        "<script>alert(1)</script>",
        "%s %n {0} ${x} {{x}}",
        "\\u0000 literal backslashes \\",
        "ﷺ" * 200,
    ],
)
async def test_odd_and_hostile_text_round_trips(client: Client, auth: Auth, new_user: Any, title: str) -> None:
    user = new_user()
    task = await create(client, auth, user, title=title, description=title)
    fetched = (await client.get(f"/api/{user}/tasks/{task['id']}", headers=auth(user))).json()
    assert fetched["title"] == title.strip()
    assert fetched["description"] == title


@pytest.mark.parametrize("path_user", ["%00", "a" * 300, "..", "%2e%2e", "ü", "a%2Fb", " "])
async def test_odd_path_user_ids_never_500(client: Client, auth: Auth, new_user: Any, path_user: str) -> None:
    response = await client.get(f"/api/{path_user}/tasks", headers=auth(new_user()))
    assert response.status_code in {400, 403, 404}
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_a_user_id_with_reserved_characters_works(client: Client, auth: Auth) -> None:
    user = "user@example.com|ünï"
    path = f"/api/{quote(user, safe='')}/tasks"
    response = await client.post(path, json={"title": "x"}, headers=auth(user))
    assert response.status_code == 201
    assert response.json()["user_id"] == user
    assert response.headers["location"] == f"{path}/{response.json()['id']}"
    assert (await client.get(response.headers["location"], headers=auth(user))).status_code == 200


async def test_title_is_trimmed_before_its_length_is_checked(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    exactly = "x" * 200
    assert (await create(client, auth, user, title=f"  {exactly}\n"))["title"] == exactly
    problem = assert_problem(
        await client.post(f"/api/{user}/tasks", json={"title": "x" * 201}, headers=auth(user)), 400
    )
    assert problem["errors"][0]["field"] == "title"


@pytest.mark.parametrize("title", ["\u200b", " \u200b\u200e ", "\u2028", "\t\u00a0"])
async def test_invisible_only_titles_are_blank(client: Client, auth: Auth, new_user: Any, title: str) -> None:
    user = new_user()
    assert_problem(await client.post(f"/api/{user}/tasks", json={"title": title}, headers=auth(user)), 400)


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/u1/tasks", "GET, OPTIONS, POST"),
        ("/api/u1/tasks/1", "DELETE, GET, OPTIONS, PATCH, PUT"),
        ("/api/u1/tasks/1/complete", "OPTIONS, PATCH"),
    ],
)
async def test_plain_options_lists_methods_without_auth_or_data(
    client: Client, auth: Auth, path: str, methods: str
) -> None:
    for headers in ({}, auth("u1"), auth("someone-else")):
        response = await client.options(path, headers=headers)
        assert response.status_code == 204
        assert response.headers["allow"] == methods  # every method of the path (Litestar 2 listed only some)
        assert response.content == b""


async def test_unknown_route_and_method_are_problems(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    assert_problem(await client.get("/api/nothing-here"), 404)
    response = await client.post(f"/api/{user}/tasks/1", json={"title": "x"}, headers=auth(user))
    assert_problem(response, 405)
