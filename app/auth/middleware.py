"""Authentication middleware (who is calling) and the path-owner guard (may they use this path)."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from app.auth.tokens import InvalidTokenError, TokenVerifier, verify_bearer_token

REALM = 'Bearer realm="todo-backend"'


class BearerTokenMiddleware(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the token's user id; a bad or missing token is a 401.

    A :class:`~app.auth.tokens.SigningKeysUnavailableError` passes through to ``app.errors`` (a 503).
    """

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """Verify the ``Authorization`` header with the app's token verifier."""
        verifier: TokenVerifier = connection.app.state.token_verifier
        try:
            user_id = await verify_bearer_token(connection.headers.get("authorization"), verifier)
        except InvalidTokenError as exc:
            challenge = REALM if exc.missing else f'{REALM}, error="invalid_token"'
            raise NotAuthorizedException(detail=str(exc), headers={"WWW-Authenticate": challenge}) from None
        return AuthenticationResult(user=user_id, auth=None)


async def require_path_owner(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A valid token may only use its own ``/api/{user_id}/…`` paths; anything else is a 403.

    ``OPTIONS`` is let through: the authentication middleware does not run for it (CORS preflights carry no
    token) and Litestar's own ``OPTIONS`` handler only lists the allowed methods, never data.
    Async on purpose: Litestar runs synchronous guards in a thread pool, a thread hop on every request.
    """
    if connection.scope.get("method") == "OPTIONS":
        return
    if connection.path_params.get("user_id") != connection.user:
        raise PermissionDeniedException(detail="The token's user is not the user in the path.")
