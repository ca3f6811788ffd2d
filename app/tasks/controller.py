"""The task routes. A request reads top-down: the access guard (``app/access.py``: token, rate limit, path
owner) → owner-scoped repository → schema → response. No code here filters by user: the repository does.
Each route makes one round trip to the database on its success path (a create with ``Idempotency-Key``
commits a transaction)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypeVar, cast
from urllib.parse import parse_qsl, quote, urlencode

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ValidationException
from litestar.openapi.spec import Operation, Reference
from litestar.params import HeaderParameter, JSONBody, Parameter
from sqlalchemy import not_

from app.access import BEARER
from app.openapi import BEARER_SCHEME, CreateTaskOperation, UpdateTaskOperation, problem_responses
from app.ratelimit.plugin import RATE_LIMIT_HEADERS
from app.tasks.etags import etag, if_match_versions
from app.tasks.idempotency import Created, IdempotencyKeyHeader, create_once
from app.tasks.listing import InvalidCursorError, ListQuery, SortField, SortOrder, StatusFilter
from app.tasks.schemas import (
    DUE_DATE_SCHEMA,
    NO_NUL_PATTERN,
    PriorityName,
    TaskCompletion,
    TaskCreate,
    TaskRead,
    TaskUpdate,
    check_text,
    parse_due_date,
    trimmed_text_pattern,
)
from db.database import Database, Executor, Row
from db.models import TAG_MAX_LENGTH, USER_ID_MAX_LENGTH, Task
from db.repositories import TaskRepository

T = TypeVar("T")
MAX_TASK_ID = 2**63 - 1  # PostgreSQL bigint
TOGGLE_COMPLETED = not_(Task.completed)  # one object: a statement's shape includes its expressions

TaskId = Annotated[
    int,
    # schema_extra keeps the documented maximum an exact integer (``le`` alone is rendered as a float).
    Parameter(ge=1, le=MAX_TASK_ID, description="The task's id.", schema_extra={"minimum": 1, "maximum": MAX_TASK_ID}),
]


@dataclass
class OptionalBodyOperation(Operation):
    """Litestar marks every request body required; ``/complete`` works without one (it toggles)."""

    def __post_init__(self) -> None:
        if self.request_body is not None and not isinstance(self.request_body, Reference):
            self.request_body.required = False


IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description=(
            'Make the change only if the task\'s current `ETag` is one of these strong tags (`"12-3"` or '
            '`"12-3", "12-4"`), or the task exists (`*`); otherwise 412 and nothing changes. Without it the '
            "change is unconditional."
        ),
        required=False,
    ),
]
ETAG_HEADER = ResponseHeader(
    name="ETag",
    description='The task\'s strong entity tag, `"<id>-<version>"`; it changes with every write to the task.',
    required=True,
    documentation_only=True,
)

Tasks = NamedDependency[TaskRepository]
MAX_CURSOR_LENGTH = 2048  # a 200-character title of 4-byte characters makes a cursor of about 1,200
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 200


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


def task_location(task: Row) -> str:
    """The URL path of one task."""
    return f"/api/{quote(task['user_id'], safe='')}/tasks/{task['id']}"


class TaskController(Controller):
    """CRUD on one user's tasks."""

    path = "/api/{user_id:str}/tasks"
    tags = ["tasks"]
    opt = {BEARER: True}
    security = [{BEARER_SCHEME: []}]
    response_headers = RATE_LIMIT_HEADERS
    dependencies = {"tasks": Provide(provide_tasks)}

    @get(
        "/",
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
    )
    async def list_tasks(
        self,
        request: Request[str, Any, Any],
        tasks: Tasks,
        status: Annotated[StatusFilter, Parameter(description="Which tasks to list.")] = "all",
        priority: Annotated[
            list[PriorityName] | None,
            Parameter(description="Only these priorities (repeatable).", max_items=3),
        ] = None,
        tag: Annotated[
            list[str] | None,
            Parameter(
                description="Only tasks carrying every one of these tags, ignoring case (repeatable).",
                max_items=20,
                schema_extra={
                    "items": {"type": "string", "pattern": trimmed_text_pattern(TAG_MAX_LENGTH, visible=False)}
                },
            ),
        ] = None,
        due_before: Annotated[
            str | None,
            Parameter(
                description="Due strictly before this date-time or date.", max_length=64, schema_extra=DUE_DATE_SCHEMA
            ),
        ] = None,
        due_after: Annotated[
            str | None,
            Parameter(
                description="Due strictly after this date-time or date.", max_length=64, schema_extra=DUE_DATE_SCHEMA
            ),
        ] = None,
        q: Annotated[
            str | None,
            Parameter(
                description="Case-insensitive text to find in title or description.",
                min_length=1,
                max_length=200,
                schema_extra={"pattern": NO_NUL_PATTERN},
            ),
        ] = None,
        sort: Annotated[SortField, Parameter(description="The field to sort by.")] = "created",
        order: Annotated[
            SortOrder | None,
            Parameter(description="Default: desc for created, updated and priority; asc for title and due_date."),
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = DEFAULT_PAGE_SIZE,
        cursor: Annotated[
            str | None, Parameter(description="From a previous page's `Link` header.", max_length=MAX_CURSOR_LENGTH)
        ] = None,
    ) -> Response[list[TaskRead]]:
        """List the user's tasks."""
        query = ListQuery(
            owner=request.user,
            status=status,
            priorities=tuple(priority or ()),
            tags=tuple(_checked_tags(tag or [])),
            q=_from_query("q", q, check_text),
            due_before=_from_query("due_before", due_before, parse_due_date),
            due_after=_from_query("due_after", due_after, parse_due_date),
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
            headers["Link"] = f'<{_with_cursor(request, query.cursor_after(rows[-1], key))}>; rel="next"'
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
            return _task_response(task, status_code=201, headers={"Location": task_location(task)})

        async def create(transaction: Executor) -> Created:
            task = await tasks.bound_to(transaction).insert_row(data.values())
            headers = {"Location": task_location(task), "ETag": etag(task)}
            return Created(status=201, headers=headers, body=msgspec.json.encode(TaskRead.from_row(task)))

        database: Database = request.app.state.database
        response = await create_once(database, tasks.owner_id, idempotency_key, await request.body(), create)
        return cast("Response[TaskRead]", response)  # the body is a TaskRead, already encoded (so replays are exact)

    @get(
        "/{task_id:str}",
        summary="Get a task",
        responses=problem_responses(400, 401, 403, 404),
        response_headers=[ETAG_HEADER],
    )
    async def get_task(self, tasks: Tasks, task_id: TaskId) -> Response[TaskRead]:
        """One task."""
        return _task_response(await tasks.get_row(task_id))

    @put(
        "/{task_id:str}",
        summary="Update a task",
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
        status_code=204,
        responses=problem_responses(400, 401, 403, 404, 412),
    )
    async def delete_task(self, tasks: Tasks, task_id: TaskId, if_match: IfMatch = None) -> None:
        """Delete a task."""
        await tasks.delete_one(task_id, versions=_versions(if_match, task_id))


def _query_invalid(field: str, message: str, source: str = "query") -> ValidationException:
    return ValidationException(detail=message, extra=[{"key": field, "message": message, "source": source}])


def _versions(if_match: str | None, task_id: int) -> frozenset[int] | None:
    """The task versions ``If-Match`` accepts (``None``: no condition); a malformed header is a 400."""
    try:
        return if_match_versions(if_match, task_id)
    except ValueError as exc:
        raise _query_invalid("If-Match", str(exc), source="header") from None


def _from_query(field: str, value: str | None, check: Callable[[str, str], T]) -> T | None:
    """Run a body validator from app.tasks.schemas on a query value; its ValueError becomes a 400 on ``field``."""
    if value is None:
        return None
    try:
        return check(value, field)
    except ValueError as exc:  # the schema's message carries msgspec's " - at `$.field`" suffix
        raise _query_invalid(field, str(exc).split(" - at ", 1)[0]) from None


def _checked_tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not tag.strip() or len(tag.strip()) > TAG_MAX_LENGTH or "\x00" in tag:
            raise _query_invalid("tag", f"each tag must be 1 to {TAG_MAX_LENGTH} characters")
    return tags


def _with_cursor(request: Request[Any, Any, Any], cursor: str) -> str:
    """This request's path and query with ``cursor`` set: the next page's URL."""
    raw = request.scope["query_string"].decode("latin-1")
    params = [(k, v) for k, v in parse_qsl(raw, keep_blank_values=True) if k != "cursor"]  # the client's order
    path = f"/api/{quote(request.user, safe='')}/tasks"  # re-encoded, like Location: the raw id may hold anything
    return f"{path}?{urlencode([*params, ('cursor', cursor)])}"


def _task_response(task: Row, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[TaskRead]:
    """One task as the body, its ``ETag`` as a header."""
    return Response(TaskRead.from_row(task), status_code=status_code, headers={**(headers or {}), "ETag": etag(task)})


async def _update(tasks: Tasks, task_id: int, values: dict[str, object], if_match: str | None) -> Response[TaskRead]:
    versions = _versions(if_match, task_id)
    return _task_response(await tasks.update_values(task_id, values, versions=versions))
