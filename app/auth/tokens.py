"""Token verification: the one place that decides whether a bearer token names a user.

Two modes, never mixed: HS256 JWTs signed with the shared ``BETTER_AUTH_SECRET``
(:class:`SharedSecretVerifier`), or, when ``JWT_JWKS_URL`` is set, Better Auth's asymmetric tokens checked
against the keys it publishes (:class:`app.auth.jwks.JwksVerifier`). Both sit behind the
:class:`TokenVerifier` protocol and both apply the same claim rules (:class:`TokenRules`), so the
middleware and the routes never know which one runs.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import jwt

from config.settings import Settings
from db.models import USER_ID_MAX_LENGTH

# An allow-list, never taken from the token header: "none" and asymmetric algorithms are refused.
SHARED_SECRET_ALGORITHMS = ("HS256",)
MAX_TOKEN_LENGTH = 8192
_BEARER = re.compile(r"Bearer[ ]+([A-Za-z0-9\-_.~+/]+=*)[ ]*", re.IGNORECASE)


class InvalidTokenError(Exception):
    """The credential is missing or not acceptable. ``str(exc)`` is safe to show: it never holds the token."""

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.missing = missing


class SigningKeysUnavailableError(Exception):
    """The verifier cannot decide right now (no signing key could be fetched yet): the server's problem.

    Mapped to a 503 with ``Retry-After`` (``app.errors``), never to a 401: the client did nothing wrong.
    """

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__("The token signing keys are unavailable.")
        self.retry_after_seconds = retry_after_seconds


class TokenVerifier(Protocol):
    """Turns a raw token into the id of the user it was issued to, or raises :class:`InvalidTokenError`."""

    async def verify(self, token: str) -> str:
        """Verify ``token`` and return its user id (or raise :class:`SigningKeysUnavailableError`)."""
        ...

    async def aclose(self) -> None:
        """Release what the verifier holds (HTTP connections); called at application shutdown."""
        ...


@dataclass(frozen=True, slots=True)
class TokenRules:
    """The rules every token must pass, whichever key signed it: one place for both verifiers.

    ``exp`` and the user claim are required; ``nbf`` and ``iat`` may not lie in the future (beyond the
    leeway); ``iss`` and ``aud`` are required and must match when configured.
    """

    user_claim: str = "sub"
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenRules:
        """The rules the ``JWT_*`` settings ask for."""
        return cls(
            user_claim=settings.jwt_user_claim,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    def decode(self, token: str, key: jwt.PyJWK | str, algorithm: str) -> str:
        """Check the signature with ``key`` under exactly ``algorithm``, then the claims; return the user id.

        The algorithm comes from the caller (the allow-list or the key), never from the token's header.
        """
        required = ["exp", self.user_claim]
        if self.issuer:
            required.append("iss")
        if self.audience:
            required.append("aud")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_seconds,
                options={
                    "require": required,
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                    "verify_iat": True,  # PyJWT refuses an iat later than now + leeway
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("The token has expired.") from exc
        except jwt.ImmatureSignatureError as exc:  # nbf or iat in the future
            raise InvalidTokenError("The token is not valid yet.") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidTokenError(f"The token lacks the required {exc.claim!r} claim.") from exc
        except (jwt.InvalidIssuerError, jwt.InvalidAudienceError) as exc:
            raise InvalidTokenError("The token was issued by or for someone else.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("The token is malformed or its signature is invalid.") from exc
        return user_id_from_claims(claims, self.user_claim)


class SharedSecretVerifier:
    """HS256 JWTs signed with a shared secret (what Better Auth backends share with their frontend)."""

    def __init__(self, secret: str, rules: TokenRules) -> None:
        self._key = secret
        self._rules = rules

    async def verify(self, token: str) -> str:
        """Verify the HS256 signature, then the claims (:class:`TokenRules`)."""
        return self._rules.decode(token, self._key, SHARED_SECRET_ALGORITHMS[0])

    async def aclose(self) -> None:
        """Nothing to release."""


def user_id_from_claims(claims: dict[str, Any], claim: str) -> str:
    """The user id in ``claim``: a non-empty printable string that fits the owner column."""
    value = claims.get(claim)
    if not isinstance(value, str) or not value or len(value) > USER_ID_MAX_LENGTH or not value.isprintable():
        raise InvalidTokenError(f"The token's {claim!r} claim is not a valid user id.")
    return value


def build_verifier(settings: Settings) -> TokenVerifier:
    """The verifier the settings ask for: JWKS when ``JWT_JWKS_URL`` is set, else the shared secret.

    In JWKS mode the shared secret is never consulted, so an HS256 token fails even when
    ``BETTER_AUTH_SECRET`` is set.
    """
    rules = TokenRules.from_settings(settings)
    if settings.jwt_jwks_url:
        from app.auth.jwks import JwksVerifier  # noqa: PLC0415 - jwks builds on this module

        return JwksVerifier(settings.jwt_jwks_url, rules)
    return SharedSecretVerifier(settings.signing_secret(), rules)


def bearer_token(authorization: str | None) -> str:
    """The token in an ``Authorization: Bearer <token>`` header (RFC 6750); nothing else is a credential."""
    if not authorization:
        raise InvalidTokenError("An 'Authorization: Bearer <token>' header is required.", missing=True)
    if len(authorization) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError("The token is too long.")
    match = _BEARER.fullmatch(authorization)
    if match is None:
        raise InvalidTokenError("The Authorization header must use the Bearer scheme.")
    return match.group(1)


async def verify_bearer_token(authorization: str | None, verifier: TokenVerifier) -> str:
    """The user id for an ``Authorization`` header value, or :class:`InvalidTokenError`."""
    return await verifier.verify(bearer_token(authorization))


def issue_token(settings: Settings, user_id: str, expires_in: timedelta) -> str:
    """A token for ``user_id``, signed with the configured (or development) secret (``createtoken``)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        settings.jwt_user_claim: user_id,
        "iat": now,
        "exp": now + int(expires_in.total_seconds()),
    }
    if settings.jwt_user_claim != "sub":
        claims["sub"] = user_id
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.signing_secret(), algorithm=SHARED_SECRET_ALGORITHMS[0])
