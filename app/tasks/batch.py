"""``POST /api/{user_id}/batch``: many writes in one request, for a client coming back online.

Each operation does what its single-task route does, through the same repository methods, and its result
carries the status and problem that route would give (the problem built by the same error mapping,
``app/errors.py``). ``atomic: true`` runs them in one transaction: the first failure rolls everything back
and the answer is a 409 naming the operation. ``atomic: false`` runs each on its own (one statement each).
An operation names its task by ``id`` or by the ``ref`` of an earlier ``create`` in the same batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from advanced_alchemy.exceptions import NotFoundError
from litestar import Controller, Request, Response, post
from litestar.di import Provide
from litestar.params import JSONBody
from msgspec import Meta, Struct

from app.access import BEARER
from app.errors import ProblemAnswerError, ProblemDetail, invalid_request_problem, problem, repository_problem
from app.openapi import BEARER_SCHEME, ApiOperation, problem_responses
from app.ratelimit.plugin import RATE_LIMIT_HEADERS
from app.tasks.controller import MAX_TASK_ID, TOGGLE_COMPLETED, Tasks, provide_tasks
from app.tasks.etags import etag, if_match_versions
from app.tasks.idempotency import Created, IdempotencyKeyHeader, create_once
from app.tasks.schemas import TaskCompletion, TaskCreate, TaskRead, TaskUpdate
from app.validation import FieldError, InvalidRequestError, StructBody, decode_body
from db.database import Database, Executor, Row
from db.owned import StaleVersionError
from db.repositories import TaskRepository

T = TypeVar("T")
MAX_OPERATIONS = 100
MAX_REF_LENGTH = 100
Operation = Literal["create", "update", "complete", "delete", "restore"]


class BatchOperation(Struct, kw_only=True):
    """One write: ``op`` on the task named by ``id`` or ``ref`` (``create`` gives its new task a ``ref``)."""

    op: Operation
    id: Annotated[int, Meta(ge=1, le=MAX_TASK_ID)] | None = None
    ref: Annotated[str, Meta(min_length=1, max_length=MAX_REF_LENGTH)] | None = None
    if_match: Annotated[str, Meta(min_length=1, max_length=8192)] | None = None
    data: dict[str, Any] | None = None


class BatchRequest(Struct, kw_only=True):
    """The body of ``POST /api/{user_id}/batch``."""

    operations: Annotated[list[BatchOperation], Meta(min_length=1, max_length=MAX_OPERATIONS)]
    atomic: bool = False


class BatchResult(Struct, kw_only=True, omit_defaults=True):
    """What one operation did: the status its single-task route would answer, the task, or the problem."""

    status: int
    ref: str | None = None
    task: TaskRead | None = None
    etag: str | None = None  # the task's ETag, as the single route's header (for the next if_match)
    problem: ProblemDetail | None = None


class BatchResponse(Struct, kw_only=True):
    """One result per operation, in order."""

    results: list[BatchResult]


class _BatchFailedError(Exception):
    """An operation of an atomic batch failed: roll back, answer 409."""

    def __init__(self, index: int, result: BatchResult) -> None:
        super().__init__(index)
        self.index = index
        self.result = result


class _Refused(Exception):  # noqa: N818 - a result, not an error of ours
    def __init__(self, response: Response[ProblemDetail]) -> None:
        super().__init__(response.status_code)
        self.response = response


def _invalid(index: int, field: str, message: str) -> _Refused:
    errors = [FieldError(f"operations[{index}].{field}", message, "body")]
    return _Refused(invalid_request_problem(InvalidRequestError(errors)))


def _data(index: int, operation: BatchOperation, body_type: Any) -> Any:
    """The operation's ``data`` decoded as its route's body, every bad field named under ``operations[i].data``."""
    try:
        return decode_body(msgspec.json.encode(operation.data), body_type)
    except InvalidRequestError as exc:
        errors = [
            FieldError(f"operations[{index}].data" + ("" if e.field == "body" else f".{e.field}"), e.message, "body")
            for e in exc.errors
        ]
        raise _Refused(invalid_request_problem(InvalidRequestError(errors))) from None


async def _run(tasks: TaskRepository, index: int, operation: BatchOperation, refs: dict[str, int]) -> BatchResult:
    """One operation, as its single-task route would run it."""
    op = operation.op
    if op == "create":
        if operation.id is not None:
            raise _invalid(index, "id", "a create names no task (give it a `ref` to name it later)")
        if operation.if_match is not None:
            raise _invalid(index, "if_match", "a create has no earlier version to match")
        if operation.ref is not None and operation.ref in refs:
            raise _invalid(index, "ref", "is already the ref of an earlier create in this batch")
        task = await tasks.insert_row(_data(index, operation, TaskCreate).values())
        if operation.ref is not None:
            refs[operation.ref] = task["id"]
        return BatchResult(status=201, ref=operation.ref, task=TaskRead.from_row(task), etag=etag(task))
    task_id = _target(index, operation, refs)
    try:
        versions = if_match_versions(operation.if_match, task_id)
    except ValueError as exc:
        raise _invalid(index, "if_match", str(exc)) from None
    row: Row | None
    if op == "update":
        row = await tasks.update_values(task_id, _data(index, operation, TaskUpdate).changes(), versions=versions)
    elif op == "complete":
        completion = None if operation.data is None else _data(index, operation, TaskCompletion)
        completed = TOGGLE_COMPLETED if completion is None else completion.completed
        row = await tasks.update_values(task_id, {"completed": completed}, versions=versions)
    elif op == "delete":
        await tasks.trash(task_id, now=datetime.now(UTC), versions=versions)
        row = None
    else:  # restore
        row = await tasks.restore(task_id, versions=versions)
    if row is None:
        return BatchResult(status=204, ref=operation.ref)
    return BatchResult(status=200, ref=operation.ref, task=TaskRead.from_row(row), etag=etag(row))


def _target(index: int, operation: BatchOperation, refs: dict[str, int]) -> int:
    if (operation.id is None) == (operation.ref is None):
        raise _invalid(index, "id", "name the task by `id` or by the `ref` of an earlier create, not both")
    if operation.id is not None:
        return operation.id
    assert operation.ref is not None  # noqa: S101 - checked just above
    if operation.ref not in refs:
        raise _invalid(index, "ref", "names no earlier create of this batch")
    return refs[operation.ref]


async def run_batch(tasks: TaskRepository, batch: BatchRequest, *, transaction: bool) -> list[BatchResult]:
    """Every operation in order; an atomic batch raises :class:`_BatchFailedError` at its first failure."""
    refs: dict[str, int] = {}
    results: list[BatchResult] = []
    if transaction:  # lock the named tasks first, in id order (see TaskRepository.lock)
        await tasks.lock([operation.id for operation in batch.operations if operation.id is not None])
    for index, operation in enumerate(batch.operations):
        try:
            result = await _run(tasks, index, operation, refs)
        except _Refused as refused:
            result = _failure(operation, refused.response)
        except (NotFoundError, StaleVersionError) as exc:  # what the single-task route answers 404 / 412
            result = _failure(operation, repository_problem(exc))
        if batch.atomic and result.problem is not None:
            raise _BatchFailedError(index, result)
        results.append(result)
    return results


def _failure(operation: BatchOperation, response: Response[ProblemDetail]) -> BatchResult:
    body = response.content
    tag = response.headers.get("ETag") if body.task is not None else None
    return BatchResult(status=body.status, ref=operation.ref, problem=body, task=body.task, etag=tag)


class BatchBody(StructBody[T]):
    """The batch body, decoded strictly like every body, except that an operation's ``id`` may be written as a
    JSON number with a zero fraction (``5.0``): JSON Schema counts that as an integer, and so do we."""

    def decode_bytes(self, value: bytes) -> Any:
        """The body with integral ``id`` numbers made integers, then decoded as every body is."""
        return super().decode_bytes(_integral_ids(value))


def _integral_ids(raw: bytes) -> bytes:
    if b"." not in raw and b"e" not in raw and b"E" not in raw:  # no number with a fraction or exponent
        return raw
    try:
        document = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return raw  # the decoder names what is wrong
    operations = document.get("operations") if isinstance(document, dict) else None
    if not isinstance(operations, list):
        return raw
    changed = False
    for operation in operations:
        value = operation.get("id") if isinstance(operation, dict) else None
        if isinstance(value, float) and value.is_integer():
            operation["id"] = int(value)
            changed = True
    return msgspec.json.encode(document) if changed else raw


class BatchController(Controller):
    """Many writes in one request."""

    path = "/api/{user_id:str}/batch"
    tags = ["sync"]
    opt = {BEARER: True}
    security = [{BEARER_SCHEME: []}]
    response_headers = RATE_LIMIT_HEADERS
    dependencies = {"tasks": Provide(provide_tasks)}
    dto = BatchBody
    return_dto = None

    @post(
        "/",
        summary="Run many writes at once",
        description=(
            "Up to 100 operations (`create`, `update` with PATCH semantics, `complete` with the complete route's "
            "body or none to toggle, `delete` to the trash, `restore`), each naming its task by `id` or by the "
            "`ref` of an earlier `create`. The answer has one result per operation, in order, with the status "
            "and problem its single-task route would give (a 412 carries the current `task`). "
            "`atomic: true`: all or nothing; the first failure rolls every operation back and the answer is 409, "
            "its `errors` naming `operations[i]` and why. `Idempotency-Key` works as on create."
        ),
        status_code=200,
        responses=problem_responses(400, 401, 403, 409, 422),
        operation_class=ApiOperation,
    )
    async def run(
        self,
        request: Request[str, Any, Any],
        tasks: Tasks,
        data: JSONBody[BatchRequest],
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[BatchResponse]:
        """Run a batch."""
        database: Database = request.app.state.database

        async def execute(transaction: Executor) -> Created:
            results = await run_batch(tasks.bound_to(transaction), data, transaction=True)
            return Created(status=200, headers={}, body=msgspec.json.encode(BatchResponse(results=results)))

        try:
            if idempotency_key is not None:
                body = await request.body()
                return await create_once(database, tasks.owner_id, idempotency_key, body, execute)  # type: ignore[return-value]
            if not data.atomic:
                return Response(BatchResponse(results=await run_batch(tasks, data, transaction=False)))
            async with database.transaction() as transaction:
                results = await run_batch(tasks.bound_to(transaction), data, transaction=True)
            return Response(BatchResponse(results=results))
        except _BatchFailedError as failed:
            raise ProblemAnswerError(_atomic_failure(failed)) from None


def _atomic_failure(failed: _BatchFailedError) -> Response[ProblemDetail]:
    reason = failed.result.problem
    assert reason is not None  # noqa: S101 - a failure carries its problem
    field = f"operations[{failed.index}]"
    details = reason.errors or [FieldError(field, reason.detail, "body")]
    errors = [FieldError(e.field if e.field.startswith(field) else field, e.message, "body") for e in details]
    # No ``task``: a current task read inside the rolled-back transaction may show this batch's own writes.
    return problem(
        409,
        f"{field} failed ({reason.status} {reason.title}): nothing in this batch was written.",
        errors=errors,
    )
