"""``manage.py serve`` as a real server process that tests signal, kill and restart.

Unlike ``tests/test_cli.py``'s ``Server``, the output goes to a file (a pipe nobody reads fills up under
load and stalls the server) and the test sees the process id, its workers and its exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]  # psutil ships no type information

from app.auth.tokens import issue_token
from config.settings import Settings
from tests.clusters import free_port
from tests.conftest import TEST_SECRET
from tests.test_cli import UNSET_SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def serve_env(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a server on ``database_url`` that accepts :func:`bearer` tokens."""
    return {
        **os.environ,
        **UNSET_SETTINGS,
        "APP_ENV": "test",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": TEST_SECRET,
        **settings,
    }


def bearer(user_id: str) -> dict[str, str]:
    """``Authorization`` headers that a server started with :func:`serve_env` accepts."""
    token = issue_token(Settings(better_auth_secret=TEST_SECRET), user_id, timedelta(minutes=10))
    return {"Authorization": f"Bearer {token}"}


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

    def wait_until_healthy(self, timeout: float = 90) -> None:
        """Wait until ``/health`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
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

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop (teardown)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for worker in self.workers():
                    worker.kill()
                self.process.kill()
                self.process.wait()


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
