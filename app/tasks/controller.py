"""The task routes. A request reads top-down: the access guard (``app/access.py``: token, rate limit, path
owner) → owner-scoped repository → schema → response. No code here filters by user: the repository does.
Each route makes one round trip to the database on its success path (a create with ``Idempotency-Key``
commits a transaction)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, TypeVar, cast
from urllib.parse import parse_qsl, quote, urlencode

import msgspec
from litestar import Controller, Litestar, Request, Response, delete, get, patch, post, put
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter
from sqlalchemy import not_

from app.access import BEARER
from app.openapi import BEARER_SCHEME, ApiOperation, problem_responses
from app.ratelimit.plugin import RATE_LIMIT_HEADERS
from app.tasks import list_request as listed
from app.tasks.cursors import InvalidCursorError
from app.tasks.etags import etag, if_match_versions
from app.tasks.idempotency import Created, IdempotencyKeyHeader, create_once
from app.tasks.openapi import (
    ETAG_HEADER,
    CreateTaskOperation,
    IfMatch,
    OptionalBodyOperation,
    UpdateTaskOperation,
)
from app.tasks.schemas import (
    TaskCompletion,
    TaskCreate,
    TaskRead,
    TaskUpdate,
)
from app.validation import InvalidRequestError, StructBody
from db.database import Database, Executor, Row
from db.limits import USER_ID_MAX_LENGTH
from db.models import Task
from db.repositories import TaskRepository

T = TypeVar("T")
MAX_TASK_ID = 2**63 - 1  # PostgreSQL bigint
TOGGLE_COMPLETED = not_(Task.completed)  # one object: a statement's shape includes its expressions

TaskId = Annotated[
    int,
    # schema_extra keeps the documented maximum an exact integer (``le`` alone is rendered as a float).
    Parameter(ge=1, le=MAX_TASK_ID, description="The task's id.", schema_extra={"minimum": 1, "maximum": MAX_TASK_ID}),
]


Tasks = NamedDependency[TaskRepository]


async def provide_tasks(
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
    return TaskRepository(owner_id=request.user, executor=request.app.state.database)


_UPDATE_DESCRIPTION = (
    "Sets the fields sent; the others keep their value (PUT and PATCH do the same). The body must carry at "
    "least one of `title`, `description`, `completed`, `priority`, `due_date`, `tags`: `{}` is a 400. "
    "`null` clears `description` or `due_date`."
)
TASKS_ROUTE = "tasks"
TASK_ROUTE = "task"


@lru_cache(maxsize=16)
def _route_path(app: Litestar, name: str) -> str:
    """A route's path with ``{user_id}`` (and ``{task_id}``) slots to fill, asked of Litestar once per app."""
    return app.route_reverse(name, user_id="{user_id}", task_id="{task_id}")


def task_location(request: Request[Any, Any, Any], task: Row) -> str:
    """The URL path of one task (Litestar's ``route_reverse`` does not percent-encode a value: we do)."""
    return _route_path(request.app, TASK_ROUTE).format(user_id=quote(task["user_id"], safe=""), task_id=task["id"])


class TaskController(Controller):
    """CRUD on one user's tasks."""

    path = "/api/{user_id:str}/tasks"
    tags = ["tasks"]
    opt = {BEARER: True}
    security = [{BEARER_SCHEME: []}]
    response_headers = RATE_LIMIT_HEADERS
    dependencies = {"tasks": Provide(provide_tasks)}
    dto = StructBody  # bodies: decoded by app.validation, every bad field named
    return_dto = None

    @get(
        "/",
        name=TASKS_ROUTE,
        summary="List tasks",
        description=(
            "The user's tasks, one page at a time, newest first unless `sort`/`order` say otherwise; always a "
            "JSON array. `X-Total-Count` counts every task that matches the filters; when there are more, "
            '`Link: <…>; rel="next"` gives the next page (follow it as is: the cursor is bound to these '
            "filters and this sort). Tasks without a due date sort last."
        ),
        responses=problem_responses(400, 401, 403),
        response_headers=[
            ResponseHeader(
                name="X-Total-Count", description="Tasks matching the filters.", required=True, documentation_only=True
            ),
            ResponseHeader(
                name="Link", description='`<url>; rel="next"` when there is a next page.', documentation_only=True
            ),
        ],
        operation_class=ApiOperation,
    )
    async def list_tasks(
        self,
        request: Request[str, Any, Any],
        tasks: Tasks,
        status: listed.Status = "all",
        priority: listed.Priorities = None,
        tag: listed.Tags = None,
        due_before: listed.DueBefore = None,
        due_after: listed.DueAfter = None,
        q: listed.Text = None,
        sort: listed.Sort = "created",
        order: listed.Order = None,
        limit: listed.Limit = listed.DEFAULT_PAGE_SIZE,
        cursor: listed.Cursor = None,
    ) -> Response[list[TaskRead]]:
        """List the user's tasks."""
        query = listed.list_query(
            request.user,
            status=status,
            priority=priority,
            tag=tag,
            due_before=due_before,
            due_after=due_after,
            q=q,
            sort=sort,
            order=order,
        )
        key: bytes = request.app.state.cursor_key
        if cursor is not None:
            try:
                query = replace(query, position=query.read_cursor(cursor, key))
            except InvalidCursorError as exc:
                raise _query_invalid("cursor", str(exc)) from None
        rows, total = await tasks.page(query, limit=limit + 1)
        headers = {"X-Total-Count": str(total)}
        if len(rows) > limit:
            rows = rows[:limit]
            headers["Link"] = next_page_link(request, TASKS_ROUTE, query.cursor_after(rows[-1], key))
        return Response([TaskRead.from_row(row) for row in rows], headers=headers)

    @post(
        "/",
        summary="Create a task",
        description=(
            "With `Idempotency-Key`, a retry (same key, same body, within 24 hours) gets the first response "
            "again, with `Idempotent-Replayed: true`, and creates nothing; the same key with another body is a "
            "422. A retry that arrives while the first is still running waits for it."
        ),
        status_code=201,
        responses=problem_responses(400, 401, 403, 409, 422),
        response_headers=[
            ResponseHeader(name="Location", description="The new task's URL path.", documentation_only=True),
            ETAG_HEADER,
            ResponseHeader(
                name="Idempotent-Replayed",
                description="`true` when this is the stored response to an earlier request with the same key.",
                documentation_only=True,
            ),
        ],
        operation_class=CreateTaskOperation,
    )
    async def create_task(
        self,
        request: Request[str, Any, Any],
        tasks: Tasks,
        data: JSONBody[TaskCreate],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[TaskRead]:
        """Create a task; ``Location`` names it."""
        if idempotency_key is None:
            task = await tasks.insert_row(data.values())
            return task_response(task, status_code=201, headers={"Location": task_location(request, task)})

        async def create(transaction: Executor) -> Created:
            task = await tasks.bound_to(transaction).insert_row(data.values())
            headers = {"Location": task_location(request, task), "ETag": etag(task)}
            return Created(status=201, headers=headers, body=msgspec.json.encode(TaskRead.from_row(task)))

        database: Database = request.app.state.database
        response = await create_once(database, tasks.owner_id, idempotency_key, await request.body(), create)
        return cast("Response[TaskRead]", response)  # the body is a TaskRead, already encoded (so replays are exact)

    @get(
        "/{task_id:str}",
        name=TASK_ROUTE,
        summary="Get a task",
        responses=problem_responses(400, 401, 403, 404),
        response_headers=[ETAG_HEADER],
        operation_class=ApiOperation,
    )
    async def get_task(self, tasks: Tasks, task_id: TaskId) -> Response[TaskRead]:
        """One task."""
        return task_response(await tasks.get_row(task_id))

    @put(
        "/{task_id:str}",
        summary="Update a task",
        description=_UPDATE_DESCRIPTION,
        responses=problem_responses(400, 401, 403, 404, 412),
        response_headers=[ETAG_HEADER],
        operation_class=UpdateTaskOperation,
    )
    async def replace_task(
        self, tasks: Tasks, task_id: TaskId, data: JSONBody[TaskUpdate], if_match: IfMatch = None
    ) -> Response[TaskRead]:
        """Update the fields sent; the others keep their value."""
        return await _update(tasks, task_id, data.changes(), if_match)

    @patch(
        "/{task_id:str}",
        summary="Update part of a task",
        description=_UPDATE_DESCRIPTION,
        responses=problem_responses(400, 401, 403, 404, 412),
        response_headers=[ETAG_HEADER],
        operation_class=UpdateTaskOperation,
    )
    async def update_task(
        self, tasks: Tasks, task_id: TaskId, data: JSONBody[TaskUpdate], if_match: IfMatch = None
    ) -> Response[TaskRead]:
        """Update the fields sent; the others keep their value."""
        return await _update(tasks, task_id, data.changes(), if_match)

    @patch(
        "/{task_id:str}/complete",
        summary="Complete or reopen a task",
        description='`{"completed": true|false}` sets the state (safe to retry); no body toggles it.',
        responses=problem_responses(400, 401, 403, 404, 412),
        response_headers=[ETAG_HEADER],
        operation_class=OptionalBodyOperation,
    )
    async def complete_task(
        self, tasks: Tasks, task_id: TaskId, data: JSONBody[TaskCompletion | None] = None, if_match: IfMatch = None
    ) -> Response[TaskRead]:
        """Set or toggle ``completed``."""
        completed = TOGGLE_COMPLETED if data is None else data.completed
        return await _update(tasks, task_id, {"completed": completed}, if_match)

    @delete(
        "/{task_id:str}",
        summary="Delete a task",
        description=(
            "The task leaves every task route (404) and goes to the trash, where it can be restored for "
            "`TRASH_RETENTION_DAYS` (30 by default); followers of the change feed see it in `deleted`."
        ),
        status_code=204,
        responses=problem_responses(400, 401, 403, 404, 412),
        operation_class=ApiOperation,
    )
    async def delete_task(self, tasks: Tasks, task_id: TaskId, if_match: IfMatch = None) -> None:
        """Move a task to the trash."""
        await tasks.trash(task_id, now=datetime.now(UTC), versions=_versions(if_match, task_id))


def _query_invalid(field: str, message: str, source: str = "query") -> InvalidRequestError:
    return InvalidRequestError.one(field, message, source)


def _versions(if_match: str | None, task_id: int) -> frozenset[int] | None:
    """The task versions ``If-Match`` accepts (``None``: no condition); a malformed header is a 400."""
    try:
        return if_match_versions(if_match, task_id)
    except ValueError as exc:
        raise _query_invalid("If-Match", str(exc), source="header") from None


def next_page_link(request: Request[Any, Any, Any], route: str, cursor: str) -> str:
    """``Link: <…>; rel="next"``: this request's path (route ``route``) and query with ``cursor`` set."""
    raw = request.scope["query_string"].decode("latin-1")
    params = [(k, v) for k, v in parse_qsl(raw, keep_blank_values=True) if k != "cursor"]  # the client's order
    path = _route_path(request.app, route).format(user_id=quote(request.user, safe=""))  # like Location
    return f'<{path}?{urlencode([*params, ("cursor", cursor)])}>; rel="next"'


def task_response(task: Row, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[TaskRead]:
    """One task as the body, its ``ETag`` as a header."""
    return Response(TaskRead.from_row(task), status_code=status_code, headers={**(headers or {}), "ETag": etag(task)})


async def _update(tasks: Tasks, task_id: int, values: dict[str, object], if_match: str | None) -> Response[TaskRead]:
    versions = _versions(if_match, task_id)
    return task_response(await tasks.update_values(task_id, values, versions=versions))
