"""Token verification: the one place that decides whether a bearer token names a user.

Two modes, never mixed: HS256 JWTs signed with the shared ``BETTER_AUTH_SECRET``
(:class:`SharedSecretVerifier`), or, when ``JWT_JWKS_URL`` is set, Better Auth's asymmetric tokens checked
against the keys it publishes (:class:`app.auth.jwks.JwksVerifier`). Both sit behind the
:class:`TokenVerifier` protocol and both apply the same claim rules (:class:`TokenRules`), so the access
check and the routes never know which one runs; ``app/auth/verifier.py`` picks one from the settings.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple, Protocol

import jwt

from config.settings import Settings
from db.limits import USER_ID_MAX_LENGTH

logger = logging.getLogger("app.auth")

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


class VerifiedToken(NamedTuple):
    """A token that passed every check: whose it is, and until when (``exp``, seconds since the epoch)."""

    user_id: str
    expires_at: float


class TokenVerifier(Protocol):
    """Turns a raw token into the user it was issued to, or raises :class:`InvalidTokenError`."""

    async def verify(self, token: str) -> VerifiedToken:
        """Verify ``token`` (or raise :class:`SigningKeysUnavailableError` when that cannot be decided now)."""
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

    def decode(self, token: str, key: jwt.PyJWK | str, algorithm: str) -> VerifiedToken:
        """Check the signature with ``key`` under exactly ``algorithm``, then the claims.

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
            self._log_mismatch(token, issuer=isinstance(exc, jwt.InvalidIssuerError))
            raise InvalidTokenError("The token was issued by or for someone else.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("The token is malformed or its signature is invalid.") from exc
        return VerifiedToken(user_id_from_claims(claims, self.user_claim), float(claims["exp"]))

    def _log_mismatch(self, token: str, *, issuer: bool) -> None:
        """Say at INFO which ``iss`` or ``aud`` was expected and which the token carried (never the token): the
        signature was valid, so the usual cause is a frontend and an API configured with different URLs."""
        claim = "iss" if issuer else "aud"
        expected = self.issuer if issuer else self.audience
        try:
            received: Any = jwt.decode(token, options={"verify_signature": False}).get(claim)
        except jwt.PyJWTError:  # pragma: no cover - it decoded a moment ago
            received = None
        logger.info("token refused: %s mismatch: expected %r, received %s", claim, expected, _shown(received))


class VerifiedTokenCache:
    """Tokens this process verified lately: a client's next request with the same token costs a dictionary
    lookup instead of a signature check (an HS256 check is about a tenth of a small request's CPU).

    Only exact tokens that passed every check are kept, each until its ``exp`` (plus the leeway, as the check
    itself allows) and at most :attr:`max_age` seconds; the JWKS verifier empties it whenever the key set
    changes. Bounded in size; per process, and a miss only costs the full check.
    """

    def __init__(
        self, leeway_seconds: int, *, max_age: float = 60.0, size: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        self._leeway = leeway_seconds
        self.max_age = max_age
        self._size = size
        self._clock = clock  # wall time: ``exp`` is seconds since the epoch
        self._entries: dict[str, tuple[VerifiedToken, float]] = {}  # token -> (result, valid until)

    def get(self, token: str) -> VerifiedToken | None:
        """The cached result for ``token`` while it is still valid."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if self._clock() < entry[1]:
            return entry[0]
        del self._entries[token]
        return None

    def clear(self) -> None:
        """Forget every token."""
        self._entries.clear()

    def put(self, token: str, verified: VerifiedToken) -> VerifiedToken:
        """Remember ``verified`` for ``token``; returns it."""
        if len(self._entries) >= self._size:
            self._entries.clear()  # simpler than LRU bookkeeping on every hit; refills within a second
        self._entries[token] = (verified, min(verified.expires_at + self._leeway, self._clock() + self.max_age))
        return verified


class SharedSecretVerifier:
    """HS256 JWTs signed with a shared secret (what Better Auth backends share with their frontend)."""

    def __init__(self, secret: str, rules: TokenRules) -> None:
        self._key = secret
        self._rules = rules
        self._verified = VerifiedTokenCache(rules.leeway_seconds)

    async def verify(self, token: str) -> VerifiedToken:
        """Verify the HS256 signature, then the claims (:class:`TokenRules`)."""
        return self._verified.get(token) or self._verified.put(
            token, self._rules.decode(token, self._key, SHARED_SECRET_ALGORITHMS[0])
        )

    async def aclose(self) -> None:
        """Nothing to release."""


def _shown(value: Any, limit: int = 200) -> str:
    """A claim value as the log shows it: its repr, cut to ``limit`` characters (the client wrote it)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def user_id_from_claims(claims: dict[str, Any], claim: str) -> str:
    """The user id in ``claim``: a non-empty printable string that fits the owner column."""
    value = claims.get(claim)
    if not isinstance(value, str) or not value or len(value) > USER_ID_MAX_LENGTH or not value.isprintable():
        raise InvalidTokenError(f"The token's {claim!r} claim is not a valid user id.")
    return value


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
    return (await verifier.verify(bearer_token(authorization))).user_id


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
