"""Errors a person can act on: every problem of a request at once, rules and types alike, each with its field
and a sentence; a fixed set of values is listed; no library wording reaches the client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]
LIBRARY_WORDING = ("Expected `", "`$", " - at ", "Object missing", "Invalid enum value", "msgspec")


def messages(problem: dict[str, Any]) -> list[tuple[str, str]]:
    for error in problem["errors"]:
        assert not any(words in error["message"] for words in LIBRARY_WORDING), error
    return [(error["field"], error["message"]) for error in problem["errors"]]


async def test_every_broken_rule_of_a_body_is_listed_not_only_the_first(
    client: Client, auth: Auth, new_user: Any
) -> None:
    user = new_user()
    body = {"title": "   ", "due_date": "next tuesday", "tags": ["home", "HOME"], "description": "a\x00b"}
    response = await client.post(f"/api/{user}/tasks", json=body, headers=auth(user))
    assert response.status_code == 400
    assert messages(response.json()) == [
        ("title", "must not be blank"),
        ("description", "must not contain NUL characters"),
        ("due_date", "must be an RFC 3339 date-time with an offset (2026-12-24T18:00:00Z) or a date"),
        ("tags", "duplicate tag 'HOME' (tags are unique ignoring case)"),
    ]


async def test_type_errors_and_broken_rules_are_listed_together(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    created = await client.post(f"/api/{user}/tasks", json={"title": "x"}, headers=auth(user))
    url = f"/api/{user}/tasks/{created.json()['id']}"
    body = {"title": "", "completed": "true", "priority": "urgent", "due_date": "2026-02-30"}
    response = await client.patch(url, json=body, headers=auth(user))
    assert response.status_code == 400
    assert messages(response.json()) == [
        ("title", "must be a string of at least 1 character"),
        ("completed", "must be true or false"),
        ("priority", 'must be one of "high", "low", "medium"'),
        ("due_date", "must be an RFC 3339 date-time with an offset (2026-12-24T18:00:00Z) or a date"),
    ]
    assert (await client.get(url, headers=auth(user))).json()["title"] == "x"  # nothing changed


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=done", [("status", 'must be one of "all", "completed", "pending"')]),
        ("sort=size", [("sort", 'must be one of "created", "due_date", "priority", "title", "updated"')]),
        ("order=up", [("order", 'must be one of "asc", "desc"')]),
        ("limit=many", [("limit", "must be an integer from 1 to 200")]),
        (
            "priority=urgent&limit=0",
            [
                ("priority", 'must be one of "high", "low", "medium" (each value, when repeated)'),
                ("limit", "must be an integer from 1 to 200"),
            ],
        ),
    ],
)
async def test_query_values_are_refused_in_words_with_the_allowed_values(
    client: Client, auth: Auth, new_user: Any, query: str, expected: list[tuple[str, str]]
) -> None:
    user = new_user()
    response = await client.get(f"/api/{user}/tasks?{query}", headers=auth(user))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert sorted(messages(response.json())) == sorted(expected)


@pytest.mark.parametrize("value", [1, 0, "true", "false", "1", None, 1.0])
async def test_a_boolean_is_true_or_false_and_nothing_else(
    client: Client, auth: Auth, new_user: Any, value: object
) -> None:
    user = new_user()
    response = await client.post(f"/api/{user}/tasks", json={"title": "x", "completed": value}, headers=auth(user))
    assert response.status_code == 400
    assert messages(response.json()) == [("completed", "must be true or false")]
    assert (await client.get(f"/api/{user}/tasks", headers=auth(user))).json() == []


async def test_a_field_of_the_wrong_type_does_not_hide_the_rules_broken_by_the_others(
    client: Client, auth: Auth, new_user: Any
) -> None:
    user = new_user()
    body = {"title": 42, "due_date": "tomorrow", "tags": [" ", "x"]}
    response = await client.post(f"/api/{user}/tasks", json=body, headers=auth(user))
    assert response.status_code == 400
    assert messages(response.json()) == [
        ("title", "must be a string of at least 1 character"),
        ("due_date", "must be an RFC 3339 date-time with an offset (2026-12-24T18:00:00Z) or a date"),
        ("tags", "tags must not be blank"),
    ]
