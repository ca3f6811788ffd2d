"""How ``GET /api/{user_id}/tasks`` turns its query into SQL: filters, a sort with a stable tie-break, and
keyset pages behind an opaque cursor.

Nothing here filters by user: the owner-scoped repository adds that to whatever this builds. A cursor is
signed and bound to the user, the filters and the sort it was issued for, so it cannot be forged, and one
issued for another user or another filter is refused instead of silently mixing lists.

A :class:`ListQuery` is the repository's :class:`~db.owned.PageSpec`: its clauses hold named parameters
only, and :attr:`ListQuery.shape` tells requests apart whose statements differ, so each statement is built
and compiled once and a request only supplies :meth:`ListQuery.values`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, bindparam, or_
from sqlalchemy.orm import InstrumentedAttribute

from app.tasks.cursors import InvalidCursorError, encode, seal, unseal
from db.dialect_sql import ContainsAll, FoldedLike
from db.models import Priority, Task

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


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A validated list request (the route has checked each value's type and range).

    ``position`` is where the page starts: after the row with this (sort value, id), from a cursor.
    """

    owner: str
    status: StatusFilter = "all"
    priorities: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    due_before: datetime | None = None
    due_after: datetime | None = None
    q: str | None = None
    sort: SortField = "created"
    order: SortOrder | None = None
    position: tuple[Any, int] | None = None

    @property
    def direction(self) -> SortOrder:
        """The effective order: the one asked for, or the sort's natural one."""
        return self.order or DEFAULT_ORDER[self.sort]

    @property
    def _priority_ranks(self) -> list[int]:
        return sorted({Priority[p].value for p in self.priorities})

    @property
    def _tag_keys(self) -> list[str]:
        return sorted({tag.strip().casefold() for tag in self.tags})

    @property
    def shape(self) -> Hashable:
        """What the statement depends on besides its values (see the module docstring)."""
        return (
            self.status,
            len(self._priority_ranks),
            len(self._tag_keys),
            self.due_before is not None,
            self.due_after is not None,
            bool(self.q),
            self.sort,
            self.direction,
            None if self.position is None else self.position[0] is None,
        )

    @property
    def after_position(self) -> bool:
        """True when the page starts after a cursor's position."""
        return self.position is not None

    def filters(self) -> list[ColumnElement[bool]]:
        """WHERE clauses for the filters (not the page): what ``X-Total-Count`` counts."""
        clauses: list[ColumnElement[bool]] = []
        if self.status != "all":
            clauses.append(Task.completed.is_(self.status == "completed"))
        if self.priorities:
            clauses.append(Task.priority.in_([bindparam(f"_priority_{i}") for i in range(len(self._priority_ranks))]))
        if self.tags:
            clauses.append(ContainsAll(Task.tag_keys, [bindparam(f"_tag_{i}") for i in range(len(self._tag_keys))]))
        if self.due_before is not None:
            clauses.append(Task.due_date < bindparam("_due_before", type_=Task.due_date.type))
        if self.due_after is not None:
            clauses.append(Task.due_date > bindparam("_due_after", type_=Task.due_date.type))
        if self.q:
            pattern = bindparam("_q", type_=Task.title.type)
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

    def after(self) -> ColumnElement[bool] | None:
        """Rows that come after ``position`` in :meth:`order_by`; tasks without a due date last."""
        if self.position is None:
            return None
        column = SORT_COLUMNS[self.sort]
        desc = self.direction == "desc"
        after_id = bindparam("_after_id", type_=Task.id.type)
        beyond_id = Task.id < after_id if desc else Task.id > after_id
        if self.position[0] is None:  # already among the rows without a value, which sort last
            return and_(column.is_(None), beyond_id)
        value = bindparam("_after_value", type_=column.type)
        beyond_value = column < value if desc else column > value
        following = or_(beyond_value, and_(column == value, beyond_id))
        return or_(following, column.is_(None)) if self.sort == "due_date" else following

    def values(self) -> dict[str, Any]:
        """The values of the parameters in :meth:`filters` and :meth:`after`."""
        values: dict[str, Any] = {f"_priority_{i}": rank for i, rank in enumerate(self._priority_ranks)}
        values.update({f"_tag_{i}": tag for i, tag in enumerate(self._tag_keys)})
        if self.due_before is not None:
            values["_due_before"] = self.due_before
        if self.due_after is not None:
            values["_due_after"] = self.due_after
        if self.q:
            values["_q"] = "%" + self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if self.position is not None:
            after_value, values["_after_id"] = self.position
            if after_value is not None:
                values["_after_value"] = after_value
        return values

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
        return hashlib.sha256(encode(key)).hexdigest()[:32]

    def cursor_after(self, row: Mapping[str, Any], key: bytes) -> str:
        """An opaque cursor for the page that follows ``row`` (a mapping of the task's columns)."""
        value = row[SORT_COLUMNS[self.sort].key]
        if isinstance(value, datetime):
            value = value.isoformat()
        return seal([self._fingerprint(), value, row["id"]], key)

    def read_cursor(self, cursor: str, key: bytes) -> tuple[Any, int]:
        """The (sort value, id) a cursor points after; :class:`InvalidCursorError` if it is not for this list."""
        try:
            fingerprint, value, task_id = unseal(cursor, key)
        except (ValueError, TypeError):  # signed by us, so never, but never a 500 either
            raise InvalidCursorError("the cursor is malformed") from None
        if fingerprint != self._fingerprint():
            raise InvalidCursorError("the cursor belongs to a different list (other filters, sort or user)")
        if self.sort in {"created", "updated", "due_date"} and value is not None:
            value = datetime.fromisoformat(value)
        return value, int(task_id)


def cursor_key(secret: str) -> bytes:
    """The key that signs cursors, derived from (and not equal to) the token secret."""
    return hmac.new(secret.encode(), b"todo-backend list cursor", hashlib.sha256).digest()
