"""schemathesis against a real server: the app's own OpenAPI document, every check, every phase.

``manage.py serve`` runs in a subprocess on a free port, on SQLite and on PostgreSQL. schemathesis loads
``/schema/openapi.json`` from it and sends what it generates from that document, with a valid token for the
path's user (tests/support/schemathesis_hooks.py signs one for whatever ``user_id`` is generated, so calls reach the
handlers instead of stopping at the 403 guard; the test checks from the server's access log that they do).
Every response is checked against the document: documented status codes, content types, headers and bodies;
no 5xx; invalid input refused and valid input accepted; auth enforced. Phases: the schema's examples, the
coverage phase (boundary and negative values), random fuzzing, and the stateful phase, which follows the
create route's OpenAPI links (``{id}`` into get, put, patch, complete and delete) and checks, for example, that
a deleted task is gone.

The run is deterministic (a fixed seed, derandomized Hypothesis, no example database) and bounded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import jsonschema_rs
import msgspec
import pytest
from hypothesis import strategies as st

from app.asgi import build_app
from app.tasks.list_request import _checked_tags
from app.tasks.schemas import TaskCompletion, clean_tags, clean_title, parse_due_date
from app.validation import decode_body
from config.settings import Settings
from tests.support.environment import clean_env
from tests.support.servers import ROOT, ServeProcess
from tests.support.tokens import TEST_SECRET

# CI runs the same derandomized cases every time. To dig deeper locally: FUZZ_MAX_EXAMPLES=500 (per operation
# in the fuzzing phase; examples and coverage run in full), and FUZZ_SEED=<n> for other random cases.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
SEED = os.environ.get("FUZZ_SEED")
STATEFUL_STEPS = 8
# Settings for the server under test. Features that would turn the fuzzer's steady traffic into refusals
# (a request rate limit, say) are raised here, never switched off in the app for tests.
SERVER_SETTINGS = {
    "APP_ENV": "test",
    "BETTER_AUTH_SECRET": TEST_SECRET,
    "CORS_ORIGINS": "https://app.example.com",
    "LOG_LEVEL": "INFO",  # an access log line per request: the test counts where the calls ended
    "LOG_FORMAT": "text",
    # Thousands of calls from one address: a 429 is documented, but it would stop the fuzzing at the door.
    "RATE_LIMIT": "off",
    "RATE_LIMIT_ANONYMOUS": "off",
}
ACCESS_LINE = re.compile(r"app\.access \[[^\]]*\] [A-Z]+ /api/\S* (\d{3}) ")  # the app's access line (text)


@pytest.fixture(scope="module")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """The API served for real, on the test run's migrated database; its output (the access log) in a file."""
    data_dir = tmp_path_factory.mktemp("fuzz-server")
    server = ServeProcess(clean_env(data_dir, **SERVER_SETTINGS, DATABASE_URL=database_url), data_dir / "server.log")
    try:
        server.wait_until_healthy(timeout=30, path="/health/ready")
        yield server
    finally:
        server.stop()


# Everything schemathesis is told, in its own config format. ${…} values come from the environment.
CONFIG = f"""
seed = {SEED or 0}
# Each request carries a valid token for the user in its own path (see tests/support/schemathesis_hooks.py).
hooks = "tests.support.schemathesis_hooks"
[generation]
max-examples = {MAX_EXAMPLES}
deterministic = {"false" if SEED else "true"}
database = "none"
[phases.stateful]
max-steps = {STATEFUL_STEPS}
[checks]
enabled = true
"""


def run_schemathesis(server: ServeProcess, workdir: Path) -> subprocess.CompletedProcess[str]:
    """``schemathesis run`` against the server's own document: every phase, every check."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{server.url}/schema/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--request-timeout",
        "10",
        "--report",
        "junit",
        "--report-dir",
        str(workdir / "report"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FUZZ_SECRET": TEST_SECRET}
    timeout = max(300, 3 * MAX_EXAMPLES)
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_schemathesis_finds_nothing(live_server: ServeProcess, tmp_path: Path) -> None:
    """Every phase and every check against the running server: zero failures, and most calls reach a handler."""
    logged_before = len(live_server.output())
    result = run_schemathesis(live_server, tmp_path)
    print(result.stdout)
    log = live_server.output()[logged_before:]
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\nserver log:\n{log[-20_000:]}"
    assert "Traceback" not in log
    # The stateful phase ran along the links, not just the single-call phases.
    links = re.search(r"API Links: +(\d+) covered", result.stdout)
    assert links is not None, result.stdout
    assert int(links.group(1)) >= 5, result.stdout
    # Most calls got past authentication and the path-owner guard. The 401s are schemathesis' probes of missing
    # and broken credentials, and user ids no token can carry (not printable); a 403 would mean the path's user
    # and the token's user disagree, so the fuzzing stopped at the guard.
    statuses = [int(status) for status in ACCESS_LINE.findall(log)]
    print("responses by status:", sorted(Counter(statuses).items()))
    assert len(statuses) > 500
    past_the_guard = sum(status not in {401, 403} for status in statuses)
    assert past_the_guard > 0.6 * len(statuses), Counter(statuses)
    assert statuses.count(403) < 0.01 * len(statuses), Counter(statuses)


def test_the_create_route_links_its_id_to_every_route_that_takes_one(live_server: ServeProcess) -> None:
    """The stateful phase runs along links: each one must name a real operation and its real parameters."""
    document = httpx.get(f"{live_server.url}/schema/openapi.json", timeout=10).json()
    operations = {
        operation["operationId"]: operation
        for path in document["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    links = document["paths"]["/api/{user_id}/tasks"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {
        "getTask",
        "replaceTask",
        "updateTask",
        "completeTask",
        "deleteTask",
    }
    for link in links.values():
        path_parameters = {p["name"] for p in operations[link["operationId"]]["parameters"] if p["in"] == "path"}
        assert set(link["parameters"]) == path_parameters == {"user_id", "task_id"}


# -- the document's patterns say exactly what the validators do ------------------------------------------------
# schemathesis finds a disagreement only if it happens to generate one; these compare the two directly, over
# strings built from the characters that matter (white space, invisible and control characters, NUL, astral).

TRICKY = st.sampled_from(["\x00", " ", "\t", "\n", "\x1c", "\x85", "\xa0", "\u200b", "\u2028", "\ufeff", "\U000e0020"])
TEXT = st.text(TRICKY | st.characters(codec="utf-8", exclude_characters="\ud800"), max_size=45)
CHECK = hypothesis.settings(max_examples=400, deadline=None, derandomize=True, database=None)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The OpenAPI document as the app serves it (no database is touched to build it)."""
    settings = Settings(
        app_env="test", data_dir=Path(os.devnull), database_url="sqlite:///unused.db", better_auth_secret=TEST_SECRET
    )
    schema: dict[str, Any] = build_app(settings).openapi_schema.to_schema()
    return schema


def validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def accepts(check: Callable[[], object]) -> bool:
    try:
        check()
    except ValueError:
        return False
    return True


def test_title_pattern_is_the_title_rule(document: dict[str, Any]) -> None:
    schema = validator(document["components"]["schemas"]["TaskCreate"]["properties"]["title"])

    @hypothesis.given(value=TEXT | st.builds(lambda a, b, c: a + "x" * b + c, TEXT, st.integers(150, 205), TEXT))
    @CHECK
    def agree(value: str) -> None:
        assert schema.is_valid(value) == accepts(lambda: clean_title(value)), repr(value)

    agree()


def test_tag_patterns_are_the_tag_rules(document: dict[str, Any]) -> None:
    body = validator(document["components"]["schemas"]["TaskCreate"]["properties"]["tags"]["items"])
    parameters = document["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
    query = validator(next(p["schema"]["items"] for p in parameters if p["name"] == "tag"))

    @hypothesis.given(value=TEXT)
    @CHECK
    def agree(value: str) -> None:
        assert body.is_valid(value) == (1 <= len(value) <= 40 and accepts(lambda: clean_tags([value]))), repr(value)
        assert query.is_valid(value) == accepts(lambda: _checked_tags([value])), repr(value)

    agree()


DATES = st.one_of(
    st.dates().map(str),
    st.builds(
        lambda moment, sep, fraction, offset: moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + fraction + offset,
        st.datetimes(),
        st.sampled_from(["T", "t", " "]),
        st.sampled_from(["", ".5", ".123456", ".1234567", "."]),
        st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-23:59", "+24:00", ""]),
    ),
    st.sampled_from(["0000-01-01", "2026-02-29", "2024-02-29", "2026-12-31T23:59:60Z", "\uff12026-01-01"]),
    st.text(max_size=30),
).flatmap(lambda value: st.sampled_from([value, f" {value}", value[:-1], value + "0"]))


def test_due_date_schema_is_the_due_date_rule(document: dict[str, Any]) -> None:
    schema = validator(document["components"]["schemas"]["TaskCreate"]["properties"]["due_date"])
    assert schema.is_valid(None)  # no due date

    @hypothesis.given(value=DATES)
    @CHECK
    def agree(value: str) -> None:
        assert schema.is_valid(value) == accepts(lambda: parse_due_date(value)), repr(value)

    agree()


def test_completed_schema_is_what_the_body_decoder_accepts(document: dict[str, Any]) -> None:
    """Bodies are decoded strictly (app/validation.py): ``completed`` is ``true`` or ``false``, as the schema says."""
    schema = validator(document["components"]["schemas"]["TaskCompletion"]["properties"]["completed"])
    values = st.one_of(
        st.booleans(),
        st.integers(-2, 2),
        st.floats(-1, 2),
        st.none(),
        st.sampled_from(["true", "FALSE", "1", "yes"]),
        TEXT,
    )

    @hypothesis.given(value=values)
    @CHECK
    def agree(value: object) -> None:
        decoded = accepts(lambda: decode_body(msgspec.json.encode({"completed": value}), TaskCompletion))
        assert schema.is_valid(value) == decoded, repr(value)

    agree()
