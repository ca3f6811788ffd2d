"""Does the time of a list grow with the table? Time the app's own list query at two table sizes.

Before timing, the chosen users' rows are read once in each database, so both are timed with those rows in
PostgreSQL's buffers: what is compared is the statements' work, not whether the first variant that reads
table rows (the index-only ones read none) found them cached. Each user's fastest try counts (slower ones
are this machine's noise). The change feed is timed the same way: the first page of an initial sync
(``feed: initial``) and a page of the last 20 changes after a cursor (``feed: after cursor``), through
``db.feed.changes``.

Both databases hold users with the same number of tasks each (seed them with ``bench.seed``: for example
100 users x 100 tasks = 10k, and 10,000 users x 100 tasks = 1M). For each list variant this calls
``TaskRepository.page()`` (the statement the list route runs, with the owner condition) for the same
number of users in each database and compares the medians (each through the request path: one pooled
connection, the statement built once per shape). Issue 3's bar: within 1.2x.

    uv run python -m bench.scaling \\
        --small postgresql://postgres@127.0.0.1:5432/bench_10k \\
        --large postgresql://postgres@127.0.0.1:5432/bench_main
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.tasks.listing import ListQuery
from config.settings import DatabaseLimits
from db.database import open_database
from db.feed import changes, last_seq
from db.models import Task
from db.repositories import TaskRepository

LIMIT = 20
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "status=pending": {"status": "pending"},
    "priority=high": {"priorities": ("high",)},
    "tag=work": {"tags": ("work",)},
    "due window": {"due_after": datetime(2025, 1, 1, tzinfo=UTC), "due_before": datetime(2027, 1, 1, tzinfo=UTC)},
    "q=report": {"q": "report"},
    "sort=title": {"sort": "title"},
    "sort=due_date": {"sort": "due_date"},
    "sort=due_date desc": {"sort": "due_date", "order": "desc"},
    "sort=priority": {"sort": "priority"},
    "sort=updated": {"sort": "updated"},
}

FEED_VARIANTS = ("feed: initial", "feed: after cursor")


def _keep_best(best: dict[str, float], owner: str, started: float) -> None:
    elapsed = (time.perf_counter() - started) * 1000
    best[owner] = min(best.get(owner, elapsed), elapsed)


async def time_lists(url: str, users: int, rounds: int) -> dict[str, float]:
    """Milliseconds of one page (with its total) per variant: each user's fastest of ``rounds`` (the statement's
    own cost; slower tries are this machine's noise), then the median over ``users`` users."""
    database = open_database(url, DatabaseLimits())
    try:
        async with AsyncSession(database.engine) as session:
            owners = list((await session.scalars(select(Task.user_id).distinct().limit(users * 4))).all())
        chosen = random.Random(7).sample(owners, min(users, len(owners)))  # noqa: S311 - a sample, not a secret
        async with AsyncSession(database.engine) as session:  # the same cache state in both databases (below)
            await session.execute(select(func.count(Task.description)).where(Task.user_id.in_(chosen)))
        medians: dict[str, float] = {}
        for name in FEED_VARIANTS:
            best: dict[str, float] = {}
            for _ in range(rounds):
                for owner in chosen:
                    tasks = TaskRepository(owner_id=owner, executor=database)
                    last = await last_seq(tasks)
                    after, since = (0, last) if name == "feed: initial" else (max(last - LIMIT, 0), None)
                    started = time.perf_counter()
                    await changes(tasks, after=after, since=since, limit=LIMIT + 1)
                    _keep_best(best, owner, started)
            medians[name] = statistics.median(best.values())
        for name, options in VARIANTS.items():
            best = {}
            for _ in range(rounds):
                for owner in chosen:
                    query = ListQuery(owner=owner, **options)  # type: ignore[arg-type]
                    tasks = TaskRepository(owner_id=owner, executor=database)
                    started = time.perf_counter()
                    await tasks.page(query, limit=LIMIT + 1)
                    _keep_best(best, owner, started)
            medians[name] = statistics.median(best.values())
        return medians
    finally:
        await database.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", required=True, help="URL of the database with the small table")
    parser.add_argument("--large", required=True, help="URL of the database with the large table")
    parser.add_argument("--users", type=int, default=100, help="users timed in each database")
    parser.add_argument("--rounds", type=int, default=3, help="passes over those users per variant")
    args = parser.parse_args()

    small = await time_lists(args.small, args.users, args.rounds)
    large = await time_lists(args.large, args.users, args.rounds)
    worst = 0.0
    print("| variant | small table ms | large table ms | large / small |")
    print("|---|---:|---:|---:|")
    for name in [*FEED_VARIANTS, *VARIANTS]:
        ratio = large[name] / small[name]
        worst = max(worst, ratio)
        print(f"| {name} | {small[name]:.3f} | {large[name]:.3f} | {ratio:.2f} |")
    print(f"\nworst ratio: {worst:.2f} (target: at most 1.20)")
    return 0 if worst <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
