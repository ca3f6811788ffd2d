"""Idempotency-Key on create, on SQLite and PostgreSQL: over HTTP (the full ASGI stack) and at the data layer.

``manage.py purgekeys`` in a real process is in ``tests/process/test_cli.py``; two server processes receiving the
same keys at once are in ``tests/process/test_concurrency_http.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.asgi import build_app
from app.auth.tokens import issue_token
from app.tasks.idempotency import request_hash
from config.settings import DatabaseLimits, Settings
from db.database import Database, open_database
from db.engine import create_engine
from db.idempotency import (
    KEY_LIFETIME,
    IdempotencyKeyRepository,
    KeyInFlightError,
    StoredResponse,
    purge_every_users_expired_keys,
)
from db.models import Task
from db.owned import OwnerScopeError
from db.repositories import TaskRepository
from tests.support.http import Auth, Client, assert_problem
from tests.support.idempotency_keys import insert_key
from tests.support.tokens import TEST_SECRET


async def post(
    client: Client, auth: Auth, user: str, key: str | None, body: Any = None, raw: bytes | None = None
) -> Any:
    headers = auth(user) if key is None else {**auth(user), "Idempotency-Key": key}
    if raw is not None:
        return await client.post(
            f"/api/{user}/tasks", content=raw, headers={**headers, "Content-Type": "application/json"}
        )
    return await client.post(f"/api/{user}/tasks", json=body or {"title": "once"}, headers=headers)


async def count_tasks(client: Client, auth: Auth, user: str) -> int:
    response = await client.get(f"/api/{user}/tasks", headers=auth(user))
    return int(response.headers["x-total-count"])


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def pg_engine(postgres_database: str) -> AsyncIterator[AsyncEngine]:
    """PostgreSQL only: its per-key wait has a bound of its own (SQLite's is the write lock's busy timeout)."""
    engine = create_engine(postgres_database)
    yield engine
    await engine.dispose()


@pytest.fixture
def pg_settings(postgres_database: str, tmp_path: Path) -> Settings:
    return Settings(
        app_env="test", data_dir=tmp_path / "data", database_url=postgres_database, better_auth_secret=TEST_SECRET
    )


@pytest.fixture
async def pg_client(pg_settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=build_app(pg_settings)) as client:
        yield client


async def keys_of(engine: AsyncEngine, user: str) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT key FROM idempotency_keys WHERE user_id = :u"), {"u": user})
        return {row[0] for row in rows}


# -- over HTTP ----------------------------------------------------------------------------------------------


async def test_a_retry_replays_the_first_response_and_creates_nothing(
    client: Client, auth: Auth, new_user: Any
) -> None:
    user, key = new_user(), str(uuid.uuid4())
    first = await post(client, auth, user, key, {"title": "pay rent", "tags": ["home"]})
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    for _ in range(2):
        again = await post(client, auth, user, key, {"title": "pay rent", "tags": ["home"]})
        assert again.status_code == 201
        assert again.content == first.content  # byte for byte
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"] == first.headers["content-type"]
    assert await count_tasks(client, auth, user) == 1
    fetched = await client.get(first.headers["location"], headers=auth(user))
    assert fetched.json() == first.json()


async def test_the_same_json_value_is_the_same_body(client: Client, auth: Auth, new_user: Any) -> None:
    user, key = new_user(), "k-1"
    first = await post(client, auth, user, key, raw=b'{"title": "x", "priority": "high"}')
    again = await post(client, auth, user, key, raw=b'{"priority":"high",\n "title":"x"}')
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert await count_tasks(client, auth, user) == 1


@pytest.mark.parametrize("other", [{"title": "other"}, {"title": "once", "completed": True}, {"title": "once "}])
async def test_the_same_key_with_another_body_is_422(
    client: Client, auth: Auth, new_user: Any, other: dict[str, Any]
) -> None:
    user, key = new_user(), "k-2"
    assert (await post(client, auth, user, key, {"title": "once"})).status_code == 201
    body = assert_problem(await post(client, auth, user, key, other), 422)
    assert "Idempotency-Key" in body["detail"]
    assert await count_tasks(client, auth, user) == 1


async def test_keys_are_per_user(client: Client, auth: Auth, new_user: Any) -> None:
    alice, bob, key = new_user(), new_user(), "shared-key"
    alices = await post(client, auth, alice, key, {"title": "alice's"})
    bobs = await post(client, auth, bob, key, {"title": "bob's, another body"})  # not alice's 422, not her replay
    assert (alices.status_code, bobs.status_code) == (201, 201)
    assert "idempotent-replayed" not in bobs.headers
    assert bobs.json()["user_id"] == bob
    assert (await count_tasks(client, auth, alice), await count_tasks(client, auth, bob)) == (1, 1)


async def test_without_a_key_every_post_creates(client: Client, auth: Auth, new_user: Any) -> None:
    user = new_user()
    for _ in range(3):
        assert (await post(client, auth, user, None)).status_code == 201
    assert await count_tasks(client, auth, user) == 3


@pytest.mark.parametrize(
    "key",
    ["", " ", " lead", "trail ", "x" * 256, "tab\there", "caf\u00e9", "line\x7fdel"],
    ids=["empty", "blank", "leading-space", "trailing-space", "too-long", "control", "non-ascii", "del"],
)
async def test_a_malformed_key_is_400(client: Client, auth: Auth, new_user: Any, key: str) -> None:
    user = new_user()
    headers = [*auth(user).items(), ("Idempotency-Key", key.encode("latin-1"))]
    response = await client.post(f"/api/{user}/tasks", json={"title": "x"}, headers=headers)  # type: ignore[arg-type]
    body = assert_problem(response, 400)
    assert [(e["field"], e["source"]) for e in body["errors"]] == [("Idempotency-Key", "header")]
    assert await count_tasks(client, auth, user) == 0


@pytest.mark.parametrize("key", ["a", "x" * 255, "a b", '"quoted"', "~!@#$%^&*()_+{}|:<>?"])
async def test_any_printable_ascii_key_of_1_to_255_characters_works(
    client: Client, auth: Auth, new_user: Any, key: str
) -> None:
    user = new_user()
    first, again = await post(client, auth, user, key), await post(client, auth, user, key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert await count_tasks(client, auth, user) == 1


async def test_a_rejected_request_does_not_use_up_its_key(client: Client, auth: Auth, new_user: Any) -> None:
    user, key = new_user(), "k-3"
    assert_problem(await post(client, auth, user, key, {"title": "   "}), 400)
    fixed = await post(client, auth, user, key, {"title": "fixed"})
    assert fixed.status_code == 201
    assert "idempotent-replayed" not in fixed.headers


async def test_a_replay_is_the_original_response_even_after_the_task_changed(
    client: Client, auth: Auth, new_user: Any
) -> None:
    user, key = new_user(), "k-4"
    first = await post(client, auth, user, key)
    changed = await client.patch(first.headers["location"], json={"title": "changed"}, headers=auth(user))
    again = await post(client, auth, user, key)
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"] != changed.headers["etag"]


async def test_an_expired_key_is_never_replayed_and_is_cleaned_up(
    client: Client, auth: Auth, new_user: Any, engine: AsyncEngine
) -> None:
    user, other = new_user(), new_user()
    expired = KEY_LIFETIME + timedelta(minutes=1)
    await insert_key(engine, user, "reused", age=expired)  # a different body's hash: replay would be a 422
    await insert_key(engine, user, "stale", age=expired)
    await insert_key(engine, user, "fresh", age=KEY_LIFETIME - timedelta(minutes=1))
    await insert_key(engine, other, "stale", age=expired)  # another user's keys are theirs to clean up

    response = await post(client, auth, user, "reused")

    assert response.status_code == 201
    assert "idempotent-replayed" not in response.headers
    assert response.json()["title"] == "once"
    assert await keys_of(engine, user) == {"reused", "fresh"}  # "reused" is the new request's now
    assert await keys_of(engine, other) == {"stale"}
    assert (await post(client, auth, user, "reused")).content == response.content


async def test_a_key_without_a_stored_response_is_409(
    client: Client, auth: Auth, new_user: Any, engine: AsyncEngine
) -> None:
    """A committed key always has its response; were one ever without, the client is told to retry."""
    user = new_user()
    same_body = request_hash(b'{"title": "once"}')
    await insert_key(engine, user, "unfinished", age=timedelta(0), status=None, body_hash=same_body)
    response = await post(client, auth, user, "unfinished")
    body = assert_problem(response, 409)
    assert "in progress" in body["detail"]
    assert response.headers["retry-after"] == "1"
    assert await count_tasks(client, auth, user) == 0


async def test_a_duplicate_held_up_too_long_is_409(
    pg_client: Client, pg_settings: Settings, new_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the wait for an in-flight first request is bounded by ``lock_timeout``."""
    client = pg_client

    def auth(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(pg_settings, user, timedelta(minutes=5))}"}

    monkeypatch.setattr(IdempotencyKeyRepository, "in_flight_wait", timedelta(milliseconds=200))
    user = new_user()
    database = open_database(pg_settings.database_url, DatabaseLimits())
    try:
        async with OpenTransaction(database) as first:  # the first request, claimed but not committed
            holder = IdempotencyKeyRepository(owner_id=user, executor=first.executor)
            assert await holder.claim("busy", "h", now=datetime.now(UTC)) is None  # None: it took the key
            response = await post(client, auth, user, "busy")
            assert_problem(response, 409)
            assert response.headers["retry-after"] == "1"
            await first.roll_back()
    finally:
        await database.close()
    assert (await post(client, auth, user, "busy")).status_code == 201  # nothing was left behind


async def test_openapi_documents_the_idempotency_key(client: Client) -> None:
    schema: dict[str, Any] = (await client.get("/schema/openapi.json")).json()
    create = schema["paths"]["/api/{user_id}/tasks"]["post"]
    [key] = [p for p in create["parameters"] if p["name"] == "Idempotency-Key"]
    assert (key["in"], key["required"]) == ("header", False)
    assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)
    assert {"409", "422"} <= set(create["responses"])
    assert {"Location", "ETag", "Idempotent-Replayed"} <= set(create["responses"]["201"]["headers"])


async def test_cors_lets_a_browser_send_the_key_and_see_a_replay(client: Client, auth: Auth, new_user: Any) -> None:
    origin = {"Origin": "https://app.example.com"}
    preflight = await client.options(
        "/api/u1/tasks",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "idempotency-key",
        },
    )
    assert "idempotency-key" in preflight.headers["access-control-allow-headers"].lower()
    user = new_user()
    response = await client.post(f"/api/{user}/tasks", json={"title": "x"}, headers={**origin, **auth(user)})
    assert "idempotent-replayed" in response.headers["access-control-expose-headers"].lower()


# -- the data layer: concurrency ----------------------------------------------------------------------------


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    """Poll ``condition`` (a database state: there is no event to await) until it holds, for ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while not await condition():  # noqa: ASYNC110 - the state lives in the database
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {within} s: {what}")


class OpenTransaction:
    """A transaction of the request path's database that the test commits or rolls back when it chooses."""

    def __init__(self, database: Database, *, lock_timeout: float = 5) -> None:
        self._context = database.transaction(lock_timeout=lock_timeout)
        self.executor: Any = None
        self._open = False

    async def __aenter__(self) -> OpenTransaction:
        self.executor = await self._context.__aenter__()
        self._open = True
        return self

    async def commit(self) -> None:
        if self._open:
            self._open = False
            await self._context.__aexit__(None, None, None)

    async def roll_back(self) -> None:
        if self._open:
            self._open = False
            rollback = RuntimeError("rolled back by the test")
            with contextlib.suppress(RuntimeError):
                if not await self._context.__aexit__(RuntimeError, rollback, None):
                    raise rollback

    async def __aexit__(self, *_: object) -> None:
        await self.roll_back()


async def first_claims_second_waits(
    database: Database, user: str, key: str
) -> tuple[OpenTransaction, asyncio.Task[StoredResponse | None]]:
    """The first request has claimed ``key`` and created its task (not committed); the second is claiming it."""
    first = await OpenTransaction(database).__aenter__()
    now = datetime.now(UTC)
    keys = IdempotencyKeyRepository(owner_id=user, executor=first.executor)
    assert await keys.claim(key, "hash", now=now) is None
    await TaskRepository(owner_id=user, session=AsyncSession(database.engine), executor=first.executor).insert_row(
        {"title": "first"}
    )
    await keys.save_response(key, status=201, headers={"Location": "/first"}, body='{"first": true}')

    async def second() -> StoredResponse | None:
        async with database.transaction(lock_timeout=5) as transaction:
            return await IdempotencyKeyRepository(owner_id=user, executor=transaction).claim(key, "hash", now=now)

    waiting = asyncio.create_task(second())
    if database.dialect_name == "postgresql":  # observe the wait itself: the second backend waits on a lock

        async def blocked() -> bool:
            async with database.engine.connect() as connection:
                sql = (
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                return bool(await connection.scalar(text(sql)))

        await wait_for(blocked, "the duplicate waits on the first request's key")
    else:  # SQLite: the second transaction waits for the write lock (BEGIN IMMEDIATE) until the first ends
        await asyncio.sleep(0)
    assert not waiting.done()
    return first, waiting


async def test_a_duplicate_in_flight_waits_and_then_replays(database: Database, new_user: Any) -> None:
    user = new_user()
    first, waiting = await first_claims_second_waits(database, user, "in-flight")
    try:
        await first.commit()
        stored = await asyncio.wait_for(waiting, timeout=20)
        assert stored == StoredResponse(
            request_hash="hash", status=201, headers={"Location": "/first"}, body='{"first": true}'
        )
    finally:
        await first.roll_back()
    assert await tasks_of(database.engine, user) == 1


async def test_when_the_first_rolls_back_the_duplicate_proceeds_as_the_first(database: Database, new_user: Any) -> None:
    user = new_user()
    first, waiting = await first_claims_second_waits(database, user, "rolled-back")
    await first.roll_back()  # the first request failed, or its process died
    assert await asyncio.wait_for(waiting, timeout=20) is None  # the key is the second's now (and committed)
    assert await keys_of(database.engine, user) == {"rolled-back"}
    assert await tasks_of(database.engine, user) == 0


async def test_the_in_flight_wait_is_bounded_on_postgresql(postgres_database: str, new_user: Any) -> None:
    user = new_user()
    database = open_database(postgres_database, DatabaseLimits())
    try:
        async with OpenTransaction(database) as first:
            assert (
                await IdempotencyKeyRepository(owner_id=user, executor=first.executor).claim(
                    "k", "h", now=datetime.now(UTC)
                )
                is None
            )
            with pytest.raises(KeyInFlightError):
                async with database.transaction(lock_timeout=0.1) as impatient:
                    await IdempotencyKeyRepository(owner_id=user, executor=impatient).claim(
                        "k", "h", now=datetime.now(UTC)
                    )
    finally:
        await database.close()


async def tasks_of(engine: AsyncEngine, user: str) -> int:
    async with AsyncSession(engine) as session:
        count = await session.scalar(select(func.count()).select_from(Task).where(Task.user_id == user))
        return int(count or 0)


# -- the data layer: owner scope and clean-up ----------------------------------------------------------------


async def test_every_public_method_is_owner_scoped(engine: AsyncEngine, database: Database, new_user: Any) -> None:
    """Mallory calls each public method with alice's key; alice's row is untouched and nothing of it leaks."""
    alice, mallory = new_user(), new_user()
    await insert_key(engine, alice, "alice-key", age=timedelta(0))
    await insert_key(engine, alice, "alice-old", age=KEY_LIFETIME * 2)

    async def alice_rows() -> list[tuple[Any, ...]]:
        async with engine.connect() as connection:
            sql = "SELECT key, request_hash, response_status, response_body FROM idempotency_keys WHERE user_id = :u"
            return sorted(tuple(row) for row in await connection.execute(text(sql), {"u": alice}))

    before = await alice_rows()
    probes: dict[str, Callable[[IdempotencyKeyRepository], Awaitable[None]]] = {}

    async def probe_claim(keys: IdempotencyKeyRepository) -> None:
        assert await keys.claim("alice-key", "mallory", now=datetime.now(UTC)) is None  # her own, new key

    async def probe_stored(keys: IdempotencyKeyRepository) -> None:
        assert await keys.stored("alice-key") is None

    async def probe_save_response(keys: IdempotencyKeyRepository) -> None:
        await keys.save_response("alice-key", status=500, headers={}, body="defaced")

    async def probe_purge_expired(keys: IdempotencyKeyRepository) -> None:
        assert await keys.purge_expired(now=datetime.now(UTC)) == 0

    probes.update(  # claim last: it creates mallory's own "alice-key"
        stored=probe_stored, save_response=probe_save_response, purge_expired=probe_purge_expired, claim=probe_claim
    )
    public = {
        name
        for name in dir(IdempotencyKeyRepository)
        if not name.startswith("_") and inspect.isroutine(getattr(IdempotencyKeyRepository, name))
    }
    assert public == set(probes), "scope and probe every public method here"

    async with database.transaction() as transaction:
        keys = IdempotencyKeyRepository(owner_id=mallory, executor=transaction)
        for probe in probes.values():
            await probe(keys)
        with pytest.raises(OwnerScopeError):
            keys._insert(database.dialect_name, {"user_id": alice, "key": "planted"})
        with pytest.raises(OwnerScopeError):
            keys._update({"user_id": alice})
        with pytest.raises(OwnerScopeError):
            keys._select(Task.id)
    assert await alice_rows() == before
    assert await keys_of(engine, mallory) == {"alice-key"}
    with pytest.raises(OwnerScopeError):
        IdempotencyKeyRepository(owner_id="", executor=database)


async def test_purging_every_users_expired_keys(engine: AsyncEngine, database: Database, new_user: Any) -> None:
    alice, bob = new_user(), new_user()
    for user in (alice, bob):
        await insert_key(engine, user, "old", age=KEY_LIFETIME + timedelta(seconds=1))
        await insert_key(engine, user, "new", age=KEY_LIFETIME - timedelta(minutes=1))
    assert await purge_every_users_expired_keys(database, now=datetime.now(UTC)) >= 2
    assert await keys_of(engine, alice) == await keys_of(engine, bob) == {"new"}
