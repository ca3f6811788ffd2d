"""The application factory: ``uvicorn app.asgi:create_app --factory`` (``manage.py serve`` does this)."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
)
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.logging import LoggingConfig

from app.auth.tokens import build_verifier
from app.errors import exception_handlers
from app.headers import add_security_headers
from app.health import HealthController
from app.openapi import docs_page, openapi_config
from app.options import list_every_allowed_method
from app.ratelimit.middleware import (
    RateLimitMiddleware,
    add_rate_limit_headers,
    build_rate_limits,
    enforce_rate_limit,
)
from app.requests import ApiRequest
from app.serving import answer_requests_cut_off_by_shutdown
from app.tasks.controller import TaskController
from app.tasks.listing import cursor_key
from config.settings import Settings, SettingsError, get_settings
from db.engine import create_engine


def _version() -> str:
    try:
        return version("todo-backend")
    except PackageNotFoundError:
        return "0.1.0"


async def close_token_verifier(app: Litestar) -> None:
    """Shutdown: release the verifier's HTTP client (JWKS mode)."""
    await app.state.token_verifier.aclose()


def build_app(settings: Settings) -> Litestar:
    """Assemble the application for ``settings``."""
    database = SQLAlchemyAsyncConfig(
        engine_instance=create_engine(settings.database_url, settings.db_options, pooler=settings.database_pooler),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        # Routes commit explicitly before answering, so a failed commit is an error response, never a 2xx.
        set_default_exception_handler=False,
    )
    cors = (
        CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "Idempotency-Key"],
            expose_headers=[
                "Location",
                "Link",
                "X-Total-Count",
                "ETag",
                "Idempotent-Replayed",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "RateLimit-Policy",
            ],
            max_age=600,
        )
        if settings.cors_origins
        else None
    )
    rate_limits = build_rate_limits(settings)
    return Litestar(
        route_handlers=[TaskController, HealthController, docs_page],
        # Rate limits: the middleware wraps authentication (it counts 401s per address); the guard runs after
        # it (it counts the token's user). See app/ratelimit/middleware.py.
        middleware=[answer_requests_cut_off_by_shutdown, *([RateLimitMiddleware] if rate_limits else [])],
        guards=[enforce_rate_limit] if rate_limits else [],
        plugins=[SQLAlchemyPlugin(config=database)],
        request_class=ApiRequest,
        request_max_body_size=settings.max_body_bytes,
        before_send=[add_security_headers, add_rate_limit_headers, list_every_allowed_method],
        on_shutdown=[close_token_verifier, *([rate_limits.close] if rate_limits else [])],
        exception_handlers=exception_handlers,
        openapi_config=openapi_config(_version()),
        cors_config=cors,
        state=State(
            {
                "settings": settings,
                "token_verifier": build_verifier(settings),
                "cursor_key": cursor_key(settings.signing_secret()),
                "rate_limits": rate_limits,
            }
        ),
        logging_config=LoggingConfig(
            root={"level": settings.log_level, "handlers": ["queue_listener"]},
            log_exceptions="never",  # app.errors logs what matters, without request headers
        ),
        debug=False,
    )


def create_app() -> Litestar:
    """Build the app from the environment; invalid settings stop the process with one line each."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(1) from None
    return build_app(settings)
