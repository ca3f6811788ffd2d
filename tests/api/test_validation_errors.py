"""A bad request gets one 400 that names every bad value, the path first, in words a client can act on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]


async def test_every_bad_field_of_a_body_is_listed(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    body = {"title": 42, "priority": "urgent", "tags": ["ok", ""]}
    response = await client.post(f"/api/{user}/tasks", json=body, headers=auth(user))
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["errors"] == [
        {"field": "title", "message": "must be a string of at least 1 character", "source": "body"},
        {"field": "priority", "message": 'must be one of "high", "low", "medium"', "source": "body"},
        {"field": "tags[1]", "message": "must be a string of 1 to 40 characters", "source": "body"},
    ]
    assert problem["detail"] == "; ".join(f"{e['field']}: {e['message']}" for e in problem["errors"])
    assert (await client.get(f"/api/{user}/tasks", headers=auth(user))).json() == []


async def test_a_bad_path_comes_before_a_bad_body(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    response = await client.patch(f"/api/{user}/tasks/0", json={"completed": "maybe"}, headers=auth(user))
    assert response.status_code == 400
    assert [(e["field"], e["source"]) for e in response.json()["errors"]] == [
        ("task_id", "path"),
        ("completed", "body"),
    ]
    assert response.json()["errors"][0]["message"] == "must be an integer from 1 to 9223372036854775807"
