"""``manage.py`` in real processes: :func:`manage` runs a command, :class:`ServeProcess` is the one server launcher.

A server's output goes to a file, never a pipe (a pipe nobody reads fills up under load and stalls the server);
the test sees the process id, its workers, its output and its exit status. :func:`serve_env` is the
environment of a server on a test database that accepts :func:`tests.support.tokens.bearer` tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]  # psutil ships no type information
import uvicorn

from tests.support.environment import clean_env
from tests.support.ports import free_port
from tests.support.tokens import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python manage.py *args`` from the project root; its output captured as text."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def serve_env(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a server on ``database_url`` that accepts :func:`tests.support.tokens.bearer` tokens."""
    return clean_env(data_dir, APP_ENV="test", DATABASE_URL=database_url, BETTER_AUTH_SECRET=TEST_SECRET, **settings)


class ServeProcess:
    """``python manage.py serve`` on a free port, its output in ``log``."""

    def __init__(self, env: Mapping[str, str], log: Path, *args: str, **popen: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--port", str(self.port), *args],
                cwd=ROOT,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                **popen,
            )

    @property
    def pid(self) -> int:
        """The process id of ``manage.py serve`` (the supervisor when there are several workers)."""
        return self.process.pid

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace")

    def wait_until_healthy(self, timeout: float = 90, path: str = "/health") -> None:
        """Wait until ``path`` (``/health``, or ``/health/ready`` to wait for the database too) answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a condition, bounded by the deadline
        raise AssertionError(f"server not healthy within {timeout}s:\n{self.output()}")

    def wait_for_output(self, text: str, count: int = 1, timeout: float = 90) -> None:
        """Wait until ``text`` has appeared ``count`` times in the output."""
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not printed {count} time(s) within {timeout}s:\n{self.output()}")
            time.sleep(0.05)  # polling a condition, bounded by the deadline

    def workers(self) -> list[psutil.Process]:
        """The worker processes (empty with one process, which serves itself)."""
        children = psutil.Process(self.pid).children()
        return [child for child in children if "spawn_main" in " ".join(child.cmdline())]

    def send(self, sig: signal.Signals) -> float:
        """Send ``sig`` to the server; returns the monotonic time it was sent."""
        self.process.send_signal(sig)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its status (negative: the signal that ended it)."""
        return self.process.wait(timeout=timeout)

    def stop(self) -> str:
        """SIGTERM, then SIGKILL if it does not stop (teardown); everything the server printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for worker in self.workers():
                    worker.kill()
                self.process.kill()
                self.process.wait()
        return self.output()


class Servers:
    """Starts servers whose output goes to ``folder``; :meth:`stop_all` stops those still running."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[ServeProcess] = []

    def start(self, env: Mapping[str, str], *args: str) -> ServeProcess:
        """Start ``manage.py serve *args`` with ``env``."""
        server = ServeProcess(env, self.folder / f"serve-{len(self.started)}.log", *args)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every server still running (a test's teardown)."""
        for server in self.started:
            server.stop()


@contextlib.asynccontextmanager
async def in_loop_server(app: Any) -> AsyncIterator[str]:
    """``app`` in a real uvicorn server on a free port in this event loop (so a proxy in the loop keeps running);
    yields its base URL and stops the server at the end."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)  # polling a condition, bounded above
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(15):
            await serving
        sock.close()
