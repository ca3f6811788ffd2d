"""Rate limits: budgets per token user and per client address, in memory and shared through Redis.

In-process tests drive the whole ASGI stack with a clock the test controls, so a window's refill is tested
without sleeping. The Redis tests use the real server (``TEST_REDIS_URL``, default the local one; with
``CI=true`` a missing server fails the run) under a key prefix unique to the run, deleted afterwards. Two real
``manage.py serve`` instances sharing one budget through Redis are in ``tests/process/test_ratelimit_servers.py``.

The limiter never touches the database, so these tests run on SQLite only.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis.asyncio
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.testing import AsyncTestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from app.asgi import build_app
from app.auth.tokens import issue_token
from app.ratelimit import limiter as limiter_module
from app.ratelimit import redis_limiter
from app.ratelimit.limiter import MemoryRateLimiter, gcra
from app.ratelimit.plugin import build_rate_limits, client_key
from app.ratelimit.redis_limiter import RedisRateLimiter
from config.settings import Rate, Settings, SettingsError
from tests.support.ports import free_port
from tests.support.redis_server import keys, ping
from tests.support.tokens import TEST_SECRET

PROBLEM = "application/problem+json"


class FakeClock:
    """Seconds since the epoch that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def with_client_address(app: ASGIApp) -> ASGIApp:
    """Let a test pick the connection's address (``X-Test-Client``), as a server sets ``scope["client"]``."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            headers = dict(scope["headers"])
            scope["client"] = (headers.get(b"x-test-client", b"192.0.2.1").decode(), 50000)
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
def settings(sqlite_database: str, tmp_path: Path) -> Settings:
    return Settings(
        app_env="test",
        data_dir=tmp_path / "data",
        database_url=sqlite_database,
        better_auth_secret=TEST_SECRET,
        cors_origins=("https://app.example.com",),
        rate_limit=Rate(3, 60),
        rate_limit_anonymous=Rate(2, 60),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limited(settings: Settings, clock: FakeClock | None = None) -> Litestar:
    """The app for ``settings``, its limiter on ``clock`` (the app's own limiter stays unused)."""
    app = build_app(settings)
    if clock is not None:
        app.state.rate_limits = build_rate_limits(settings, clock)
    return app


@pytest.fixture
async def client(settings: Settings, clock: FakeClock) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=with_client_address(limited(settings, clock))) as test_client:
        yield test_client


@pytest.fixture
def auth(settings: Settings) -> Callable[[str], dict[str, str]]:
    return lambda user: {"Authorization": f"Bearer {issue_token(settings, user, timedelta(minutes=5))}"}


def budget(response: httpx.Response) -> tuple[int, str, str, str]:
    headers = response.headers
    return (
        response.status_code,
        headers.get("ratelimit-limit", ""),
        headers.get("ratelimit-remaining", ""),
        headers.get("ratelimit-policy", ""),
    )


def assert_too_many(response: httpx.Response, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["retry-after"] == str(retry_after)
    assert response.headers["ratelimit-remaining"] == "0"
    body = response.json()
    assert body["type"] == "urn:todo-backend:problem:too-many-requests"
    assert body["status"] == 429
    assert f"retry after {retry_after} s" in body["detail"]


# -- per user ------------------------------------------------------------------------------------------------


async def test_a_user_gets_exactly_the_limit_then_429(client: AsyncTestClient[Any], auth: Any) -> None:
    user = uuid.uuid4().hex
    for remaining in (2, 1, 0):
        created = await client.post(f"/api/{user}/tasks", json={"title": "x"}, headers=auth(user))
        assert budget(created) == (201, "3", str(remaining), "3;w=60")
        assert created.headers["ratelimit-reset"] == str(20 * (3 - remaining))  # one request back per 20 s
    refused = await client.post(f"/api/{user}/tasks", json={"title": "refused"}, headers=auth(user))
    assert_too_many(refused, retry_after=20)
    assert refused.headers["ratelimit-reset"] == "60"
    assert refused.headers["x-content-type-options"] == "nosniff"  # still an API response
    assert_too_many(await client.get(f"/api/{user}/tasks", headers=auth(user)), retry_after=20)


async def test_a_refused_request_does_nothing(client: AsyncTestClient[Any], auth: Any, clock: FakeClock) -> None:
    user = uuid.uuid4().hex
    for _ in range(3):
        assert (await client.post(f"/api/{user}/tasks", json={"title": "kept"}, headers=auth(user))).status_code == 201
    assert (await client.post(f"/api/{user}/tasks", json={"title": "lost"}, headers=auth(user))).status_code == 429
    clock.advance(60)
    titles = [task["title"] for task in (await client.get(f"/api/{user}/tasks", headers=auth(user))).json()]
    assert titles == ["kept"] * 3


async def test_users_have_separate_budgets(client: AsyncTestClient[Any], auth: Any) -> None:
    alice, bob = uuid.uuid4().hex, uuid.uuid4().hex
    for _ in range(3):
        await client.get(f"/api/{alice}/tasks", headers=auth(alice))
    assert (await client.get(f"/api/{alice}/tasks", headers=auth(alice))).status_code == 429
    assert budget(await client.get(f"/api/{bob}/tasks", headers=auth(bob))) == (200, "3", "2", "3;w=60")


async def test_the_budget_refills_with_time(client: AsyncTestClient[Any], auth: Any, clock: FakeClock) -> None:
    user = uuid.uuid4().hex
    for _ in range(3):
        await client.get(f"/api/{user}/tasks", headers=auth(user))
    clock.advance(19.9)
    assert_too_many(await client.get(f"/api/{user}/tasks", headers=auth(user)), retry_after=1)
    clock.advance(0.1)  # 20 s: one request has come back, and only one
    assert budget(await client.get(f"/api/{user}/tasks", headers=auth(user))) == (200, "3", "0", "3;w=60")
    assert (await client.get(f"/api/{user}/tasks", headers=auth(user))).status_code == 429
    clock.advance(60)  # a full window of quiet: the whole budget, no more
    for remaining in (2, 1, 0):
        assert budget(await client.get(f"/api/{user}/tasks", headers=auth(user)))[2] == str(remaining)
    assert (await client.get(f"/api/{user}/tasks", headers=auth(user))).status_code == 429


async def test_every_response_of_a_charged_request_carries_the_headers(client: AsyncTestClient[Any], auth: Any) -> None:
    user = uuid.uuid4().hex
    assert budget(await client.get(f"/api/{user}/tasks/999", headers=auth(user))) == (404, "3", "2", "3;w=60")
    assert budget(await client.get(f"/api/{user}/tasks/abc", headers=auth(user))) == (400, "3", "1", "3;w=60")
    forbidden = await client.get("/api/someone-else/tasks", headers=auth(user))  # counts against the token's user
    assert budget(forbidden) == (403, "3", "0", "3;w=60")


# -- per client address --------------------------------------------------------------------------------------


async def test_requests_without_a_valid_token_are_limited_per_address(client: AsyncTestClient[Any], auth: Any) -> None:
    here = {"X-Test-Client": "198.51.100.7"}
    forged = {**here, "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"}
    first = await client.get("/api/u1/tasks", headers=here)
    assert budget(first) == (401, "2", "1", "2;w=60")
    assert first.headers["www-authenticate"].startswith("Bearer")
    assert budget(await client.get("/api/u1/tasks", headers=forged)) == (401, "2", "0", "2;w=60")
    assert_too_many(await client.get("/api/u1/tasks", headers=here), retry_after=30)
    # X-Forwarded-For is a header anyone can write: it never changes whose budget a request spends
    spoofed = await client.get("/api/u1/tasks", headers={**here, "X-Forwarded-For": "203.0.113.99"})
    assert spoofed.status_code == 429
    # another address has its own budget; a valid token from the spent address has the user's
    assert budget(await client.get("/api/u1/tasks", headers={"X-Test-Client": "198.51.100.8"}))[:3] == (401, "2", "1")
    user = uuid.uuid4().hex
    assert budget(await client.get(f"/api/{user}/tasks", headers={**here, **auth(user)}))[:3] == (200, "3", "2")


async def test_ipv6_clients_share_a_budget_per_64(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/docs", headers={"X-Test-Client": "2001:db8:1:2::a"})).status_code == 200
    assert (await client.get("/docs", headers={"X-Test-Client": "2001:db8:1:2:ffff::b"})).status_code == 200
    assert (await client.get("/docs", headers={"X-Test-Client": "2001:db8:1:2::c"})).status_code == 429
    assert (await client.get("/docs", headers={"X-Test-Client": "2001:db8:1:3::a"})).status_code == 200


def test_client_keys() -> None:
    def key(host: str | None) -> str:
        return client_key(cast("Scope", {"client": (host, 1) if host else None}))

    assert key("192.0.2.1") == "addr:192.0.2.1"
    assert key("::ffff:192.0.2.1") == "addr:192.0.2.1"
    assert key("2001:db8::1") == key("2001:db8::ffff:1") == "addr:2001:db8::/64"
    assert key(None) == "addr:unknown"
    assert key("testclient") == "addr:testclient"


async def test_docs_and_schema_are_limited_per_address(client: AsyncTestClient[Any]) -> None:
    assert budget(await client.get("/docs"))[:3] == (200, "2", "1")
    assert budget(await client.get("/schema/openapi.json"))[:3] == (200, "2", "0")
    assert_too_many(await client.get("/docs"), retry_after=30)


async def test_health_probes_and_preflights_are_never_limited(client: AsyncTestClient[Any]) -> None:
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
    for _ in range(10):
        for response in (
            await client.get("/health"),
            await client.get("/health/ready"),
            await client.options("/api/u1/tasks", headers=preflight),
            await client.options("/api/u1/tasks"),
        ):
            assert response.status_code in {200, 204}, response.text
            assert "ratelimit-limit" not in response.headers
    assert budget(await client.get("/docs"))[:3] == (200, "2", "1")  # none of them spent the address's budget


async def test_cors_lets_browsers_read_the_headers(client: AsyncTestClient[Any], auth: Any) -> None:
    user = uuid.uuid4().hex
    response = await client.get(f"/api/{user}/tasks", headers={"Origin": "https://app.example.com", **auth(user)})
    exposed = {name.strip().lower() for name in response.headers["access-control-expose-headers"].split(",")}
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy", "retry-after"} <= exposed


async def test_limits_can_be_turned_off(settings: Settings, auth: Any) -> None:
    off = replace(settings, rate_limit=None, rate_limit_anonymous=None)
    assert build_rate_limits(off) is None
    user = uuid.uuid4().hex
    async with AsyncTestClient(app=build_app(off)) as client:
        for _ in range(10):
            response = await client.get(f"/api/{user}/tasks", headers=auth(user))
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers
            assert (await client.get("/api/u1/tasks")).status_code == 401


async def test_only_users_limited_leaves_addresses_alone(settings: Settings, clock: FakeClock) -> None:
    async with AsyncTestClient(app=limited(replace(settings, rate_limit_anonymous=None), clock)) as client:
        for _ in range(5):
            response = await client.get("/api/u1/tasks")
            assert response.status_code == 401
            assert "ratelimit-limit" not in response.headers


async def test_the_schema_documents_429_and_the_headers(client: AsyncTestClient[Any]) -> None:
    clients = {"X-Test-Client": uuid.uuid4().hex}
    paths = (await client.get("/schema/openapi.json", headers=clients)).json()["paths"]
    listing = paths["/api/{user_id}/tasks"]["get"]
    assert "429" in listing["responses"]
    assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(listing["responses"]["200"]["headers"])
    assert "429" not in paths["/health"]["get"]["responses"]
    assert "429" not in paths["/health/ready"]["get"]["responses"]


# -- the algorithm -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [Rate(1, 86400), Rate(7, 60), Rate(600, 60), Rate(7000, 60), Rate(1000, 1)])
async def test_a_burst_gets_exactly_the_limit(rate: Rate, clock: FakeClock) -> None:
    limiter = MemoryRateLimiter(clock)
    decisions = [await limiter.hit("k", rate) for _ in range(rate.limit + 1)]
    assert [d.remaining for d in decisions[:-1]] == list(range(rate.limit - 1, -1, -1))
    assert all(d.allowed for d in decisions[:-1])
    assert not decisions[-1].allowed


def test_gcra_refills_one_request_per_interval() -> None:
    rate = Rate(2, 10)  # one request every 5 s, bursts of 2
    allowed, tat, _ = gcra(rate, None, 0)
    allowed2, tat, _ = gcra(rate, tat, 0)
    assert allowed
    assert allowed2
    assert gcra(rate, tat, 4_999_999)[0] is False
    assert gcra(rate, tat, 5_000_000)[0] is True


async def test_the_memory_store_forgets_full_budgets(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limiter_module, "MEMORY_SWEEP_AT", 100)
    limiter = MemoryRateLimiter(clock)
    for n in range(99):
        await limiter.hit(f"k{n}", Rate(1, 60))
    clock.advance(61)
    await limiter.hit("fresh", Rate(1, 60))  # the 100th key: everything expired is dropped
    assert set(limiter._tats) == {"fresh"}
    decision = await limiter.hit("k1", Rate(1, 60))  # a forgotten key starts with its full budget
    assert decision.allowed


# -- settings ------------------------------------------------------------------------------------------------


def test_rate_settings() -> None:
    defaults = Settings.from_env({})
    assert (defaults.rate_limit, defaults.rate_limit_anonymous) == (Rate(600, 60), Rate(60, 60))
    assert defaults.redis_url is None
    assert defaults.redis_key_prefix == "todo-backend:"
    parsed = Settings.from_env({"RATE_LIMIT": "100 / Second", "RATE_LIMIT_ANONYMOUS": "OFF"})
    assert parsed.rate_limit == Rate(100, 1)
    assert str(parsed.rate_limit) == "100/second"
    assert parsed.rate_limit_anonymous is None
    assert Settings.from_env({"RATE_LIMIT": "5/hour"}).rate_limit == Rate(5, 3600)
    assert Settings.from_env({"RATE_LIMIT": "1000000/day"}).rate_limit == Rate(1_000_000, 86400)
    configured = Settings.from_env({"REDIS_URL": "rediss://:pw@cache.example.com:6380/1", "REDIS_KEY_PREFIX": "x:"})
    assert configured.redis_url == "rediss://:pw@cache.example.com:6380/1"
    assert "pw" not in repr(configured)
    assert configured.redis_key_prefix == "x:"


@pytest.mark.parametrize("bad", ["0/minute", "600", "600/min", "-5/second", "1000001/second", "ten/hour", "0"])
def test_bad_rates_get_one_line_each(bad: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"RATE_LIMIT": bad, "RATE_LIMIT_ANONYMOUS": bad})
    expected = "must be off or N/second, N/minute, N/hour or N/day with N from 1 to 1000000 (got {!r})"
    assert caught.value.problems == [
        "RATE_LIMIT " + expected.format(bad),
        "RATE_LIMIT_ANONYMOUS " + expected.format(bad),
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://:hunter2@cache:6379", "REDIS_URL must start with redis://, rediss:// or unix:// (got http scheme)"),
        ("redis://:hunter2@/0", "REDIS_URL needs a host, e.g. redis://127.0.0.1:6379/0"),
        ("redis://:hunter2@cache:port/0", "REDIS_URL is not a valid URL"),
        ("cache:6379", "REDIS_URL must start with redis://, rediss:// or unix:// (got cache scheme)"),
    ],
)
def test_bad_redis_urls_are_refused_without_echoing_them(url: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL": url})
    assert caught.value.problems == [problem]


# -- Redis ---------------------------------------------------------------------------------------------------


async def test_redis_counts_like_memory(redis_url: str, redis_prefix: str, clock: FakeClock) -> None:
    """The Lua script and the Python step agree on every decision, through bursts, waits and refills."""
    memory = MemoryRateLimiter(clock)
    shared = RedisRateLimiter(redis_url, redis_prefix, clock)
    try:
        steps = [0.0] * 8 + [3.0, 0.5, 8.57, 8.58, 0.0, 30.0, 0.0, 0.0, 0.0, 61.0] + [0.0] * 9
        for step in steps:
            clock.advance(step)
            expected = await memory.hit("k", Rate(7, 60))
            assert await shared.hit("k", Rate(7, 60)) == expected
        key = f"{redis_prefix}ratelimit:k".encode()
        assert await keys(redis_url, redis_prefix) == [key]
    finally:
        await shared.close()


async def test_redis_keys_expire_when_the_budget_is_full_again(redis_url: str, redis_prefix: str) -> None:
    shared = RedisRateLimiter(redis_url, redis_prefix)  # Redis's own clock
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        decision = await shared.hit("user:u1", Rate(600, 60))
        assert decision is not None
        assert (decision.allowed, decision.remaining) == (True, 599)
        ttl = await client.pttl(f"{redis_prefix}ratelimit:user:u1")
        assert 0 < ttl <= 100  # one interval (100 ms) ahead: the key lives no longer than it matters
    finally:
        await client.aclose()
        await shared.close()


async def test_redis_counts_concurrent_requests_exactly(redis_url: str, redis_prefix: str) -> None:
    limiters = [RedisRateLimiter(redis_url, redis_prefix) for _ in range(4)]  # four separate connection pools
    try:
        decisions = await asyncio.gather(*(limiters[n % 4].hit("user:burst", Rate(25, 3600)) for n in range(100)))
        assert sum(1 for d in decisions if d is not None and d.allowed) == 25
        assert sorted(d.remaining for d in decisions if d is not None and d.allowed) == list(range(25))
    finally:
        for limiter in limiters:
            await limiter.close()


async def test_unreachable_redis_fails_open_quickly_and_says_so(
    settings: Settings, auth: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    down = replace(settings, redis_url=f"redis://:hunter2@127.0.0.1:{port}/0")
    user = uuid.uuid4().hex
    async with AsyncTestClient(app=build_app(down)) as client:
        caplog.set_level(logging.WARNING, logger="app.ratelimit")  # the app leaves logging to the server
        started = time.monotonic()
        for _ in range(10):  # over both limits: served anyway
            response = await client.get(f"/api/{user}/tasks", headers=auth(user))
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers
            assert (await client.get("/api/u1/tasks")).status_code == 401
        assert time.monotonic() - started < 5
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.ratelimit"]
    assert warnings == [
        f"rate limits are not enforced: Redis at redis://127.0.0.1:{port} is unreachable (ConnectionError); "
        "retrying every 5 s"
    ]
    assert "hunter2" not in caplog.text


async def test_limits_come_back_when_redis_does(
    redis_prefix: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server_binary = shutil.which("redis-server")
    if server_binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setattr(redis_limiter, "REDIS_RETRY_SECONDS", 0.0)
    limiter = RedisRateLimiter(url, redis_prefix, clock)
    process: asyncio.subprocess.Process | None = None
    try:
        assert await limiter.hit("k", Rate(1, 60)) is None  # nobody listens: fail open
        process = await asyncio.create_subprocess_exec(
            *(server_binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                await ping(url)
                break
            except (OSError, redis.RedisError):
                assert time.monotonic() < deadline, "redis-server did not start"
                await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
        first = await limiter.hit("k", Rate(1, 60))
        second = await limiter.hit("k", Rate(1, 60))
        assert first is not None
        assert first.allowed
        assert second is not None
        assert not second.allowed
    finally:
        await limiter.close()
        if process is not None:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=10)
