"""Prometheus metrics through a real ``manage.py serve --workers 2``: counts are the service's (every worker's),
labelled by method, route template and status, never by user; ``/metrics`` is off unless enabled."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from litestar.testing import AsyncTestClient

from app.asgi import build_app
from app.auth.tokens import issue_token
from config.settings import NAMES, Settings
from tests.support.servers import ServeProcess, serve_env
from tests.support.tokens import TEST_SECRET

METRICS_TOKEN = "scrape-token-0123456789"
WAIT_SECONDS = 30


def bearer(user: str) -> dict[str, str]:
    token = issue_token(Settings(better_auth_secret=TEST_SECRET), user, timedelta(minutes=5))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("metrics")
    env = serve_env(postgres_database, folder / "data")
    env.update(dict.fromkeys(NAMES, ""))  # a developer's .env must not leak in
    env.update(
        APP_ENV="test",
        DATA_DIR=str(folder / "data"),
        DATABASE_URL=postgres_database,
        BETTER_AUTH_SECRET=TEST_SECRET,
        METRICS_ENABLED="true",
        METRICS_TOKEN=METRICS_TOKEN,
        RATE_LIMIT="3/minute",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = ServeProcess(env, folder / "serve.log", "--workers", "2")
    try:
        process.wait_until_healthy()
        yield process
    finally:
        process.stop()


def scrape(server: ServeProcess) -> str:
    response = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample, or ``None`` when it is absent."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    return None


def test_metrics_need_the_token(server: ServeProcess) -> None:
    anonymous = httpx.get(f"{server.url}/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    wrong = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.status_code == 401
    assert METRICS_TOKEN not in server.output()


def test_requests_are_counted_across_both_workers_by_route_template(server: ServeProcess) -> None:
    users = [f"metrics-user-{n}" for n in range(20)]
    for user in users:  # a new connection each: the two workers share them
        assert httpx.get(f"{server.url}/api/{user}/tasks", headers=bearer(user)).status_code == 200
    route = {"method": "GET", "route": "/api/{user_id}/tasks", "status": "200"}
    for _ in range(10):  # whichever worker answers the scrape reports the service's count
        text = scrape(server)
        assert sample(text, "todo_http_requests_total", **route) == 20
        assert sample(text, "todo_http_request_duration_seconds_count", **route) == 20
        assert sample(text, "todo_http_request_duration_seconds_bucket", le="+Inf", **route) == 20
        assert not any(user in text for user in users)
    workers = {worker.pid for worker in server.workers()}
    assert len(workers) == 2


def test_rate_limit_refusals_are_counted(server: ServeProcess) -> None:
    user = "metrics-greedy-user"
    statuses = [httpx.get(f"{server.url}/api/{user}/tasks", headers=bearer(user)).status_code for _ in range(10)]
    refused = statuses.count(429)
    assert refused >= 4  # 3 a minute in each of 2 workers (counted in memory, per worker)
    text = scrape(server)
    assert sample(text, "todo_rate_limit_refusals_total", route="/api/{user_id}/tasks") == refused
    assert sample(text, "todo_http_requests_total", method="GET", route="/api/{user_id}/tasks", status="429") == refused


def test_the_database_pool_is_sampled(server: ServeProcess) -> None:
    user = "metrics-pool-user"
    assert httpx.get(f"{server.url}/api/{user}/tasks", headers=bearer(user)).status_code == 200
    deadline = time.monotonic() + WAIT_SECONDS
    while (opened := sample(scrape(server), "todo_db_pool_connections_open")) is None or opened < 1:
        assert time.monotonic() < deadline, scrape(server)
        time.sleep(0.2)  # the pool is sampled once a second; bounded by the deadline
    text = scrape(server)
    assert sample(text, "todo_db_pool_connections_in_use") is not None
    assert sample(text, "todo_db_pool_waiting") == 0


async def test_metrics_are_off_unless_enabled(database_url: str) -> None:
    settings = Settings(app_env="test", database_url=database_url, better_auth_secret=TEST_SECRET)
    async with AsyncTestClient(app=build_app(settings)) as client:
        assert (await client.get("/metrics")).status_code == 404
