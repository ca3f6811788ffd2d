"""OpenTelemetry tracing (``OTEL_EXPORTER_OTLP_ENDPOINT``): a span per request, named by the route template,
with no raw path, user id or query string in it; off when the endpoint is not set."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.asgi import build_app
from app.auth.tokens import issue_token
from config.settings import Settings
from tests.support.tokens import TEST_SECRET


def settings_for(database_url: str, tmp_path: Path, endpoint: str | None) -> Settings:
    return Settings(
        app_env="test",
        data_dir=tmp_path,
        database_url=database_url,
        better_auth_secret=TEST_SECRET,
        otel_exporter_otlp_endpoint=endpoint,
    )


async def test_each_request_is_a_span_named_by_its_route(database_url: str, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = settings_for(database_url, tmp_path, "http://127.0.0.1:1")
    user = "tracing-user-5d1c"
    token = issue_token(settings, user, timedelta(minutes=5))
    async with AsyncTestClient(app=build_app(settings, tracer_provider=provider)) as client:
        listed = await client.get(
            f"/api/{user}/tasks?search=secret-words", headers={"Authorization": f"Bearer {token}"}
        )
        assert listed.status_code == 200
        assert (await client.get("/no/such/path")).status_code == 404
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["GET /api/{user_id}/tasks", "GET (unmatched)"]
    listing = spans[0]
    assert listing.attributes is not None
    assert listing.attributes["http.route"] == "/api/{user_id}/tasks"
    assert listing.attributes.get("http.status_code", listing.attributes.get("http.response.status_code")) == 200
    everything = repr([(span.name, dict(span.attributes or {})) for span in spans])
    assert user not in everything
    assert "secret-words" not in everything
    assert token not in everything
    assert "/no/such/path" not in everything


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        del args


@pytest.fixture
def collector() -> Iterator[str]:
    """An OTLP/HTTP endpoint that keeps what it is sent."""
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_spans_reach_the_otlp_endpoint(sqlite_database: str, tmp_path: Path, collector: str) -> None:
    async with AsyncTestClient(app=build_app(settings_for(sqlite_database, tmp_path, collector))) as client:
        assert (await client.get("/health")).status_code == 200
    # the app's shutdown flushed the batch: the collector has it
    paths = [path for path, _ in _Collector.received]
    assert paths == ["/v1/traces"]
    assert b"GET /health" in _Collector.received[0][1]


async def test_no_tracing_without_an_endpoint(sqlite_database: str, tmp_path: Path) -> None:
    app = build_app(settings_for(sqlite_database, tmp_path, None))
    assert "OpenTelemetryPlugin" not in {type(plugin).__name__ for plugin in app.plugins}
