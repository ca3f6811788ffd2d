"""The task routes. A request reads top-down: bearer auth (middleware) → path-owner guard →
owner-scoped repository → schema → response. No code here filters by user: the repository does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from advanced_alchemy.repository.typing import OrderingPair
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware
from litestar.params import JSONBody, Parameter
from sqlalchemy import not_
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.middleware import BearerTokenMiddleware, require_path_owner
from app.openapi import BEARER_SCHEME, problem_responses
from app.tasks.schemas import StatusFilter, TaskCompletion, TaskCreate, TaskRead, TaskUpdate
from db.models import USER_ID_MAX_LENGTH, Task
from db.repositories import TaskRepository

MAX_TASK_ID = 2**63 - 1  # PostgreSQL bigint

TaskId = Annotated[
    int,
    Parameter(ge=1, le=MAX_TASK_ID, description="The task's id (a positive integer)."),
]
Tasks = NamedDependency[TaskRepository]
NEWEST_FIRST: list[OrderingPair] = [(Task.created_at, True), (Task.id, True)]


async def provide_tasks(
    db_session: NamedDependency[AsyncSession],
    request: Request[str, Any, Any],
    user_id: Annotated[
        str,
        Parameter(
            min_length=1,
            max_length=USER_ID_MAX_LENGTH,
            description="The owner's user id; must be the token's user.",
        ),
    ],
) -> TaskRepository:
    """The authenticated user's tasks (the guard has checked that ``user_id`` is that user)."""
    del user_id  # documented path parameter; the owner comes from the verified token
    return TaskRepository(owner_id=request.user, session=db_session)


def task_location(task: Task) -> str:
    """The URL path of one task."""
    return f"/api/{quote(task.user_id, safe='')}/tasks/{task.id}"


class TaskController(Controller):
    """CRUD on one user's tasks."""

    path = "/api/{user_id:str}/tasks"
    tags = ["tasks"]
    middleware = [DefineMiddleware(BearerTokenMiddleware)]
    guards = [require_path_owner]
    security = [{BEARER_SCHEME: []}]
    dependencies = {"tasks": Provide(provide_tasks)}

    @get(
        "/",
        summary="List tasks",
        description="The user's tasks, newest first.",
        responses=problem_responses(400, 401, 403),
    )
    async def list_tasks(
        self,
        tasks: Tasks,
        status: Annotated[StatusFilter, Parameter(description="Which tasks to list.")] = "all",
    ) -> list[TaskRead]:
        """List the user's tasks."""
        filters = [] if status == "all" else [Task.completed.is_(status == "completed")]
        return [TaskRead.from_model(task) for task in await tasks.get_many(*filters, order_by=NEWEST_FIRST)]

    @post(
        "/",
        summary="Create a task",
        status_code=201,
        responses=problem_responses(400, 401, 403),
    )
    async def create_task(self, tasks: Tasks, data: JSONBody[TaskCreate]) -> Response[TaskRead]:
        """Create a task; ``Location`` names it."""
        task = await tasks.add(data.to_model(), auto_commit=True, auto_refresh=False)
        return Response(TaskRead.from_model(task), status_code=201, headers={"Location": task_location(task)})

    @get("/{task_id:str}", summary="Get a task", responses=problem_responses(400, 401, 403, 404))
    async def get_task(self, tasks: Tasks, task_id: TaskId) -> TaskRead:
        """One task."""
        return TaskRead.from_model(await tasks.get(task_id))

    @put("/{task_id:str}", summary="Update a task", responses=problem_responses(400, 401, 403, 404))
    async def replace_task(self, tasks: Tasks, task_id: TaskId, data: JSONBody[TaskUpdate]) -> TaskRead:
        """Update the fields sent; the others keep their value."""
        return await _update(tasks, task_id, data.changes())

    @patch("/{task_id:str}", summary="Update part of a task", responses=problem_responses(400, 401, 403, 404))
    async def update_task(self, tasks: Tasks, task_id: TaskId, data: JSONBody[TaskUpdate]) -> TaskRead:
        """Update the fields sent; the others keep their value."""
        return await _update(tasks, task_id, data.changes())

    @patch(
        "/{task_id:str}/complete",
        summary="Complete or reopen a task",
        description='`{"completed": true|false}` sets the state (safe to retry); no body toggles it.',
        responses=problem_responses(400, 401, 403, 404),
    )
    async def complete_task(
        self, tasks: Tasks, task_id: TaskId, data: JSONBody[TaskCompletion | None] = None
    ) -> TaskRead:
        """Set or toggle ``completed``."""
        completed = not_(Task.completed) if data is None else data.completed
        return await _update(tasks, task_id, {"completed": completed})

    @delete(
        "/{task_id:str}",
        summary="Delete a task",
        status_code=204,
        responses=problem_responses(400, 401, 403, 404),
    )
    async def delete_task(self, tasks: Tasks, task_id: TaskId) -> None:
        """Delete a task."""
        await tasks.delete(task_id, auto_commit=True)


async def _update(tasks: Tasks, task_id: int, values: dict[str, object]) -> TaskRead:
    task = await tasks.update_values(task_id, {**values, "updated_at": datetime.now(UTC)})
    await tasks.session.commit()
    return TaskRead.from_model(task)
