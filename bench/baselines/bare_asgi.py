"""The ceiling: the task routes as a bare ASGI callable on an asyncpg pool. No framework, no ORM.

``uvicorn bench.baselines.bare_asgi:app`` with ``DATABASE_URL`` and ``BETTER_AUTH_SECRET`` set. The same
bearer check as ours (HS256 only, signature, ``exp`` and ``sub`` required, 30 s leeway; ``sub`` must be the
path's user, else 403), the same tables and the same list query (newest first, ``id`` as tie-break, one
extra row to know whether there is a next page, plus the total count). JSON through msgspec. Only what the
benchmark's workloads use is here: the list takes ``limit`` (its ``Link`` cursor is not read back).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, quote

import asyncpg
import jwt
import msgspec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PRIORITY_NAMES = {1: "low", 2: "medium", 3: "high"}
PRIORITY_RANKS = {name: rank for rank, name in PRIORITY_NAMES.items()}
COLUMNS = "id, user_id, title, description, completed, priority, due_date, tags, created_at, updated_at"
MAX_BODY_BYTES = 1_000_000
MAX_TASK_ID = 2**63 - 1

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=1000)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=20)]
Priority = Literal["low", "medium", "high"]


class TaskCreate(msgspec.Struct, kw_only=True):
    """The body of a create."""

    title: Title
    description: Description | None = None
    completed: bool = False
    priority: Priority = "medium"
    due_date: str | None = None
    tags: Tags = []


class TaskUpdate(msgspec.Struct, kw_only=True):
    """The body of a partial update: the fields sent are set."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    completed: bool | msgspec.UnsetType = msgspec.UNSET
    priority: Priority | msgspec.UnsetType = msgspec.UNSET
    due_date: str | msgspec.UnsetType | None = msgspec.UNSET
    tags: Tags | msgspec.UnsetType = msgspec.UNSET


class HTTPError(Exception):
    """An error response."""

    def __init__(self, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or []


_encoder = msgspec.json.Encoder()
_create_decoder = msgspec.json.Decoder(TaskCreate)
_update_decoder = msgspec.json.Decoder(TaskUpdate)
_SECRET = ""
_pool: asyncpg.Pool | None = None


def _task(row: asyncpg.Record) -> dict[str, Any]:
    task = dict(row)
    task["priority"] = PRIORITY_NAMES[task["priority"]]
    return task


def _due(value: str | None) -> datetime | None:
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPError(400, "due_date must be an RFC 3339 date-time or a YYYY-MM-DD date") from None
    if parsed.tzinfo is None:
        raise HTTPError(400, "due_date needs a UTC offset")
    return parsed.astimezone(UTC)


def _clean_tags(tags: list[str]) -> list[str]:
    cleaned = [tag.strip() for tag in tags]
    if any(not tag for tag in cleaned) or len({tag.casefold() for tag in cleaned}) != len(cleaned):
        raise HTTPError(400, "tags must be non-blank and unique ignoring case")
    return cleaned


def _authenticate(scope: Scope, owner: str) -> None:
    authorization = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
            break
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPError(401, "bearer token required", [(b"www-authenticate", b'Bearer realm="bench"')])
    try:
        claims = jwt.decode(
            token.strip(), _SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]}, leeway=30
        )
    except jwt.InvalidTokenError:
        raise HTTPError(401, "invalid token", [(b"www-authenticate", b'Bearer error="invalid_token"')]) from None
    if claims["sub"] != owner:
        raise HTTPError(403, "the token's user is not the user in the path")


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPError(413, "body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _task_id(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TASK_ID:
        raise HTTPError(404, "no such task")
    return int(raw)


async def _list(pool: asyncpg.Pool, owner: str, scope: Scope) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
    params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        raise HTTPError(400, "limit must be an integer") from None
    if not 1 <= limit <= 200:
        raise HTTPError(400, "limit must be 1 to 200")
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            f"SELECT {COLUMNS} FROM tasks WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",  # noqa: S608
            owner,
            limit + 1,
        )
        total = await connection.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", owner)
    headers = [(b"x-total-count", str(total).encode())]
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        cursor = base64.urlsafe_b64encode(f"{last['created_at'].isoformat()},{last['id']}".encode()).decode()
        link = f'</api/{quote(owner, safe="")}/tasks?limit={limit}&cursor={cursor}>; rel="next"'
        headers.append((b"link", link.encode()))
    return 200, [_task(row) for row in rows], headers


async def _create(pool: asyncpg.Pool, owner: str, body: bytes) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
    data = _create_decoder.decode(body)
    title = data.title.strip()
    if not title:
        raise HTTPError(400, "title must not be blank")
    tags = _clean_tags(data.tags)
    row = await pool.fetchrow(
        f"""INSERT INTO tasks (user_id, title, description, completed, priority, due_date, tags, tag_keys,
                               created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now()) RETURNING {COLUMNS}""",  # noqa: S608
        owner,
        title,
        data.description,
        data.completed,
        PRIORITY_RANKS[data.priority],
        _due(data.due_date),
        tags,
        [tag.casefold() for tag in tags],
    )
    location = f"/api/{quote(owner, safe='')}/tasks/{row['id']}".encode()
    return 201, _task(row), [(b"location", location)]


async def _update(pool: asyncpg.Pool, owner: str, task_id: int, body: bytes) -> asyncpg.Record | None:
    data = _update_decoder.decode(body)
    values: dict[str, Any] = {}
    if data.title is not msgspec.UNSET:
        values["title"] = data.title.strip()
        if not values["title"]:
            raise HTTPError(400, "title must not be blank")
    if data.description is not msgspec.UNSET:
        values["description"] = data.description
    if data.completed is not msgspec.UNSET:
        values["completed"] = data.completed
    if data.priority is not msgspec.UNSET:
        values["priority"] = PRIORITY_RANKS[data.priority]
    if data.due_date is not msgspec.UNSET:
        values["due_date"] = _due(data.due_date)
    if data.tags is not msgspec.UNSET:
        values["tags"] = _clean_tags(data.tags)
        values["tag_keys"] = [tag.casefold() for tag in values["tags"]]
    assignments = ", ".join(f"{name} = ${number}" for number, name in enumerate(values, start=3))
    sets = f"{assignments}, updated_at = now()" if assignments else "updated_at = now()"
    row: asyncpg.Record | None = await pool.fetchrow(
        f"UPDATE tasks SET {sets} WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}",  # noqa: S608
        task_id,
        owner,
        *values.values(),
    )
    return row


async def _route(scope: Scope, receive: Receive) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
    pool = _pool
    assert pool is not None  # noqa: S101 - set by the lifespan
    parts = scope["path"].split("/")
    if len(parts) < 4 or parts[1] != "api" or parts[3] != "tasks" or not parts[2] or len(parts) > 6:
        raise HTTPError(404, "not found")
    owner = parts[2]
    method = scope["method"]
    _authenticate(scope, owner)
    if len(parts) == 4 or (len(parts) == 5 and parts[4] == ""):
        if method == "GET":
            return await _list(pool, owner, scope)
        if method == "POST":
            return await _create(pool, owner, await _body(receive))
        raise HTTPError(405, "method not allowed")
    task_id = _task_id(parts[4])
    row: asyncpg.Record | None
    if len(parts) == 6:
        if parts[5] != "complete" or method != "PATCH":
            raise HTTPError(404, "not found")
        body = await _body(receive)
        if body.strip():
            completed = msgspec.json.decode(body, type=dict[str, bool]).get("completed")
            row = await pool.fetchrow(
                f"UPDATE tasks SET completed = $3, updated_at = now() WHERE id = $1 AND user_id = $2 "  # noqa: S608
                f"RETURNING {COLUMNS}",
                task_id,
                owner,
                bool(completed),
            )
        else:
            row = await pool.fetchrow(
                f"UPDATE tasks SET completed = NOT completed, updated_at = now() WHERE id = $1 AND user_id = $2 "  # noqa: S608
                f"RETURNING {COLUMNS}",
                task_id,
                owner,
            )
    elif method == "GET":
        row = await pool.fetchrow(f"SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2", task_id, owner)  # noqa: S608
    elif method in {"PATCH", "PUT"}:
        row = await _update(pool, owner, task_id, await _body(receive))
    elif method == "DELETE":
        deleted = await pool.fetchval("DELETE FROM tasks WHERE id = $1 AND user_id = $2 RETURNING id", task_id, owner)
        if deleted is None:
            raise HTTPError(404, "no such task")
        return 204, None, []
    else:
        raise HTTPError(405, "method not allowed")
    if row is None:
        raise HTTPError(404, "no such task")
    return 200, _task(row), []


async def _lifespan(receive: Receive, send: Send) -> None:
    global _pool, _SECRET  # noqa: PLW0603 - one pool per process, made at startup
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _SECRET = os.environ["BETTER_AUTH_SECRET"]
            dsn = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
            _pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _pool is not None:
                await _pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    headers: list[tuple[bytes, bytes]]
    try:
        status, payload, headers = await _route(scope, receive)
    except HTTPError as exc:
        status, payload, headers = exc.status, {"status": exc.status, "detail": exc.detail}, exc.headers
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        status, payload, headers = 400, {"status": 400, "detail": str(exc)}, []
    body = b"" if payload is None else _encoder.encode(payload)
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    if payload is not None:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
