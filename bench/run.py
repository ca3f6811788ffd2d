"""Drive ours, FastAPI + SQLModel and bare ASGI with wrk, side by side, and report: ``uv run python -m bench.run``.

Every app is started on a free port with ``--workers`` (ours twice: with its production rate limiter, and
with rate limits off) and is ready once an authenticated list answers. Then for each workload, app after
app, wrk runs (a warm-up, then the measured run) while the RSS of the server's process tree is sampled, and
afterwards the tasks it created are deleted and the table vacuumed, so every run starts from the same data.
Ours then serves the mix to more clients (``--stress-connections``), and each of its routes is called
behind a proxy that counts the statements and round trips it sends (``bench/round_trips.py``).
Every request is made for one of ``--sample-users`` seeded users, picked at random, with that user's own
token. The report (Markdown and JSON) has requests/s, p50/p95/p99, errors and peak RSS per app and
workload, the ratios ours ÷ bare and ours ÷ FastAPI from this one run, issue 9's targets, the round trips,
and the ``EXPLAIN (ANALYZE, BUFFERS)`` plans of the list queries our app runs for one seeded user.

``--quick`` is the smoke test the test suite runs: a throwaway database (created, seeded with 20 x 20 tasks,
dropped), 2 s per workload, 8 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import jwt
import psutil  # type: ignore[import-untyped]  # psutil ships no type information

from bench.databases import DEFAULT_DATABASE_URL, asyncpg_dsn, database_name, drop_database
from bench.seed import SeedPlan, seed

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WRK_SCRIPT = BENCH / "wrk" / "tasks.lua"
WORKLOADS = ("list", "get", "create", "update", "mix", "feed")
OURS_ONLY = frozenset({"feed"})  # routes the baselines do not have (the change feed)
APPS = ("ours", "ours-nolimit", "fastapi", "bare")
OURS = ("ours", "ours-nolimit")
LABELS = {
    "ours": "ours (Litestar + AA), production settings: rate limiter on (in memory, a budget the load cannot "
    "spend), default pool",
    "ours-nolimit": "ours with rate limits off",
    "fastapi": "FastAPI + SQLModel",
    "bare": "bare ASGI + asyncpg",
}
# Issue 9's targets, per workload: ours ÷ bare at least, ours ÷ FastAPI at least, p99 at most (ms).
TARGETS = {
    "list": (0.5, 2.0, 50.0),
    "get": (0.5, 2.0, 50.0),
    "create": (0.4, 2.0, 60.0),
    "update": (0.4, 2.0, 60.0),
    "mix": (0.4, 2.0, 60.0),
}
STRESS_P95_MS = 250.0
RSS_LIMIT_MB = 150.0
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
EXPLAIN_PAGE = 20  # the page size whose plans the report shows (limit=20, as the list workload asks)
RSS_SAMPLE_SECONDS = 0.1
SAFE_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
MAX_TASK_IDS_PER_USER = 200
TOKEN_LIFETIME_SECONDS = 24 * 3600
QUICK_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SETTLE_TIMEOUT_SECONDS = 15.0
SETTLE_QUIET_POLLS = 3


@dataclass(frozen=True, slots=True)
class Options:
    """What to run."""

    database_url: str
    apps: tuple[str, ...]
    workloads: tuple[str, ...]
    workers: int
    connections: int
    threads: int
    duration: int
    warmup: int
    sample_users: int
    output_dir: Path
    explain: bool
    quick: bool
    stress_connections: tuple[int, ...] = (100, 200)
    stress_duration: int = 30
    round_trips: bool = True
    throwaway: bool = False  # a database made for this run (quick mode), dropped at the end


@dataclass(slots=True)
class Result:
    """One app under one workload."""

    app: str
    workload: str
    requests: int
    seconds: float
    requests_per_second: float
    latency_ms: dict[str, float]
    errors: int
    socket_errors: dict[str, int]
    statuses: dict[str, int]
    peak_rss_mb: float
    peak_process_rss_mb: float
    processes: int
    connections: int = 0


@dataclass(slots=True)
class Explained:
    """The plan of one statement our app runs for a list request."""

    variant: str
    kind: str
    sql: str
    plan: str
    indexes: list[str] = field(default_factory=list)
    seq_scan: bool = False
    sort_node: bool = False
    execution_ms: float | None = None


# -- servers ------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(app: str, port: int, workers: int) -> list[str]:
    """How each app is started: ours exactly as deployed (``manage.py serve``), the baselines by uvicorn."""
    if app in OURS:
        return [
            sys.executable,
            "manage.py",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    module = {"fastapi": "bench.baselines.fastapi_sqlmodel:app", "bare": "bench.baselines.bare_asgi:app"}[app]
    return [
        sys.executable, "-m", "uvicorn", module, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip


class Server:
    """One app's server process (in its own process group), its log, and its process tree's memory."""

    def __init__(self, app: str, port: int, workers: int, env: dict[str, str], log_path: Path) -> None:
        self.app = app
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - a fixed command line
            server_command(app, port, workers),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for error messages."""
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, path: str, token: str, deadline_seconds: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until an authenticated GET of ``path`` answers 200; fail if the process dies or time runs out."""
        deadline = time.monotonic() + deadline_seconds
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited with {self.process.returncode}:\n{self.log_tail()}")
            request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - our own loopback URL
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"{self.app} not ready after {deadline_seconds:.0f} s ({last}):\n{self.log_tail()}")

    def tree(self) -> list[psutil.Process]:
        """The server process and all its descendants (uvicorn's workers)."""
        try:
            parent = psutil.Process(self.process.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except ProcessLookupError:
                pass
        self._log.close()


class RssSampler(threading.Thread):
    """Samples the RSS of a server's process tree until stopped; keeps the peak sum and peak single process."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak_total = 0
        self.peak_process = 0
        self.processes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until :meth:`finish`."""
        while not self._stop_event.is_set():
            total = 0
            tree = self.server.tree()
            for process in tree:
                try:
                    rss: int = process.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.peak_process = max(self.peak_process, rss)
            self.peak_total = max(self.peak_total, total)
            self.processes = max(self.processes, len(tree))
            self._stop_event.wait(RSS_SAMPLE_SECONDS)

    def finish(self) -> None:
        """Stop sampling."""
        self._stop_event.set()
        self.join()


@contextmanager
def serving(app: str, options: Options, env: dict[str, str], ready_path: str, token: str) -> Iterator[Server]:
    """A running, ready server for ``app``; always stopped afterwards."""
    log_dir = options.output_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Server(app, free_port(), options.workers, env, log_dir / f"server-{app}.log")
    try:
        server.wait_ready(ready_path, token)
        yield server
    finally:
        server.stop()


# -- load ---------------------------------------------------------------------------------------------------


def run_wrk(
    server: Server,
    data_file: Path,
    workload: str,
    seconds: int,
    options: Options,
    raw_log: Path | None,
    connections: int | None = None,
) -> dict[str, Any]:
    """One wrk run; the parsed ``BENCH_RESULT`` line of the Lua ``done()`` hook."""
    command = [
        "wrk", "-t", str(options.threads), "-c", str(connections or options.connections), "-d", f"{seconds}s",
        "--timeout", "5s", "--latency", "-s", str(WRK_SCRIPT), server.url,
        "--", str(data_file), workload, str(secrets.randbelow(1_000_000)),
    ]  # fmt: skip
    completed = subprocess.run(  # noqa: S603 - a fixed command line
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if raw_log is not None:
        raw_log.write_text(completed.stdout + completed.stderr)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            parsed: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return parsed
    raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout[-2000:]}")


def measure(
    server: Server,
    data_file: Path,
    workload: str,
    options: Options,
    *,
    connections: int | None = None,
    duration: int | None = None,
) -> Result:
    """Warm up, then measure one workload while sampling the server's memory."""
    sampler = RssSampler(server)
    sampler.start()
    connections = connections or options.connections
    try:
        if options.warmup > 0:
            run_wrk(server, data_file, workload, options.warmup, options, None, connections)
        raw = options.output_dir / "logs" / f"wrk-{server.app}-{workload}-{connections}.txt"
        stats = run_wrk(server, data_file, workload, duration or options.duration, options, raw, connections)
    finally:
        sampler.finish()
    if server.process.poll() is not None:
        raise RuntimeError(f"{server.app} died during {workload}:\n{server.log_tail()}")
    seconds = stats["duration_us"] / 1e6
    statuses = {str(code): int(count) for code, count in stats["statuses"].items()}
    socket_errors = {kind: int(stats["errors"][kind]) for kind in ("connect", "read", "write", "timeout")}
    non_2xx = sum(count for code, count in statuses.items() if not code.startswith("2"))
    latency = stats["latency_us"]
    return Result(
        app=server.app,
        workload=workload,
        requests=int(stats["requests"]),
        seconds=round(seconds, 3),
        requests_per_second=round(stats["requests"] / seconds, 1) if seconds else 0.0,
        latency_ms={key: round(latency[key] / 1000, 2) for key in ("mean", "p50", "p90", "p95", "p99", "p999", "max")},
        errors=non_2xx + sum(socket_errors.values()),
        socket_errors=socket_errors,
        statuses=statuses,
        peak_rss_mb=round(sampler.peak_total / 2**20, 1),
        peak_process_rss_mb=round(sampler.peak_process / 2**20, 1),
        processes=sampler.processes,
        connections=connections,
    )


# -- data ---------------------------------------------------------------------------------------------------


async def sample_users(database_url: str, count: int) -> list[tuple[str, list[int]]]:
    """``count`` seeded users (a fixed pseudo-random choice) and their task ids, oldest first."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        rows = await connection.fetch(
            """
            SELECT user_id, (array_agg(id ORDER BY id))[1:$2] AS ids
            FROM tasks
            WHERE user_id IN (
              SELECT user_id FROM (SELECT DISTINCT user_id FROM tasks) AS owners
              WHERE user_id ~ '^[A-Za-z0-9_-]+$' ORDER BY md5(user_id) LIMIT $1
            )
            GROUP BY user_id ORDER BY md5(user_id)
            """,
            count,
            MAX_TASK_IDS_PER_USER,
        )
        # Read the sampled users' rows once, so the first app measured does not pay for a cold cache.
        await connection.fetchval(
            "SELECT count(*) FROM (SELECT title, description, tags FROM tasks WHERE user_id = ANY($1)) AS t",
            [row["user_id"] for row in rows],
        )
    finally:
        await connection.close()
    return [(row["user_id"], list(row["ids"])) for row in rows if SAFE_USER_ID.fullmatch(row["user_id"])]


def issue_token(secret: str, user_id: str) -> str:
    """An HS256 token for ``user_id``, as Better Auth would issue it."""
    now = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + TOKEN_LIFETIME_SECONDS}, secret, algorithm="HS256")


def write_lua_data(path: Path, users: list[tuple[str, list[int]]], tokens: list[str]) -> None:
    """The users, tokens and task ids, as a Lua file that the wrk script loads with ``dofile``."""
    lines = ["return {", "users = {"]
    lines += [f'"{user}",' for user, _ in users]
    lines += ["},", "tokens = {"]
    lines += [f'"{token}",' for token in tokens]
    lines += ["},", "tasks = {"]
    lines += ["{" + ",".join(str(task_id) for task_id in ids) + "}," for _, ids in users]
    lines += ["},", "}"]
    path.write_text("\n".join(lines) + "\n")


async def max_task_id(database_url: str) -> int:
    """The highest task id: the tasks above it after a run are the ones the run created."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        value: int | None = await connection.fetchval("SELECT max(id) FROM tasks")
        return value or 0
    finally:
        await connection.close()


async def remove_created(database_url: str, above: int) -> int:
    """Delete the tasks a run created and vacuum, so that the next workload starts from the same data.

    Requests still in flight when wrk stops may insert a task after the delete, so first wait (up to
    ``SETTLE_TIMEOUT_SECONDS``) until the database has no other active statement and no new task for a while.
    """
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        quiet, last = 0, None
        while quiet < SETTLE_QUIET_POLLS and time.monotonic() < deadline:
            busy, newest = await connection.fetchrow(
                """
                SELECT (SELECT count(*) FROM pg_stat_activity
                        WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()),
                       (SELECT max(id) FROM tasks)
                """
            )
            quiet = quiet + 1 if busy == 0 and newest == last else 0
            last = newest
            await asyncio.sleep(0.1)
        status: str = await connection.execute("DELETE FROM tasks WHERE id > $1", above)
        await connection.execute("DELETE FROM task_tombstones WHERE task_id > $1", above)  # left by that DELETE
        await connection.execute("VACUUM (ANALYZE) tasks")
    finally:
        await connection.close()
    return int(status.rsplit(maxsplit=1)[-1])


# -- EXPLAIN ------------------------------------------------------------------------------------------------

_INDEX_NODE = re.compile(r"(?:Index Only Scan|Index Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)")


async def explain_list_queries(database_url: str, user_id: str) -> list[Explained]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the statements our app runs for a page of 20, per list variant.

    The statements are captured from the app's own code: its ``ListQuery`` and owner-scoped repository,
    called as the list route calls them (``page()`` with ``limit + 1`` rows and the filter's total).
    """
    from app.tasks.listing import ListQuery  # noqa: PLC0415 - the app's stack, only for this step
    from db.database import DryRunExecutor  # noqa: PLC0415
    from db.repositories import TaskRepository  # noqa: PLC0415

    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        tag: str | None = await connection.fetchval(
            "SELECT t FROM tasks, unnest(tag_keys) AS t WHERE user_id = $1 "
            "GROUP BY t ORDER BY count(*) DESC, t LIMIT 1",
            user_id,
        )
        variants = [
            ("default", ListQuery(owner=user_id)),
            ("status=pending", ListQuery(owner=user_id, status="pending")),
            (f"tag={tag or 'work'}", ListQuery(owner=user_id, tags=(tag or "work",))),
            ("sort=due_date", ListQuery(owner=user_id, sort="due_date")),
            ("sort=priority", ListQuery(owner=user_id, sort="priority")),
            ("q=report", ListQuery(owner=user_id, q="report")),
        ]
        plans: list[Explained] = []
        for variant, query in variants:
            executor = DryRunExecutor("postgresql")
            repository = TaskRepository(owner_id=user_id, executor=executor)
            await repository.page(query, limit=EXPLAIN_PAGE + 1)  # records the statement it would run
            [(statement, values)] = executor.calls
            compiled = statement.for_postgres()
            sql = compiled.sql
            rows = await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *compiled.arguments(values))
            plan = "\n".join(str(row[0]) for row in rows)
            timing = re.search(r"Execution Time: ([\d.]+) ms", plan)
            plans.append(
                Explained(
                    variant=variant,
                    kind="page + total",
                    sql=" ".join(sql.split()),
                    plan=plan,
                    indexes=sorted(set(_INDEX_NODE.findall(plan))),
                    seq_scan="Seq Scan on tasks" in plan,
                    sort_node="Sort Key:" in plan,
                    execution_ms=float(timing.group(1)) if timing else None,
                )
            )
    finally:
        await connection.close()
    return plans


# -- report -------------------------------------------------------------------------------------------------


def ratio(results: dict[tuple[str, str], Result], workload: str, other: str, app: str = "ours") -> float | None:
    """``app`` ÷ ``other`` in requests/s for ``workload``."""
    ours, base = results.get((app, workload)), results.get((other, workload))
    if ours is None or base is None or not base.requests_per_second:
        return None
    return round(ours.requests_per_second / base.requests_per_second, 2)


def targets(results: dict[tuple[str, str], Result], stress: list[Result] | None = None) -> list[tuple[str, str, bool]]:
    """Issue 9's targets (one worker, 64 connections, 1M tasks) against this run: (target, measured, met)."""
    checks: list[tuple[str, str, bool]] = []
    for app in OURS:
        for workload, (bare_share, fastapi_times, p99_limit) in TARGETS.items():
            ours = results.get((app, workload))
            if ours is None:
                continue
            to_bare, to_fastapi = ratio(results, workload, "bare", app), ratio(results, workload, "fastapi", app)
            if to_bare is not None:
                checks.append((f"{app} {workload}: >= {bare_share} x bare", f"{to_bare:.2f} x", to_bare >= bare_share))
            if to_fastapi is not None:
                met = to_fastapi >= fastapi_times
                checks.append((f"{app} {workload}: >= {fastapi_times} x FastAPI", f"{to_fastapi:.2f} x", met))
            p99 = ours.latency_ms["p99"]
            checks.append((f"{app} {workload}: p99 <= {p99_limit:g} ms", f"{p99:.1f} ms", p99 <= p99_limit))
            checks.append((f"{app} {workload}: 0 errors", str(ours.errors), ours.errors == 0))
    for result in stress or []:
        p95 = result.latency_ms["p95"]
        name = f"{result.connections} connections, mix: 0 non-2xx and p95 <= {STRESS_P95_MS:g} ms"
        checks.append((name, f"{result.errors} errors, p95 {p95:.1f} ms", result.errors == 0 and p95 <= STRESS_P95_MS))
    ours_rss = [r.peak_process_rss_mb for (app, _), r in results.items() if app in OURS]
    ours_rss += [r.peak_process_rss_mb for r in stress or []]
    if ours_rss:
        worst = max(ours_rss)
        checks.append((f"peak RSS per worker <= {RSS_LIMIT_MB:g} MB", f"{worst:.0f} MB", worst <= RSS_LIMIT_MB))
    return checks


def results_table(results: dict[tuple[str, str], Result] | list[Result]) -> list[str]:
    """The main table, as Markdown lines."""
    rows = list(results.values()) if isinstance(results, dict) else results
    lines = [
        "| app | workload | connections | req/s | p50 ms | p95 ms | p99 ms | errors | peak RSS MB (tree) "
        "| peak RSS MB (process) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.app} | {r.workload} | {r.connections} | {r.requests_per_second:,.0f} | {r.latency_ms['p50']:.1f} | "
            f"{r.latency_ms['p95']:.1f} | {r.latency_ms['p99']:.1f} | {r.errors} | {r.peak_rss_mb:.0f} | "
            f"{r.peak_process_rss_mb:.0f} |"
        )
    return lines


def ratios_table(results: dict[tuple[str, str], Result], workloads: Sequence[str]) -> list[str]:
    """ours ÷ bare and ours ÷ FastAPI per workload (both configurations of ours), as Markdown lines."""

    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def p99(app: str, workload: str) -> str:
        result = results.get((app, workload))
        return "-" if result is None else f"{result.latency_ms['p99']:.1f}"

    lines = [
        "| workload | ours ÷ bare | ours ÷ FastAPI | limits off: ÷ bare | limits off: ÷ FastAPI "
        "| p99 ms ours / limits off / FastAPI / bare |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for workload in workloads:
        lines.append(
            f"| {workload} | {show(ratio(results, workload, 'bare'))} | {show(ratio(results, workload, 'fastapi'))} "
            f"| {show(ratio(results, workload, 'bare', 'ours-nolimit'))} "
            f"| {show(ratio(results, workload, 'fastapi', 'ours-nolimit'))} "
            f"| {p99('ours', workload)} / {p99('ours-nolimit', workload)} / {p99('fastapi', workload)} / "
            f"{p99('bare', workload)} |"
        )
    return lines


def round_trips_table(trips: list[Any]) -> list[str]:
    """Statements and round trips per route, as Markdown lines."""
    lines = ["| route | status | statements sent | round trips |", "|---|---:|---|---:|"]
    for trip in trips:
        statements = "; ".join(f"`{_short(sql)}`" for sql in trip.statements) or "none"
        lines.append(f"| {trip.route} | {trip.status} | {statements} | {trip.round_trips} |")
    return lines


def _short(sql: str) -> str:
    words = sql.split()
    verb = words[0].upper() if words else ""
    table = next((words[i + 1] for i, w in enumerate(words[:-1]) if w.upper() in {"FROM", "INTO", "UPDATE"}), "")
    return f"{verb} {table}".strip() if verb in {"SELECT", "INSERT", "UPDATE", "DELETE"} else " ".join(words[:6])


def git_revision() -> str:
    """The commit measured, marked ``+changes`` when the work tree differs from it (read-only git calls)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        clean = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head if clean.returncode == 0 else f"{head}+changes"


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render_markdown(
    meta: dict[str, Any],
    results: dict[tuple[str, str], Result],
    plans: list[Explained],
    stress: list[Result] | None = None,
    trips: list[Any] | None = None,
) -> str:
    """The report as Markdown."""
    lines = [
        "# Benchmark: ours vs FastAPI + SQLModel vs bare ASGI (the ceiling)",
        "",
        f"- when: {meta['started']} (commit {meta['commit']}); reproduce: `{meta['command']}`",
        f"- machine: {meta['cpus']} CPUs ({meta['cpu']}), {meta['memory_gb']} GiB; Python {meta['python']}; "
        f"{meta['postgres']}; 1-minute load average at start {meta['load_average_at_start']} (should be near 0)",
        f"- data: database `{meta['database']}`, {meta['tasks']:,} tasks of {meta['users']:,} users; "
        f"requests spread over {meta['sample_users']:,} of them, each with its own token",
        f"- load: wrk, {meta['connections']} connections, {meta['threads']} thread(s), "
        f"{meta['warmup']} s warm-up + {meta['duration']} s measured per workload; {meta['workers']} worker(s) per app",
        "- apps: " + "; ".join(f"`{app}` = {LABELS[app]}" for app in meta["apps"]),
        "- errors = non-2xx responses + socket errors (connect, read, write, timeout); RSS = the server's process "
        "tree, sampled every 0.1 s during the workload (tree = all processes; process = the largest one)",
        "",
        "## Results",
        "",
        *results_table(results),
        "",
        "## Ratios (one run, so the machine's noise hits all apps alike)",
        "",
        *ratios_table(results, meta["workloads"]),
        "",
    ]
    if stress:
        lines += [
            "## Many clients (ours, production settings, the mix, "
            f"{meta.get('stress_duration', '?')} s each, requests over {meta['sample_users']:,} users)",
            "",
            *results_table(stress),
            "",
        ]
    if trips:
        lines += [
            "## Round trips per route (ours, read off the wire; the second call of each route)",
            "",
            *round_trips_table(trips),
            "",
        ]
    checks = targets(results, stress)
    if checks:
        lines += ["## Targets (issue 9: one worker, 64 connections, 1M tasks)", "", "| target | measured | met |"]
        lines += ["|---|---:|---|"]
        lines += [f"| {name} | {value} | {'yes' if met else '**no**'} |" for name, value, met in checks]
        lines.append("")
    odd = {
        f"{r.app}/{r.workload}/{r.connections}": r.statuses for r in [*results.values(), *(stress or [])] if r.errors
    }
    if odd:
        lines += ["Status codes where there were errors: `" + json.dumps(odd) + "`", ""]
    lines += ["## List query plans (ours)", ""]
    if meta.get("explain_error"):
        lines += [f"EXPLAIN failed: `{meta['explain_error']}`", ""]
    elif plans:
        lines += [
            f"`EXPLAIN (ANALYZE, BUFFERS)` of the statements our app runs for `limit={EXPLAIN_PAGE}`, for user "
            f"`{meta['explain_user']}` ({meta['explain_user_tasks']} tasks), on the database above.",
            "",
            "A sort step means the index only found the user's rows and every one of them was read and sorted;",
            "without one the index delivers the page in order and the scan stops after `limit + 1` rows.",
            "",
            "| variant | statement | indexes used | seq scan | sort step | buffers | execution ms |",
            "|---|---|---|---|---|---:|---:|",
        ]
        for p in plans:
            ms = "-" if p.execution_ms is None else f"{p.execution_ms:.3f}"
            used = ", ".join(p.indexes) or "none"
            buffers = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", p.plan)
            touched = sum(int(n or 0) for n in buffers.groups()) if buffers else 0
            seq = "**yes**" if p.seq_scan else "no"
            lines.append(
                f"| {p.variant} | {p.kind} | {used} | {seq} | {'yes' if p.sort_node else 'no'} | {touched} | {ms} |"
            )
        lines.append("")
        for p in plans:
            lines += [f"### {p.variant}: {p.kind}", "", "```sql", p.sql, "```", "", "```", p.plan, "```", ""]
    else:
        lines += ["(not run)", ""]
    return "\n".join(lines)


def print_summary(
    results: dict[tuple[str, str], Result], workloads: Sequence[str], stress: list[Result], trips: list[Any]
) -> None:
    """The tables on stdout."""
    print()
    print("\n".join(results_table(results)))
    print()
    print("\n".join(ratios_table(results, workloads)))
    if stress:
        print()
        print("\n".join(results_table(stress)))
    if trips:
        print()
        print("\n".join(round_trips_table(trips)))
    for name, value, met in targets(results, stress):
        print(f"  {'ok  ' if met else 'MISS'} {name}: {value}")


# -- the run ------------------------------------------------------------------------------------------------


async def database_facts(database_url: str) -> dict[str, Any]:
    """Size of the data and the server's version."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        has_table = await connection.fetchval("SELECT to_regclass('tasks') IS NOT NULL")
        tasks = await connection.fetchval("SELECT count(*) FROM tasks") if has_table else 0
        users = await connection.fetchval("SELECT count(DISTINCT user_id) FROM tasks") if has_table else 0
        version: str = await connection.fetchval("SELECT version()")
    finally:
        await connection.close()
    return {"tasks": tasks, "users": users, "postgres": version.split(" on ", maxsplit=1)[0]}


def app_env(app: str, env: dict[str, str]) -> dict[str, str]:
    """The environment ``app`` runs with: ``ours`` has a per-user budget no run spends, ``ours-nolimit`` none."""
    if app == "ours":
        return {**env, "RATE_LIMIT": "1000000/minute"}
    if app == "ours-nolimit":
        return {**env, "RATE_LIMIT": "off", "RATE_LIMIT_ANONYMOUS": "off"}
    return env


def asyncpg_host_port(database_url: str) -> tuple[str, int]:
    """The host and port a PostgreSQL URL names (defaults: 127.0.0.1, 5432)."""
    parts = urlsplit(database_url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def _progress(result: Result) -> None:
    print(
        f"{result.app:12} {result.workload:7} c={result.connections:<4} {result.requests_per_second:9,.0f} req/s  "
        f"p95 {result.latency_ms['p95']:7.1f} ms  p99 {result.latency_ms['p99']:7.1f} ms  errors {result.errors}  "
        f"RSS {result.peak_rss_mb:.0f} MB",
        flush=True,
    )


def measure_apps(
    options: Options, env: dict[str, str], users: list[tuple[str, list[int]]], tokens: list[str]
) -> tuple[dict[tuple[str, str], Result], list[Result]]:
    """Every app under every workload, and ours under many clients; each run starts from the seeded data.

    All apps are up at once and each workload is run against every app back to back, so the apps a ratio
    compares were measured within a minute or two of each other: on a shared machine whose speed drifts
    (CPU steal), that matters more than anything else about the method.
    """
    results: dict[tuple[str, str], Result] = {}
    stress: list[Result] = []
    ready_path = f"/api/{users[0][0]}/tasks?limit=20"
    watermark = asyncio.run(max_task_id(options.database_url))
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch, ExitStack() as stack:
        data_file = Path(scratch) / "users.lua"
        write_lua_data(data_file, users, tokens)
        servers = {
            app: stack.enter_context(serving(app, options, app_env(app, env), ready_path, tokens[0]))
            for app in options.apps
        }
        for workload in options.workloads:
            for app, server in servers.items():
                if workload in OURS_ONLY and app not in OURS:
                    continue
                try:
                    result = measure(server, data_file, workload, options)
                finally:  # every run starts from the seeded data, vacuumed
                    asyncio.run(remove_created(options.database_url, watermark))
                results[(app, workload)] = result
                _progress(result)
        if "ours" in servers:  # many clients at once, with the production settings
            for connections in options.stress_connections:
                try:
                    result = measure(
                        servers["ours"],
                        data_file,
                        "mix",
                        options,
                        connections=connections,
                        duration=options.stress_duration,
                    )
                finally:
                    asyncio.run(remove_created(options.database_url, watermark))
                stress.append(result)
                _progress(result)
    return results, stress


def run(options: Options, command_line: str) -> dict[str, Any]:
    """Benchmark every app under every workload; write and return the report."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    facts = asyncio.run(database_facts(options.database_url))
    if not facts["tasks"]:
        raise SystemExit(f"{database_name(options.database_url)} has no tasks: run `python -m bench.seed` first")
    users = asyncio.run(sample_users(options.database_url, options.sample_users))
    secret = secrets.token_urlsafe(48)
    tokens = [issue_token(secret, user) for user, _ in users]
    # Ours runs with its production defaults (the default pool, the rate limiter on, counting in memory), but a
    # budget the load cannot spend: the benchmark measures the limiter's cost, not its refusals. "ours-nolimit"
    # turns the rate limits off, like the baselines, which have none.
    env = {
        **os.environ,
        "DATABASE_URL": options.database_url,
        "BETTER_AUTH_SECRET": secret,
        "APP_ENV": "production",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    for variable in os.environ:
        if variable.startswith(("DB_", "RATE_LIMIT")) or variable in {"WEB_CONCURRENCY", "HOST", "PORT", "REDIS_URL"}:
            env.pop(variable, None)
    meta: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "command": command_line,
        "commit": git_revision(),
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
        "database": database_name(options.database_url),
        **facts,
        "sample_users": len(users),
        "apps": list(options.apps),
        "workloads": list(options.workloads),
        "workers": options.workers,
        "connections": options.connections,
        "threads": options.threads,
        "duration": options.duration,
        "warmup": options.warmup,
        "stress_duration": options.stress_duration,
    }
    results, stress = measure_apps(options, env, users, tokens)
    trips: list[Any] = []
    if options.round_trips and "ours" in options.apps:
        from bench.round_trips import measure_round_trips  # noqa: PLC0415 - only for this step

        user, _ = users[0]
        host, port = asyncpg_host_port(options.database_url)
        log_path = options.output_dir / "logs" / "server-round-trips.log"
        try:
            trips = measure_round_trips(options.database_url, (host, port), user, tokens[0], env, log_path)
        except Exception as exc:  # the report says what broke; the measurements still stand
            meta["round_trips_error"] = f"{type(exc).__name__}: {exc}"
        finally:
            asyncio.run(remove_created(options.database_url, asyncio.run(max_task_id(options.database_url))))
    plans: list[Explained] = []
    if options.explain:
        user, ids = users[0]
        meta["explain_user"], meta["explain_user_tasks"] = user, len(ids)
        try:
            plans = asyncio.run(explain_list_queries(options.database_url, user))
        except Exception as exc:  # the report says what broke; the measurements still stand
            meta["explain_error"] = f"{type(exc).__name__}: {exc}"
    report = {
        "meta": meta,
        "results": [asdict(r) for r in results.values()],
        "ratios": {
            workload: {
                f"{app}/{other}": ratio(results, workload, other, app) for app in OURS for other in ("bare", "fastapi")
            }
            for workload in options.workloads
        },
        "stress": [asdict(r) for r in stress],
        "round_trips": [asdict(t) for t in trips],
        "targets": [{"target": name, "measured": value, "met": met} for name, value, met in targets(results, stress)],
        "explain": [asdict(p) for p in plans],
    }
    options.output_dir.mkdir(parents=True, exist_ok=True)
    (options.output_dir / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (options.output_dir / "latest.md").write_text(render_markdown(meta, results, plans, stress, trips))
    print_summary(results, options.workloads, stress, trips)
    print(f"\nreport: {options.output_dir / 'latest.md'} and latest.json")
    return report


def parse_options(argv: Sequence[str] | None) -> Options:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database-url", help=f"a seeded database (default {DEFAULT_DATABASE_URL})")
    parser.add_argument("--apps", default=",".join(APPS), help="comma-separated, from: %(default)s")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, from: %(default)s")
    parser.add_argument("--workers", type=int, default=1, help="server processes per app (%(default)s)")
    parser.add_argument("--connections", type=int, help="concurrent connections (64; quick: 8)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (%(default)s)")
    parser.add_argument("--duration", type=int, help="measured seconds per workload (15; quick: 2)")
    parser.add_argument("--warmup", type=int, help="warm-up seconds per workload (5; quick: 0)")
    parser.add_argument("--sample-users", type=int, help="users the requests are spread over (1000; quick: 20)")
    parser.add_argument("--output-dir", type=Path, help="where latest.md/.json go (bench/results; quick: .../quick)")
    parser.add_argument("--no-explain", action="store_true", help="skip the EXPLAIN plans")
    parser.add_argument(
        "--stress-connections",
        default=None,
        help="comma-separated connection counts for ours under the mix (100,200; quick: 16; empty: none)",
    )
    parser.add_argument("--stress-duration", type=int, help="seconds of each of those (30; quick: 2)")
    parser.add_argument("--no-round-trips", action="store_true", help="skip counting each route's round trips")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run on a throwaway database")
    parser.add_argument(
        "--postgres-url",
        default=QUICK_SERVER_URL,
        help="quick mode without --database-url: the server to make the throwaway database on (%(default)s)",
    )
    args = parser.parse_args(argv)
    apps = tuple(a for a in args.apps.split(",") if a)
    workloads = tuple(w for w in args.workloads.split(",") if w)
    if not apps or set(apps) - set(APPS):
        parser.error(f"--apps must be among {', '.join(APPS)}")
    if not workloads or set(workloads) - set(WORKLOADS):
        parser.error(f"--workloads must be among {', '.join(WORKLOADS)}")
    quick = bool(args.quick)

    def pick(value: int | None, normal: int, small: int) -> int:
        return value if value is not None else (small if quick else normal)

    options = Options(
        database_url=args.database_url or DEFAULT_DATABASE_URL,
        apps=apps,
        workloads=workloads,
        workers=args.workers,
        connections=pick(args.connections, 64, 8),
        threads=args.threads,
        duration=pick(args.duration, 15, 2),
        warmup=pick(args.warmup, 5, 0),
        sample_users=pick(args.sample_users, 1000, 20),
        output_dir=args.output_dir or (BENCH / "results" / ("quick" if quick else "")),
        explain=not args.no_explain,
        quick=quick,
        stress_connections=_counts(args.stress_connections, "16" if quick else "100,200"),
        stress_duration=pick(args.stress_duration, 30, 2),
        round_trips=not args.no_round_trips,
    )
    if options.workers < 1 or options.duration < 1 or options.warmup < 0 or options.sample_users < 1:
        parser.error("--workers, --duration and --sample-users must be positive, --warmup not negative")
    if options.connections < options.threads:
        parser.error("--connections must be at least --threads")
    if quick and args.database_url is None:
        throwaway = asyncpg_dsn(args.postgres_url, database=f"bench_quick_{secrets.token_hex(4)}")
        options = replace(options, database_url=throwaway, throwaway=True)
    return options


def _counts(raw: str | None, default: str) -> tuple[int, ...]:
    return tuple(int(part) for part in (default if raw is None else raw).split(",") if part.strip())


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (in quick mode on a throwaway database that is dropped afterwards)."""
    options = parse_options(argv)
    command_line = "uv run python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        if options.throwaway:
            asyncio.run(seed(options.database_url, SeedPlan(users=20, tasks_per_user=20), log=False))
        run(options, command_line.strip())
    finally:
        if options.throwaway:
            asyncio.run(drop_database(options.database_url))


if __name__ == "__main__":
    main()
