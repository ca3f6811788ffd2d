"""What ``GET /api/{user_id}/tasks`` accepts in its query string, and how those values become a
:class:`~app.tasks.listing.ListQuery`.

Litestar checks each parameter's type and range from the annotations below (they are also the OpenAPI
document); :func:`list_query` then applies the rules a type cannot say (trimmed tags, dates Python can hold,
no NUL) with the same validators the task body uses, and names the parameter of any value it refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from litestar.params import Parameter

from app.tasks.listing import ListQuery, SortField, SortOrder, StatusFilter
from app.tasks.schemas import (
    DUE_DATE_SCHEMA,
    NO_NUL_PATTERN,
    PriorityName,
    check_text,
    parse_due_date,
    trimmed_text_pattern,
)
from app.validation import InvalidFieldError, InvalidRequestError
from db.models import TAG_MAX_LENGTH

T = TypeVar("T")
MAX_CURSOR_LENGTH = 2048  # a 200-character title of 4-byte characters makes a cursor of about 1,200
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 200
MAX_PRIORITIES = 3  # there are three
MAX_TAG_FILTERS = 20

Status = Annotated[StatusFilter, Parameter(description="Which tasks to list.")]
Priorities = Annotated[
    list[PriorityName] | None,
    Parameter(description="Only these priorities (repeatable).", max_items=MAX_PRIORITIES),
]
Tags = Annotated[
    list[str] | None,
    Parameter(
        description="Only tasks carrying every one of these tags, ignoring case (repeatable).",
        max_items=MAX_TAG_FILTERS,
        schema_extra={"items": {"type": "string", "pattern": trimmed_text_pattern(TAG_MAX_LENGTH, visible=False)}},
    ),
]
DueBefore = Annotated[
    str | None,
    Parameter(description="Due strictly before this date-time or date.", max_length=64, schema_extra=DUE_DATE_SCHEMA),
]
DueAfter = Annotated[
    str | None,
    Parameter(description="Due strictly after this date-time or date.", max_length=64, schema_extra=DUE_DATE_SCHEMA),
]
Text = Annotated[
    str | None,
    Parameter(
        description="Case-insensitive text to find in title or description.",
        min_length=1,
        max_length=200,
        schema_extra={"pattern": NO_NUL_PATTERN},
    ),
]
Sort = Annotated[SortField, Parameter(description="The field to sort by.")]
Order = Annotated[
    SortOrder | None,
    Parameter(description="Default: desc for created, updated and priority; asc for title and due_date."),
]
Limit = Annotated[int, Parameter(ge=1, le=MAX_PAGE_SIZE, description="Page size.")]
Cursor = Annotated[
    str | None, Parameter(description="From a previous page's `Link` header.", max_length=MAX_CURSOR_LENGTH)
]


def list_query(
    owner: str,
    *,
    status: StatusFilter,
    priority: list[PriorityName] | None,
    tag: list[str] | None,
    due_before: str | None,
    due_after: str | None,
    q: str | None,
    sort: SortField,
    order: SortOrder | None,
) -> ListQuery:
    """The list request for ``owner``; :class:`InvalidRequestError` names a value the types let through."""
    return ListQuery(
        owner=owner,
        status=status,
        priorities=tuple(priority or ()),
        tags=tuple(_checked_tags(tag or [])),
        q=_checked("q", q, check_text),
        due_before=_checked("due_before", due_before, parse_due_date),
        due_after=_checked("due_after", due_after, parse_due_date),
        sort=sort,
        order=order,
    )


def _checked(field: str, value: str | None, check: Callable[[str, str], T]) -> T | None:
    """Run a body validator from app.tasks.schemas on a query value."""
    if value is None:
        return None
    try:
        return check(value, field)
    except InvalidFieldError as exc:
        raise InvalidRequestError.one(field, exc.message, "query") from None


def _checked_tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not tag.strip() or len(tag.strip()) > TAG_MAX_LENGTH or "\x00" in tag:
            raise InvalidRequestError.one("tag", f"each tag must be 1 to {TAG_MAX_LENGTH} characters", "query")
    return tags
