"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi import ResponseSpec

from app.access import EXEMPT
from app.errors import ProblemDetail, problem
from app.openapi import ApiOperation, problem_responses
from db.database import Database, DatabaseUnavailableError

READY_TIMEOUT_SECONDS = 1.5
SCHEMA_RECHECK_SECONDS = 2.0


class SchemaState:
    """Whether the database has every migration, asked at most every :data:`SCHEMA_RECHECK_SECONDS` while it
    has not and never again once it has (a running server never sees its schema go backwards), so a probe
    costs one ``SELECT 1`` and, while migrations are pending, a read of ``alembic_version`` now and then."""

    def __init__(self) -> None:
        self.pending: list[str] | None = None
        self.checked_at = 0.0

    async def pending_revisions(self, database: Database) -> list[str]:
        """The migrations the database lacks (empty: up to date); raises when they cannot be read."""
        if self.pending == []:
            return []
        now = time.monotonic()
        if self.pending is None or now - self.checked_at >= SCHEMA_RECHECK_SECONDS:
            from db.schema_migrations import pending_revisions  # noqa: PLC0415 - alembic: only once it is asked

            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                self.pending = await pending_revisions(database.engine)
            self.checked_at = now
        return self.pending


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
        description="200 when the database answers within 1.5 s and has every migration, else 503 (the detail "
        "names the pending migrations). The check has its own connection: it never waits behind request traffic "
        "for a pooled one.",
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
        """The database answers and its schema is up to date."""
        state = request.app.state
        database: Database = state.database
        try:
            await database.check(READY_TIMEOUT_SECONDS)
        except DatabaseUnavailableError:
            return problem(503, "The database is unavailable.", headers={"Retry-After": "5"})
        schema: SchemaState | None = state.get("schema_state")
        if schema is None:
            schema = state.schema_state = SchemaState()
        try:
            pending = await schema.pending_revisions(database)
        except Exception:  # whatever the driver raised, the answer is the same
            return problem(503, "The database's migration state cannot be read.", headers={"Retry-After": "5"})
        if pending:
            return problem(
                503,
                f"The database schema is behind: {len(pending)} migration(s) not applied ({', '.join(pending)}); "
                "run `uv run manage.py migrate`.",
                headers={"Retry-After": "5"},
            )
        return Response(HealthStatus(status="ok"))
