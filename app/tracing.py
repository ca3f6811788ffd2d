"""OpenTelemetry tracing, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: a span per request, sent over OTLP/HTTP.

Litestar's OpenTelemetry plugin wraps the application in the ASGI instrumentation, which names spans and
records attributes from the raw path and query string. Both can hold user ids (and a careless client's
token), so here a span is named ``METHOD route-template`` and its URL attributes are replaced by the template.
The ``tracing`` dependency group holds the packages (``uv sync --group tracing``); the rest of the standard
``OTEL_*`` variables (``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_HEADERS``, …) are read by the exporter.
"""

from __future__ import annotations

from typing import Any

from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span

# Attributes the ASGI instrumentation fills from the raw URL (old and new semantic conventions).
_URL_ATTRIBUTES = ("http.target", "url.path", "http.url", "url.full")
_QUERY_ATTRIBUTES = ("url.query",)
UNMATCHED = "(unmatched)"


def route_template(scope: Any) -> str:
    """The path template the router will pick for this request (its routing is cached: no second search)."""
    app = scope.get("app")
    try:
        return str(app.asgi_router.handle_routing(path=scope["path"], method=scope.get("method"))[4])
    except Exception:  # not found, method not allowed: no template worth naming
        return UNMATCHED


def span_details(scope: Any) -> tuple[str, dict[str, Any]]:
    """The span's name and ``http.route``: method and template, never the raw path."""
    template = route_template(scope)
    method = str(scope.get("method", ""))
    return f"{method} {template}".strip(), {"http.route": template}


def hide_raw_url(span: Span, scope: dict[str, Any]) -> None:
    """Replace the URL attributes the instrumentation recorded with the route template."""
    if not span.is_recording():
        return
    template = route_template(scope)
    for name in _URL_ATTRIBUTES:
        span.set_attribute(name, template)
    for name in _QUERY_ATTRIBUTES:
        span.set_attribute(name, "")


def exporting_provider(endpoint: str) -> TracerProvider:
    """Spans batched and sent to ``endpoint`` (``OTEL_EXPORTER_OTLP_ENDPOINT``) over OTLP/HTTP."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    provider = TracerProvider(resource=Resource.create({"service.name": "todo-backend"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    return provider


def tracing_plugin(provider: TracerProvider) -> OpenTelemetryPlugin:
    """The Litestar plugin that traces each HTTP request with ``provider``."""
    return OpenTelemetryPlugin(
        OpenTelemetryConfig(
            tracer_provider=provider,
            scope_span_details_extractor=span_details,
            server_request_hook_handler=hide_raw_url,
            exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
            scopes={"http"},  # type: ignore[arg-type]
        )
    )
