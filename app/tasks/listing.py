"""How ``GET /api/{user_id}/tasks`` turns its query into SQL: filters, a sort with a stable tie-break, and
keyset pages behind an opaque cursor.

Nothing here filters by user: the owner-scoped repository adds that to whatever this builds. A cursor is
signed and bound to the user, the filters and the sort it was issued for, so it cannot be forged, and one
issued for another user or another filter is refused instead of silently mixing lists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from db.models import Priority, Task
from db.sql import ContainsAll, FoldedLike

SortField = Literal["created", "updated", "title", "due_date", "priority"]
SortOrder = Literal["asc", "desc"]
StatusFilter = Literal["all", "pending", "completed"]

SORT_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "created": Task.created_at,
    "updated": Task.updated_at,
    "title": Task.title,
    "due_date": Task.due_date,
    "priority": Task.priority,
}
# The natural direction of each sort when ``order`` is not given: newest, most important first; A to Z, soonest.
DEFAULT_ORDER: dict[str, SortOrder] = {
    "created": "desc",
    "updated": "desc",
    "title": "asc",
    "due_date": "asc",
    "priority": "desc",
}
_SIGNATURE_BYTES = 16


class InvalidCursorError(ValueError):
    """The cursor is malformed, forged, or was issued for another list."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A validated list request (the route has checked each value's type and range)."""

    owner: str
    status: StatusFilter = "all"
    priorities: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    due_before: datetime | None = None
    due_after: datetime | None = None
    q: str | None = None
    sort: SortField = "created"
    order: SortOrder | None = None

    @property
    def direction(self) -> SortOrder:
        """The effective order: the one asked for, or the sort's natural one."""
        return self.order or DEFAULT_ORDER[self.sort]

    def filters(self) -> list[ColumnElement[bool]]:
        """WHERE clauses for the filters (not the page): what ``X-Total-Count`` counts."""
        clauses: list[ColumnElement[bool]] = []
        if self.status != "all":
            clauses.append(Task.completed.is_(self.status == "completed"))
        if self.priorities:
            clauses.append(Task.priority.in_(sorted({Priority[p].value for p in self.priorities})))
        if self.tags:
            clauses.append(ContainsAll(Task.tag_keys, sorted({tag.strip().casefold() for tag in self.tags})))
        if self.due_before is not None:
            clauses.append(Task.due_date < self.due_before)
        if self.due_after is not None:
            clauses.append(Task.due_date > self.due_after)
        if self.q:
            pattern = "%" + self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append(or_(FoldedLike(Task.title, pattern), FoldedLike(Task.description, pattern)))
        return clauses

    def order_by(self) -> list[ColumnElement[Any]]:
        """The sort, then ``id`` in the same direction so that equal values have a fixed order."""
        column = SORT_COLUMNS[self.sort]
        if self.direction == "desc":
            # NULLS LAST only where there are nulls: on a NOT NULL column it stops PostgreSQL from reading the
            # (user_id, column, id) index backwards in order, and every page would sort all the user's rows.
            ordered = column.desc().nulls_last() if self.sort == "due_date" else column.desc()
            return [ordered, Task.id.desc()]
        return [column.asc().nulls_last() if self.sort == "due_date" else column.asc(), Task.id.asc()]

    def after(self, task_value: Any, task_id: int) -> ColumnElement[bool]:
        """Rows that come after (``task_value``, ``task_id``) in :meth:`order_by`; tasks without a due date last."""
        column = SORT_COLUMNS[self.sort]
        desc = self.direction == "desc"
        beyond_id = Task.id < task_id if desc else Task.id > task_id
        if task_value is None:  # already among the rows without a value, which sort last
            return and_(column.is_(None), beyond_id)
        beyond_value = column < task_value if desc else column > task_value
        following = or_(beyond_value, and_(column == task_value, beyond_id))
        return or_(following, column.is_(None)) if self.sort == "due_date" else following

    # -- cursors --------------------------------------------------------------------------------------------

    def _fingerprint(self) -> str:
        """What a cursor is bound to: the owner, every filter and the sort (not the page size)."""
        key = [
            self.owner,
            self.status,
            sorted(set(self.priorities)),
            sorted({t.strip().casefold() for t in self.tags}),
            self.due_before.isoformat() if self.due_before else None,
            self.due_after.isoformat() if self.due_after else None,
            self.q,
            self.sort,
            self.direction,
        ]
        return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()[:32]

    def cursor_after(self, task: Any, key: bytes) -> str:
        """An opaque cursor for the page that follows ``task`` (a task or a row of its columns)."""
        value = getattr(task, SORT_COLUMNS[self.sort].key)
        if isinstance(value, datetime):
            value = value.isoformat()
        payload = json.dumps([self._fingerprint(), value, task.id], separators=(",", ":"), ensure_ascii=False).encode()
        signature = hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        return base64.urlsafe_b64encode(signature + payload).decode().rstrip("=")

    def read_cursor(self, cursor: str, key: bytes) -> tuple[Any, int]:
        """The (sort value, id) a cursor points after; :class:`InvalidCursorError` if it is not for this list."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except ValueError:
            raise InvalidCursorError("the cursor is malformed") from None
        signature, payload = raw[:_SIGNATURE_BYTES], raw[_SIGNATURE_BYTES:]
        expected = hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        if len(signature) != _SIGNATURE_BYTES or not hmac.compare_digest(signature, expected):
            raise InvalidCursorError("the cursor is malformed")
        fingerprint, value, task_id = json.loads(payload)
        if fingerprint != self._fingerprint():
            raise InvalidCursorError("the cursor belongs to a different list (other filters, sort or user)")
        if self.sort in {"created", "updated", "due_date"} and value is not None:
            value = datetime.fromisoformat(value)
        return value, int(task_id)


def cursor_key(secret: str) -> bytes:
    """The key that signs cursors, derived from (and not equal to) the token secret."""
    return hmac.new(secret.encode(), b"todo-backend list cursor", hashlib.sha256).digest()
