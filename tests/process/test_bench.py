"""The benchmark harness (bench/) in ``--quick`` mode, so that it cannot rot.

It seeds a throwaway database, serves ours (with the rate limiter on and off) and both baselines, drives
each workload with wrk for 2 s and checks that every app answered every workload without a single error,
that ours stayed error-free with more clients, and that the report counts each route's round trips. It
needs wrk (Debian's ``wrk``) and the ``bench`` dependency group; outside CI a missing one skips the test,
with ``CI=true`` it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
APPS = {"ours", "ours-nolimit", "fastapi", "bare"}
WORKLOADS = {"list", "get", "create", "update", "mix", "feed"}
OURS_ONLY = {"feed"}  # the change feed: the baselines have no such route


def require(condition: bool, message: str) -> None:
    """Skip outside CI, fail in CI, when something the harness needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(message + " (CI must run the benchmark smoke test)")
    pytest.skip(message)


@pytest.mark.postgres
def test_quick_benchmark_measures_every_app_and_workload_without_errors(postgres_server: str, tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk is not installed (apt-get install -y wrk)")
    # The baselines (FastAPI, SQLModel) are the bench group's: installed when the benchmark runs, not before.
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` tells its children where uv is
    require(uv is not None, "uv is not on PATH (the benchmark installs its group with it)")
    assert uv is not None

    completed = subprocess.run(
        [
            uv,
            "run",
            "--frozen",
            "--group",
            "bench",
            "python",
            "-m",
            "bench.run",
            "--quick",
            "--postgres-url",
            postgres_server,
            "--output-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]

    assert (tmp_path / "latest.md").is_file()
    report = json.loads((tmp_path / "latest.json").read_text())
    cells = {(r["app"], r["workload"]): r for r in report["results"]}
    assert set(cells) == {
        (app, workload) for app in APPS for workload in WORKLOADS if workload not in OURS_ONLY or app.startswith("ours")
    }
    for (app, workload), result in cells.items():
        assert result["requests_per_second"] > 0, (app, workload)
        assert result["errors"] == 0, (app, workload, result["statuses"], result["socket_errors"])
    [stress] = report["stress"]  # ours under more clients (16 in quick mode)
    assert (stress["connections"], stress["errors"]) == (16, 0)
    trips = {t["route"]: t for t in report["round_trips"]}
    assert len(trips) == 9
    for route, trip in trips.items():  # what the report says about each route is what it measured
        statements = trip["statements"]
        assert trip["round_trips"] == (6 if "Idempotency-Key" in route else 1), (route, statements)
