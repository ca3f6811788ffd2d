"""Rate limits with real processes: ``manage.py check`` reports Redis; two ``manage.py serve`` instances on two
ports share one budget through one Redis (the rest of the rate limit tests are in ``tests/api/test_ratelimit.py``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from app.ratelimit.redis_limiter import redis_location
from tests.support.environment import clean_env
from tests.support.ports import free_port
from tests.support.servers import ServeProcess, manage
from tests.support.tokens import TEST_SECRET


def test_check_reports_redis(redis_url: str, sqlite_database: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path, DATABASE_URL=sqlite_database)
    reachable = manage("check", env={**env, "REDIS_URL": redis_url})
    assert reachable.returncode == 0, reachable.stderr
    assert f"redis: ok ({redis_location(redis_url)})" in reachable.stdout
    port = free_port()
    down = manage("check", env={**env, "REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}"})
    assert down.returncode == 1
    assert f"redis: cannot connect to redis://127.0.0.1:{port}: ConnectionError" in down.stderr
    assert "hunter2" not in down.stdout + down.stderr
    assert "redis" not in manage("check", env=env).stdout  # not configured: nothing to check


def test_two_servers_share_one_budget_through_redis(
    redis_url: str, redis_prefix: str, sqlite_database: str, tmp_path: Path
) -> None:
    """Two real ``manage.py serve`` instances, concurrent requests to both: the limits hold exactly."""
    env = clean_env(
        tmp_path / "data",
        DATABASE_URL=sqlite_database,
        BETTER_AUTH_SECRET=TEST_SECRET,
        RATE_LIMIT="5/hour",  # one request back every 12 minutes: nothing refills during the test
        RATE_LIMIT_ANONYMOUS="4/hour",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=redis_prefix,
        LOG_LEVEL="WARNING",
    )
    token = manage("createtoken", "shared-user", env=env).stdout.strip()
    servers = [ServeProcess(env, tmp_path / f"serve-{n}.log") for n in range(2)]
    try:
        for server in servers:
            server.wait_until_healthy()

        async def fire(headers: dict[str, str], count: int) -> list[int]:
            async with httpx.AsyncClient(timeout=10) as a, httpx.AsyncClient(timeout=10) as b:
                clients = [(a, servers[0].url), (b, servers[1].url)]
                responses = await asyncio.gather(
                    *(
                        clients[n % 2][0].get(f"{clients[n % 2][1]}/api/shared-user/tasks", headers=headers)
                        for n in range(count)
                    )
                )
            return [r.status_code for r in responses]

        user_statuses = asyncio.run(fire({"Authorization": f"Bearer {token}"}, 20))
        assert sorted(user_statuses) == [200] * 5 + [429] * 15
        anonymous_statuses = asyncio.run(fire({}, 12))
        assert sorted(anonymous_statuses) == [401] * 4 + [429] * 8
    finally:
        outputs = [server.stop() for server in servers]
    assert all("rate limits are not enforced" not in output for output in outputs)
