"""Prometheus metrics at ``/metrics`` (``METRICS_ENABLED``; ``METRICS_TOKEN`` asks for a bearer token).

What is measured, and where:

* ``todo_http_requests_total`` and ``todo_http_request_duration_seconds`` by ``method``, ``route`` (the path
  template, ``(unmatched)`` when no route matched) and ``status``: recorded by ``app.edge`` once per request
  (:meth:`Metrics.observe`, a dictionary look-up and two updates). No label carries a user id or a raw path.
* ``todo_rate_limit_refusals_total`` by ``route``: the 429s of the rate limiter.
* ``todo_db_pool_connections_in_use``, ``todo_db_pool_connections_open`` and ``todo_db_pool_waiting`` (PostgreSQL):
  sampled once a second by each worker, summed over the live workers.

Under ``manage.py serve --workers N`` each worker writes its numbers to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode; ``serve`` prepares the folder) and a scrape, whichever worker answers
it, reads them all, so the counts are the service's, not one worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import HTTPRouteHandler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.access import EXEMPT

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
POOL_SAMPLE_SECONDS = 1.0
_LABELS = ("method", "route", "status")


def multiprocess_folder() -> str | None:
    """The folder the workers share (set by ``manage.py serve``), or ``None`` in a single process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The service's metrics: registered in their own registry (one per app, so tests can build many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("todo_http_requests", "HTTP requests answered.", _LABELS, registry=self.registry)
        self.latency = Histogram(
            "todo_http_request_duration_seconds",
            "Time from the request's arrival to the end of its answer.",
            _LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refusals = Counter(
            "todo_rate_limit_refusals", "Requests refused (429) by the rate limiter.", ["route"], registry=self.registry
        )
        self.pool_in_use = Gauge(
            "todo_db_pool_connections_in_use",
            "Pooled PostgreSQL connections running a statement.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.pool_open = Gauge(
            "todo_db_pool_connections_open",
            "Pooled PostgreSQL connections open (or being opened).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "todo_db_pool_waiting",
            "Requests waiting for a pooled connection.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._sampler: asyncio.Task[None] | None = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request (``app.edge`` calls it)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method if method in METHODS else "OTHER", route, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            if len(self._children) < 10_000:  # bounded: routes and statuses are few, methods are normalised
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if status == 429:
            self.refusals.labels(route).inc()

    def exposition(self) -> bytes:
        """The text a scrape gets: every worker's numbers in multiprocess mode, else this process's."""
        if multiprocess_folder():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    async def start(self, app: Litestar) -> None:
        """Startup: sample the database pool once a second (PostgreSQL only: SQLite has no pool)."""
        pool = getattr(app.state.get("database"), "pool", None)
        if pool is not None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample(pool))

    async def _sample(self, pool: Any) -> None:
        while True:
            stats = pool.stats()
            self.pool_in_use.set(stats.in_use)
            self.pool_open.set(stats.size)
            self.pool_waiting.set(stats.waiting)
            await asyncio.sleep(POOL_SAMPLE_SECONDS)

    async def stop(self, app: Litestar) -> None:
        """Shutdown: stop sampling; this worker's gauges leave the sums."""
        del app
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if multiprocess_folder():
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def metrics_route(metrics: Metrics, token: str | None) -> HTTPRouteHandler:
    """``GET /metrics``: not rate limited, not in the OpenAPI document; with ``token``, only for its bearer."""
    expected = f"Bearer {token}".encode() if token else None

    @get(
        "/metrics",
        include_in_schema=False,
        opt={EXEMPT: True},
        sync_to_thread=False,
        media_type=CONTENT_TYPE_LATEST,
    )
    def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
        if expected is not None:
            sent = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(sent, expected):
                raise NotAuthorizedException(
                    detail="The metrics need 'Authorization: Bearer <METRICS_TOKEN>'.",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return scrape
