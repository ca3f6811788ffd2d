"""OpenAPI 3.1 document (``/schema/openapi.json``) and the interactive docs page (``/docs``)."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from litestar import MediaType, Request, get
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from app.errors import PROBLEM_MEDIA_TYPE, ProblemDetail

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler
    from litestar.types import Method
    from litestar.types.internal_types import PathParameterDefinition

BEARER_SCHEME = "BearerToken"
_SWAGGER = SwaggerRenderPlugin(path="/swagger")

_DESCRIPTIONS = {
    400: "Invalid body, query or path value; `errors` lists each field and what is wrong.",
    401: "Missing, malformed, expired or forged token (carries `WWW-Authenticate: Bearer`).",
    403: "The token is valid but its user is not the `{user_id}` in the path.",
    404: "No such task for this user (also when the task belongs to someone else).",
    409: "A request with this `Idempotency-Key` is still in progress (carries `Retry-After`); retry shortly. On "
    "`/batch`, also: an operation of an atomic batch failed and nothing was written (`errors` names it).",
    410: "The change-feed cursor is older than the deletions the server remembers (`…:cursor-expired`): sync "
    "again without a cursor.",
    412: "`If-Match` names none of the task's current ETag: it changed since it was read. Nothing was changed; "
    "`task` is the task as it is now and `ETag` its tag.",
    422: "This `Idempotency-Key` was already used with a different body within 24 hours; nothing was created.",
    429: "Over the rate limit (per token user; per client address without a valid token); retry after "
    "`Retry-After` seconds.",
    503: "The database is unavailable; retry after `Retry-After` seconds.",
}


def problem_responses(*statuses: int, rate_limited: bool = True) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error responses a route can give, all problem+json.

    503 is always added, 429 unless the route is exempt from rate limits (``rate_limited=False``).
    """
    if rate_limited:
        statuses = (*statuses, 429)
    return {
        status: ResponseSpec(
            data_container=ProblemDetail,
            media_type=PROBLEM_MEDIA_TYPE,
            description=_DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            generate_examples=False,
        )
        for status in (*statuses, 503)
    }


def operation_id(
    route_handler: HTTPRouteHandler, http_method: Method, path_components: list[str | PathParameterDefinition]
) -> str:
    """The handler's name in camelCase (``createTask``, ``getTask``): stable names for clients and links."""
    del http_method, path_components  # every handler serves one method on one path
    first, *rest = route_handler.handler_name.split("_")
    return first + "".join(word.title() for word in rest)


def openapi_config(version: str) -> OpenAPIConfig:
    """The schema at ``/schema/openapi.json``, Swagger UI at ``/docs``."""
    return OpenAPIConfig(
        title="todo-backend",
        version=version,
        description=(
            "A multi-user task API. Every `/api/{user_id}/tasks` route needs `Authorization: Bearer <JWT>`; "
            "a user reaches only their own tasks. Errors are RFC 9457 problem details."
        ),
        path="/schema",
        render_plugins=[JsonRenderPlugin(), _SWAGGER],
        components=Components(
            security_schemes={
                BEARER_SCHEME: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description="An HS256 JWT signed with BETTER_AUTH_SECRET; `sub` is the user id.",
                )
            }
        ),
        use_handler_docstrings=False,
        create_examples=False,
        operation_id_creator=operation_id,
    )


@get("/docs", include_in_schema=False, media_type=MediaType.HTML, sync_to_thread=False)
def docs_page(request: Request[Any, Any, Any]) -> bytes:
    """Swagger UI for ``/schema/openapi.json`` at the short, familiar ``/docs`` address."""
    return _SWAGGER.render(request, request.app.openapi_schema.to_schema())
