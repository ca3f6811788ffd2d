"""``uv run manage.py`` is quick to answer, and its newer commands do what they say.

Speed is measured by what a command imports, not by the clock (the machine's load would decide a timing):
``--help`` and the commands that reach neither the server nor the database load no web framework, ORM,
migration tool or database driver. Importing those is what made every call take seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import NAMES
from tests.support.servers import ROOT, manage

HEAVY = ("litestar", "sqlalchemy", "advanced_alchemy", "alembic", "asyncpg", "aiosqlite", "uvicorn", "redis", "httpx")
_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$")


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    return {**os.environ, **dict.fromkeys(NAMES, ""), "DATA_DIR": str(tmp_path / "data"), **settings}


def imported_modules(*args: str, env: dict[str, str]) -> set[str]:
    """Every module ``manage.py *args`` imported (``python -X importtime`` lists each on stderr)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {match.group(1) for line in result.stderr.splitlines() if (match := _IMPORTED.match(line))}


def heavy(modules: set[str]) -> set[str]:
    return {name for name in modules if name.split(".")[0] in HEAVY}


def test_help_loads_no_framework_driver_or_orm(tmp_path: Path) -> None:
    modules = imported_modules("--help", env=cli_env(tmp_path))
    assert "click" in modules  # the measurement sees imports at all
    assert heavy(modules) == set()
    assert "jwt" not in modules
    assert len(modules) < 150  # about 100 today: the interpreter's own, click and this project's CLI


@pytest.mark.parametrize("command", ["check", "createtoken", "migrate", "routes", "serve", "shell", "showmigrations"])
def test_each_commands_help_is_as_light(tmp_path: Path, command: str) -> None:
    assert heavy(imported_modules(command, "--help", env=cli_env(tmp_path))) == set()


def test_createtoken_loads_only_the_token_library(tmp_path: Path) -> None:
    modules = imported_modules("createtoken", "user-1", env=cli_env(tmp_path))
    assert "jwt" in modules
    assert heavy(modules) == set()
    assert len(modules) < 400  # about 240 today, most of them the cryptography package PyJWT signs with


def test_migrate_says_what_it_applied_and_showmigrations_marks_them(tmp_path: Path) -> None:
    env = cli_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'todo.db'}")
    before = manage("showmigrations", env=env)
    assert before.returncode == 0, before.stderr
    assert before.stdout.splitlines() == [
        "[ ] 0001_create_tasks",
        "[ ] 0002_priority_due_date_tags",
        "[ ] 0003_task_version",
        "[ ] 0004_idempotency_keys",
        "[ ] 0005_change_feed_and_trash",
    ]
    partial = manage("migrate", "--revision", "0002", env=env)
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout.splitlines() == ["Applied 0001_create_tasks", "Applied 0002_priority_due_date_tags"]
    rest = manage("migrate", env=env)
    assert rest.stdout.splitlines() == [
        "Applied 0003_task_version",
        "Applied 0004_idempotency_keys",
        "Applied 0005_change_feed_and_trash",
    ]
    assert manage("migrate", env=env).stdout.splitlines() == ["No migrations to apply."]
    after = manage("showmigrations", env=env)
    assert after.stdout.splitlines()[-1] == "[X] 0005_change_feed_and_trash"
    assert all(line.startswith("[X] ") for line in after.stdout.splitlines())


def test_migrate_names_the_drivers_error(tmp_path: Path, postgres_server: str) -> None:
    url = postgres_server.rsplit("/", 1)[0] + "/todo_no_such_database"
    result = manage("migrate", env=cli_env(tmp_path, DATABASE_URL=url))
    assert result.returncode == 1
    assert 'database "todo_no_such_database" does not exist' in result.stderr
    assert "Traceback" not in result.stderr


def test_routes_lists_templates_and_methods(tmp_path: Path) -> None:
    result = manage("routes", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "GET /api/{user_id}/tasks (list_tasks)" in lines
    assert "POST /api/{user_id}/tasks (create_task)" in lines
    assert "PATCH /api/{user_id}/tasks/{task_id}/complete (complete_task)" in lines
    assert "GET /health/ready (ready)" in lines


def test_shell_has_settings_engine_and_a_session_ready(tmp_path: Path) -> None:
    env = cli_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'todo.db'}")
    assert manage("migrate", env=env).returncode == 0
    script = "\n".join(
        [
            "print('env', settings.app_env, engine.dialect.name)",
            "print('tasks', wait(session.execute(text(\"SELECT count(*) FROM tasks\"))).scalar())",
            "print('orm', wait(session.execute(select(Task))).all())",
        ]
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell"],
        cwd=ROOT,
        env=env,
        input=script + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "env development sqlite" in result.stdout
    assert "tasks 0" in result.stdout
    assert "orm []" in result.stdout
    assert "Traceback" not in result.stderr
