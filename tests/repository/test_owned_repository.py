"""The owner scope, at the repository level, on SQLite and PostgreSQL.

Every public method of ``TaskRepository`` is called by one user (mallory) with another user's (alice's)
ids. Each probe asserts that nothing of alice's comes back; afterwards alice's rows, read straight from
the database, must be exactly as before. ``test_every_public_method_is_probed`` enumerates the class, so
a method added by a future Advanced Alchemy release fails the suite until it is scoped and probed here.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from advanced_alchemy.exceptions import NotFoundError
from sqlalchemy import bindparam, or_, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from db.database import Database
from db.engine import create_engine
from db.models import Task
from db.owned import OwnerScopeError, StaleVersionError
from db.query import UnsupportedStatementError
from db.repositories import TaskRepository


@dataclass
class World:
    """Alice owns two tasks and one in the trash, mallory one and one in the trash; ``mallory`` (the live view)
    is the repository under attack.

    Both repositories run Advanced Alchemy's methods through one session and the request path's methods
    through the database itself (``executor``), as the app does.
    """

    engine: AsyncEngine
    session: AsyncSession
    database: Database
    alice_id: str
    mallory_id: str
    alice_tasks: list[int]
    mallory_task: int
    mallory: TaskRepository
    alice: TaskRepository
    mallory_trashed: int  # mallory's own task in the trash: every live-view probe must not see it either


@pytest.fixture
async def world(database_url: str, database: Database) -> AsyncIterator[World]:
    engine = create_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    alice_id, mallory_id = f"alice-{uuid.uuid4().hex}", f"mallory-{uuid.uuid4().hex}"
    async with sessions() as session:
        alice = TaskRepository(owner_id=alice_id, session=session, executor=database)
        mallory = TaskRepository(owner_id=mallory_id, session=session, executor=database)
        a1 = await alice.add(Task(title="alice 1", description="private"))
        a2 = await alice.add(Task(title="alice 2"))
        a3 = await alice.add(Task(title="alice 3, in the trash", deleted_at=datetime.now(UTC)))
        m1 = await mallory.add(Task(title="mallory 1"))
        m2 = await mallory.add(Task(title="mallory 2, in the trash", deleted_at=datetime.now(UTC)))
        await session.commit()
        yield World(
            engine, session, database, alice_id, mallory_id, [a1.id, a2.id, a3.id], m1.id, mallory, alice, m2.id
        )
        await session.rollback()
    await engine.dispose()


async def rows_of(engine: AsyncEngine, owner: str) -> list[tuple[Any, ...]]:
    """An owner's rows read with plain SQL on a separate connection: what is really stored."""
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT id, user_id, title, description, completed, created_at, updated_at, deleted_at, version"
                " FROM tasks WHERE user_id = :owner ORDER BY id"
            ),
            {"owner": owner},
        )
        return [tuple(row) for row in result]


Probe = Callable[[World], Awaitable[None]]


def foreign(w: World) -> Any:
    """A filter that names only alice's rows."""
    return Task.id.in_(w.alice_tasks)


def alice_select(w: World) -> Any:
    """A caller-supplied statement that asks for alice's rows outright."""
    return select(Task).where(Task.user_id == w.alice_id)


async def probe_add(w: World) -> None:
    created = await w.mallory.add(Task(title="mine"))
    assert created.user_id == w.mallory_id  # stamped with the repository's owner
    with pytest.raises(OwnerScopeError):
        await w.mallory.add(Task(title="planted", user_id=w.alice_id))
    with pytest.raises(OwnerScopeError):  # a chosen key would collide exactly when alice's row has it
        await w.mallory.add(Task(id=w.alice_tasks[0], title="probe"))


async def probe_add_many(w: World) -> None:
    created = await w.mallory.add_many([Task(title="m1"), Task(title="m2")])
    assert {t.user_id for t in created} == {w.mallory_id}
    with pytest.raises(OwnerScopeError):
        await w.mallory.add_many([Task(title="ok"), Task(title="planted", user_id=w.alice_id)])
    with pytest.raises(OwnerScopeError):
        await w.mallory.add_many([Task(id=w.alice_tasks[0], title="probe")])


async def probe_count(w: World) -> None:
    assert await w.mallory.count() == 1
    assert await w.mallory.count(foreign(w)) == 0
    assert await w.mallory.count(statement=alice_select(w)) == 0


async def probe_exists(w: World) -> None:
    assert not await w.mallory.exists(id=w.alice_tasks[0])
    assert not await w.mallory.exists(user_id=w.alice_id)


async def probe_get(w: World) -> None:
    with pytest.raises(NotFoundError):
        await w.mallory.get(w.alice_tasks[0])
    with pytest.raises(NotFoundError):
        await w.mallory.get(w.alice_tasks[0], statement=alice_select(w))
    with pytest.raises(NotFoundError):
        await w.mallory.get(w.alice_id, id_attribute="user_id")


async def probe_get_one(w: World) -> None:
    with pytest.raises(NotFoundError):
        await w.mallory.get_one(id=w.alice_tasks[0])
    with pytest.raises(NotFoundError):
        await w.mallory.get_one(foreign(w))


async def probe_get_one_or_none(w: World) -> None:
    assert await w.mallory.get_one_or_none(id=w.alice_tasks[0]) is None
    assert await w.mallory.get_one_or_none(Task.title == "alice 1") is None


async def probe_get_many(w: World) -> None:
    assert [t.id for t in await w.mallory.get_many()] == [w.mallory_task]
    assert await w.mallory.get_many(foreign(w)) == []


async def probe_list(w: World) -> None:
    assert [t.id for t in await w.mallory.list()] == [w.mallory_task]
    assert await w.mallory.list(user_id=w.alice_id) == []
    assert await w.mallory.list(statement=alice_select(w)) == []
    other = aliased(Task)
    with pytest.raises(OwnerScopeError):  # the owner filter would land on the base table, not the alias
        await w.mallory.list(statement=cast("Any", select(other)))
    with pytest.raises(OwnerScopeError):
        await w.mallory.list(statement=cast("Any", select(Task).join(other, other.title == Task.title)))


async def probe_list_and_count(w: World) -> None:
    tasks, total = await w.mallory.list_and_count()
    assert ([t.id for t in tasks], total) == ([w.mallory_task], 1)
    assert await w.mallory.list_and_count(foreign(w)) == ([], 0)
    # both counting strategies: the window function and the separate COUNT query
    assert await w.mallory.list_and_count(foreign(w), count_with_window_function=False) == ([], 0)


async def probe_get_many_and_count(w: World) -> None:
    tasks, total = await w.mallory.get_many_and_count(count_with_window_function=False)
    assert ([t.id for t in tasks], total) == ([w.mallory_task], 1)
    assert await w.mallory.get_many_and_count(foreign(w)) == ([], 0)


@dataclass(frozen=True)
class Spec:
    """A page spec (``db.owned.PageSpec``) with arbitrary clauses, as a careless caller might write them."""

    name: str
    clauses: tuple[Any, ...] = ()
    position: Any = None
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def shape(self) -> str:
        return self.name

    @property
    def after_position(self) -> bool:
        return self.position is not None

    def filters(self) -> list[Any]:
        return list(self.clauses)

    def after(self) -> Any:
        return self.position

    def order_by(self) -> list[Any]:
        return [Task.id.asc()]

    def values(self) -> dict[str, Any]:
        return dict(self.params)


async def probe_page(w: World) -> None:
    rows, total = await w.mallory.page(Spec("all"), limit=10)
    assert ([r["id"] for r in rows], total) == ([w.mallory_task], 1)
    with pytest.raises(UnsupportedStatementError):  # statements built once take no list; never a leak either
        await w.mallory.page(Spec("foreign-list", (Task.id.in_(w.alice_tasks),)), limit=10)
    foreign_ids = tuple(Task.id == bindparam(f"id{i}") for i in range(2))
    values = tuple((f"id{i}", task) for i, task in enumerate(w.alice_tasks))
    assert await w.mallory.page(Spec("foreign", (or_(*foreign_ids),), params=values), limit=10) == ([], 0)
    alice = (Task.user_id == bindparam("who"),)
    assert await w.mallory.page(Spec("alice", alice, params=(("who", w.alice_id),)), limit=10) == ([], 0)
    # A caller's parameter named like the owner's cannot replace the owner: the repository's comes last.
    spoof = (("owner_id", w.alice_id),)
    rows, total = await w.mallory.page(Spec("spoof", params=spoof), limit=10)
    assert ([r["id"] for r in rows], total) == ([w.mallory_task], 1)
    after = Task.user_id == bindparam("who")
    rows, total = await w.mallory.page(Spec("after", position=after, params=(("who", w.alice_id),)), limit=10)
    assert (rows, total) == ([], 1)  # the keyset part narrows the page, never the owner


async def probe_get_row(w: World) -> None:
    with pytest.raises(NotFoundError):
        await w.mallory.get_row(w.alice_tasks[0])
    assert (await w.mallory.get_row(w.mallory_task))["user_id"] == w.mallory_id


async def probe_insert_row(w: World) -> None:
    row = await w.mallory.insert_row({"title": "mine"})
    assert (row["user_id"], row["version"]) == (w.mallory_id, 1)  # stamped with the repository's owner
    with pytest.raises(OwnerScopeError):
        await w.mallory.insert_row({"title": "planted", "user_id": w.alice_id})
    with pytest.raises(OwnerScopeError):  # a chosen key would collide exactly when alice's row has it
        await w.mallory.insert_row({"title": "probe", "id": w.alice_tasks[0]})


async def probe_bound_to(w: World) -> None:
    async with w.database.transaction() as transaction:
        bound = w.mallory.bound_to(transaction)
        assert bound.owner_id == w.mallory_id
        with pytest.raises(NotFoundError):
            await bound.get_row(w.alice_tasks[0])
        with pytest.raises(NotFoundError):
            await bound.update_values(w.alice_tasks[0], {"title": "defaced"})


async def probe_update(w: World) -> None:
    with pytest.raises(NotFoundError):
        await w.mallory.update(Task(id=w.alice_tasks[0], title="defaced"))
    with pytest.raises(OwnerScopeError):  # moving one's own task to alice
        await w.mallory.update(Task(id=w.mallory_task, user_id=w.alice_id))
    with pytest.raises(OwnerScopeError):  # found by title, then re-keyed onto alice's id
        await w.mallory.update(Task(id=w.alice_tasks[0], title="mallory 1"), id_attribute="title")


async def probe_update_many(w: World) -> None:
    assert await w.mallory.update_many([Task(id=i, title="defaced") for i in w.alice_tasks]) == []
    assert await w.mallory.update_many([{"id": w.alice_tasks[0], "title": "defaced"}]) == []  # type: ignore[list-item]
    with pytest.raises(OwnerScopeError):
        await w.mallory.update_many([{"id": w.mallory_task, "user_id": w.alice_id}])  # type: ignore[list-item]


async def probe_update_values(w: World) -> None:
    with pytest.raises(NotFoundError):
        await w.mallory.update_values(w.alice_tasks[0], {"title": "defaced"})
    with pytest.raises(OwnerScopeError):
        await w.mallory.update_values(w.mallory_task, {"user_id": w.alice_id})
    with pytest.raises(OwnerScopeError):
        await w.mallory.update_values(w.mallory_task, {"id": w.alice_tasks[0]})
    with pytest.raises(OwnerScopeError):
        await w.mallory.update_values(w.mallory_task, {"version": 99})
    # Conditional: alice's row is "not found" whichever version is named, never "stale" (that would reveal it).
    for versions in ([1], [2], []):
        with pytest.raises(NotFoundError):
            await w.mallory.update_values(w.alice_tasks[0], {"title": "defaced"}, versions=versions)


async def probe_delete_one(w: World) -> None:
    with pytest.raises(NotFoundError):
        await w.mallory.delete_one(w.alice_tasks[0])
    for versions in ([1], [2], []):
        with pytest.raises(NotFoundError):
            await w.mallory.delete_one(w.alice_tasks[0], versions=versions)


async def probe_get_and_update(w: World) -> None:
    with pytest.raises(NotFoundError):
        await w.mallory.get_and_update(id=w.alice_tasks[0], title="defaced")
    with pytest.raises(OwnerScopeError):
        await w.mallory.get_and_update(match_fields=["id"], id=w.mallory_task, user_id=w.alice_id)
    with pytest.raises(OwnerScopeError):  # matched by title, then re-keyed onto alice's id
        await w.mallory.get_and_update(match_fields=["title"], title="mallory 1", id=w.alice_tasks[0])


async def probe_delete(w: World) -> None:
    with pytest.raises(NotFoundError):
        await w.mallory.delete(w.alice_tasks[0])


async def probe_delete_many(w: World) -> None:
    assert await w.mallory.delete_many(list(w.alice_tasks)) == []


async def probe_delete_where(w: World) -> None:
    assert await w.mallory.delete_where(foreign(w)) == []
    assert await w.mallory.delete_where(user_id=w.alice_id) == []


async def probe_upsert(w: World) -> None:
    with pytest.raises(OwnerScopeError):
        await w.mallory.upsert(Task(id=w.alice_tasks[0], title="defaced"))


async def probe_upsert_many(w: World) -> None:
    with pytest.raises(OwnerScopeError):
        await w.mallory.upsert_many([Task(id=w.alice_tasks[0], title="defaced")])


async def probe_get_or_upsert(w: World) -> None:
    with pytest.raises(OwnerScopeError):
        await w.mallory.get_or_upsert(id=w.alice_tasks[0], title="defaced")


async def probe_lock(w: World) -> None:
    postgres = w.engine.dialect.name == "postgresql"
    async with w.database.transaction() as transaction:
        await w.mallory.bound_to(transaction).lock([*w.alice_tasks, w.mallory_task])
        if postgres:  # alice's rows stay free; mallory's own row is locked
            async with w.engine.connect() as other:
                for task_id in w.alice_tasks:
                    await other.execute(text("SELECT id FROM tasks WHERE id = :id FOR UPDATE NOWAIT"), {"id": task_id})
                await other.rollback()
                with pytest.raises(DBAPIError):
                    await other.execute(
                        text("SELECT id FROM tasks WHERE id = :id FOR UPDATE NOWAIT"), {"id": w.mallory_task}
                    )
                await other.rollback()


async def probe_in_view(w: World) -> None:
    trash, everything = w.mallory.in_view("trash"), w.mallory.in_view("all")
    assert [t.id for t in await trash.list()] == [w.mallory_trashed]
    assert sorted(t.id for t in await everything.list()) == sorted([w.mallory_task, w.mallory_trashed])
    for view in (trash, everything):
        assert await view.list(foreign(w)) == []
        with pytest.raises(NotFoundError):
            await view.get_row(w.alice_tasks[2])
        assert await view.page(Spec("all"), limit=10) == (await view.page(Spec("all"), limit=10))
        rows, _ = await view.page(Spec("all"), limit=10)
        assert {r["user_id"] for r in rows} == {w.mallory_id}
    with pytest.raises(OwnerScopeError):
        w.mallory.in_view(cast("Any", "everything"))
    with pytest.raises(NotFoundError):  # the live view does not see mallory's own trash
        await w.mallory.get_row(w.mallory_trashed)


async def probe_trash(w: World) -> None:
    for task_id in w.alice_tasks:
        with pytest.raises(NotFoundError):
            await w.mallory.trash(task_id, now=datetime.now(UTC))
    with pytest.raises(NotFoundError):  # already in the trash
        await w.mallory.trash(w.mallory_trashed, now=datetime.now(UTC))


async def probe_restore(w: World) -> None:
    for task_id in w.alice_tasks:
        with pytest.raises(NotFoundError):
            await w.mallory.restore(task_id)
    with pytest.raises(NotFoundError):  # not in the trash
        await w.mallory.restore(w.mallory_task)


async def probe_purge(w: World) -> None:
    for task_id in w.alice_tasks:
        with pytest.raises(NotFoundError):
            await w.mallory.purge(task_id)
    with pytest.raises(NotFoundError):  # only what is in the trash can be purged
        await w.mallory.purge(w.mallory_task)


async def probe_shared_select(w: World) -> None:
    def build() -> Any:
        return w.mallory.shared_select().where(Task.id == bindparam("wanted"))

    for task_id in w.alice_tasks:
        assert await w.mallory.run_shared(("probe", "shared"), build, {"wanted": task_id}) == []
    # A caller's value for the owner parameter cannot replace the owner.
    spoofed = {"wanted": w.alice_tasks[0], "owner_id": w.alice_id}
    assert await w.mallory.run_shared(("probe", "shared"), build, spoofed) == []
    [row] = await w.mallory.run_shared(("probe", "shared"), build, {"wanted": w.mallory_task})
    assert row["user_id"] == w.mallory_id


async def probe_run_shared(w: World) -> None:
    await probe_shared_select(w)


PROBES: dict[str, Probe] = {
    name.removeprefix("probe_"): probe for name, probe in globals().items() if name.startswith("probe_")
}

# Public methods that never touch rows: pure helpers on objects already in hand, and a ``SELECT 1``.
NO_DATA_ACCESS = {
    "owned",  # builds the owner condition; runs nothing
    "check_health",
    "check_not_found",
    "get_id_attribute_value",
    "set_id_attribute_value",
    "get_primary_key_value",
    "has_primary_key_values",
}


def public_methods(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_") and inspect.isroutine(getattr(cls, name))}


def test_every_public_method_is_probed() -> None:
    unprobed = public_methods(TaskRepository) - set(PROBES) - NO_DATA_ACCESS
    assert not unprobed, f"scope and probe these repository methods before using them: {sorted(unprobed)}"
    assert set(PROBES) <= public_methods(TaskRepository)


@pytest.mark.parametrize("method", sorted(PROBES))
async def test_method_cannot_reach_another_owner(world: World, method: str) -> None:
    before = await rows_of(world.engine, world.alice_id)
    assert len(before) == 3  # two live tasks and one in the trash

    await PROBES[method](world)
    await world.session.commit()  # whatever the probe did is now stored

    assert await rows_of(world.engine, world.alice_id) == before


async def test_owner_reaches_own_rows(world: World) -> None:
    """The scope does not get in the owner's way."""
    first = world.alice_tasks[0]
    assert (await world.alice.get(first)).title == "alice 1"
    assert (await world.alice.get_row(first))["title"] == "alice 1"
    assert await world.alice.count() == 2
    updated = await world.alice.update_values(first, {"completed": True})
    assert updated["completed"] is True
    [bulk] = await world.alice.update_many([{"id": first, "title": "renamed"}])  # type: ignore[list-item]
    assert bulk.title == "renamed"
    await world.alice.delete(world.alice_tasks[1])
    await world.session.commit()
    assert [(row[0], row[2], bool(row[4])) for row in await rows_of(world.engine, world.alice_id)] == [
        (first, "renamed", True),
        (world.alice_tasks[2], "alice 3, in the trash", False),  # the trash is not the live view's to touch
    ]
    restored = await world.alice.restore(world.alice_tasks[2])
    assert restored["deleted_at"] is None
    trashed = await world.alice.trash(first, now=datetime.now(UTC))
    assert trashed["deleted_at"] is not None
    await world.alice.purge(first)
    assert [row[0] for row in await rows_of(world.engine, world.alice_id)] == [world.alice_tasks[2]]


async def test_conditional_writes_check_the_version_in_the_statement(world: World) -> None:
    """``versions=`` makes a write happen only at those versions; every write adds one to the version."""
    first, second, _ = world.alice_tasks
    updated = await world.alice.update_values(first, {"title": "v2"}, versions=[1])
    assert updated["version"] == 2
    with pytest.raises(StaleVersionError) as stale:
        await world.alice.update_values(first, {"title": "lost"}, versions=[1])
    assert stale.value.current is not None  # the row as it is now, for the 412's body
    assert (stale.value.current["title"], stale.value.current["version"]) == ("v2", 2)
    assert (await world.alice.update_values(first, {"title": "v3"}, versions=[5, 2]))["version"] == 3
    assert (await world.alice.update_values(first, {"title": "v4"}))["version"] == 4  # unconditional
    with pytest.raises(StaleVersionError):
        await world.alice.delete_one(second, versions=[7])
    with pytest.raises(StaleVersionError):
        await world.alice.delete_one(second, versions=[])
    await world.alice.delete_one(second, versions=[1])
    with pytest.raises(NotFoundError):  # gone: not found, whatever the versions
        await world.alice.delete_one(second, versions=[1])
    await world.session.commit()
    assert [(row[0], row[2]) for row in await rows_of(world.engine, world.alice_id)][:1] == [(first, "v4")]


async def test_every_kind_of_update_adds_one_to_the_version(world: World) -> None:
    """The column's ``onupdate`` covers Advanced Alchemy's own update paths too (ORM flush, bulk by key)."""
    first = world.alice_tasks[0]
    assert (await world.alice.update(Task(id=first, title="orm"))).version == 2
    [bulk] = await world.alice.update_many([{"id": first, "title": "bulk"}])  # type: ignore[list-item]
    assert bulk.version == 3
    await world.session.commit()  # the request path's statement runs on a connection of its own
    assert (await world.alice.update_values(first, {"title": "values"}))["version"] == 4


async def test_repository_requires_an_owner(world: World) -> None:
    with pytest.raises(TypeError):
        TaskRepository(session=world.session)  # type: ignore[call-arg]
    with pytest.raises(OwnerScopeError):
        TaskRepository(owner_id="", session=world.session)


async def test_repository_refuses_a_statement_over_another_table(world: World) -> None:
    """A statement given to the constructor is checked once, there (the hot path then trusts it)."""
    with pytest.raises(OwnerScopeError):
        TaskRepository(owner_id=world.mallory_id, session=world.session, statement=cast("Any", select(aliased(Task))))


async def test_a_request_path_repository_has_no_session_to_fall_back_on(world: World) -> None:
    """Built with an executor only (as the routes build it): the request path's methods work, Advanced Alchemy's
    session methods fail at once and say why, rather than opening connections of another pool."""
    tasks = TaskRepository(owner_id=world.alice_id, executor=world.database)
    assert (await tasks.get_row(world.alice_tasks[0]))["title"] == "alice 1"
    with pytest.raises(RuntimeError, match="request path"):
        await tasks.get(world.alice_tasks[0])
    with pytest.raises(TypeError):
        TaskRepository(owner_id=world.alice_id)


async def test_repository_refuses_a_cache(world: World) -> None:
    with pytest.raises(OwnerScopeError):
        TaskRepository(owner_id=world.alice_id, session=world.session, cache_manager=object())
    world.session.info["cache_manager"] = object()  # AA's other way in: ignored by the owned repository
    try:
        assert TaskRepository(owner_id=world.alice_id, session=world.session)._cache_manager is None
    finally:
        del world.session.info["cache_manager"]
