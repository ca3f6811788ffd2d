"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi import ResponseSpec

from app.access import EXEMPT
from app.errors import ProblemDetail, problem
from app.openapi import ApiOperation, problem_responses
from db.database import Database, DatabaseUnavailableError

READY_TIMEOUT_SECONDS = 1.5


class HealthStatus(msgspec.Struct):
    """The service's state."""

    status: Literal["ok"]


class HealthController(Controller):
    """``/health`` says the process is up; ``/health/ready`` that it can reach the database."""

    path = "/health"
    tags = ["health"]
    opt = {EXEMPT: True}  # probes from an orchestrator or load balancer are never throttled

    @get(
        "/",
        summary="Liveness",
        description="200 while the process serves requests; no database access.",
        operation_class=ApiOperation,
    )
    async def live(self) -> HealthStatus:
        """The process is alive."""
        return HealthStatus(status="ok")

    @get(
        "/ready",
        summary="Readiness",
        description="200 when the database answers within 1.5 s, else 503. The check has its own connection: it "
        "never waits behind request traffic for a pooled one.",
        # The handler returns either a status or a problem, which Litestar cannot describe: the 200 is stated here.
        responses={
            200: ResponseSpec(
                data_container=HealthStatus, description="The database answers.", generate_examples=False
            ),
            **problem_responses(rate_limited=False),
        },
        operation_class=ApiOperation,
    )
    async def ready(self, request: Request[Any, Any, Any]) -> Response[HealthStatus] | Response[ProblemDetail]:
        """The database answers."""
        database: Database = request.app.state.database
        try:
            await database.check(READY_TIMEOUT_SECONDS)
        except DatabaseUnavailableError:
            return problem(503, "The database is unavailable.", headers={"Retry-After": "5"})
        return Response(HealthStatus(status="ok"))
