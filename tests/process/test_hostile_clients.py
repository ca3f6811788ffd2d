"""Hostile and careless clients against a real ``manage.py serve`` process, over real sockets.

What each test proves (``app/http_protocol.py`` has the limits, each a setting):

* a request head longer than ``MAX_REQUEST_HEAD_BYTES`` is a 431 problem as soon as the limit is passed,
  while the server keeps answering others at once and does not grow;
* a connection that sends nothing is closed after ``REQUEST_HEAD_TIMEOUT``; one that trickles its head
  (slowloris) gets a 408 problem; a body slower than ``REQUEST_BODY_MIN_RATE`` gets a 408 problem;
* beyond ``MAX_CONNECTIONS`` a new connection gets a 503 problem at once, and the server raised its open-file
  limit to the hard limit at start;
* malformed HTTP is a 400 problem; a client that hangs up in the middle of its body is one INFO line, no 500.

Every wait has a bound; no test sleeps to "let things happen".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]  # psutil ships no type information
import pytest

from tests.support.servers import ServeProcess, serve_env
from tests.support.tokens import bearer

HEAD_TIMEOUT = 1.0


@pytest.fixture
def server(sqlite_database: str, tmp_path: Path) -> Iterator[ServeProcess]:
    """One worker with short time limits (so the tests are quick) and a small connection cap."""
    env = serve_env(
        sqlite_database,
        tmp_path / "data",
        REQUEST_HEAD_TIMEOUT=str(HEAD_TIMEOUT),
        REQUEST_BODY_MIN_RATE="2000",
        MAX_CONNECTIONS="40",
        LOG_LEVEL="INFO",
        RATE_LIMIT_ANONYMOUS="off",
    )
    process = ServeProcess(env, tmp_path / "serve.log")
    try:
        process.wait_until_healthy()
        yield process
    finally:
        process.stop()


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            return await reader.read()
    finally:
        writer.close()


def problem_of(response: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON body of a raw HTTP/1.1 response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def assert_problem(response: bytes, status: int) -> dict[str, Any]:
    code, headers, body = problem_of(response)
    assert code == status, response[:300]
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff"
    assert body["status"] == status
    return body


async def trickle(port: int, pieces: list[bytes], *, pace: float) -> bytes:
    """Send ``pieces`` one every ``pace`` seconds (the client's pace is what is under test) while reading the
    answer; stop sending once the server has answered and closed. Bounded by 20 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(pace)

    sending = asyncio.create_task(send())
    try:
        async with asyncio.timeout(20):
            return await reader.read()
    finally:
        sending.cancel()
        writer.close()


async def health_time(url: str) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{url}/health")).status_code == 200
    return time.monotonic() - started


# -- request heads --------------------------------------------------------------------------------------------


async def test_a_huge_header_is_431_at_the_limit_and_costs_the_server_nothing(server: ServeProcess) -> None:
    rss_before = psutil.Process(server.pid).memory_info().rss
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

    async def stream_a_huge_header() -> None:  # up to 10 MB, as fast as the server takes it
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(160):
                writer.write(b"a" * 65536)
                await writer.drain()

    sending = asyncio.create_task(stream_a_huge_header())
    try:
        async with asyncio.timeout(10):
            answered = await reader.read()  # the server answers long before the client is done
    finally:
        sending.cancel()
        writer.close()
    body = assert_problem(answered, 431)
    assert "16384 bytes" in body["detail"]
    assert await health_time(server.url) < 1.0  # the loop never stalled
    assert psutil.Process(server.pid).memory_info().rss - rss_before < 20 * 2**20


async def test_a_long_url_is_431_too(server: ServeProcess) -> None:
    response = await raw_exchange(server.port, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_problem(response, 431)


async def test_a_head_just_under_the_limit_is_served(server: ServeProcess) -> None:
    padding = b"p" * (16384 - 200)
    response = await raw_exchange(
        server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + padding + b"\r\nConnection: close\r\n\r\n"
    )
    assert response.startswith(b"HTTP/1.1 200")


async def test_malformed_http_is_a_400_problem(server: ServeProcess) -> None:
    response = await raw_exchange(server.port, b"GET /health HTTP/1.1\r\nHost x\r\n\r\n")
    assert_problem(response, 400)


# -- time limits ----------------------------------------------------------------------------------------------


async def test_silent_connections_are_closed_after_the_head_timeout(server: ServeProcess) -> None:
    connections = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(10)]
    started = time.monotonic()
    try:
        async with asyncio.timeout(HEAD_TIMEOUT + 5):
            answers = await asyncio.gather(*(reader.read() for reader, _ in connections))
    finally:
        for _, writer in connections:
            writer.close()
    assert answers == [b""] * 10  # closed quietly: nothing was asked
    assert HEAD_TIMEOUT * 0.9 <= time.monotonic() - started < HEAD_TIMEOUT + 3


async def test_a_slowloris_head_is_408(server: ServeProcess) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
    started = time.monotonic()
    answered = await trickle(server.port, [head[n : n + 1] for n in range(len(head))], pace=0.05)
    assert_problem(answered, 408)
    assert time.monotonic() - started < HEAD_TIMEOUT + 3


async def test_a_body_slower_than_the_minimum_rate_is_408(server: ServeProcess) -> None:
    user = "slow-body"
    token = bearer(user)["Authorization"]
    head = (
        f"POST /api/{user}/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answered = await trickle(server.port, [head + b'{"title": "', *([b"x" * 100] * 600)], pace=0.1)
    assert_problem(answered, 408)  # it sent 1,000 bytes a second, half the minimum
    assert time.monotonic() - started < HEAD_TIMEOUT + 6


# -- connections ----------------------------------------------------------------------------------------------


async def test_connections_beyond_the_cap_get_503_at_once(server: ServeProcess) -> None:
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(40)]
    try:
        started = time.monotonic()
        answered = await raw_exchange(server.port, b"", read_timeout=5)
        assert time.monotonic() - started < 2
        body = assert_problem(answered, 503)
        assert "too many open connections" in body["detail"]
    finally:
        for _, writer in held:
            writer.close()
    assert await health_time(server.url) < 2  # and the held ones gone, it serves again


def test_the_open_file_limit_is_raised_to_the_hard_limit(sqlite_database: str, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    low = 256

    def lower_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    env = serve_env(sqlite_database, tmp_path / "data")
    process = ServeProcess(env, tmp_path / "serve.log", preexec_fn=lower_soft_limit)
    try:
        process.wait_until_healthy()
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
        served_soft = line.split()[3]
        assert served_soft == ("unlimited" if hard == resource.RLIM_INFINITY else str(hard)), line
    finally:
        process.stop()
    del soft


# -- honest logs ----------------------------------------------------------------------------------------------


async def test_a_client_that_hangs_up_mid_body_is_one_info_line_and_no_500(server: ServeProcess) -> None:
    user = "hangs-up"
    token = bearer(user)["Authorization"]
    head = (
        f"POST /api/{user}/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + b'{"title": "half')
    await writer.drain()
    writer.transport.abort()
    del reader
    server.wait_for_output("client disconnected before its request was complete: POST /api/{user_id}/tasks")
    assert await health_time(server.url) < 2
    output = server.output()
    assert "HTTP 500" not in output
    assert "ERROR" not in output
    assert output.count("client disconnected before its request was complete") == 1
