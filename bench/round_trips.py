"""Which statements and round trips each route makes, read off the wire for the benchmark report.

Ours is started as deployed (``manage.py serve``) with one pooled connection, behind a proxy that reads the
PostgreSQL protocol (``bench/pg_wire.py``); every route is called twice and the second call is recorded
(the first prepares its statement on the connection). ``tests/api/test_round_trips.py`` asserts the same in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.pg_wire import WireLog

ROOT = Path(__file__).resolve().parent.parent
READY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class RouteTrips:
    """What one route sent to the database."""

    route: str
    status: int
    statements: list[str]
    round_trips: int


class RecordingProxy:
    """A TCP proxy to PostgreSQL, in a thread of its own, that feeds every client byte to a :class:`WireLog`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.wire = WireLog()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the recording proxy did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def take(self) -> tuple[list[str], int]:
        """Statements and round trips since the last call (from the proxy's thread, safely)."""
        return asyncio.run_coroutine_threadsafe(self._take(), self._loop).result(10)

    async def _take(self) -> tuple[list[str], int]:
        return self.wire.take()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        link = id(writer)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if record:
                        self.wire.feed(link, data)
                    sink.write(data)
                    await sink.drain()

        await asyncio.wait(
            [asyncio.create_task(pump(reader, up_writer, True)), asyncio.create_task(pump(up_reader, writer, False))],
            return_when=asyncio.FIRST_COMPLETED,
        )
        writer.close()
        up_writer.close()
        self.wire.closed(link)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _call(
    base: str, method: str, path: str, token: str, body: bytes | None = None, **headers: str
) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(  # noqa: S310 - our own loopback URL
        base + path, data=body, method=method, headers={"Authorization": f"Bearer {token}", **headers}
    )
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@contextlib.contextmanager
def _serving(env: dict[str, str], log_path: Path) -> Iterator[str]:
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - a fixed command line
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ours exited with {process.returncode}: see {log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(base + "/health", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"ours did not start: see {log_path}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(30)


def measure_round_trips(
    database_url: str, upstream: tuple[str, int], user: str, token: str, env: dict[str, str], log_path: Path
) -> list[RouteTrips]:
    """Every route of ours, called as a client would, and what each sent to PostgreSQL."""
    with RecordingProxy(upstream) as proxy:
        proxied = database_url.replace(f"{upstream[0]}:{upstream[1]}", f"127.0.0.1:{proxy.port}", 1)
        if proxied == database_url:
            raise ValueError("--database-url must name its host and port explicitly to be proxied")
        server_env = {**env, "DATABASE_URL": proxied, "DB_POOL_SIZE": "1", "DB_MAX_OVERFLOW": "0"}
        with _serving(server_env, log_path) as base:
            tasks = f"/api/{user}/tasks"
            create_body = b'{"title": "counted", "priority": "high", "tags": ["a"], "due_date": "2026-12-24"}'

            def new_task() -> str:
                status, headers, _ = _call(base, "POST", tasks, token, create_body)
                if status != 201:
                    raise RuntimeError(f"creating a task answered {status}")
                location: str = headers["Location"]
                return location

            feed = f"/api/{user}/changes"

            def feed_after_cursor(_: str) -> tuple[int, Any, bytes]:
                first = _call(base, "GET", feed, token)  # an initial sync: where it begins, then a page
                cursor = json.loads(first[2])["cursor"]
                proxy.take()  # not the request under test
                return _call(base, "GET", f"{feed}?cursor={cursor}", token)

            routes: dict[str, Callable[[str], tuple[int, Any, bytes]]] = {
                "GET list (20 of a user's tasks)": lambda _: _call(base, "GET", tasks + "?limit=20", token),
                "GET one": lambda task: _call(base, "GET", task, token),
                "POST create": lambda _: _call(base, "POST", tasks, token, create_body),
                "PUT": lambda task: _call(base, "PUT", task, token, b'{"title": "put"}'),
                "PATCH": lambda task: _call(base, "PATCH", task, token, b'{"title": "patched"}'),
                "PATCH /complete (toggle)": lambda task: _call(base, "PATCH", task + "/complete", token),
                "DELETE (to the trash)": lambda task: _call(base, "DELETE", task, token),
                "GET changes (after a cursor)": feed_after_cursor,
                "POST create with Idempotency-Key": lambda _: _call(
                    base, "POST", tasks, token, create_body, **{"Idempotency-Key": os.urandom(8).hex()}
                ),
            }
            measured: list[RouteTrips] = []
            for name, call in routes.items():
                for attempt in range(2):  # the first prepares the route's statement on the connection
                    task = new_task()
                    proxy.take()
                    status, _, _ = call(task)
                    statements, round_trips = proxy.take()
                    if attempt == 1:
                        measured.append(RouteTrips(name, status, statements, round_trips))
            return measured
