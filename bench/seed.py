"""Load N users x M tasks into PostgreSQL, fast: ``uv run python -m bench.seed --users 10000 --tasks-per-user 100``.

The database is created if missing and migrated to head (the schema is the app's own). Then, in one
transaction, the table is emptied, its secondary indexes are dropped, the rows are streamed in with
``COPY`` (asyncpg ``copy_records_to_table``), and the indexes are rebuilt from their own definitions;
``VACUUM (ANALYZE)`` follows, so the planner has statistics and index-only scans a visibility map.

The data looks like a real task list: titles and tags from a vocabulary, a few descriptions, 35 % of tasks
without a due date, more completed tasks among old ones, creation times spread over two years and stored
in creation order (one user's tasks are scattered across the table, as they are in production).
It is deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import string
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.databases import DEFAULT_DATABASE_URL, asyncpg_dsn, create_database
from db.schema_migrations import upgrade

COLUMNS = (
    "user_id",
    "title",
    "description",
    "completed",
    "priority",
    "due_date",
    "tags",
    "tag_keys",
    "created_at",
    "updated_at",
    "change_seq",
)
HISTORY_DAYS = 730
USER_ID_ALPHABET = string.ascii_letters + string.digits

VERBS = [
    "Buy", "Call", "Email", "Fix", "Review", "Write", "Plan", "Book", "Pay", "Clean", "Schedule", "Prepare",
    "Send", "Update", "Order", "Pick up", "Return", "Renew", "Cancel", "Check", "Organize", "Read", "Finish",
    "Draft", "Submit", "Research", "Back up", "Replace", "Water", "Print",
]  # fmt: skip
OBJECTS = [
    "milk", "the dentist", "mom", "the quarterly report", "the bike tire", "PR #{n}", "the blog post",
    "flights to Lisbon", "the electricity bill", "the garage", "a team offsite", "slides for Monday",
    "the contract", "new printer ink", "library books", "passport", "gym membership", "insurance claim",
    "tax documents", "the onboarding guide", "birthday gift for Sam", "the kitchen sink", "invoice #{n}",
    "meeting notes", "the budget spreadsheet", "car service", "the landlord", "groceries", "the plants",
    "photos from the trip", "the API design doc", "issue #{n}", "the release checklist", "a haircut",
    "the vet appointment", "the laptop backup", "hotel in Porto", "the recycling", "concert tickets",
    "the roadmap",
]  # fmt: skip
SUFFIXES = ["", "", "", "", " before Friday", " today", " this week", " (again)", " for the team", " asap"]
DESCRIPTIONS = [
    "Ask about the weekend opening hours.",
    "See the thread from last week for context.",
    "Needs the numbers from finance first.",
    "Remember the receipt.",
    "Two options; compare prices before deciding.",
    "Blocked until the new account is approved.",
    "Follow up if there is no answer by Thursday.",
    "Details are in the shared drive, folder 2026.",
    "Low effort, but keeps slipping.",
    "Check with Alex whether this is still needed.",
]
TAGS = [
    "work", "home", "errands", "Urgent", "finance", "health", "family", "shopping", "reading", "travel",
    "car", "garden", "admin", "Q3-planning", "backend", "frontend", "ops", "hiring", "school", "fitness",
    "bills", "calls", "email", "later", "someday", "waiting", "review", "docs", "meetings", "personal",
    "Kids", "pets", "house", "taxes", "insurance", "gifts", "friends", "learning", "side-project", "cleanup",
]  # fmt: skip
TAG_COUNTS = (0, 1, 1, 1, 2, 2, 2, 3, 3, 4)  # how many tags a task has, drawn uniformly from this list
PRIORITIES = (1, 1, 1, 2, 2, 2, 2, 2, 3, 3)  # 30 % low, 50 % medium, 20 % high
NULL_DUE_SHARE = 0.35
DESCRIPTION_SHARE = 0.4


def user_id(seed: int, index: int) -> str:
    """A stable id shaped like Better Auth's (32 letters and digits) for user ``index`` of a seed."""
    digest = hashlib.sha256(f"bench-user:{seed}:{index}".encode()).digest()
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(32):
        number, rest = divmod(number, len(USER_ID_ALPHABET))
        chars.append(USER_ID_ALPHABET[rest])
    return "".join(chars)


def title_pool(rng: random.Random, size: int) -> list[str]:
    """Realistic titles: a verb, an object (some with a number) and sometimes a deadline."""
    titles = []
    for _ in range(size):
        thing = rng.choice(OBJECTS).replace("{n}", str(rng.randint(10, 9999)))
        titles.append(f"{rng.choice(VERBS)} {thing}{rng.choice(SUFFIXES)}")
    return titles


def tag_pool(rng: random.Random, size: int) -> list[tuple[list[str], list[str]]]:
    """(tags, tag_keys) pairs: 0 to 4 distinct tags each, a few common ones much more frequent."""
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(TAGS))]
    pool: list[tuple[list[str], list[str]]] = []
    for _ in range(size):
        tags: list[str] = []
        wanted = rng.choice(TAG_COUNTS)
        while len(tags) < wanted:
            tag = rng.choices(TAGS, weights)[0]
            if tag not in tags:
                tags.append(tag)
        pool.append((tags, [tag.casefold() for tag in tags]))
    return pool


@dataclass(frozen=True, slots=True)
class SeedPlan:
    """What to load."""

    users: int
    tasks_per_user: int
    seed: int = 42

    @property
    def total(self) -> int:
        """The number of tasks."""
        return self.users * self.tasks_per_user


def records(plan: SeedPlan, now: datetime) -> Iterator[tuple[object, ...]]:
    """The rows, in creation order across all users (so one user's tasks are spread over the table)."""
    rng = random.Random(plan.seed)  # noqa: S311 - test data, not secrets
    ids = [user_id(plan.seed, index) for index in range(plan.users)]
    horizon = HISTORY_DAYS * 86400.0
    # Each user joined at some point in the last two years and created tasks since.
    joined = [rng.uniform(0.0, horizon * 0.95) for _ in range(plan.users)]
    stamps = sorted(
        (rng.uniform(joined[user], horizon), user) for user in range(plan.users) for _ in range(plan.tasks_per_user)
    )
    titles = title_pool(rng, 20_000)
    tag_sets = tag_pool(rng, 5_000)
    start = now - timedelta(days=HISTORY_DAYS)
    day = timedelta(days=1)
    written = [0] * plan.users  # each user's change feed numbers their tasks in creation order
    for offset, user in stamps:
        written[user] += 1
        created = start + timedelta(seconds=offset)
        age = 1.0 - offset / horizon  # 1 for the oldest possible task, 0 for one created just now
        roll = rng.random()
        completed = roll < 0.15 + 0.7 * age
        edited = rng.random() < 0.3
        updated = min(now, created + timedelta(seconds=rng.uniform(60, 30 * 86400))) if edited or completed else created
        due: datetime | None = None
        if rng.random() >= NULL_DUE_SHARE:
            due = (created + rng.uniform(-1, 60) * day).replace(microsecond=0)
            if rng.random() < 0.5:  # half are bare dates: midnight UTC
                due = due.replace(hour=0, minute=0, second=0)
        tags, keys = rng.choice(tag_sets)
        yield (
            ids[user],
            rng.choice(titles),
            rng.choice(DESCRIPTIONS) if rng.random() < DESCRIPTION_SHARE else None,
            completed,
            rng.choice(PRIORITIES),
            due,
            tags,
            keys,
            created,
            updated,
            written[user],
        )


async def seed(database_url: str, plan: SeedPlan, *, log: bool = True) -> float:
    """Replace the tasks in ``database_url`` with ``plan``'s; returns the seconds it took (migrations aside)."""

    def say(message: str) -> None:
        if log:
            print(message, file=sys.stderr, flush=True)

    if await create_database(database_url):
        say("created the database")
    await asyncio.to_thread(upgrade, asyncpg_dsn(database_url))
    started = time.perf_counter()
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        await connection.execute("SET maintenance_work_mem = '512MB'")
        async with connection.transaction():
            indexes = await connection.fetch(
                """
                SELECT i.indexname, i.indexdef FROM pg_indexes i
                WHERE i.schemaname = current_schema() AND i.tablename = 'tasks'
                  AND NOT EXISTS (
                    SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.contype IN ('p', 'u')
                  )
                """
            )
            await connection.execute("TRUNCATE tasks, task_feeds, task_tombstones RESTART IDENTITY")
            for index in indexes:
                await connection.execute(f'DROP INDEX "{index["indexname"]}"')
            rows = records(plan, datetime.now(UTC).replace(microsecond=0))
            # The rows carry their feed numbers; the triggers that number single writes would take a row lock
            # per task. Off for the copy only, inside this transaction.
            await connection.execute("ALTER TABLE tasks DISABLE TRIGGER USER")
            await connection.copy_records_to_table("tasks", records=rows, columns=COLUMNS)
            await connection.execute("ALTER TABLE tasks ENABLE TRIGGER USER")
            await connection.execute(
                "INSERT INTO task_feeds (user_id, last_seq) SELECT user_id, max(change_seq) FROM tasks GROUP BY user_id"
            )
            say(f"copied {plan.total:,} tasks in {time.perf_counter() - started:.1f} s")
            for index in indexes:
                await connection.execute(index["indexdef"])
            say(f"rebuilt {len(indexes)} indexes at {time.perf_counter() - started:.1f} s")
        await connection.execute("VACUUM (ANALYZE) tasks")
    finally:
        await connection.close()
    elapsed = time.perf_counter() - started
    say(f"seeded {plan.users:,} users x {plan.tasks_per_user:,} tasks = {plan.total:,} tasks in {elapsed:.1f} s")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="created if missing (%(default)s)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--tasks-per-user", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42, help="random seed (the data is deterministic)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.tasks_per_user < 1:
        parser.error("--users and --tasks-per-user must be at least 1")
    asyncio.run(seed(args.database_url, SeedPlan(args.users, args.tasks_per_user, args.seed)))


if __name__ == "__main__":
    main()
