"""Error mapping: every error leaves the service as an RFC 9457 ``application/problem+json`` body.

This is the one place that decides what a client is told when something fails. Bad input is a 4xx with
the reason; database outages are a 503 with ``Retry-After``; anything unexpected is a bare 500 whose
details go to the server log only, never to the client.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any

import asyncpg
import msgspec
from advanced_alchemy.exceptions import IntegrityError, NotFoundError, RepositoryError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import IntegrityError as SQLAlchemyIntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.auth.tokens import SigningKeysUnavailableError
from app.requests import ClientDisconnectedError
from app.tasks.etags import etag
from app.tasks.schemas import TaskRead
from app.validation import FieldError, InvalidRequestError, parameter_message
from config.logging import REQUEST_ID
from db.database import ConstraintViolationError, DatabaseUnavailableError, PoolExhaustedError
from db.owned import OwnerScopeError, StaleVersionError

logger = logging.getLogger("app.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:todo-backend:problem:"
DATABASE_RETRY_AFTER_SECONDS = 5
BUSY_RETRY_AFTER_SECONDS = 1


class ProblemDetail(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem details object."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    task: TaskRead | None = None  # a 412: the task as it is now (its ETag is in the header)
    request_id: Annotated[
        str | None,
        msgspec.Meta(description="The request's id (its X-Request-ID): quote it when reporting a problem."),
    ] = None


_SLUGS = {
    400: "invalid-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    410: "gone",
    412: "precondition-failed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "unprocessable-content",
    429: "too-many-requests",
    500: "internal-error",
    503: "service-unavailable",
}
# server-busy (503): no pooled database connection came free in time; see handle_pool_exhausted.


def problem(
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
    slug: str | None = None,
    task: TaskRead | None = None,
) -> Response[ProblemDetail]:
    """Build a problem+json response."""
    body = ProblemDetail(
        type=PROBLEM_TYPE_PREFIX + (slug or _SLUGS.get(status, "error")),
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=errors,
        task=task,
        request_id=REQUEST_ID.get(),
    )
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {}))


def _field_errors(extra: Any, request: Request[Any, Any, Any] | None = None) -> list[FieldError]:
    """Litestar puts per-field messages in ``extra`` as ``[{"key", "message", "source"}]``; a parameter's message
    is said in our words, from the route's signature (msgspec's "Invalid enum value 'x'" names no choices)."""
    items = extra if isinstance(extra, list) else [extra] if isinstance(extra, dict) else []
    errors: list[FieldError] = []
    for item in items:
        if isinstance(item, dict):
            key = str(item.get("key") or "data")
            message = str(item.get("message", "invalid value"))
            source = getattr(item.get("source"), "value", item.get("source"))  # ParamType enum → "path"
            if request is not None and source in {"query", "path", "header", "cookie"}:
                message = parameter_message(request, key) or message
            if source == "header" and "_" in key:  # a header is named as sent, not as its parameter
                key = "-".join(part.capitalize() for part in key.split("_"))
            if key == "data":  # never from a task route (app.validation decodes bodies): the body as a whole
                key, source = "body", "body"
            errors.append(FieldError(field=key, message=message, source=str(source) if source else None))
    return errors


def _validation_detail(errors: list[FieldError], fallback: str) -> str:
    if not errors:
        return fallback or "The request is not valid."
    return "; ".join(f"{e.field}: {e.message}" for e in errors)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ProblemDetail]:
    """Litestar's own HTTP errors (validation, auth, 404, 405, …) as problems."""
    status = exc.status_code
    headers = dict(exc.headers or {})
    if isinstance(exc, ValidationException) or status == 400:
        errors = _field_errors(exc.extra, request if request.scope.get("route_handler") else None)
        return problem(400, _validation_detail(errors, exc.detail), errors=errors or None, headers=headers)
    if status >= 500:
        logger.error("HTTP %s raised: %s", status, exc.detail)
        detail = HTTPStatus(status).description
    else:
        detail = exc.detail or HTTPStatus(status).description
    return problem(status, detail, headers=headers)


def handle_invalid_request(_: Request[Any, Any, Any], exc: InvalidRequestError) -> Response[ProblemDetail]:
    """Bad input our own validation found (app/validation.py): every bad value, in one 400."""
    return invalid_request_problem(exc)


def invalid_request_problem(exc: InvalidRequestError) -> Response[ProblemDetail]:
    """The 400 for bad input (also each bad operation of a batch)."""
    return problem(400, _validation_detail(exc.errors, ""), errors=exc.errors)


def handle_repository_error(_: Request[Any, Any, Any], exc: RepositoryError) -> Response[ProblemDetail]:
    """Data-layer errors: not found, conflicts, and database outages."""
    return repository_problem(exc)


def repository_problem(exc: RepositoryError) -> Response[ProblemDetail]:
    """The problem for a data-layer error (also each failed operation of a batch)."""
    if isinstance(exc, NotFoundError):
        # The same answer whether the task never existed or belongs to someone else.
        return problem(404, "Task not found.")
    # Before IntegrityError: Advanced Alchemy reports every driver error raised by a statement (a lost
    # connection, a statement timeout, a connection lost during COMMIT) as its IntegrityError; what caused
    # it tells the outage apart, and only a constraint the database enforced is the client's conflict.
    if _is_database_unavailable(exc):
        return _database_unavailable(exc)
    if isinstance(exc, IntegrityError) and isinstance(exc.__cause__, SQLAlchemyIntegrityError):
        return _conflict()
    if isinstance(exc, StaleVersionError):  # If-Match named none of the task's current ETag
        return stale_version_problem(exc)
    if isinstance(exc, OwnerScopeError):  # a programming error, never the client's doing
        logger.error("owner scope violation refused: %s", exc.detail)
        return problem(500, "The server could not complete the request.")
    logger.error("repository error", exc_info=exc)
    return problem(500, "The server could not complete the request.")


def stale_version_problem(exc: StaleVersionError) -> Response[ProblemDetail]:
    """412: the task changed since the client's ETag; the body's ``task`` and the ``ETag`` are what it is now."""
    current = exc.current
    if current is None:  # pragma: no cover - the repository reads the current row with every stale write
        return problem(412, "The task has changed since that ETag: read it again, then retry the change.")
    return problem(
        412,
        "The task has changed since that ETag: `task` is what it is now; merge, then retry with its ETag.",
        headers={"ETag": etag(current)},
        task=TaskRead.from_row(current),
    )


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[ProblemDetail]:
    """Anything else: a database outage is a 503; the rest a bare 500 with details in the log only."""
    if _is_database_unavailable(exc):
        return _database_unavailable(exc)
    if isinstance(exc, SQLAlchemyIntegrityError):  # a commit outside the repository, refused by a constraint
        return _conflict()
    logger.error("unhandled error", exc_info=exc)
    return problem(500, "The server could not complete the request.")


# SQLSTATE classes that mean "the database cannot serve this right now, retry shortly": 08 connection
# exception (08003: the connection is gone), 53 insufficient resources (53300: too many connections),
# 57 operator intervention (57014: cancelled by statement_timeout, 57P01: admin shutdown, 57P03: cannot
# connect now). Plus 55P03, lock not available (lock_timeout).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
_UNAVAILABLE_SQLSTATES = frozenset({"55P03"})


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything behind it: ``__cause__``, ``__context__`` and SQLAlchemy's ``orig``."""
    chain: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(chain) < 20:
        current = pending.pop(0)
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        orig = getattr(current, "orig", None)
        pending += [e for e in (current.__cause__, current.__context__, orig) if isinstance(e, BaseException)]
    return chain


def _is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the database cannot serve the request right now.

    Unreachable (refused, reset, timed out: all ``OSError``), no free pooled connection in time
    (``sqlalchemy.exc.TimeoutError``), a connection lost or invalidated, SQLAlchemy's ``OperationalError``
    (which also covers SQLite's "database is locked"), and PostgreSQL's transient SQLSTATEs above,
    including a statement cancelled by ``statement_timeout``.
    """
    for current in _causes(exc):
        if isinstance(current, OperationalError | PoolTimeoutError | DisconnectionError | OSError):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = _sqlstate(current)
        if sqlstate and (sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _UNAVAILABLE_SQLSTATES):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "connection is closed" in str(current):
            return True
    return False


def _sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's error code, from asyncpg's exceptions and SQLAlchemy's adapted ones."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) else None


def _conflict() -> Response[ProblemDetail]:
    return problem(409, "The change conflicts with the current state of the data.")


# The database refuses who we are or lacks what we need: not an outage that passes, a setting or a step to fix.
# 28000 invalid authorization (an unknown role), 28P01 wrong password, 3D000 no such database.
_MISCONFIGURED_SQLSTATE_CLASSES = frozenset({"28"})
_MISCONFIGURED_SQLSTATES = frozenset({"3D000"})
_SCHEMA_BEHIND_SQLSTATES = frozenset({"42P01", "42703"})  # undefined table, undefined column
_SQLITE_SCHEMA_BEHIND = ("no such table", "no such column")
_SQLITE_MISCONFIGURED = ("unable to open database file",)
_reported: set[str] = set()
_MAX_REPORTED = 100


def named_cause(exc: BaseException) -> str | None:
    """What to tell the operator when the database refuses our configuration or lacks our schema, in the
    driver's own words (they name the user or the database, never the password); ``None`` for an outage."""
    for current in _causes(exc):
        sqlstate = _sqlstate(current)
        sqlite = isinstance(current, sqlite3.OperationalError)
        if (sqlstate and (sqlstate[:2] in _MISCONFIGURED_SQLSTATE_CLASSES or sqlstate in _MISCONFIGURED_SQLSTATES)) or (
            sqlite and str(current).startswith(_SQLITE_MISCONFIGURED)
        ):
            return f"the database refuses our configuration: {current}; check DATABASE_URL (`uv run manage.py check`)"
        if sqlstate in _SCHEMA_BEHIND_SQLSTATES or (sqlite and str(current).startswith(_SQLITE_SCHEMA_BEHIND)):
            return f"the database schema is not migrated: {current}; run `uv run manage.py migrate`"
    return None


def _database_unavailable(exc: BaseException) -> Response[ProblemDetail]:
    cause = named_cause(exc)
    if cause is None:
        # Exception types and SQLSTATEs only: messages can carry connection details.
        chain = " <- ".join(type(e).__name__ + (f"[{_sqlstate(e)}]" if _sqlstate(e) else "") for e in _causes(exc))
        logger.warning("database unavailable: %s", chain)
    elif cause in _reported:  # once per process: the same line for every request would bury everything else
        logger.debug("%s", cause)
    else:
        if len(_reported) < _MAX_REPORTED:
            _reported.add(cause)
        logger.error("%s", cause)
    return problem(
        503,
        "The database is unavailable; retry shortly.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def handle_database_unavailable(_: Request[Any, Any, Any], exc: DatabaseUnavailableError) -> Response[ProblemDetail]:
    """The request path could not get a working connection, or its statement could not run: 503."""
    return _database_unavailable(exc)


def handle_pool_exhausted(_: Request[Any, Any, Any], exc: PoolExhaustedError) -> Response[ProblemDetail]:
    """Every pooled connection stayed busy while the request waited: the server is overloaded, not the database."""
    logger.warning("database pool exhausted: %s", exc)
    return problem(
        503,
        f"The server is busy: no database connection came free within {exc.waited:g} s; retry shortly.",
        headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
        slug="server-busy",
    )


def handle_constraint_violation(_: Request[Any, Any, Any], exc: ConstraintViolationError) -> Response[ProblemDetail]:
    """A write the database refused on a constraint."""
    del exc
    return _conflict()


def handle_client_disconnected(
    request: Request[Any, Any, Any], exc: ClientDisconnectedError
) -> Response[ProblemDetail]:
    """The client hung up mid-body: logged once at INFO; the answer below reaches no one."""
    del exc
    logger.info("client disconnected before its request was complete: %s %s", request.method, _template(request))
    return problem(400, "The client disconnected before the request body was complete.")


def _template(request: Request[Any, Any, Any]) -> str:
    """The route's path template (it carries no user id), or the path when no route matched."""
    template = request.scope.get("path_template")
    return str(template) if template else request.url.path


def handle_signing_keys_unavailable(
    _: Request[Any, Any, Any], exc: SigningKeysUnavailableError
) -> Response[ProblemDetail]:
    """JWKS mode before any key could be fetched: the server cannot judge the token yet, so 503, not 401."""
    return problem(
        503,
        "The keys that verify tokens are unavailable; retry shortly.",
        headers={"Retry-After": str(exc.retry_after_seconds)},
    )


class ProblemAnswerError(Exception):
    """A route's own problem answer (a 410 for an expired cursor, a 409 for a failed atomic batch), raised so
    that the route's declared return type stays its success body (and its OpenAPI schema)."""

    def __init__(self, response: Response[ProblemDetail]) -> None:
        super().__init__(response.status_code)
        self.response = response


def handle_problem_answer(_: Request[Any, Any, Any], exc: ProblemAnswerError) -> Response[ProblemDetail]:
    """The problem the route built."""
    return exc.response


exception_handlers: ExceptionHandlersMap = {
    ProblemAnswerError: handle_problem_answer,
    HTTPException: handle_http_exception,
    InvalidRequestError: handle_invalid_request,
    RepositoryError: handle_repository_error,
    DatabaseUnavailableError: handle_database_unavailable,
    PoolExhaustedError: handle_pool_exhausted,
    ConstraintViolationError: handle_constraint_violation,
    SigningKeysUnavailableError: handle_signing_keys_unavailable,
    ClientDisconnectedError: handle_client_disconnected,
    Exception: handle_unexpected,
}
