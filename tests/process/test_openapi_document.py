"""The OpenAPI document says exactly what the server does, the same way every time; and what surrounds it
(``/``, ``/schema/…``, the bearer scheme's words) tells a person where to go."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema_rs
import pytest
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.asgi import build_app
from app.tasks.etags import if_match_versions
from config.settings import Settings
from tests.support.environment import UNSET_SETTINGS
from tests.support.tokens import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]
CHECK = hypothesis.settings(max_examples=500, deadline=None, derandomize=True, database=None)


def document_for(**settings: Any) -> dict[str, Any]:
    values = {"better_auth_secret": TEST_SECRET, **settings}
    chosen = Settings(app_env="test", data_dir=Path(os.devnull), database_url="sqlite:///unused.db", **values)
    schema: dict[str, Any] = build_app(chosen).openapi_schema.to_schema()
    return schema


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return document_for()


def test_manage_py_openapi_writes_the_served_document_the_same_way_every_time(
    document: dict[str, Any], tmp_path: Path
) -> None:
    outputs = []
    for seed in ("1", "2"):  # set and dict orders that hash strings would differ between these
        env = {**os.environ, **UNSET_SETTINGS, "PYTHONHASHSEED": seed, "DATA_DIR": str(tmp_path / "data")}
        result = subprocess.run(
            [sys.executable, "manage.py", "openapi"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0]) == document
    written = tmp_path / "openapi.json"
    env = {**os.environ, **UNSET_SETTINGS, "DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "manage.py", "openapi", "-o", str(written)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert written.read_text() == outputs[0]


def test_the_bearer_scheme_describes_the_configured_token_mode() -> None:
    secret = document_for()["components"]["securitySchemes"]["BearerToken"]["description"]
    jwks = document_for(jwt_jwks_url="https://app.example.com/api/auth/jwks")["components"]["securitySchemes"][
        "BearerToken"
    ]["description"]
    assert "HS256" in secret
    assert "BETTER_AUTH_SECRET" in secret
    assert "JWT_JWKS_URL" in jwks
    assert "HS256 tokens are refused" in jwks


def test_every_documented_response_header_and_body_has_a_schema(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                for name, header in (response.get("headers") or {}).items():
                    assert header.get("schema"), (path, method, status, name)
                for media in (response.get("content") or {}).values():
                    assert media.get("schema"), (path, method, status)
    ready = document["paths"]["/health/ready"]["get"]["responses"]["200"]
    assert ready["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/HealthStatus"}


def test_fields_with_defaults_carry_no_schema_default(document: dict[str, Any]) -> None:
    """openapi-typescript types a property with a ``default`` as always present: a create would need them all."""
    create = document["components"]["schemas"]["TaskCreate"]
    assert create["required"] == ["title"]
    assert not any("default" in field for field in create["properties"].values())
    assert create["properties"]["completed"]["description"] == "Default: false."
    assert create["properties"]["priority"]["description"] == 'Default: "medium".'


def test_if_match_pattern_accepts_exactly_what_the_server_accepts(document: dict[str, Any]) -> None:
    """schemathesis found ``null`` documented but refused; the pattern now states the server's rule."""
    parameters = document["paths"]["/api/{user_id}/tasks/{task_id}"]["put"]["parameters"]
    schema = next(p["schema"] for p in parameters if p["name"] == "If-Match")
    assert schema["type"] == "string"
    valid = jsonschema_rs.validator_for(schema)
    tag = st.builds(
        lambda weak, body: f'{weak}"{body}"',
        st.sampled_from(["", "W/", "w/"]),
        st.text(st.sampled_from(["1", "-", ",", " ", '"', "a", "\x7f", "\x80", "\xff", "\t"]), max_size=6),
    )
    element = st.one_of(tag, st.sampled_from(["", " ", "\t", "*", "null", '"1-1"', "1-1"]))
    header = (
        st.lists(element, max_size=5)
        .map(",".join)
        .flatmap(lambda text: st.sampled_from([text, f" {text} ", f"{text},", f"*{text}"]))
    )

    @hypothesis.given(value=header)
    @CHECK
    def agree(value: str) -> None:
        try:
            if_match_versions(value, 1)
            accepted = True
        except ValueError:
            accepted = False
        assert valid.is_valid(value) == accepted, repr(value)

    agree()
    many = ", ".join(f'"1-{n}"' for n in range(1, 102))
    assert not valid.is_valid(many)  # at most 100 entity tags
    assert valid.is_valid(many.rsplit(",", 1)[0])


async def test_unknown_schema_paths_and_the_root_answer_usefully(app: Litestar) -> None:
    async with AsyncTestClient(app=app) as client:
        for path in ("/schema/nope", "/schema/redoc", "/schema/swagger", "/docs/assets/nope.js"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json", path
            assert response.json()["status"] == 404
        assert (await client.get("/schema")).json()["openapi"].startswith("3.1")
        index = await client.get("/")
        assert index.status_code == 200
        assert index.json()["docs"] == "/docs"
        assert (await client.get(index.json()["openapi"])).status_code == 200
