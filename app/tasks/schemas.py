"""What the task routes accept and return. Unknown and read-only fields in a body are ignored."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal, cast

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from app.tasks.text_classes import BLANK, INVISIBLE_CATEGORIES, SPACE, Ranges
from app.validation import CheckedStruct, InvalidFieldError
from db.models import DESCRIPTION_MAX_LENGTH, MAX_TAGS, TAG_MAX_LENGTH, TITLE_MAX_LENGTH, Priority

# -- JSON Schema patterns --------------------------------------------------------------------------------------
# The OpenAPI document states every rule the validators below enforce, so that a request is valid by the schema
# exactly when the server accepts it. The character classes come from the same predicates the validators use
# (str.isspace, the Unicode categories in text_classes), precomputed as ranges there and checked by a unit test.


def _char_class(ranges: Ranges, *, negate: bool = False) -> str:
    """A regex character class that Python's ``re`` and ECMA-262 engines read alike: BMP characters as ``\\uXXXX``,
    the rest as literal characters (ECMA-262 without the ``u`` flag has no escape for them)."""

    def char(codepoint: int) -> str:
        return f"\\u{codepoint:04x}" if codepoint < 0x10000 else chr(codepoint)

    body = "".join(char(low) if low == high else f"{char(low)}-{char(high)}" for low, high in ranges)
    return f"[{'^' if negate else ''}{body}]"


_NUL: Ranges = ((0, 0),)
_NOT_NUL = _char_class(_NUL, negate=True)


def trimmed_text_pattern(max_length: int, *, visible: bool) -> str:
    """Text that, trimmed of white space, is 1 to ``max_length`` characters without NUL; with ``visible``, it also
    holds a character that is neither white space nor invisible (see :func:`clean_title`)."""
    space = _char_class(SPACE)
    edge = _char_class(_NUL + SPACE, negate=True)  # the first and last character left after trimming
    lookahead = f"(?={_char_class(BLANK)}*{_char_class(BLANK, negate=True)})" if visible else ""
    return f"^{lookahead}{space}*(?:{edge}|{edge}{_NOT_NUL}{{0,{max_length - 2}}}{edge}){space}*$"


NO_NUL_PATTERN = f"^{_NOT_NUL}*$"  # PostgreSQL cannot store NUL
# A due date: RFC 3339 `date` or `date-time` (formats below), less what Python's datetime cannot hold: year 0,
# leap seconds, and date-times on the calendar's first and last day, which an offset could move out of range.
UNREPRESENTABLE_DATE_PATTERN = r"^0000-|^(?:0001-01-01|9999-12-31)[Tt]|[Tt][0-9]{2}:[0-9]{2}:60"
# Keys are Litestar Schema attributes; values are JSON Schema as written in the document. Each branch names its
# type, so that generators read the whole as "a string or null" (openapi-typescript: ``string | null``).
_DATE_BRANCHES: list[dict[str, Any]] = [
    {"type": "string", "format": format_, "not": {"type": "string", "pattern": UNREPRESENTABLE_DATE_PATTERN}}
    for format_ in ("date", "date-time")
]
DUE_DATE_SCHEMA: dict[str, Any] = {"type": None, "one_of": None, "any_of": [*_DATE_BRANCHES, {"type": "null"}]}

Title = Annotated[
    str,
    Meta(
        min_length=1,
        description=f"Trimmed of surrounding white space, then 1 to {TITLE_MAX_LENGTH} characters, not blank "
        "(white space and invisible characters alone are blank), no NUL.",
        examples=["Buy milk"],
        # The length is checked after trimming (clean_title), so the pattern states it, not maxLength.
        extra_json_schema={"extra": {"pattern": trimmed_text_pattern(TITLE_MAX_LENGTH, visible=True)}},
    ),
]
Description = Annotated[
    str,
    Meta(
        max_length=DESCRIPTION_MAX_LENGTH,
        description=f"At most {DESCRIPTION_MAX_LENGTH} characters, no NUL.",
        extra_json_schema={"extra": {"pattern": NO_NUL_PATTERN}},
    ),
]
PriorityName = Literal["low", "medium", "high"]
DueDate = Annotated[
    str,
    Meta(
        max_length=64,
        description="RFC 3339 date-time with an offset, or a bare date (midnight UTC). Returned in UTC.",
        examples=["2026-12-24T18:00:00+01:00", "2026-12-24"],
        extra_json_schema={"extra": DUE_DATE_SCHEMA},
    ),
]
# Not blank after trimming, no NUL; the 1 to 40 characters count before trimming.
TAG_PATTERN = f"^{_NOT_NUL}*{_char_class(_NUL + SPACE, negate=True)}{_NOT_NUL}*$"
Tag = Annotated[str, Meta(min_length=1, max_length=TAG_MAX_LENGTH)]
Tags = Annotated[
    list[Tag],
    Meta(
        max_length=MAX_TAGS,
        description=f"Up to {MAX_TAGS} tags of 1 to {TAG_MAX_LENGTH} characters, trimmed, unique ignoring case; "
        "order kept.",
        examples=[["home", "errands"]],
        # Litestar leaves out the constraints of list items, so they are stated here as well.
        extra_json_schema={
            "extra": {
                "items": {"type": "string", "minLength": 1, "maxLength": TAG_MAX_LENGTH, "pattern": TAG_PATTERN},
                "unique_items": True,
            }
        },
    ),
]


def invalid(field: str, message: str) -> InvalidFieldError:
    """A validation error located at ``field`` (see app/validation.py)."""
    return InvalidFieldError(field, message)


def clean_title(value: str) -> str:
    """Trim a title; refuse one that is blank (or only invisible characters), too long, or unstorable."""
    title = check_text(value.strip(), "title")
    if all(char.isspace() or unicodedata.category(char) in INVISIBLE_CATEGORIES for char in title):
        raise invalid("title", "must not be blank")
    if len(title) > TITLE_MAX_LENGTH:
        raise invalid("title", f"must be at most {TITLE_MAX_LENGTH} characters after trimming")
    return title


def check_text(value: str, field: str) -> str:
    """Refuse NUL characters: PostgreSQL cannot store them, so they are bad input, not a server error."""
    if "\x00" in value:
        raise invalid(field, "must not contain NUL characters")
    return value


def check_description(value: str) -> str:
    """A description PostgreSQL can store."""
    return check_text(value, "description")


def check_due_date(value: str) -> str:
    """A due date :func:`parse_due_date` reads (kept as sent; the column value is parsed when stored)."""
    parse_due_date(value)
    return value


def clean_tags(values: list[str]) -> list[str]:
    """Trim tags; refuse blank ones and duplicates that differ only in case. Order is kept."""
    tags: list[str] = []
    seen: set[str] = set()
    for value in values:
        tag = check_text(value.strip(), "tags")
        if not tag:
            raise invalid("tags", "tags must not be blank")
        if tag.casefold() in seen:
            raise invalid("tags", f"duplicate tag {tag!r} (tags are unique ignoring case)")
        seen.add(tag.casefold())
        tags.append(tag)
    return tags


def tag_keys(tags: list[str]) -> list[str]:
    """The case-insensitive form of tags, stored for filtering."""
    return [tag.casefold() for tag in tags]


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_UNREPRESENTABLE_DATE = re.compile(UNREPRESENTABLE_DATE_PATTERN)


def parse_due_date(value: str, field: str = "due_date") -> datetime:
    """An RFC 3339 date-time (with ``Z`` or an offset), or a bare ``YYYY-MM-DD`` meaning midnight UTC; in UTC.

    Exactly what ``DUE_DATE_SCHEMA`` states: the RFC 3339 ``date`` and ``date-time`` formats, less what
    ``UNREPRESENTABLE_DATE_PATTERN`` names (fractions of a second beyond microseconds are truncated).
    """
    try:
        if _UNREPRESENTABLE_DATE.search(value):
            raise ValueError(value)
        if _DATE.fullmatch(value):
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        if not _RFC3339.fullmatch(value):
            raise ValueError(value)
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves year 1 or 9999 out of range
        raise invalid(field, "must be an RFC 3339 date-time with an offset (2026-12-24T18:00:00Z) or a date") from None


# The rules of each task field beyond its type, shared by the create and update bodies (app/validation.py runs them).
TASK_FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "title": clean_title,
    "description": check_description,
    "due_date": check_due_date,
    "tags": clean_tags,
}


class TaskCreate(CheckedStruct, kw_only=True):
    """The body of ``POST /api/{user_id}/tasks``."""

    title: Title
    description: Description | None = None
    # UNSET, not the default itself: a schema ``default`` makes code generators type the field as required
    # (openapi-typescript does by default). The defaults are stated in words and applied in values().
    completed: Annotated[bool | UnsetType, Meta(description="Default: false.")] = UNSET
    priority: Annotated[PriorityName | UnsetType, Meta(description='Default: "medium".')] = UNSET
    due_date: DueDate | None = None
    tags: Tags = []

    __field_checks__ = TASK_FIELD_CHECKS

    def values(self) -> dict[str, Any]:
        """The new task's column values (the repository stamps its owner and fills the rest)."""
        return {
            "title": self.title,
            "description": self.description,
            "completed": False if self.completed is UNSET else self.completed,
            "priority": Priority["medium" if self.priority is UNSET else self.priority].value,
            "due_date": None if self.due_date is None else parse_due_date(self.due_date),
            "tags": self.tags,
            "tag_keys": tag_keys(self.tags),
        }


class TaskUpdate(CheckedStruct, kw_only=True):
    """The body of ``PUT`` and ``PATCH``: any of the fields; those not sent keep their value."""

    title: Title | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    completed: bool | UnsetType = UNSET
    priority: PriorityName | UnsetType = UNSET
    due_date: DueDate | UnsetType | None = UNSET
    tags: Tags | UnsetType = UNSET

    __field_checks__ = TASK_FIELD_CHECKS

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.changes():
            raise ValueError("send at least one of title, description, completed, priority, due_date, tags")

    def changes(self) -> dict[str, Any]:
        """The column values to set, for the fields the client sent (``null`` clears a nullable field)."""
        sent = {name: value for name in self.__struct_fields__ if (value := getattr(self, name)) is not UNSET}
        if "priority" in sent:
            sent["priority"] = Priority[sent["priority"]].value
        if isinstance(sent.get("due_date"), str):
            sent["due_date"] = parse_due_date(sent["due_date"])
        if "tags" in sent:
            sent["tag_keys"] = tag_keys(sent["tags"])
        return sent


class TaskCompletion(Struct, kw_only=True):
    """The optional body of ``PATCH …/complete``; without a body the state toggles."""

    completed: bool


class TaskRead(Struct, kw_only=True):
    """A task as the API returns it. Times are ISO 8601 in UTC."""

    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    priority: PriorityName
    due_date: datetime | None
    tags: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TaskRead:
        """Copy the public fields of a stored task (a mapping of the table's columns to values)."""
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            title=row["title"],
            description=row["description"],
            completed=row["completed"],
            priority=_PRIORITY_NAMES[row["priority"]],
            due_date=_in_utc(row["due_date"]),
            tags=list(row["tags"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


class TrashedTaskRead(TaskRead, kw_only=True):
    """A task in the trash: the task as it was, and when it was deleted."""

    deleted_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TrashedTaskRead:
        """Copy the public fields of a trashed task."""
        return cls(**msgspec.structs.asdict(TaskRead.from_row(row)), deleted_at=row["deleted_at"])


class DeletedTask(Struct, kw_only=True):
    """A task the client should drop: moved to the trash or deleted for good."""

    id: int
    deleted_at: datetime


class Changes(Struct, kw_only=True):
    """One page of the change feed."""

    tasks: list[TaskRead]
    deleted: list[DeletedTask]
    cursor: str
    has_more: bool


_PRIORITY_NAMES: dict[int, PriorityName] = {p.value: cast("PriorityName", p.name) for p in Priority}


def _in_utc(value: datetime | None) -> datetime | None:
    """asyncpg reads PostgreSQL's -infinity (which it also writes for 0001-01-01T00:00:00Z, the earliest due date)
    back as a naive ``datetime.min``; every other stored time comes back in UTC."""
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)
