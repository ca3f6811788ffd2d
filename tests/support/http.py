"""What the API tests assert about responses, and the request they all start with (create a task)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with the given status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:todo-backend:problem:")
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


def assert_401(response: Any, token: str | None = None) -> None:
    """A 401 problem with a ``Bearer`` challenge that never echoes ``token`` (nor a long part of it)."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 401
    assert body["detail"]
    if token:
        assert token not in response.text  # the token is never echoed
        for part in token.split("."):
            if len(part) > 8:
                assert part not in response.text


async def create(client: Client, auth: Auth, user: str, **fields: Any) -> dict[str, Any]:
    """Create a task for ``user`` (title "a task" unless given) and return its body; fails unless 201."""
    response = await client.post(f"/api/{user}/tasks", json={"title": "a task", **fields}, headers=auth(user))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
