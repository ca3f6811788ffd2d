"""What one list request costs the server, and where that goes: ``uv run python -m bench.profile_request``.

The app is built and started in this process (as ``manage.py serve`` builds it, with production settings),
and ``GET /api/{user}/tasks?limit=20`` is sent to it directly as an ASGI call, one after another, for seeded
users with their own tokens: no HTTP server and no load generator share the CPU, so the process's own CPU
time per request is what the app and its driver spend (PostgreSQL's work is in another process and not
counted). ``--profile`` samples the loop with py-spy (installed separately: ``pip install py-spy``) and
groups the samples by layer. bench/README.md shows this for one commit before the
performance work and for the current one.

    uv run python -m bench.profile_request --database-url postgresql://postgres@127.0.0.1:5432/bench_main
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import jwt

from bench.databases import DEFAULT_DATABASE_URL, asyncpg_dsn

LAYERS: Sequence[tuple[str, str]] = (
    (r"sqlalchemy|advanced_alchemy", "SQLAlchemy and Advanced Alchemy"),
    (r"(^|/)asyncpg/", "asyncpg (the driver)"),
    (r"(^|/)jwt/|cryptography", "token signature check (PyJWT)"),
    (r"^(?!.*site-packages)(.*/)?db/", "our data layer (pool, repository, statements)"),
    (r"^(?!.*site-packages)(.*/)?app/tasks/", "our route code (controller, listing, schemas)"),
    (r"^(?!.*site-packages)(.*/)?app/", "our access check, edge and errors"),
    (r"litestar", "Litestar (routing, DI, parameters, response)"),
    (r"msgspec", "msgspec"),
)


async def users_and_tokens(database_url: str, secret: str, count: int) -> list[tuple[str, str]]:
    """``count`` seeded users with at least 20 tasks each, and an HS256 token for each."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT user_id FROM tasks GROUP BY user_id HAVING count(*) >= 20 ORDER BY md5(user_id) LIMIT $1", count
        )
    finally:
        await connection.close()
    now = int(time.time())
    claims = [{"sub": row["user_id"], "iat": now, "exp": now + 3600} for row in rows]
    return [(c["sub"], jwt.encode(c, secret, algorithm="HS256")) for c in claims]


async def drive(database_url: str, requests: int, warmup: int) -> dict[str, float]:
    """Send ``warmup + requests`` list requests to the app in this process; CPU and wall time per request."""
    secret = secrets.token_urlsafe(48)
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "BETTER_AUTH_SECRET": secret,
            "APP_ENV": "production",
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT": "1000000/minute",  # the production limiter on, with a budget no run spends
        }
    )
    from app.asgi import create_app  # noqa: PLC0415 - the environment above must be set first

    users = await users_and_tokens(database_url, secret, 100)
    app: Any = create_app()
    statuses: collections.Counter[int] = collections.Counter()

    async def call(user: str, token: str) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/api/{user}/tasks",
            "raw_path": f"/api/{user}/tasks".encode(),
            "query_string": b"limit=20",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1

        await app(scope, receive, send)

    async def measured(n: int) -> None:  # its own frame, so the profile can tell measured requests from the rest
        await call(*users[n % len(users)])

    async with app.lifespan():
        for n in range(warmup):
            await call(*users[n % len(users)])
        cpu, wall = time.process_time(), time.perf_counter()
        for n in range(requests):
            await measured(n)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if set(statuses) != {200}:
        raise SystemExit(f"not every request answered 200: {dict(statuses)}")
    return {"cpu_us": cpu / requests * 1e6, "wall_us": wall / requests * 1e6, "requests": requests}


def layers(raw_profile: Path) -> list[tuple[str, float]]:
    """Shares of the sampled time by layer (py-spy's raw format): each sample goes to the innermost frame that
    belongs to a known layer; uvicorn is absent here (no server), the harness and the event loop are "other"."""
    totals: collections.Counter[str] = collections.Counter()
    for line in raw_profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "measured (" not in stack:  # only the measured requests: not imports, start-up, warm-up
            continue
        paths = [match.group(1) for match in re.finditer(r"\(([^()]*?):\d+\)", stack)]
        layer = next(
            (name for path in reversed(paths) for pattern, name in LAYERS if re.search(pattern, path)),
            "other (the event loop, the standard library)",
        )
        totals[layer] += int(count)
    seen = sum(totals.values()) or 1
    return [(name, 100 * count / seen) for name, count in totals.most_common()]


def main(argv: Sequence[str] | None = None) -> None:
    """Measure (and with ``--profile``, sample) the list request."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="a seeded database")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="also sample with py-spy and group by layer")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile and not args.child:
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            raise SystemExit("py-spy is not installed: pip install py-spy")
        with tempfile.TemporaryDirectory() as scratch:
            raw = Path(scratch) / "profile.txt"
            command = [sys.executable, "-m", "bench.profile_request", "--child", *(argv or sys.argv[1:])]
            command.remove("--profile")
            subprocess.run(  # noqa: S603 - a fixed command line
                [py_spy, "record", "--rate", "500", "--format", "raw", "--output", str(raw), "--", *command],
                check=True,
            )
            for name, share in layers(raw):
                print(f"{share:5.1f} %  {name}")
        return
    measured = asyncio.run(drive(args.database_url, args.requests, args.warmup))
    print(
        f"list of 20, one request at a time, {measured['requests']:.0f} requests: "
        f"{measured['cpu_us']:.0f} µs of this process's CPU and {measured['wall_us']:.0f} µs of wall time each"
    )


if __name__ == "__main__":
    main()
