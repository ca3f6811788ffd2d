"""Offline-first clients: the change feed (``GET /api/{user_id}/changes``) and the trash (``/api/{user_id}/trash``).

The feed's order and its gap-free guarantee come from the database (``db/feed.py``); this module turns pages
of it into responses and keeps a client's place in an opaque cursor, signed and bound to its user, holding:

* ``after``: the last change number the client has been given;
* ``since``: during an initial sync (no cursor yet), the owner's last number when it began: deletions
  numbered after it are reported, older ones were never seen by this client;
* ``started``: when the data the client holds was read (the first page of a sync that is still paging, the
  last page's read otherwise). Deletions are remembered for ``TOMBSTONE_RETENTION_DAYS``; a cursor older than
  that (less :data:`CLOCK_MARGIN`) may have missed one, so it is answered ``410 Gone``: sync again from the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy import and_, bindparam, or_

from app.access import BEARER
from app.errors import ProblemAnswerError, problem
from app.openapi import BEARER_SCHEME, ApiOperation, problem_responses
from app.ratelimit.plugin import RATE_LIMIT_HEADERS
from app.tasks import list_request as listed
from app.tasks.controller import TaskId, Tasks, next_page_link, provide_tasks, task_response
from app.tasks.cursors import InvalidCursorError, seal, unseal
from app.tasks.list_request import MAX_CURSOR_LENGTH
from app.tasks.openapi import ETAG_HEADER
from app.tasks.schemas import Changes, DeletedTask, TaskRead, TrashedTaskRead
from app.validation import InvalidRequestError
from config.settings import Settings
from db.feed import changes, last_seq
from db.models import Task

CLOCK_MARGIN = timedelta(hours=1)
"""How much sooner than ``TOMBSTONE_RETENTION_DAYS`` a cursor expires: clocks of servers and database differ,
and a write is stamped a moment before it commits."""
DEFAULT_FEED_PAGE = 100
MAX_FEED_PAGE = 500
TRASH_ROUTE = "trash"

FeedLimit = Annotated[int, Parameter(ge=1, le=MAX_FEED_PAGE, description="Most changes in one page.")]
FeedCursor = Annotated[
    str | None,
    Parameter(
        description="The `cursor` of the previous answer; none for an initial sync.", max_length=MAX_CURSOR_LENGTH
    ),
]


@dataclass(frozen=True, slots=True)
class SyncPosition:
    """Where a client stands in its feed (see the module docstring)."""

    after: int
    since: int | None
    started: datetime

    def seal(self, owner: str, key: bytes) -> str:
        """This position as an opaque cursor bound to ``owner``."""
        return seal(["feed", owner, self.after, self.since, self.started.timestamp()], key)

    @classmethod
    def unseal(cls, cursor: str, owner: str, key: bytes) -> SyncPosition:
        """The position in a cursor; :class:`InvalidCursorError` when it is not a feed cursor of ``owner``."""
        try:
            kind, bound_to, after, since, started = unseal(cursor, key)
            position = cls(
                after=int(after),
                since=None if since is None else int(since),
                started=datetime.fromtimestamp(float(started), UTC),
            )
        except (ValueError, TypeError, OverflowError):
            raise InvalidCursorError("the cursor is malformed") from None
        if kind != "feed" or bound_to != owner:
            raise InvalidCursorError("the cursor belongs to another user or another list")
        return position


class SyncController(Controller):
    """The change feed and the trash of one user."""

    path = "/api/{user_id:str}"
    tags = ["sync"]
    opt = {BEARER: True}
    security = [{BEARER_SCHEME: []}]
    response_headers = RATE_LIMIT_HEADERS
    dependencies = {"tasks": Provide(provide_tasks)}
    return_dto = None

    @get(
        "/changes",
        summary="What changed since a cursor",
        description=(
            "Without `cursor`: every live task, a page at a time (an initial sync). With the `cursor` of the "
            "previous answer: what changed after it, each task at most once per page and in its latest state; "
            "a task now in the trash or deleted for good is in `deleted` only. While `has_more` is true, call "
            "again at once with the new `cursor`; when it is false, keep the `cursor` for the next sync. A "
            "cursor older than `TOMBSTONE_RETENTION_DAYS` (30 by default) is answered 410 "
            "(`…:cursor-expired`): drop the cursor and sync again without one."
        ),
        responses=problem_responses(400, 401, 403, 410),
        operation_class=ApiOperation,
    )
    async def changes(
        self,
        request: Request[str, Any, Any],
        tasks: Tasks,
        cursor: FeedCursor = None,
        limit: FeedLimit = DEFAULT_FEED_PAGE,
    ) -> Response[Changes]:
        """A page of the change feed."""
        key: bytes = request.app.state.cursor_key
        settings: Settings = request.app.state.settings
        now = datetime.now(UTC)
        if cursor is None:
            position = SyncPosition(after=0, since=await last_seq(tasks), started=now)
        else:
            try:
                position = SyncPosition.unseal(cursor, request.user, key)
            except InvalidCursorError as exc:
                raise InvalidRequestError.one("cursor", str(exc), "query") from None
            if position.started < now - timedelta(days=settings.tombstone_retention_days) + CLOCK_MARGIN:
                raise ProblemAnswerError(
                    problem(
                        410,
                        "This cursor is older than the deletions the server remembers: drop it and sync again "
                        "without a cursor.",
                        slug="cursor-expired",
                    )
                )
        page = await changes(tasks, after=position.after, since=position.since, limit=limit + 1)
        has_more = len(page) > limit
        page = page[:limit]
        after = page[-1].seq if page else position.after
        if has_more:  # the client holds what it read before this sync began, and older: keep its time
            following = SyncPosition(after=after, since=position.since, started=position.started)
        else:  # everything numbered up to ``after`` has been read, now
            following = SyncPosition(after=max(after, position.since or 0), since=None, started=now)
        body = Changes(
            tasks=[TaskRead.from_row(change.row) for change in page if not change.deleted],
            deleted=[
                DeletedTask(id=change.row["id"], deleted_at=change.row["deleted_at"])
                for change in page
                if change.deleted
            ],
            cursor=following.seal(request.user, key),
            has_more=has_more,
        )
        return Response(body)

    @get(
        "/trash",
        name=TRASH_ROUTE,
        summary="List deleted tasks",
        description=(
            "The user's deleted tasks, newest deletion first, each with `deleted_at`; kept for "
            "`TRASH_RETENTION_DAYS` (30 by default). Paged like the task list: `X-Total-Count`, and "
            '`Link: <…>; rel="next"` while there are more.'
        ),
        responses=problem_responses(400, 401, 403),
        operation_class=ApiOperation,
        response_headers=[
            ResponseHeader(
                name="X-Total-Count", description="Tasks in the trash.", required=True, documentation_only=True
            ),
            ResponseHeader(
                name="Link", description='`<url>; rel="next"` when there is a next page.', documentation_only=True
            ),
        ],
    )
    async def list_trash(
        self,
        request: Request[str, Any, Any],
        tasks: Tasks,
        limit: listed.Limit = listed.DEFAULT_PAGE_SIZE,
        cursor: listed.Cursor = None,
    ) -> Response[list[TrashedTaskRead]]:
        """List the trash."""
        key: bytes = request.app.state.cursor_key
        page = TrashPage(position=None)
        if cursor is not None:
            page = TrashPage.from_cursor(cursor, request.user, key)
        rows, total = await tasks.in_view("trash").page(page, limit=limit + 1)
        headers = {"X-Total-Count": str(total)}
        if len(rows) > limit:
            rows = rows[:limit]
            headers["Link"] = next_page_link(request, TRASH_ROUTE, TrashPage.cursor_after(rows[-1], request.user, key))
        return Response([TrashedTaskRead.from_row(row) for row in rows], headers=headers)

    @post(
        "/trash/{task_id:str}/restore",
        summary="Restore a deleted task",
        description="Brings the task back with the same id; it moves forward in the change feed.",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404),
        response_headers=[ETAG_HEADER],
        operation_class=ApiOperation,
    )
    async def restore_task(self, tasks: Tasks, task_id: TaskId) -> Response[TaskRead]:
        """Restore a task from the trash."""
        return task_response(await tasks.restore(task_id))

    @delete(
        "/trash/{task_id:str}",
        summary="Delete a task for good",
        description="Removes the task from the trash now; followers of the change feed see it in `deleted`.",
        status_code=204,
        responses=problem_responses(400, 401, 403, 404),
        operation_class=ApiOperation,
    )
    async def purge_task(self, tasks: Tasks, task_id: TaskId) -> None:
        """Purge a task from the trash."""
        await tasks.purge(task_id)


@dataclass(frozen=True, slots=True)
class TrashPage:
    """A page of the trash (a :class:`~db.owned.PageSpec`): newest deletion first, then highest id."""

    position: tuple[datetime, int] | None

    @property
    def shape(self) -> Any:
        return ("trash", self.position is not None)

    @property
    def after_position(self) -> bool:
        return self.position is not None

    def filters(self) -> list[Any]:
        return []

    def after(self) -> Any:
        if self.position is None:
            return None
        value = bindparam("_after_deleted_at", type_=Task.__table__.c.deleted_at.type)
        after_id = bindparam("_after_id", type_=Task.__table__.c.id.type)
        return or_(Task.deleted_at < value, and_(Task.deleted_at == value, Task.id < after_id))

    def order_by(self) -> list[Any]:
        return [Task.deleted_at.desc(), Task.id.desc()]

    def values(self) -> dict[str, Any]:
        if self.position is None:
            return {}
        return {"_after_deleted_at": self.position[0], "_after_id": self.position[1]}

    @staticmethod
    def cursor_after(row: Any, owner: str, key: bytes) -> str:
        return seal(["trash", owner, row["deleted_at"].isoformat(), row["id"]], key)

    @classmethod
    def from_cursor(cls, cursor: str, owner: str, key: bytes) -> TrashPage:
        try:
            kind, bound_to, deleted_at, task_id = unseal(cursor, key)
            position = (datetime.fromisoformat(deleted_at), int(task_id))
        except (ValueError, TypeError):
            raise InvalidRequestError.one("cursor", "the cursor is malformed", "query") from None
        if kind != "trash" or bound_to != owner:
            raise InvalidRequestError.one("cursor", "the cursor belongs to another user or another list", "query")
        return cls(position=position)
