"""Better Auth JWKS mode: tokens signed with keys the tests generate and serve over real HTTP.

The key server is a real threaded HTTP server on a free port that counts its requests, can change the keys
it serves, answer badly, hold a response, or go down. The verifier's clock is a fake one the tests move,
so cache expiry and the refetch rate limit are exact, not timing-dependent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.asgi import build_app
from app.auth.jwks import (
    CACHE_TTL_SECONDS,
    MAX_JWKS_BYTES,
    MIN_REFETCH_INTERVAL_SECONDS,
    JwksVerifier,
    key_algorithm,
)
from app.auth.tokens import InvalidTokenError, SharedSecretVerifier, TokenRules
from app.auth.verifier import build_verifier
from config.settings import Settings
from tests.support.http import assert_401
from tests.support.tokens import TEST_SECRET

Client = AsyncTestClient[Litestar]
BASE_URL = "http://localhost:3000"  # the Better Auth base URL: its iss and aud


# --- keys -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A private key and the public JWK the key server publishes for it."""

    alg: str
    kid: str
    private_key: Any
    public_jwk: dict[str, Any]

    def sign(self, claims: dict[str, Any], *, alg: str | None = None, **headers: Any) -> str:
        return jwt.encode(claims, self.private_key, algorithm=alg or self.alg, headers={"kid": self.kid, **headers})

    def public_pem(self) -> bytes:
        return bytes(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


_ABSENT = object()


def make_key(alg: str, *, names_alg: bool = True, use: Any = _ABSENT) -> SigningKey:
    """A fresh key pair; ``names_alg=False`` publishes it without ``alg``, as older Better Auth did."""
    private_key: Any
    if alg == "EdDSA":
        private_key = ed25519.Ed25519PrivateKey.generate()
    elif alg == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = str(uuid.uuid4())
    public_jwk = {**get_default_algorithms()[alg].to_jwk(private_key.public_key(), as_dict=True), "kid": kid}
    if names_alg:
        public_jwk["alg"] = alg
    if use is not _ABSENT:
        public_jwk["use"] = use
    return SigningKey(alg, kid, private_key, public_jwk)


@pytest.fixture(scope="session")
def keys() -> dict[str, SigningKey]:
    """The served keys: Better Auth's default (Ed25519, without alg, as its docs show it) and the options."""
    return {
        "EdDSA": make_key("EdDSA", names_alg=False),
        "EdDSA+alg": make_key("EdDSA", use="sig"),
        "EdDSA, use null": make_key("EdDSA", use=None),
        "ES256": make_key("ES256"),
        "ES256 without alg": make_key("ES256", names_alg=False),
        "RS256": make_key("RS256"),
        "RS256 without alg": make_key("RS256", names_alg=False),
        "PS256": make_key("PS256"),
    }


@pytest.fixture(scope="session")
def attacker() -> dict[str, SigningKey]:
    """Keys nobody serves to the API."""
    return {alg: make_key(alg) for alg in ("EdDSA", "ES256", "RS256")}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_json(data: dict[str, Any]) -> str:
    return b64(json.dumps(data).encode())


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token built by hand (PyJWT refuses to use a public key as an HMAC secret)."""
    signing_input = f"{b64_json(header)}.{b64_json(claims)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def claims_for(user: str, **extra: Any) -> dict[str, Any]:
    """What Better Auth's JWT plugin puts in a token: iss/aud = its base URL, sub, 15 minutes, the user."""
    now = int(time.time())
    return {
        "iat": now,
        "iss": BASE_URL,
        "aud": BASE_URL,
        "exp": now + 900,
        "sub": user,
        "id": user,
        "email": f"{user}@example.com",
        "name": "Test User",
        **extra,
    }


# --- the key server and the clock ---------------------------------------------------------------------------


class KeyServer:
    """A JWKS endpoint over real HTTP that counts requests and can misbehave or go down."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.body: bytes | None = None  # served instead of the keys when set
        self.status = 200
        self.requests = 0
        self.received = threading.Event()
        self.gate: threading.Event | None = None  # when set, responses wait for it
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests += 1
                server.received.set()
                if server.gate is not None:
                    server.gate.wait(10)
                if self.path != "/api/auth/jwks":
                    self.send_error(404)
                    return
                body = server.body if server.body is not None else json.dumps({"keys": server.keys}).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/api/auth/jwks"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        self._running = True

    def serve(self, *keys: SigningKey) -> None:
        self.keys = [key.public_jwk for key in keys]

    def stop(self) -> None:
        """Go down: from now on, connections are refused."""
        if self._running:
            self._running = False
            if self.gate is not None:
                self.gate.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def key_server(keys: dict[str, SigningKey]) -> Iterator[KeyServer]:
    server = KeyServer()
    server.serve(*keys.values())
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks_settings(settings: Settings, key_server: KeyServer) -> Settings:
    """JWKS mode as a Better Auth frontend needs it. The shared secret stays set: it must not matter.

    Rate limits are off: these tests send hundreds of refused tokens from one address on purpose, to count
    key fetches; the per-address limit has its own tests (tests/api/test_ratelimit.py).
    """
    assert settings.better_auth_secret == TEST_SECRET
    return replace(
        settings,
        jwt_jwks_url=key_server.url,
        jwt_issuer=BASE_URL,
        jwt_audience=BASE_URL,
        rate_limit=None,
        rate_limit_anonymous=None,
    )


def app_with_clock(settings: Settings, clock: FakeClock) -> Litestar:
    """The app as ``build_app`` makes it, its JWKS verifier given the fake clock."""
    app = build_app(settings)
    assert isinstance(app.state.token_verifier, JwksVerifier)
    assert settings.jwt_jwks_url
    app.state.token_verifier = JwksVerifier(settings.jwt_jwks_url, TokenRules.from_settings(settings), clock=clock)
    return app


@pytest.fixture
async def client(jwks_settings: Settings, clock: FakeClock) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app_with_clock(jwks_settings, clock)) as test_client:
        yield test_client


@pytest.fixture
def user() -> str:
    return uuid.uuid4().hex


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get_tasks(client: Client, user: str, token: str) -> Any:
    return await client.get(f"/api/{user}/tasks", headers=bearer(token))


# --- the mode is chosen by the settings ----------------------------------------------------------------------


def test_build_verifier_picks_the_mode(jwks_settings: Settings) -> None:
    assert isinstance(build_verifier(jwks_settings), JwksVerifier)
    assert isinstance(build_verifier(replace(jwks_settings, jwt_jwks_url=None)), SharedSecretVerifier)


async def test_the_app_as_built_verifies_better_auth_tokens(
    jwks_settings: Settings, keys: dict[str, SigningKey], key_server: KeyServer, user: str
) -> None:
    async with AsyncTestClient(app=build_app(jwks_settings)) as client:
        response = await get_tasks(client, user, keys["EdDSA"].sign(claims_for(user)))
        assert response.status_code == 200, response.text
        assert response.json() == []
    assert key_server.requests == 1


# --- valid tokens ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["EdDSA", "EdDSA+alg", "EdDSA, use null", "ES256", "ES256 without alg", "RS256", "RS256 without alg", "PS256"],
)
async def test_each_algorithm_verifies(client: Client, keys: dict[str, SigningKey], user: str, name: str) -> None:
    response = await get_tasks(client, user, keys[name].sign(claims_for(user)))
    assert response.status_code == 200, response.text


async def test_the_whole_api_works_with_a_jwks_token(client: Client, keys: dict[str, SigningKey], user: str) -> None:
    headers = bearer(keys["EdDSA"].sign(claims_for(user)))
    created = await client.post(f"/api/{user}/tasks", json={"title": "Buy milk"}, headers=headers)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    assert (await client.get(f"/api/{user}/tasks/{task_id}", headers=headers)).json()["title"] == "Buy milk"
    assert (await client.delete(f"/api/{user}/tasks/{task_id}", headers=headers)).status_code == 204


async def test_a_token_for_another_user_is_403(client: Client, keys: dict[str, SigningKey], user: str) -> None:
    response = await get_tasks(client, uuid.uuid4().hex, keys["EdDSA"].sign(claims_for(user)))
    assert response.status_code == 403


async def test_leeway_applies(client: Client, keys: dict[str, SigningKey], user: str) -> None:
    now = int(time.time())
    late = keys["EdDSA"].sign(claims_for(user, exp=now - 5))
    early = keys["EdDSA"].sign(claims_for(user, iat=now + 10, nbf=now + 10))
    assert (await get_tasks(client, user, late)).status_code == 200
    assert (await get_tasks(client, user, early)).status_code == 200


# --- every way a token can be wrong is a 401 ------------------------------------------------------------


def bad_tokens(keys: dict[str, SigningKey], attacker: dict[str, SigningKey], user: str) -> dict[str, str]:
    ed, es = keys["EdDSA"], keys["ES256"]
    now = int(time.time())
    good = claims_for(user)
    header, payload, signature = ed.sign(good).split(".")
    ed_x = ed.public_jwk["x"]
    return {
        # Algorithm confusion: HMAC "signed" with what is public.
        "HS256 with the public key PEM": hs256({"alg": "HS256", "kid": ed.kid}, good, ed.public_pem()),
        "HS256 with the JWK x bytes": hs256(
            {"alg": "HS256", "kid": ed.kid}, good, base64.urlsafe_b64decode(ed_x + "=")
        ),
        "HS256 with the JWK x text": hs256({"alg": "HS256", "kid": ed.kid}, good, ed_x.encode()),
        "HS256 with the RSA PEM": hs256({"alg": "HS256", "kid": keys["RS256"].kid}, good, keys["RS256"].public_pem()),
        # Never mix modes: the shared secret is configured, but it signs nothing here.
        "HS256 with BETTER_AUTH_SECRET": jwt.encode(good, TEST_SECRET, algorithm="HS256", headers={"kid": ed.kid}),
        "HS256 with BETTER_AUTH_SECRET, no kid": jwt.encode(good, TEST_SECRET, algorithm="HS256"),
        # The header's alg disagrees with the key the kid names.
        "ES256 header, Ed25519 kid": attacker["ES256"].sign(good, kid=ed.kid),
        "EdDSA header, ES256 kid": attacker["EdDSA"].sign(good, kid=es.kid),
        "PS256 header, RS256 kid": keys["RS256"].sign(good, alg="PS256"),
        "RS256 header, PS256 kid": keys["PS256"].sign(good, alg="RS256"),
        "alg none": f"{b64_json({'alg': 'none', 'kid': ed.kid})}.{payload}.",
        "alg NONE": f"{b64_json({'alg': 'NONE', 'kid': ed.kid})}.{payload}.",
        "alg None with a signature": f"{b64_json({'alg': 'None', 'kid': ed.kid})}.{payload}.{signature}",
        "alg not a string": f"{b64_json({'alg': ['EdDSA'], 'kid': ed.kid})}.{payload}.{signature}",
        "no alg": f"{b64_json({'kid': ed.kid})}.{payload}.{signature}",
        "header not an object": f"{b64(b'[1]')}.{payload}.{signature}",
        # Keys in the header are never used.
        "jwk header with the attacker's key": attacker["EdDSA"].sign(good, jwk=attacker["EdDSA"].public_jwk),
        "jwk header, our kid": attacker["EdDSA"].sign(good, kid=ed.kid, jwk=attacker["EdDSA"].public_jwk),
        "x5c header": attacker["RS256"].sign(good, kid=keys["RS256"].kid, x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"]),
        # Someone else's key, unknown or under our kid.
        "attacker key, unknown kid": attacker["EdDSA"].sign(good),
        "attacker key, our kid": attacker["EdDSA"].sign(good, kid=ed.kid),
        "no kid": jwt.encode(good, ed.private_key, algorithm="EdDSA"),
        "kid not a string": f"{b64_json({'alg': 'EdDSA', 'kid': 7})}.{payload}.{signature}",
        "kid too long": ed.sign(good, kid="k" * 300),
        # Tampering.
        "tampered payload": f"{header}.{b64_json(claims_for(user + 'x'))}.{signature}",
        "tampered header": f"{b64_json({'alg': 'EdDSA', 'kid': ed.kid, 'typ': 'x'})}.{payload}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-6]}AAAAAA",
        "unknown critical header": jwt.encode(
            good, ed.private_key, algorithm="EdDSA", headers={"kid": ed.kid, "crit": ["exp-policy"], "exp-policy": 1}
        ),
        # Claims.
        "expired": ed.sign(claims_for(user, iat=now - 7200, exp=now - 3600)),
        "nbf in the future": ed.sign(claims_for(user, nbf=now + 3600)),
        "iat far in the future": ed.sign(claims_for(user, iat=now + 3600, exp=now + 7200)),
        "iat not a number": ed.sign(claims_for(user, iat="yesterday")),
        "wrong iss": ed.sign(claims_for(user, iss="https://evil.example.com")),
        "wrong aud": ed.sign(claims_for(user, aud="https://other.example.com")),
        "no iss": ed.sign({k: v for k, v in good.items() if k != "iss"}),
        "no aud": ed.sign({k: v for k, v in good.items() if k != "aud"}),
        "no exp": ed.sign({k: v for k, v in good.items() if k != "exp"}),
        "no sub": ed.sign({k: v for k, v in good.items() if k != "sub"}),
        "sub not a string": ed.sign(claims_for(user, sub=12345)),
        "not a jwt": "abc.def.ghi",
    }


BAD_TOKEN_CASES = [
    "HS256 with the public key PEM",
    "HS256 with the JWK x bytes",
    "HS256 with the JWK x text",
    "HS256 with the RSA PEM",
    "HS256 with BETTER_AUTH_SECRET",
    "HS256 with BETTER_AUTH_SECRET, no kid",
    "ES256 header, Ed25519 kid",
    "EdDSA header, ES256 kid",
    "PS256 header, RS256 kid",
    "RS256 header, PS256 kid",
    "alg none",
    "alg NONE",
    "alg None with a signature",
    "alg not a string",
    "no alg",
    "header not an object",
    "jwk header with the attacker's key",
    "jwk header, our kid",
    "x5c header",
    "attacker key, unknown kid",
    "attacker key, our kid",
    "no kid",
    "kid not a string",
    "kid too long",
    "tampered payload",
    "tampered header",
    "tampered signature",
    "unknown critical header",
    "expired",
    "nbf in the future",
    "iat far in the future",
    "iat not a number",
    "wrong iss",
    "wrong aud",
    "no iss",
    "no aud",
    "no exp",
    "no sub",
    "sub not a string",
    "not a jwt",
]


def test_the_case_list_is_complete(keys: dict[str, SigningKey], attacker: dict[str, SigningKey]) -> None:
    assert sorted(BAD_TOKEN_CASES) == sorted(bad_tokens(keys, attacker, "u"))


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
async def test_bad_tokens_are_401(
    client: Client,
    keys: dict[str, SigningKey],
    attacker: dict[str, SigningKey],
    key_server: KeyServer,
    user: str,
    case: str,
) -> None:
    token = bad_tokens(keys, attacker, user)[case]
    response = await get_tasks(client, user, token)
    assert_401(response, token)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert key_server.requests <= 1  # never more than the one fetch that loads the key set


async def test_header_urls_are_never_followed(
    client: Client, keys: dict[str, SigningKey], attacker: dict[str, SigningKey], key_server: KeyServer, user: str
) -> None:
    """A token pointing at the attacker's own, working, key server (jku, x5u) is still a 401."""
    evil = KeyServer()
    try:
        evil.serve(attacker["EdDSA"])
        for kid in (attacker["EdDSA"].kid, keys["EdDSA"].kid):
            for header in ("jku", "x5u"):
                token = attacker["EdDSA"].sign(claims_for(user), kid=kid, **{header: evil.url})
                assert_401(await get_tasks(client, user, token), token)
        assert evil.requests == 0
        assert key_server.requests == 1
    finally:
        evil.stop()


async def test_hs256_is_refused_before_any_key_fetch(client: Client, key_server: KeyServer, user: str) -> None:
    token = jwt.encode(claims_for(user), TEST_SECRET, algorithm="HS256", headers={"kid": "x"})
    assert_401(await get_tasks(client, user, token), token)
    assert key_server.requests == 0


# --- cache, rotation, rate limit, outages ---------------------------------------------------------------------


async def wait_until(condition: Callable[[], Any], within: float = 5.0) -> None:
    """Poll a condition (a function, sync or async) until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


async def test_rotation(
    client: Client, key_server: KeyServer, clock: FakeClock, keys: dict[str, SigningKey], user: str
) -> None:
    old, new = make_key("EdDSA"), make_key("EdDSA")
    old_token, new_token = old.sign(claims_for(user)), new.sign(claims_for(user))

    async def status(token: str) -> int:
        return int((await get_tasks(client, user, token)).status_code)

    key_server.serve(old)
    assert await status(old_token) == 200
    assert key_server.requests == 1

    # A new key appears. Right after a fetch, an unknown kid does not fetch again…
    key_server.serve(old, new)
    assert await status(new_token) == 401
    assert key_server.requests == 1
    # …once the minimum interval has passed, it does, and the new key works.
    clock.advance(MIN_REFETCH_INTERVAL_SECONDS + 1)
    assert await status(new_token) == 200
    assert await status(old_token) == 200
    assert key_server.requests == 2

    # The old key is removed. The cache still holds it until it expires…
    key_server.serve(new)
    assert await status(old_token) == 200
    assert key_server.requests == 2
    # …then one refresh drops it (the expired cache answers while that refresh runs).
    clock.advance(CACHE_TTL_SECONDS + 1)

    async def old_key_refused() -> bool:
        return await status(old_token) == 401

    await wait_until(old_key_refused)
    assert await status(new_token) == 200
    assert key_server.requests == 3


async def test_a_flood_of_unknown_kids_is_rate_limited(
    client: Client,
    key_server: KeyServer,
    clock: FakeClock,
    keys: dict[str, SigningKey],
    attacker: dict[str, SigningKey],
    user: str,
) -> None:
    assert (await get_tasks(client, user, keys["EdDSA"].sign(claims_for(user)))).status_code == 200
    assert key_server.requests == 1
    for round_ in range(1, 4):
        for _ in range(100):
            junk = attacker["EdDSA"].sign(claims_for(user), kid=str(uuid.uuid4()))
            assert (await get_tasks(client, user, junk)).status_code == 401
        assert key_server.requests == round_  # one refetch per interval, however many junk kids
        clock.advance(MIN_REFETCH_INTERVAL_SECONDS + 1)


async def test_concurrent_requests_share_one_fetch(
    key_server: KeyServer, keys: dict[str, SigningKey], attacker: dict[str, SigningKey]
) -> None:
    """No rate limit at all (interval 0): sharing the fetch in flight alone keeps it to one request."""
    verifier = JwksVerifier(
        key_server.url, TokenRules(issuer=BASE_URL, audience=BASE_URL), min_refetch_interval_seconds=0
    )
    key_server.gate = threading.Event()
    users = [uuid.uuid4().hex for _ in range(25)]
    valid = [keys["ES256"].sign(claims_for(u)) for u in users]
    junk = [attacker["EdDSA"].sign(claims_for(u), kid=str(uuid.uuid4())) for u in users]
    try:
        pending = asyncio.gather(*(verifier.verify(t) for t in valid + junk), return_exceptions=True)
        assert await asyncio.to_thread(key_server.received.wait, 5)
        key_server.gate.set()  # every verify() is waiting on the one fetch by now
        results = await asyncio.wait_for(pending, 10)
    finally:
        await verifier.aclose()
    assert [r.user_id for r in results[: len(users)]] == users  # type: ignore[union-attr]
    assert all(isinstance(r, InvalidTokenError) for r in results[len(users) :])
    assert key_server.requests == 1


async def test_key_server_down_with_a_warm_cache(
    client: Client, key_server: KeyServer, clock: FakeClock, keys: dict[str, SigningKey], user: str
) -> None:
    token = keys["EdDSA"].sign(claims_for(user))
    assert (await get_tasks(client, user, token)).status_code == 200
    key_server.stop()
    for _ in range(3):
        clock.advance(CACHE_TTL_SECONDS + 1)  # expired: every step tries (and fails) to refresh
        assert (await get_tasks(client, user, token)).status_code == 200
        assert (await get_tasks(client, user, keys["RS256"].sign(claims_for(user)))).status_code == 200
    unknown = make_key("EdDSA").sign(claims_for(user))
    assert_401(await get_tasks(client, user, unknown), unknown)  # keys exist: an unknown kid is the client's fault


def assert_503(response: Any, token: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(response.headers["retry-after"]) <= MIN_REFETCH_INTERVAL_SECONDS
    assert "www-authenticate" not in response.headers
    assert response.json()["status"] == 503
    assert token not in response.text


@pytest.mark.parametrize(
    "answer",
    [
        "down",
        "HTTP 500",
        "not JSON",
        "deeply nested JSON",
        "no keys list",
        "empty key set",
        "only unusable keys",
        "too large",
    ],
)
async def test_no_key_set_yet_is_503_until_the_server_answers(
    client: Client, key_server: KeyServer, clock: FakeClock, keys: dict[str, SigningKey], user: str, answer: str
) -> None:
    unusable = [
        {"kty": "oct", "k": b64(TEST_SECRET.encode()), "kid": "hmac", "alg": "HS256"},
        {**keys["EdDSA"].public_jwk, "kid": "enc", "use": "enc"},
        {**keys["EdDSA"].public_jwk, "kid": "sign-only", "key_ops": ["sign"]},
        {**keys["EdDSA"].public_jwk, "kid": "private", "d": keys["EdDSA"].public_jwk["x"]},
        {**keys["ES256"].public_jwk, "kid": "mismatch", "alg": "RS256"},
        {**keys["RS256"].public_jwk, "kid": "no-alg-derivable", "alg": "HS256"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "broken"},
        {"kty": "OKP", "crv": "X25519", "x": keys["EdDSA"].public_jwk["x"], "kid": "x25519"},
        "not a key",
    ]
    bodies = {
        "HTTP 500": b'{"keys": []}',
        "not JSON": b"<html>Bad gateway</html>",
        "deeply nested JSON": b"[" * 100_000 + b"]" * 100_000,
        "no keys list": b'{"keys": {"kid": "x"}}',
        "empty key set": b'{"keys": []}',
        "only unusable keys": json.dumps({"keys": unusable}).encode(),
        "too large": json.dumps({"keys": [keys["EdDSA"].public_jwk], "pad": "x" * MAX_JWKS_BYTES}).encode(),
    }
    stopped = answer == "down"
    if stopped:
        key_server.stop()
    else:
        key_server.body = bodies[answer]
        key_server.status = 500 if answer == "HTTP 500" else 200
    token = keys["EdDSA"].sign(claims_for(user))
    assert_503(await get_tasks(client, user, token), token)
    assert_503(await get_tasks(client, user, token), token)  # within the interval: no new fetch
    assert key_server.requests == (0 if stopped else 1)
    # Malformed tokens are still the client's problem.
    assert_401(await get_tasks(client, user, "abc.def.ghi"))
    if not stopped:
        key_server.body, key_server.status = None, 200  # the key server recovers
        clock.advance(MIN_REFETCH_INTERVAL_SECONDS + 1)
        assert (await get_tasks(client, user, token)).status_code == 200
        assert key_server.requests == 2


# --- the pieces ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jwk", "expected"),
    [
        ({"kty": "OKP", "crv": "Ed25519"}, "EdDSA"),
        ({"kty": "OKP", "crv": "Ed448"}, "EdDSA"),
        ({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA"}, "EdDSA"),
        ({"kty": "OKP", "crv": "X25519"}, None),
        ({"kty": "OKP"}, None),
        ({"kty": "EC", "crv": "P-256"}, "ES256"),
        ({"kty": "EC", "crv": "P-384"}, "ES384"),
        ({"kty": "EC", "crv": "P-521", "alg": "ES512"}, "ES512"),
        ({"kty": "EC", "crv": "P-256", "alg": "ES384"}, None),
        ({"kty": "EC", "crv": "secp256k1"}, None),
        ({"kty": "EC"}, None),
        ({"kty": "RSA"}, "RS256"),
        ({"kty": "RSA", "alg": "PS256"}, "PS256"),
        ({"kty": "RSA", "alg": "HS256"}, None),
        ({"kty": "RSA", "alg": "ES256"}, None),
        ({"kty": "RSA", "alg": "none"}, None),
        ({"kty": "oct"}, None),
        ({"kty": "oct", "alg": "HS256"}, None),
        ({"alg": "EdDSA"}, None),
        ({"kty": ["OKP"], "crv": "Ed25519"}, None),
        ({"kty": "OKP", "crv": "Ed25519", "alg": ["EdDSA"]}, None),
    ],
)
def test_each_key_has_exactly_one_algorithm(jwk: dict[str, Any], expected: str | None) -> None:
    assert key_algorithm(jwk) == expected


async def test_aclose_releases_the_client_and_a_closed_verifier_still_works(
    key_server: KeyServer, keys: dict[str, SigningKey], clock: FakeClock
) -> None:
    verifier = JwksVerifier(key_server.url, TokenRules(issuer=BASE_URL, audience=BASE_URL), clock=clock)
    token = keys["EdDSA"].sign(claims_for("someone"))
    assert (await verifier.verify(token)).user_id == "someone"
    await verifier.aclose()
    await verifier.aclose()
    clock.advance(CACHE_TTL_SECONDS + 1)
    assert (await verifier.verify(token)).user_id == "someone"  # stale keys: a refresh, by a new client
    await wait_until(lambda: key_server.requests == 2)
    await verifier.aclose()
