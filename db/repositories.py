"""Concrete owner-scoped repositories, one per owned model."""

from __future__ import annotations

from db.models import Task
from db.owned import OwnedRepository


class TaskRepository(OwnedRepository[Task]):
    """One user's tasks."""

    model_type = Task
