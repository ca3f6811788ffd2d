"""Around the API: health probes, database outages, OpenAPI and docs, CORS, persistence across restarts."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.asgi import build_app
from config.settings import DatabaseLimits, Settings
from tests.support.ports import free_port

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]
TASK_ROUTES = {
    "/api/{user_id}/tasks": {"get", "post"},
    "/api/{user_id}/tasks/{task_id}": {"get", "put", "patch", "delete"},
    "/api/{user_id}/tasks/{task_id}/complete": {"patch"},
}


@pytest.fixture
def closed_port() -> int:
    """A local TCP port with nothing listening: connections are refused at once."""
    return free_port()


async def test_health_is_ok(client: Client) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}


@pytest.mark.slow  # waits out the connection retries, per database
async def test_unreachable_database(settings: Settings, closed_port: int, auth: Auth) -> None:
    """Liveness stays up, readiness and API calls answer 503 problems with Retry-After."""
    down = replace(
        settings,
        database_url=f"postgresql://postgres@127.0.0.1:{closed_port}/nowhere",
        db_options=DatabaseLimits(connect_timeout=0.2),  # refused connects are retried for this long
    )
    async with AsyncTestClient(app=build_app(down)) as client:
        assert (await client.get("/health")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.headers["content-type"].startswith("application/problem+json")
        for method, path, body in (
            ("GET", "/api/u1/tasks", None),
            ("POST", "/api/u1/tasks", {"title": "x"}),
            ("PATCH", "/api/u1/tasks/1", {"title": "x"}),
        ):
            response = await client.request(method, path, json=body, headers=auth("u1"))
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            assert response.json()["status"] == 503
            assert str(closed_port) not in response.text  # no connection details leak


async def test_openapi_documents_every_route(client: Client) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    assert schema["openapi"].startswith("3.1")
    assert schema["components"]["securitySchemes"]["BearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schema["components"]["securitySchemes"]["BearerToken"]["description"],
    }
    for path, methods in TASK_ROUTES.items():
        assert set(schema["paths"][path]) >= methods
        for method in methods:
            operation = schema["paths"][path][method]
            assert operation["security"] == [{"BearerToken": []}]
            for status in ("400", "401", "403", "503"):
                content = operation["responses"][status]["content"]
                assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/ProblemDetail"}
            if "{task_id}" in path:
                assert "404" in operation["responses"]
    assert set(schema["paths"]["/api/{user_id}/tasks"]["post"]["responses"]) >= {"201"}
    assert set(schema["paths"]["/api/{user_id}/tasks/{task_id}"]["delete"]["responses"]) >= {"204"}
    complete = schema["paths"]["/api/{user_id}/tasks/{task_id}/complete"]["patch"]
    assert complete["requestBody"]["required"] is False  # no body toggles
    [task_id] = [p for p in complete["parameters"] if p["name"] == "task_id"]
    assert (task_id["schema"]["minimum"], task_id["schema"]["maximum"]) == (1, 2**63 - 1)
    assert isinstance(task_id["schema"]["maximum"], int)
    assert "Location" in schema["paths"]["/api/{user_id}/tasks"]["post"]["responses"]["201"]["headers"]
    listing = schema["paths"]["/api/{user_id}/tasks"]["get"]
    assert {"X-Total-Count", "Link"} <= set(listing["responses"]["200"]["headers"])
    assert {p["name"] for p in listing["parameters"]} >= {
        "status",
        "priority",
        "tag",
        "due_before",
        "due_after",
        "q",
        "sort",
        "order",
        "limit",
        "cursor",
    }
    create_body = schema["components"]["schemas"]["TaskCreate"]
    assert create_body["required"] == ["title"]
    title = create_body["properties"]["title"]
    assert "maxLength" not in title  # the limit counts after trimming: the pattern states it (test_schemathesis.py)
    assert "200" in title["description"]
    assert re.fullmatch(title["pattern"], " " + "x" * 200 + " ")
    assert not re.fullmatch(title["pattern"], "x" * 201)
    assert {"/health", "/health/ready"} <= set(schema["paths"])


async def test_docs_page_renders_the_schema(client: Client) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    scripts = re.findall(r'<script src="([^"]+)"', response.text)
    assert scripts == ["/docs/assets/swagger-ui-bundle.js", "/docs/assets/docs.js"]  # from the app, no CDN
    for path in scripts:
        script = await client.get(path)
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in (await client.get("/docs/assets/swagger-ui-bundle.js")).text
    assert '"/schema/openapi.json"' in (await client.get("/docs/assets/docs.js")).text  # the spec it shows is ours


async def test_cors_preflight_for_an_allowed_origin(client: Client) -> None:
    response = await client.options(
        "/api/u1/tasks",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code in {200, 204}
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_cors_refuses_other_origins(client: Client, auth: Auth) -> None:
    preflight = await client.options(
        "/api/u1/tasks",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = await client.get("/api/u1/tasks", headers={"Origin": "https://evil.example.com", **auth("u1")})
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_exposes_location_to_the_allowed_origin(client: Client, auth: Auth) -> None:
    response = await client.post(
        "/api/u1/tasks", json={"title": "x"}, headers={"Origin": "https://app.example.com", **auth("u1")}
    )
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "location" in response.headers["access-control-expose-headers"].lower()


async def test_tasks_survive_an_app_restart(settings: Settings, auth: Auth, new_user: Callable[[], str]) -> None:
    user = new_user()
    async with AsyncTestClient(app=build_app(settings)) as first:
        created = (await first.post(f"/api/{user}/tasks", json={"title": "durable"}, headers=auth(user))).json()
        await first.patch(f"/api/{user}/tasks/{created['id']}/complete", headers=auth(user))
    async with AsyncTestClient(app=build_app(settings)) as second:  # a new process would look the same
        listed = (await second.get(f"/api/{user}/tasks", headers=auth(user))).json()
    assert [(t["id"], t["title"], t["completed"]) for t in listed] == [(created["id"], "durable", True)]


async def test_bodies_over_the_limit_are_413_before_parsing(client: Client, auth: Auth) -> None:
    too_big = b'{"title": "x", "description": "' + b"a" * (64 * 1024) + b'"}'
    response = await client.post(
        "/api/u1/tasks", content=too_big, headers={**auth("u1"), "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 413
    # just under the limit the body is parsed, and its too-long description is the client's 400
    fits = b'{"title": "x", "description": "' + b"a" * 60_000 + b'"}'
    response = await client.post(
        "/api/u1/tasks", content=fits, headers={**auth("u1"), "Content-Type": "application/json"}
    )
    assert response.status_code == 400


async def test_the_body_limit_is_a_setting(settings: Settings, auth: Auth) -> None:
    async with AsyncTestClient(app=build_app(replace(settings, max_body_bytes=2048))) as client:
        body = {"title": "x", "description": "a" * 900}
        assert (await client.post("/api/u1/tasks", json=body, headers=auth("u1"))).status_code == 201
        body = {"title": "x", "description": "a" * 3000}
        assert (await client.post("/api/u1/tasks", json=body, headers=auth("u1"))).status_code == 413


async def test_security_headers_on_every_api_response(client: Client, auth: Auth) -> None:
    responses = [
        await client.get("/api/u1/tasks", headers=auth("u1")),  # 200
        await client.get("/api/u1/tasks"),  # 401 from the middleware
        await client.get("/api/u1/tasks/999999", headers=auth("u1")),  # 404 from the data layer
        await client.get("/nowhere"),  # 404 from the router
        await client.get("/health"),
    ]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "server" not in response.headers


async def test_docs_page_may_load_from_its_own_origin_only(client: Client) -> None:
    response = await client.get("/docs")
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'self';")  # Swagger UI's files come from the app (tests/test_docs_offline.py)
    assert "unsafe" not in policy
    assert "http" not in policy
