"""The stack the original plan named: FastAPI + SQLModel, written the way their tutorials do it.

``uvicorn bench.baselines.fastapi_sqlmodel:app`` with ``DATABASE_URL`` and ``BETTER_AUTH_SECRET`` set.
Async engine on asyncpg (``create_async_engine`` with its default pool), a SQLModel table model plus
``TaskCreate`` / ``TaskUpdate`` / ``TaskPublic`` models, a session per request from a ``Depends`` generator,
the current user from a ``Depends`` that checks the bearer JWT like ours (HS256 only, signature, ``exp`` and
``sub`` required, 30 s leeway, ``sub`` must be the path's user: else 401 / 403), ``response_model`` for
output, and ``session.get`` → change → ``commit`` → ``refresh`` for writes, as the docs show.
The list runs the same query as ours: newest first, ``id`` tie-break, one extra row for ``Link``, plus a count.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal
from urllib.parse import quote

import jwt
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import StringConstraints, field_validator
from sqlalchemy import Column, DateTime, String, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

PRIORITY_NAMES = {1: "low", 2: "medium", 3: "high"}
PRIORITY_RANKS = {name: rank for rank, name in PRIORITY_NAMES.items()}
PriorityName = Literal["low", "medium", "high"]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


class Task(SQLModel, table=True):
    """The ``tasks`` table (created by the app's migrations, never by ``create_all`` here)."""

    __tablename__ = "tasks"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=255, index=True)
    title: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    completed: bool = False
    priority: int = 2
    due_date: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    tags: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(String(40)), nullable=False))
    tag_keys: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(String(40)), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


def _due(value: datetime | date | None) -> datetime | None:
    """A bare date is midnight UTC; a date-time without an offset is taken as UTC."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        return datetime.combine(value, time(), tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TaskCreate(SQLModel):
    """The body of a create."""

    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    completed: bool = False
    priority: PriorityName = "medium"
    due_date: datetime | date | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class TaskUpdate(SQLModel):
    """The body of a partial update: the fields sent are set."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    completed: bool | None = None
    priority: PriorityName | None = None
    due_date: datetime | date | None = None
    tags: list[Tag] | None = Field(default=None, max_length=20)


class TaskPublic(SQLModel):
    """What the API returns."""

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

    @field_validator("priority", mode="before")
    @classmethod
    def priority_name(cls, value: Any) -> Any:
        """The table stores the rank."""
        return PRIORITY_NAMES.get(value, value) if isinstance(value, int) else value


engine = create_async_engine(os.environ.get("DATABASE_URL", "").replace("postgresql://", "postgresql+asyncpg://", 1))
SECRET = os.environ.get("BETTER_AUTH_SECRET", "")
bearer = HTTPBearer(auto_error=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    """One session per request."""
    async with AsyncSession(engine) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_current_user(
    user_id: Annotated[str, Path(min_length=1, max_length=255)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The token's user, who must be the user in the path."""
    unauthorized = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if credentials is None:
        raise unauthorized
    try:
        claims = jwt.decode(
            credentials.credentials, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]}, leeway=30
        )
    except jwt.InvalidTokenError:
        raise unauthorized from None
    if claims["sub"] != user_id:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="Not your tasks")
    return user_id


CurrentUser = Annotated[str, Depends(get_current_user)]
app = FastAPI(title="todo-backend baseline: FastAPI + SQLModel")


async def get_owned_task(session: AsyncSession, owner: str, task_id: int) -> Task:
    """The task, if it exists and belongs to ``owner``; else 404."""
    task = await session.get(Task, task_id)
    if task is None or task.user_id != owner:
        raise HTTPException(status_code=404, detail="Task not found")
    return task


@app.get("/api/{user_id}/tasks", response_model=list[TaskPublic])
async def list_tasks(
    owner: CurrentUser,
    session: SessionDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> list[Task]:
    """The user's tasks, newest first."""
    statement = (
        select(Task)
        .where(Task.user_id == owner)
        .order_by(col(Task.created_at).desc(), col(Task.id).desc())
        .limit(limit + 1)
    )
    tasks = list((await session.exec(statement)).all())
    total = (await session.exec(select(func.count()).select_from(Task).where(Task.user_id == owner))).one()
    response.headers["X-Total-Count"] = str(total)
    if len(tasks) > limit:
        tasks = tasks[:limit]
        cursor = base64.urlsafe_b64encode(f"{tasks[-1].created_at.isoformat()},{tasks[-1].id}".encode()).decode()
        response.headers["Link"] = f'</api/{quote(owner, safe="")}/tasks?limit={limit}&cursor={cursor}>; rel="next"'
    return tasks


@app.post("/api/{user_id}/tasks", response_model=TaskPublic, status_code=201)
async def create_task(owner: CurrentUser, session: SessionDep, task: TaskCreate, response: Response) -> Task:
    """Create a task."""
    tags = list(dict.fromkeys(task.tags))
    db_task = Task.model_validate(
        task,
        update={
            "user_id": owner,
            "priority": PRIORITY_RANKS[task.priority],
            "due_date": _due(task.due_date),
            "tags": tags,
            "tag_keys": [tag.casefold() for tag in tags],
        },
    )
    session.add(db_task)
    await session.commit()
    await session.refresh(db_task)
    response.headers["Location"] = f"/api/{quote(owner, safe='')}/tasks/{db_task.id}"
    return db_task


@app.get("/api/{user_id}/tasks/{task_id}", response_model=TaskPublic)
async def read_task(owner: CurrentUser, session: SessionDep, task_id: int) -> Task:
    """One task."""
    return await get_owned_task(session, owner, task_id)


@app.patch("/api/{user_id}/tasks/{task_id}", response_model=TaskPublic)
async def update_task(owner: CurrentUser, session: SessionDep, task_id: int, task: TaskUpdate) -> Task:
    """Set the fields sent."""
    db_task = await get_owned_task(session, owner, task_id)
    task_data = task.model_dump(exclude_unset=True)
    if "priority" in task_data:
        task_data["priority"] = PRIORITY_RANKS[task_data["priority"]]
    if "due_date" in task_data:
        task_data["due_date"] = _due(task_data["due_date"])
    if task_data.get("tags") is not None:
        task_data["tags"] = list(dict.fromkeys(task_data["tags"]))
        task_data["tag_keys"] = [tag.casefold() for tag in task_data["tags"]]
    db_task.sqlmodel_update(task_data)
    db_task.updated_at = utcnow()
    session.add(db_task)
    await session.commit()
    await session.refresh(db_task)
    return db_task


@app.patch("/api/{user_id}/tasks/{task_id}/complete", response_model=TaskPublic)
async def complete_task(owner: CurrentUser, session: SessionDep, task_id: int) -> Task:
    """Toggle ``completed``."""
    db_task = await get_owned_task(session, owner, task_id)
    db_task.completed = not db_task.completed
    db_task.updated_at = utcnow()
    session.add(db_task)
    await session.commit()
    await session.refresh(db_task)
    return db_task


@app.delete("/api/{user_id}/tasks/{task_id}", status_code=204)
async def delete_task(owner: CurrentUser, session: SessionDep, task_id: int) -> None:
    """Delete a task."""
    db_task = await get_owned_task(session, owner, task_id)
    await session.delete(db_task)
    await session.commit()
