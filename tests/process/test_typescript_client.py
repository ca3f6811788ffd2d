"""The TypeScript client in clients/typescript/, as a frontend developer uses it: real Node, real tsc, real server.

* The checked-in ``schema.d.ts`` is what plain ``openapi-typescript`` (default options) makes of the document
  ``manage.py openapi`` writes: a change to the API that is not regenerated fails here.
* ``tsc --strict`` accepts the example and the client, and refuses every call in ``type-errors.ts`` (each line
  there carries ``@ts-expect-error``, so a type that turns loose leaves a directive unused and fails the check);
  with the directives taken out, each of those lines is an error of its own.
* The example, compiled to JavaScript, calls every route (errors, ``If-Match`` and paging through ``Link``
  included) against ``manage.py serve`` on each database.

Needs Node and the packages of ``clients/typescript/package-lock.json`` (``npm ci`` there; CI does it). Without
them the tests skip, and fail when CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.environment import IN_CI, UNSET_SETTINGS
from tests.support.servers import Servers, serve_env
from tests.support.tokens import bearer

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "typescript"
BIN = CLIENT / "node_modules" / ".bin"
TIMEOUT = 180


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (Node 20 or later)"
    if not (BIN / "tsc").exists() or not (BIN / "openapi-typescript").exists():
        return "the client's packages are not installed: run `npm ci` in clients/typescript"
    return None


@pytest.fixture(scope="module", autouse=True)
def node_and_packages() -> None:
    """Node and the locked packages, or a skip (a failure in CI)."""
    reason = _missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason} (CI must run the TypeScript client tests)")
        pytest.skip(reason)


def run(
    *command: str | Path, cwd: Path = CLIENT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_checked_in_types_are_what_openapi_typescript_makes_of_the_document(tmp_path: Path) -> None:
    document = tmp_path / "openapi.json"
    env = {**os.environ, **UNSET_SETTINGS, "DATA_DIR": str(tmp_path / "data")}
    written = run(sys.executable, "manage.py", "openapi", "-o", document, cwd=ROOT, env=env)
    assert written.returncode == 0, written.stderr
    assert not (tmp_path / "data").exists()  # the command creates no development secret
    generated = tmp_path / "schema.d.ts"
    result = run(BIN / "openapi-typescript", document, "-o", generated)
    assert result.returncode == 0, result.stdout + result.stderr
    checked_in = (CLIENT / "schema.d.ts").read_text()
    assert generated.read_text() == checked_in, (
        "clients/typescript/schema.d.ts is out of date: run `npm run generate` in clients/typescript"
    )
    # What the issue asked of the types, visible in the file itself.
    create = re.search(r"TaskCreate: \{(.*?)\n        \};", checked_in, re.DOTALL)
    assert create is not None
    assert re.search(r"^\s+title: string;$", create.group(1), re.MULTILINE)
    for optional in ("completed?: boolean;", 'priority?: "low" | "medium" | "high";', "due_date?: string | null;"):
        assert optional in create.group(1)
    assert '"ETag": string;' in checked_in or "ETag: string;" in checked_in
    assert '"X-Total-Count": number;' in checked_in
    assert "Link?: string;" in checked_in
    assert "unknown | unknown" not in checked_in


def test_tsc_strict_accepts_the_example_and_refuses_the_wrong_calls() -> None:
    result = run(BIN / "tsc", "--strict", "--noEmit", "-p", "tsconfig.json")
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_wrong_call_is_an_error_of_its_own() -> None:
    """Without their directives, the lines of type-errors.ts are as many errors as there were directives."""
    source = (CLIENT / "type-errors.ts").read_text()
    directives = source.count("// @ts-expect-error")
    assert directives >= 10
    stripped = CLIENT / ".type-errors-stripped.ts"
    stripped.write_text(source.replace("// @ts-expect-error", "// (expected error)"))
    try:
        result = run(
            BIN / "tsc",
            "--strict",
            "--noEmit",
            "--target",
            "es2022",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--types",
            "node",
            stripped,
        )
    finally:
        stripped.unlink()
    errors = re.findall(r"^\.type-errors-stripped\.ts\((\d+),\d+\): error", result.stdout, re.MULTILINE)
    lines = source.splitlines()
    assert len(set(errors)) == directives, result.stdout
    for line in errors:  # every error sits on the line right after a directive
        assert lines[int(line) - 2].strip().startswith("// @ts-expect-error"), (line, result.stdout)


def test_the_example_calls_every_route_of_a_live_server(database_url: str, tmp_path: Path) -> None:
    compiled = run(BIN / "tsc", "-p", "tsconfig.json")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    servers = Servers(tmp_path)
    try:
        server = servers.start(serve_env(database_url, tmp_path / "data", RATE_LIMIT="off"))
        server.wait_until_healthy()
        user = "example-user"
        token = bearer(user)["Authorization"].removeprefix("Bearer ")
        env = {**os.environ, "API_URL": server.url, "USER_ID": user, "TOKEN": token}
        result = run("node", "dist/example.js", env=env)
    finally:
        servers.stop_all()
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\nserver:\n{server.output()[-5000:]}"
    assert "example: 14 steps passed" in result.stdout
    assert "Traceback" not in server.output()
