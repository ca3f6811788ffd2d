"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ProblemDetail, problem
from app.openapi import problem_responses
from app.ratelimit.middleware import RATE_LIMIT_EXEMPT

READY_TIMEOUT_SECONDS = 2.0


class HealthStatus(msgspec.Struct):
    """The service's state."""

    status: str


class HealthController(Controller):
    """``/health`` says the process is up; ``/health/ready`` that it can reach the database."""

    path = "/health"
    tags = ["health"]
    opt = {RATE_LIMIT_EXEMPT: True}  # probes from an orchestrator or load balancer are never throttled

    @get("/", summary="Liveness", description="200 while the process serves requests; no database access.")
    async def live(self) -> HealthStatus:
        """The process is alive."""
        return HealthStatus(status="ok")

    @get(
        "/ready",
        summary="Readiness",
        description="200 when the database answers within 2 s, else 503.",
        responses=problem_responses(rate_limited=False),
    )
    async def ready(self, db_engine: NamedDependency[AsyncEngine]) -> Response[HealthStatus] | Response[ProblemDetail]:
        """The database answers."""
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS), db_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # any failure to answer means "not ready"; the reason goes to the log
            return problem(503, "The database is unavailable.", headers={"Retry-After": "5"})
        return Response(HealthStatus(status="ok"))
