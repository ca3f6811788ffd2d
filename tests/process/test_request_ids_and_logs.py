"""Request ids and the access log, through a real ``manage.py serve --workers 2`` as an operator runs it.

Every response echoes the request's id (the client's ``X-Request-ID`` when it is a sane token, else a new
one), every problem body carries it as ``request_id``, and every log line written for the request names it.
``LOG_FORMAT=json`` writes one object per line; the access line names the route template, never the raw
path, the query string, the token or the user id (only a keyed hash of it).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.auth.tokens import InvalidTokenError, TokenRules, issue_token
from app.edge import user_hasher
from config.logging import REQUEST_ID, RequestIdFilter, log_config
from config.settings import NAMES, Settings
from tests.support.servers import ServeProcess, serve_env
from tests.support.tokens import TEST_SECRET

ISSUER = "https://api.example.com"
NEW_ID = re.compile(r"[0-9a-f]{32}")
WAIT_SECONDS = 30


def token(user: str, issuer: str = ISSUER) -> str:
    return issue_token(Settings(better_auth_secret=TEST_SECRET, jwt_issuer=issuer), user, timedelta(minutes=5))


@pytest.fixture(scope="module")
def server(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("logs")
    env = {**serve_env(postgres_database, folder / "data"), **unset_except_serve_env()}
    env.update(
        LOG_FORMAT="json",
        JWT_ISSUER=ISSUER,
        MAX_REQUEST_HEAD_BYTES="2048",
    )
    process = ServeProcess(env, folder / "serve.log", "--workers", "2")
    try:
        process.wait_until_healthy()
        yield process
    finally:
        process.stop()


def unset_except_serve_env() -> dict[str, str]:
    """Every setting that serve_env leaves alone, set empty (a developer's .env must not leak in)."""
    return {name: "" for name in NAMES if name not in {"APP_ENV", "DATA_DIR", "DATABASE_URL", "BETTER_AUTH_SECRET"}}


def log_records(server: ServeProcess) -> list[dict[str, Any]]:
    """Every JSON line the server wrote (the CLI's own banner lines are plain text)."""
    records = []
    for line in server.output().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def wait_for_record(server: ServeProcess, **fields: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for record in log_records(server):
            if all(record.get(key) == value for key, value in fields.items()):
                return record
        time.sleep(0.05)  # polling the log file, bounded by the deadline
    raise AssertionError(f"no log record with {fields} in:\n{server.output()}")


def test_a_sane_client_request_id_is_echoed_and_on_the_access_line(server: ServeProcess) -> None:
    user = "user-7f3a-ids"
    bearer = token(user)
    response = httpx.get(
        f"{server.url}/api/{user}/tasks?search=private-words",
        headers={"Authorization": f"Bearer {bearer}", "X-Request-ID": "client:req-42.a_b"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "client:req-42.a_b"

    access = wait_for_record(server, logger="app.access", request_id="client:req-42.a_b")
    assert access["method"] == "GET"
    assert access["route"] == "/api/{user_id}/tasks"  # the template, not the path with the user id
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float | int)
    assert access["duration_ms"] >= 0
    assert access["user"] == user_hasher(TEST_SECRET)(user)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", access["time"])
    log = server.output()
    assert user not in log
    assert bearer not in log
    assert "private-words" not in log
    assert "search=" not in log


@pytest.mark.parametrize("sent", ["has spaces in it", "x" * 129, 'quote"d', ""])
def test_an_unusable_request_id_is_replaced_by_a_new_one(server: ServeProcess, sent: str) -> None:
    response = httpx.get(f"{server.url}/api/someone/tasks", headers={"X-Request-ID": sent})
    assert response.status_code == 401
    request_id = response.headers["x-request-id"]
    assert NEW_ID.fullmatch(request_id)
    assert response.json()["request_id"] == request_id
    wait_for_record(server, logger="app.access", request_id=request_id, status=401)


def test_every_problem_names_the_request_id_and_a_new_id_each_time(server: ServeProcess) -> None:
    first = httpx.get(f"{server.url}/no/such/route")
    second = httpx.get(f"{server.url}/no/such/route")
    assert first.status_code == second.status_code == 404
    assert first.headers["content-type"] == "application/problem+json"
    assert first.json()["request_id"] == first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    access = wait_for_record(server, logger="app.access", request_id=first.headers["x-request-id"])
    assert access["route"] is None
    assert "/no/such/route" not in json.dumps(access)


def test_a_successful_response_carries_a_request_id_too(server: ServeProcess) -> None:
    response = httpx.get(f"{server.url}/health")
    assert response.status_code == 200
    assert NEW_ID.fullmatch(response.headers["x-request-id"])


def test_an_issuer_mismatch_is_logged_with_both_values_and_the_request_id(server: ServeProcess) -> None:
    user = "user-issuer-mismatch"
    foreign = token(user, issuer="https://staging.example.com")
    response = httpx.get(
        f"{server.url}/api/{user}/tasks",
        headers={"Authorization": f"Bearer {foreign}", "X-Request-ID": "mismatch-1"},
    )
    assert response.status_code == 401
    assert response.json()["request_id"] == "mismatch-1"
    line = wait_for_record(server, logger="app.auth", request_id="mismatch-1")
    assert line["level"] == "INFO"
    assert line["message"] == (
        "token refused: iss mismatch: expected 'https://api.example.com', received 'https://staging.example.com'"
    )
    assert foreign not in server.output()


def test_a_problem_the_protocol_answers_itself_has_a_request_id(server: ServeProcess) -> None:
    """A head over MAX_REQUEST_HEAD_BYTES never reaches the application: the 431 still has an id."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 4096 + b"\r\n\r\n")
        answer = b""
        while b"}" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    request_id = re.search(rb"x-request-id: ([0-9a-f]{32})\r\n", head)
    assert request_id is not None
    assert json.loads(body)["request_id"] == request_id.group(1).decode()


def test_text_format_puts_the_request_id_on_each_line() -> None:
    config = log_config("INFO", "text")
    formatter = logging.Formatter(config["formatters"]["main"]["format"])
    record = logging.LogRecord("app.errors", logging.WARNING, __file__, 1, "database unavailable", None, None)
    reset = REQUEST_ID.set("abc-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(reset)
    assert formatter.format(record).endswith("WARNING app.errors [abc-1] database unavailable")
    outside = logging.LogRecord("app", logging.INFO, __file__, 1, "started", None, None)
    RequestIdFilter().filter(outside)
    assert formatter.format(outside).endswith("INFO app [-] started")


def test_log_format_defaults_to_json_in_production_only() -> None:
    secret = {"BETTER_AUTH_SECRET": TEST_SECRET}
    assert Settings.from_env({**secret, "APP_ENV": "production"}).log_format == "json"
    assert Settings.from_env({"APP_ENV": "development"}).log_format == "text"
    assert Settings.from_env({"LOG_FORMAT": "JSON"}).log_format == "json"


def test_an_audience_mismatch_is_logged_with_both_values(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(better_auth_secret=TEST_SECRET, jwt_audience="https://api.example.com")
    foreign = issue_token(replace(settings, jwt_audience="https://other.example.com"), "u1", timedelta(minutes=5))
    caplog.set_level(logging.INFO, logger="app.auth")
    with pytest.raises(InvalidTokenError, match="issued by or for someone else"):
        TokenRules.from_settings(settings).decode(foreign, TEST_SECRET, "HS256")
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "app.auth"] == [
        (
            logging.INFO,
            "token refused: aud mismatch: expected 'https://api.example.com', received 'https://other.example.com'",
        )
    ]
    assert foreign not in caplog.text
