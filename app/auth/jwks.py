"""Better Auth JWKS verification: tokens signed with the asymmetric keys published at ``JWT_JWKS_URL``.

Better Auth's JWT plugin signs with EdDSA (Ed25519) by default, optionally ES256, RS256 or PS256, and
serves the public keys at ``{baseURL}/api/auth/jwks``. This verifier:

- accepts only asymmetric algorithms, and each key only with its own algorithm: the key's ``alg`` when
  the key set names one, otherwise the one its ``kty``/``crv`` implies; the token's header only has to
  agree with it. HS256 and ``none`` never verify here, whatever secret is configured;
- finds the key by the token's ``kid``; ``jku``, ``x5u``, ``jwk`` and ``x5c`` in a header are never read;
- fetches the key set with ``httpx.AsyncClient`` (the event loop never waits on a socket), within
  :data:`FETCH_TIMEOUT_SECONDS` and :data:`MAX_JWKS_BYTES`;
- caches it per process for :data:`CACHE_TTL_SECONDS`; an expired cache is refreshed in the background
  while its keys keep answering, and an unknown ``kid`` waits for a refetch;
- starts at most one fetch per :data:`MIN_REFETCH_INTERVAL_SECONDS`, and concurrent requests share the
  fetch in flight, so a flood of made-up ``kid``s cannot hammer the key server;
- keeps the last good key set while the key server is down or serves nothing usable. Only when no key
  set was ever fetched does a request fail with :class:`SigningKeysUnavailableError` (a 503);
- remembers tokens it verified (:class:`~app.auth.tokens.VerifiedTokenCache`) while its key set is fresh
  and unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from app.auth.tokens import (
    InvalidTokenError,
    SigningKeysUnavailableError,
    TokenRules,
    VerifiedToken,
    VerifiedTokenCache,
)

logger = logging.getLogger("app.auth.jwks")

FETCH_TIMEOUT_SECONDS = 5.0
CACHE_TTL_SECONDS = 600.0
MIN_REFETCH_INTERVAL_SECONDS = 10.0
MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100
MAX_KID_LENGTH = 256

# What each key type may verify. Symmetric keys (kty "oct") and "none" are absent on purpose.
ALGORITHMS_BY_KEY_TYPE: Mapping[str, frozenset[str]] = {
    "OKP": frozenset({"EdDSA"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
}
ACCEPTED_ALGORITHMS = frozenset().union(*ALGORITHMS_BY_KEY_TYPE.values())
# For keys that do not name their algorithm (Better Auth before it added "alg" to its key set).
_IMPLIED_ALGORITHM: Mapping[tuple[str, str | None], str] = {
    ("OKP", "Ed25519"): "EdDSA",
    ("OKP", "Ed448"): "EdDSA",
    ("EC", "P-256"): "ES256",
    ("EC", "P-384"): "ES384",
    ("EC", "P-521"): "ES512",
    ("RSA", None): "RS256",  # a PS256 key must say so with "alg"
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class _FetchError(Exception):
    """The key set could not be fetched or read; the message is safe to log."""


def key_algorithm(jwk: Mapping[str, Any]) -> str | None:
    """The one algorithm ``jwk`` may verify, or ``None`` when this verifier cannot use the key.

    An EC or OKP key's curve fixes its algorithm, and a stated ``alg`` must agree with it; an RSA key
    verifies the RSA algorithm it names, or RS256 when it names none.
    """
    kty, alg, crv = jwk.get("kty"), jwk.get("alg"), jwk.get("crv")
    if not isinstance(kty, str) or kty not in ALGORITHMS_BY_KEY_TYPE or (alg is not None and not isinstance(alg, str)):
        return None
    if kty == "RSA":
        implied: str | None = alg or _IMPLIED_ALGORITHM[("RSA", None)]
    else:
        implied = _IMPLIED_ALGORITHM.get((kty, crv)) if isinstance(crv, str) else None
        if alg is not None and alg != implied:
            return None
    return implied if implied in ALGORITHMS_BY_KEY_TYPE[kty] else None


def parse_key_set(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable public signature keys of a JWKS document, by ``kid``; keys it cannot use are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchError("the response is not a JSON Web Key Set (no 'keys' list)")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"][:MAX_KEYS]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            logger.warning("JWKS: skipping a key without a usable 'kid'")
            continue
        key_ops = entry.get("key_ops")
        if (
            entry.get("use") not in (None, "sig")
            or (key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops))
            or _PRIVATE_MEMBERS & entry.keys()
        ):
            logger.warning("JWKS: skipping key %r: not a public signature key", kid)
            continue
        algorithm = key_algorithm(entry)
        if algorithm is None:
            logger.warning("JWKS: skipping key %r: unsupported kty/crv/alg", kid)
            continue
        if kid in keys:
            logger.warning("JWKS: skipping a second key with kid %r", kid)
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            logger.warning("JWKS: skipping key %r: %s", kid, type(exc).__name__)
    return keys


def _unverified_header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("The token is malformed or its signature is invalid.") from exc


class JwksVerifier:
    """Verifies tokens against a remote JSON Web Key Set (Better Auth's ``/api/auth/jwks``).

    Per-process state is only a cache: every worker fetches and keeps its own copy of the public keys.
    """

    def __init__(
        self,
        url: str,
        rules: TokenRules,
        *,
        timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
        cache_ttl_seconds: float = CACHE_TTL_SECONDS,
        min_refetch_interval_seconds: float = MIN_REFETCH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        parts = urlsplit(url)
        self._url_for_logs = f"{parts.scheme}://{parts.netloc}{parts.path}"  # no query string
        self._rules = rules
        self._verified = VerifiedTokenCache(rules.leeway_seconds)
        self._timeout = timeout_seconds
        self._ttl = cache_ttl_seconds
        self._min_interval = min_refetch_interval_seconds
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None  # when the current key set was fetched
        self._last_attempt: float | None = None  # when the last fetch started, successful or not
        self._inflight: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    async def verify(self, token: str) -> VerifiedToken:
        """Verify ``token`` with the key its ``kid`` names, under that key's algorithm, then the claims."""
        cached = self._verified.get(token) if self._keys_fresh() else None  # stale keys: refresh first
        if cached is not None:
            return cached
        header = _unverified_header(token)
        algorithm = header.get("alg")
        # HS256, none, …: refused before any key lookup or fetch (and a non-string never reaches a set lookup).
        if not isinstance(algorithm, str) or algorithm not in ACCEPTED_ALGORITHMS:
            raise InvalidTokenError("The token's algorithm is not accepted.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise InvalidTokenError("The token does not name its signing key ('kid').")
        key = await self._key(kid)
        if key.algorithm_name != algorithm:
            raise InvalidTokenError("The token's algorithm does not match its signing key.")
        return self._verified.put(token, self._rules.decode(token, key, key.algorithm_name))

    async def aclose(self) -> None:
        """Stop a fetch in flight and close the HTTP client (application shutdown)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None and not inflight.done():
            inflight.cancel()
            await asyncio.gather(inflight, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _keys_fresh(self) -> bool:
        return self._loaded_at is not None and self._clock() - self._loaded_at < self._ttl

    async def _key(self, kid: str) -> jwt.PyJWK:
        if not self._keys_fresh():
            self._start_fetch()  # an expired cache keeps answering while it refreshes
        key = self._keys.get(kid)
        if key is None:
            fetch = self._start_fetch()  # the one in flight, a new one, or None when rate-limited
            if fetch is not None:
                await asyncio.shield(fetch)  # one waiter giving up does not cancel the others' fetch
            key = self._keys.get(kid)
        if key is not None:
            return key
        if self._loaded_at is None:
            raise SigningKeysUnavailableError(self._retry_after())
        raise InvalidTokenError("The token's signing key is not known.")

    def _start_fetch(self) -> asyncio.Task[None] | None:
        """The fetch in flight, else a new one unless one started less than the minimum interval ago."""
        if self._inflight is not None:
            return self._inflight
        now = self._clock()
        if self._last_attempt is not None and now - self._last_attempt < self._min_interval:
            return None
        self._last_attempt = now
        self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
        return self._inflight

    def _retry_after(self) -> int:
        waited = self._clock() - (self._last_attempt or 0.0)
        return max(1, math.ceil(self._min_interval - waited))

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                keys = parse_key_set(await self._download())
            if not keys:
                raise _FetchError("the key set holds no usable signature key")
        except Exception as exc:  # whatever the key server sends or does, requests get 401/503, never 500
            reason = str(exc) if isinstance(exc, _FetchError) else type(exc).__name__
            kept = f"keeping the {len(self._keys)} cached key(s)" if self._loaded_at is not None else "no keys yet"
            logger.warning("JWKS fetch from %s failed (%s); %s", self._url_for_logs, reason, kept)
        else:
            if set(keys) != set(self._keys):  # a withdrawn key stops verifying now, cached tokens included
                self._verified.clear()
            self._keys = keys
            self._loaded_at = self._clock()
            logger.info("JWKS: %d key(s) loaded from %s", len(keys), self._url_for_logs)
        finally:
            self._inflight = None

    async def _download(self) -> Any:
        if self._client is None:
            # Created on first use, inside the serving event loop; closed by aclose() at shutdown.
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                follow_redirects=False,
                headers={"Accept": "application/jwk-set+json, application/json"},
            )
        async with self._client.stream("GET", self._url) as response:
            if response.status_code != httpx.codes.OK:
                raise _FetchError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _FetchError(f"the response is larger than {MAX_JWKS_BYTES} bytes")
        return json.loads(body)
