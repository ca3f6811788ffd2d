"""OpenAPI 3.1 document (``/schema/openapi.json``) and the interactive docs page (``/docs``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import MediaType, Request, Response, Router, get
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIResponse,
    Operation,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath

from app.errors import PROBLEM_MEDIA_TYPE, ProblemDetail, problem

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler
    from litestar.types import Method
    from litestar.types.internal_types import PathParameterDefinition

BEARER_SCHEME = "BearerToken"

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


# Every response header the API documents, with its schema: one table, applied to every operation by ApiOperation.
# Numbers are sent as decimal digits; the schema says what they mean (openapi-typescript types them as numbers).
_COUNT = Schema(type=OpenAPIType.INTEGER, minimum=0)
_TEXT = Schema(type=OpenAPIType.STRING)
HEADER_SCHEMAS: dict[str, Schema] = {
    "ETag": Schema(type=OpenAPIType.STRING, pattern='^"[1-9][0-9]*-[1-9][0-9]*"$'),
    "X-Total-Count": _COUNT,
    "Link": Schema(type=OpenAPIType.STRING, pattern='^<[^>]+>; rel="next"$'),
    "Location": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.URI_REFERENCE),
    "Idempotent-Replayed": Schema(type=OpenAPIType.STRING, enum=["true"]),
    "Retry-After": _COUNT,
    "WWW-Authenticate": _TEXT,
    "RateLimit-Limit": _COUNT,
    "RateLimit-Remaining": _COUNT,
    "RateLimit-Reset": _COUNT,
    "RateLimit-Policy": Schema(type=OpenAPIType.STRING, pattern="^[0-9]+;w=[0-9]+$"),
}
# Headers on error responses: (description, required).
_ERROR_HEADERS: dict[int, dict[str, tuple[str, bool]]] = {
    401: {
        "WWW-Authenticate": (
            '`Bearer realm="todo-backend"`, plus `error="invalid_token"` when a token was sent.',
            False,
        )
    },
    409: {"Retry-After": ("Seconds to wait before retrying.", False)},
    429: {"Retry-After": ("Seconds until a request fits the budget again.", True)},
    503: {"Retry-After": ("Seconds to wait before retrying.", False)},
}


@dataclass
class ApiOperation(Operation):
    """Every operation of the API: each documented response header gets its schema from ``HEADER_SCHEMAS``
    (Litestar leaves documentation-only headers without one, which generators read as ``unknown``), error
    responses get the headers they carry, and headers are listed in name order so the document is the same on
    every run."""

    def __post_init__(self) -> None:
        for parameter in self.parameters or ():
            if not isinstance(parameter, Parameter) or parameter.param_in not in {"query", "header"}:
                continue
            if isinstance(parameter.schema, Schema):
                _not_null(parameter.schema)
        for status, response in (self.responses or {}).items():
            if not isinstance(response, OpenAPIResponse):
                continue
            headers = dict(response.headers or {})
            for name, (description, required) in _ERROR_HEADERS.get(int(status), {}).items():
                headers[name] = OpenAPIHeader(description=description, required=required)
            for name, header in headers.items():
                if isinstance(header, OpenAPIHeader) and header.schema is None and name in HEADER_SCHEMAS:
                    header.schema = HEADER_SCHEMAS[name]
            response.headers = dict(sorted(headers.items())) or None


def _not_null(schema: Schema) -> None:
    """Drop ``null`` from a query or header parameter's schema: an optional one is left out, never sent as null
    (Litestar documents the ``None`` default of ``str | None`` as a value; generators then type it ``| null``)."""
    if schema.one_of and any(_is_null(option) for option in schema.one_of):
        rest = [option for option in schema.one_of if not _is_null(option)]
        schema.one_of = None if len(rest) == 1 else rest
        if len(rest) == 1 and isinstance(rest[0], Schema):  # fold the one type left into the parameter's schema
            for name in rest[0].__dataclass_fields__:
                if getattr(schema, name) is None:
                    setattr(schema, name, getattr(rest[0], name))
    if schema.any_of and any(_is_null(option) for option in schema.any_of):
        schema.any_of = [option for option in schema.any_of if not _is_null(option)]
    # An optional enum (``order``) keeps its null: the server reads the query value "null" as "not sent" there.


def _is_null(schema: Schema | Reference | dict[str, Any]) -> bool:
    """A ``{"type": "null"}`` schema (a Schema object, or JSON Schema as written, as in ``DUE_DATE_SCHEMA``)."""
    if isinstance(schema, dict):
        return schema.get("type") == "null"
    return isinstance(schema, Schema) and schema.type == OpenAPIType.NULL


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


def _security_description(*, jwks: bool, user_claim: str) -> str:
    """The bearer scheme in words, for the configured token mode."""
    if jwks:
        return (
            "A JWT from Better Auth's JWT plugin (`authClient.token()` or the `set-auth-jwt` response header), "
            "signed with one of the asymmetric keys (EdDSA, ES256, RS256, PS256, …) published at `JWT_JWKS_URL`; "
            f"its `{user_claim}` claim is the user id. HS256 tokens are refused in this mode."
        )
    return (
        "A JWT signed with HS256 and the shared secret `BETTER_AUTH_SECRET`; its "
        f"`{user_claim}` claim is the user id. In development, `python manage.py createtoken <user_id>` prints one."
    )


def openapi_config(version: str, *, jwks: bool = False, user_claim: str = "sub") -> OpenAPIConfig:
    """The schema at ``/schema/openapi.json`` (``jwks``: tokens are verified with a key set, not the secret;
    ``user_claim``: the token claim that holds the user id)."""
    return OpenAPIConfig(
        title="todo-backend",
        version=version,
        description=(
            "A multi-user task API. Every `/api/{user_id}/tasks` route needs `Authorization: Bearer <JWT>`; "
            "a user reaches only their own tasks. Errors are RFC 9457 problem details (`application/problem+json`). "
            "Request bodies are decoded strictly: a boolean is `true` or `false`, a number a JSON number."
        ),
        path="/schema",
        render_plugins=[JsonRenderPlugin()],
        openapi_router=Router(
            "/schema",
            route_handlers=[],
            include_in_schema=False,
            dto=None,
            return_dto=None,
            after_request=_not_found_as_problem,
        ),
        components=Components(
            security_schemes={
                BEARER_SCHEME: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description=_security_description(jwks=jwks, user_claim=user_claim),
                )
            }
        ),
        use_handler_docstrings=False,
        create_examples=False,
        operation_id_creator=operation_id,
    )


def _not_found_as_problem(response: Response[Any]) -> Response[Any]:
    """Litestar answers unknown paths under ``/schema/`` with an HTML page; every error here is problem+json."""
    if response.status_code == HTTPStatus.NOT_FOUND:
        return problem(404, "No such document: the OpenAPI document is /schema/openapi.json, its docs page /docs.")
    return response


# -- /docs: Swagger UI, served by the app itself ----------------------------------------------------------------
# Swagger UI's files come from the pinned Python package swagger-ui-py (Apache-2.0; see docs/api.md), found without
# importing it (its package imports web-framework glue this app does not need). Nothing is loaded from elsewhere:
# the page's Content-Security-Policy (app/edge.py, DOCS_HEADERS) allows scripts, styles and requests to this origin
# only.

_SWAGGER_UI_SPEC = find_spec("swagger_ui")
_SWAGGER_UI_STATIC = (
    Path(next(iter(_SWAGGER_UI_SPEC.submodule_search_locations or ()))) / "static" if _SWAGGER_UI_SPEC else None
)
DOCS_ASSETS = "/docs/assets"
_ASSET_FILES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# Inline scripts are not allowed by the page's policy, so the start-up code is a file of its own.
_DOCS_SCRIPT = b"""window.ui = SwaggerUIBundle({
  url: "/schema/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""
_DOCS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>todo-backend API</title>
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_ASSETS}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script src="{DOCS_ASSETS}/docs.js"></script>
</body>
</html>
""".encode()


@get("/docs", include_in_schema=False, media_type=MediaType.HTML, sync_to_thread=False)
def docs_page() -> bytes:
    """Swagger UI for ``/schema/openapi.json`` at the short, familiar ``/docs`` address."""
    return _DOCS_PAGE


@get(f"{DOCS_ASSETS}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def docs_asset(name: FromPath[str]) -> Response[Any]:
    """One of the docs page's files; anything else is a 404 problem."""
    if name == "docs.js":
        return Response(_DOCS_SCRIPT, media_type="text/javascript; charset=utf-8")
    if name not in _ASSET_FILES or _SWAGGER_UI_STATIC is None:
        return problem(404, "No such file of the docs page.")
    return Response(_asset(name), media_type=_ASSET_FILES[name])


@cache
def _asset(name: str) -> bytes:
    assert _SWAGGER_UI_STATIC is not None  # noqa: S101 - checked by the caller
    return (_SWAGGER_UI_STATIC / name).read_bytes()


class ApiIndex(msgspec.Struct):
    """Where to go from ``/``."""

    name: str
    version: str
    docs: str
    openapi: str
    health: str
    tasks: str


@get("/", include_in_schema=False, sync_to_thread=False)
def index(request: Request[Any, Any, Any]) -> ApiIndex:
    """A small JSON index of links, so that ``/`` is not a 404."""
    return ApiIndex(
        name="todo-backend",
        version=request.app.openapi_config.version if request.app.openapi_config else "",
        docs="/docs",
        openapi="/schema/openapi.json",
        health="/health",
        tasks="/api/{user_id}/tasks",
    )
