"""A fresh clone's ``uv run manage.py serve`` installs what serving needs and nothing else.

Read from the lock, as uv would install it (``uv export --frozen``): no group is a default group, so the
serve command gets the application's dependencies only, not the test tools or the benchmark's baselines;
the test command (``--group dev``) gets the test tools; the baselines come with ``--group bench`` only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support.environment import IN_CI

ROOT = Path(__file__).resolve().parents[2]
TEST_TOOLS = {"pytest", "pytest-asyncio", "mypy", "ruff", "schemathesis", "hypothesis"}
BASELINES = {"fastapi", "sqlmodel"}
TRACING = {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"}
SERVING = {"litestar", "uvicorn", "asyncpg", "aiosqlite", "alembic", "advanced-alchemy", "pyjwt", "prometheus-client"}


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")  # `uv run` tells its children where uv is
    if found is None:
        message = "uv is not on PATH"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def installed_by(*args: str) -> set[str]:
    """The packages ``uv sync --frozen *args`` installs, from the lock."""
    result = subprocess.run(
        [
            uv(),
            "export",
            "--frozen",
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            "--format",
            "requirements.txt",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = set()
    for line in result.stdout.splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)", line.strip())
        if match and not line.startswith("#"):
            names.add(match.group(1).lower().replace("_", "-"))
    return names


def test_no_group_is_installed_by_default() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["uv"]["default-groups"] == []


def test_the_serve_command_installs_only_what_serving_needs() -> None:
    serving = installed_by()
    assert serving >= SERVING
    assert serving.isdisjoint(TEST_TOOLS | BASELINES | TRACING), sorted(serving & (TEST_TOOLS | BASELINES | TRACING))
    assert len(serving) < 60, sorted(serving)  # 74 with the test and benchmark groups, before


def test_the_test_command_installs_the_test_tools_but_not_the_baselines() -> None:
    testing = installed_by("--group", "dev")
    assert testing >= TEST_TOOLS | TRACING | {"psutil"}
    assert testing.isdisjoint(BASELINES)
    assert installed_by("--group", "bench") >= BASELINES
