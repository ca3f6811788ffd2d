"""``/docs`` renders in a real browser with the network cut: Swagger UI's files come from the app itself.

Debian's Chromium, driven by puppeteer-core (clients/typescript/docs-check.ts), resolves no host but 127.0.0.1;
the page must show every operation of the OpenAPI document, load nothing from elsewhere, and break none of its
own Content-Security-Policy. Needs ``/usr/bin/chromium`` (``apt-get install chromium``), Node and ``npm ci`` in
clients/typescript: without them the test skips, and fails when CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.environment import IN_CI
from tests.support.servers import Servers, serve_env

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "typescript"
CHROMIUM = Path("/usr/bin/chromium")
METHODS = {"get", "put", "post", "delete", "patch"}


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return "Chromium is not installed: apt-get install chromium"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (CLIENT / "node_modules" / "puppeteer-core").exists():
        return "the client's packages are not installed: run `npm ci` in clients/typescript"
    return None


@pytest.fixture(scope="module", autouse=True)
def browser_available() -> None:
    reason = _missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason} (CI must render the docs page)")
        pytest.skip(reason)


def test_docs_page_shows_every_operation_with_the_network_cut(sqlite_database: str, tmp_path: Path) -> None:
    compiled = subprocess.run(
        [str(CLIENT / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json"],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    servers = Servers(tmp_path)
    try:
        server = servers.start(serve_env(sqlite_database, tmp_path / "data"))
        server.wait_until_healthy()
        document: dict[str, Any] = httpx.get(f"{server.url}/schema/openapi.json", timeout=10).json()
        result = subprocess.run(
            [shutil.which("node") or "node", "dist/docs-check.js", f"{server.url}/docs", str(CHROMIUM)],
            cwd=CLIENT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ, "HOME": str(tmp_path)},  # Chromium's profile and crash files stay in the test's folder
        )
    finally:
        servers.stop_all()
    assert result.returncode == 0, result.stdout + result.stderr
    page = json.loads(result.stdout.strip().splitlines()[-1])

    expected = sorted(
        (method.upper(), path, operation["summary"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    )
    assert sorted(tuple(operation) for operation in page["operations"]) == expected
    assert len(expected) == 14  # every route of the API and the two health probes
    assert page["title"].startswith("todo-backend")
    assert page["problems"] == []  # no console error, no failed request, no CSP violation
    origin = server.url + "/"
    assert all(url.startswith((origin, "data:")) for url in page["requested"]), page["requested"]
    assert f"{server.url}/docs/assets/swagger-ui-bundle.js" in page["requested"]
    assert page["csp"].startswith("default-src 'self';")
