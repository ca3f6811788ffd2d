"""A property-based model test: several users doing random things to their own and each other's tasks.

Hypothesis drives three users per example through random sequences of create, get, list, put, patch, complete and
delete, on their own task ids, on each other's, and on ids that never existed, through the whole ASGI app (auth
middleware, guard, owner-scoped repository, real database; SQLite and PostgreSQL). Every answer is checked against
an in-memory model: a user sees exactly their own tasks, each exactly as last written; someone else's task is a
404 equal to that of a task that never existed (but for its request id), and nothing about it changes; another
user's path is a 403. Each example uses fresh user ids, so examples never see each other's rows.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, ClassVar

import hypothesis
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from litestar import Litestar
from litestar.testing import TestClient

from app.auth.tokens import issue_token
from config.settings import Settings

USERS = 3
MAX_TASK_ID = 2**63 - 1
SETTINGS = hypothesis.settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,  # the same sequences on every run: CI is never flaky
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)

actors = st.integers(min_value=0, max_value=USERS - 1)
texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Cf", "Zs", "Zl", "Zp"]), max_size=12)
titles = texts.filter(str.strip).map(str.strip)
tags = st.lists(st.sampled_from(["home", "work", "errands", "money", "Ünï"]), max_size=3, unique=True)
due_dates = st.none() | st.dates().map(str)
fields = st.fixed_dictionaries(
    {},
    optional={
        "title": titles,
        "description": st.none() | texts,
        "completed": st.booleans(),
        "priority": st.sampled_from(["low", "medium", "high"]),
        "due_date": due_dates,
        "tags": tags,
    },
)
changes = fields.filter(bool)  # PUT and PATCH need at least one field
new_task = st.fixed_dictionaries({"title": titles}) | st.builds(
    lambda title, rest: {**rest, "title": title}, titles, fields
)


def as_returned(name: str, value: Any) -> Any:
    """A sent field as the API returns it (a bare date is midnight UTC)."""
    return f"{value}T00:00:00Z" if name == "due_date" and value is not None else value


class TaskUsers(RuleBasedStateMachine):
    """The model: which user owns which task id, and each task exactly as the API last returned it."""

    client: ClassVar[TestClient[Litestar]]
    settings: ClassVar[Settings]

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.users = [f"model-{uuid.uuid4().hex}" for _ in range(USERS)]
        self.tokens = [
            {"Authorization": f"Bearer {issue_token(self.settings, user, timedelta(minutes=10))}"}
            for user in self.users
        ]
        self.tasks: dict[int, dict[str, Any]] = {}  # id → the task as last returned; its user_id is its owner
        self.not_found: dict[str, Any] | None = None

    # -- helpers -----------------------------------------------------------------------------------------------

    def request(self, method: str, actor: int, path: str, *, owner: int | None = None, **kwargs: Any) -> Any:
        user = self.users[actor if owner is None else owner]
        return self.client.request(method, f"/api/{user}/tasks{path}", headers=self.tokens[actor], **kwargs)

    def owns(self, actor: int, task_id: int) -> bool:
        task = self.tasks.get(task_id)
        return task is not None and task["user_id"] == self.users[actor]

    def assert_not_found(self, response: Any) -> None:
        """Another user's task and a task that never existed get the very same 404."""
        assert response.status_code == 404, response.text
        body = response.json()
        assert body.pop("request_id") == response.headers["x-request-id"]  # each request's own; the rest alike
        if self.not_found is None:
            self.not_found = body
        assert body == self.not_found

    def assert_task(self, response: Any, status: int, expected: dict[str, Any]) -> dict[str, Any]:
        assert response.status_code == status, response.text
        task: dict[str, Any] = response.json()
        assert {name: task[name] for name in expected} == expected
        return task

    # -- rules -------------------------------------------------------------------------------------------------

    @initialize()
    def probe_an_id_that_never_existed(self) -> None:
        self.assert_not_found(self.request("GET", 0, f"/{MAX_TASK_ID}"))

    @rule(target=ids, actor=actors, body=new_task)
    def create(self, actor: int, body: dict[str, Any]) -> int:
        expected = {name: as_returned(name, value) for name, value in body.items()}
        task = self.assert_task(
            self.request("POST", actor, "", json=body), 201, {**expected, "user_id": self.users[actor]}
        )
        assert task["id"] not in self.tasks
        self.tasks[task["id"]] = task
        return int(task["id"])

    @rule(actor=actors, task_id=ids | st.integers(1, MAX_TASK_ID))
    def get(self, actor: int, task_id: int) -> None:
        response = self.request("GET", actor, f"/{task_id}")
        if self.owns(actor, task_id):
            assert response.status_code == 200, response.text
            assert response.json() == self.tasks[task_id]
        else:
            self.assert_not_found(response)

    @rule(actor=actors)
    def list_own(self, actor: int) -> None:
        response = self.request("GET", actor, "", params={"limit": 200, "sort": "created", "order": "asc"})
        assert response.status_code == 200, response.text
        expected = [task for task in self.tasks.values() if task["user_id"] == self.users[actor]]
        assert response.json() == sorted(expected, key=lambda task: task["id"])
        assert response.headers["x-total-count"] == str(len(expected))

    @rule(
        actor=actors, task_id=ids | st.integers(1, MAX_TASK_ID), method=st.sampled_from(["PUT", "PATCH"]), body=changes
    )
    def update(self, actor: int, task_id: int, method: str, body: dict[str, Any]) -> None:
        response = self.request(method, actor, f"/{task_id}", json=body)
        if self.owns(actor, task_id):
            expected = {**self.tasks[task_id], **{name: as_returned(name, value) for name, value in body.items()}}
            del expected["updated_at"]
            self.tasks[task_id] = self.assert_task(response, 200, expected)
        else:
            self.assert_not_found(response)

    @rule(actor=actors, task_id=ids | st.integers(1, MAX_TASK_ID), completed=st.none() | st.booleans())
    def complete(self, actor: int, task_id: int, completed: bool | None) -> None:
        body = None if completed is None else {"completed": completed}
        response = self.request("PATCH", actor, f"/{task_id}/complete", json=body)
        if self.owns(actor, task_id):
            state = not self.tasks[task_id]["completed"] if completed is None else completed
            self.tasks[task_id] = self.assert_task(response, 200, {"id": task_id, "completed": state})
        else:
            self.assert_not_found(response)

    @rule(actor=actors, task_id=ids | st.integers(1, MAX_TASK_ID))
    def delete(self, actor: int, task_id: int) -> None:
        response = self.request("DELETE", actor, f"/{task_id}")
        if self.owns(actor, task_id):
            assert response.status_code == 204, response.text
            assert response.content == b""
            del self.tasks[task_id]
        else:
            self.assert_not_found(response)

    @rule(
        actor=actors,
        other=st.integers(min_value=1, max_value=USERS - 1),
        method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE"]),
        task_id=st.none() | ids,
    )
    def use_someone_elses_path(self, actor: int, other: int, method: str, task_id: int | None) -> None:
        """A valid token on another user's path is refused before any data is read or written."""
        owner = (actor + other) % USERS
        path = "" if task_id is None else f"/{task_id}"
        if task_id is None and method != "GET":
            method = "POST"
        body = {"title": "not yours"} if method not in {"GET", "DELETE"} else None
        response = self.request(method, actor, path, owner=owner, json=body)
        assert response.status_code == 403, response.text

    @invariant()
    def ids_are_unique_across_users(self) -> None:
        assert len({task["id"] for task in self.tasks.values()}) == len(self.tasks)

    def teardown(self) -> None:
        """At the end, every user's whole list is exactly their part of the model."""
        for actor in range(USERS):
            self.list_own(actor)


@pytest.mark.slow  # 40 Hypothesis examples of many requests each: seconds per database
def test_users_only_ever_reach_their_own_tasks(app: Litestar, settings: Settings) -> None:
    with TestClient(app=app) as client:
        machine = type("TaskUsersOn", (TaskUsers,), {"client": client, "settings": settings})
        run_state_machine_as_test(machine, settings=SETTINGS)
