"""What the task routes accept and return. Unknown and read-only fields in a body are ignored."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from db.models import DESCRIPTION_MAX_LENGTH, TITLE_MAX_LENGTH, Task

Title = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=TITLE_MAX_LENGTH,
        description=f"Trimmed of surrounding white space; 1 to {TITLE_MAX_LENGTH} characters, not blank.",
        examples=["Buy milk"],
    ),
]
Description = Annotated[
    str,
    Meta(max_length=DESCRIPTION_MAX_LENGTH, description=f"At most {DESCRIPTION_MAX_LENGTH} characters."),
]
StatusFilter = Literal["all", "pending", "completed"]


def invalid(field: str, message: str) -> ValueError:
    """A validation error located at ``field``, in msgspec's own format so Litestar reports the field."""
    return ValueError(f"{message} - at `$.{field}`")


def clean_title(value: str) -> str:
    """Trim a title and refuse one that is blank or holds characters no database stores."""
    title = check_text(value.strip(), "title")
    if not title:
        raise invalid("title", "must not be blank")
    return title


def check_text(value: str, field: str) -> str:
    """Refuse NUL characters: PostgreSQL cannot store them, so they are bad input, not a server error."""
    if "\x00" in value:
        raise invalid(field, "must not contain NUL characters")
    return value


class TaskCreate(Struct, kw_only=True):
    """The body of ``POST /api/{user_id}/tasks``."""

    title: Title
    description: Description | None = None
    completed: bool = False

    def __post_init__(self) -> None:
        self.title = clean_title(self.title)
        if self.description is not None:
            self.description = check_text(self.description, "description")

    def to_model(self) -> Task:
        """A new, unsaved task (the repository stamps its owner)."""
        return Task(title=self.title, description=self.description, completed=self.completed)


class TaskUpdate(Struct, kw_only=True):
    """The body of ``PUT`` and ``PATCH``: any of the fields; those not sent keep their value."""

    title: Title | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    completed: bool | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.title is not UNSET:
            self.title = clean_title(self.title)
        if isinstance(self.description, str):
            self.description = check_text(self.description, "description")
        if not self.changes():
            raise ValueError("send at least one of title, description, completed")  # about the whole body

    def changes(self) -> dict[str, Any]:
        """The fields the client sent (``description: null`` clears it)."""
        return {name: value for name in self.__struct_fields__ if (value := getattr(self, name)) is not UNSET}


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
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, task: Task) -> TaskRead:
        """Copy the public fields of a stored task."""
        return cls(
            id=task.id,
            user_id=task.user_id,
            title=task.title,
            description=task.description,
            completed=task.completed,
            created_at=task.created_at,
            updated_at=task.updated_at,
        )
