"""Bearer-token authentication over HTTP: every way a token can be wrong is a 401 problem."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.asgi import build_app
from app.auth.tokens import InvalidTokenError, SharedSecretVerifier, TokenRules, VerifiedToken, VerifiedTokenCache
from config.settings import Settings
from tests.support.http import assert_401
from tests.support.tokens import TEST_SECRET

Client = AsyncTestClient[Litestar]


def sign(claims: dict[str, Any], key: str = TEST_SECRET, algorithm: str = "HS256", **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers or None)


def claims_for(user: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + 300, **extra}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_valid_token_is_accepted(client: Client, new_user: Callable[[], str]) -> None:
    user = new_user()
    response = await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {sign(claims_for(user))}"})
    assert response.status_code == 200


async def test_scheme_is_case_insensitive(client: Client, new_user: Callable[[], str]) -> None:
    user = new_user()
    response = await client.get(f"/api/{user}/tasks", headers={"Authorization": f"bearer {sign(claims_for(user))}"})
    assert response.status_code == 200


async def test_missing_header_is_401_without_error_code(client: Client, new_user: Callable[[], str]) -> None:
    response = await client.get(f"/api/{new_user()}/tasks")
    assert_401(response)
    assert response.headers["www-authenticate"] == 'Bearer realm="todo-backend"'


_ED25519_KEY = ed25519.Ed25519PrivateKey.generate()


def _bad_tokens(user: str) -> dict[str, str]:
    now = int(time.time())
    good = sign(claims_for(user))
    header, payload, signature = good.split(".")
    return {
        "expired": sign(claims_for(user, iat=now - 7200, exp=now - 3600)),
        "not yet valid (nbf)": sign(claims_for(user, nbf=now + 3600)),
        "no exp": sign({"sub": user, "iat": now}),
        "no sub": sign({"iat": now, "exp": now + 300}),
        "sub not a string": sign({"sub": 12345, "exp": now + 300}),
        "empty sub": sign(claims_for("")),
        "forged (other secret)": sign(claims_for(user), key="another-secret-another-secret-another-secret"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "alg NONE": f"{b64({'alg': 'NONE', 'typ': 'JWT'})}.{payload}.",
        "alg not a string": f"{b64({'alg': ['HS256'], 'typ': 'JWT'})}.{payload}.{signature}",
        "alg HS512": sign(claims_for(user), algorithm="HS512"),
        # Algorithm confusion the other way round: only HS256 with the shared secret verifies here.
        "alg EdDSA (an asymmetric key)": jwt.encode(claims_for(user), _ED25519_KEY, algorithm="EdDSA"),
        "iat far in the future": sign(claims_for(user, iat=now + 3600, exp=now + 7200)),
        "iat beyond the leeway": sign(claims_for(user, iat=now + 90)),
        "iat not a number": sign(claims_for(user, iat="yesterday")),
        "tampered payload": f"{header}.{b64(claims_for(user + 'x'))}.{signature}",
        "tampered header": f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': 'x'})}.{payload}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "not a jwt": "abc.def.ghi",
        "garbage": "x" * 40,
    }


@pytest.mark.parametrize("case", sorted(_bad_tokens("u")))
async def test_bad_tokens_are_401(client: Client, new_user: Callable[[], str], case: str) -> None:
    user = new_user()
    token = _bad_tokens(user)[case]
    response = await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {token}"})
    assert_401(response, token)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("POST", ""), ("GET", "/1"), ("PUT", "/1"), ("PATCH", "/1"), ("DELETE", "/1"), ("PATCH", "/1/complete")],
)
async def test_every_task_route_requires_a_valid_token(
    client: Client, new_user: Callable[[], str], method: str, suffix: str
) -> None:
    user = new_user()
    forged = sign(claims_for(user), key="another-secret-another-secret-another-secret")
    for headers in ({}, {"Authorization": f"Bearer {forged}"}):
        response = await client.request(method, f"/api/{user}/tasks{suffix}", json={"title": "x"}, headers=headers)
        assert_401(response)


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Token abc",
        "Bearer a b",
        "Bearerabc.def.ghi",
        "Bearer " + "a" * 9000,
    ],
)
async def test_malformed_authorization_headers_are_401(
    client: Client, new_user: Callable[[], str], header: str
) -> None:
    assert_401(await client.get(f"/api/{new_user()}/tasks", headers={"Authorization": header}))


async def test_token_in_query_string_or_cookie_is_not_a_credential(client: Client, new_user: Callable[[], str]) -> None:
    user = new_user()
    token = sign(claims_for(user))
    for query in ("token", "access_token", "jwt", "authorization"):
        assert_401(await client.get(f"/api/{user}/tasks?{query}={token}"), token)
    client.cookies.set("token", token)
    client.cookies.set("better-auth.session_token", token)
    assert_401(await client.get(f"/api/{user}/tasks"), token)


async def test_expired_within_leeway_is_accepted(client: Client, new_user: Callable[[], str]) -> None:
    user = new_user()
    now = int(time.time())
    token = sign(claims_for(user, exp=now - 5))  # 5 s late; default leeway is 30 s
    response = await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_iat_and_nbf_slightly_ahead_are_within_leeway(client: Client, new_user: Callable[[], str]) -> None:
    user = new_user()
    now = int(time.time())
    token = sign(claims_for(user, iat=now + 10, nbf=now + 10))  # a frontend clock 10 s fast
    response = await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_valid_token_for_another_user_is_403(client: Client, new_user: Callable[[], str]) -> None:
    me, other = new_user(), new_user()
    response = await client.get(f"/api/{other}/tasks", headers={"Authorization": f"Bearer {sign(claims_for(me))}"})
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_issuer_and_audience_are_enforced_when_configured(
    settings: Settings, new_user: Callable[[], str]
) -> None:
    configured = replace(settings, jwt_issuer="https://auth.example.com", jwt_audience="https://api.example.com")
    user = new_user()
    good = claims_for(user, iss="https://auth.example.com", aud="https://api.example.com")
    async with AsyncTestClient(app=build_app(configured)) as client:

        async def status(claims: dict[str, Any]) -> int:
            headers = {"Authorization": f"Bearer {sign(claims)}"}
            return (await client.get(f"/api/{user}/tasks", headers=headers)).status_code

        assert await status(good) == 200
        assert await status({**good, "iss": "https://evil.example.com"}) == 401
        assert await status({**good, "aud": "https://other.example.com"}) == 401
        assert await status({k: v for k, v in good.items() if k != "iss"}) == 401
        assert await status({k: v for k, v in good.items() if k != "aud"}) == 401


async def test_user_claim_is_configurable(settings: Settings, new_user: Callable[[], str]) -> None:
    user = new_user()
    async with AsyncTestClient(app=build_app(replace(settings, jwt_user_claim="uid"))) as client:
        ok = sign({"uid": user, "sub": "someone-else", "exp": int(time.time()) + 60})
        assert (await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {ok}"})).status_code == 200
        missing = sign({"sub": user, "exp": int(time.time()) + 60})
        assert_401(await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {missing}"}))


# -- the verified-token cache ---------------------------------------------------------------------------------


class Clock:
    """Wall time the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_token_is_checked_once_then_served_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        checks.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    verifier = SharedSecretVerifier(TEST_SECRET, TokenRules())
    token, other = sign(claims_for("alice")), sign(claims_for("bob"))
    for _ in range(3):
        assert (await verifier.verify(token)).user_id == "alice"
    assert (await verifier.verify(other)).user_id == "bob"
    assert checks == [token, other]  # one signature check per token
    with pytest.raises(InvalidTokenError):  # a token that fails is never cached: it fails every time
        await verifier.verify(token[:-2] + "xx")
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token[:-2] + "xx")
    assert len(checks) == 4


def test_a_cached_token_expires_with_its_exp_and_within_max_age() -> None:
    clock = Clock()
    cache = VerifiedTokenCache(30, max_age=60, clock=clock)
    soon = cache.put("soon", VerifiedToken("alice", clock.now + 10))
    cache.put("later", VerifiedToken("bob", clock.now + 3600))
    assert cache.get("soon") == soon
    clock.now += 10 + 29  # past exp, within the leeway the full check allows too
    assert cache.get("soon") == soon
    clock.now += 2
    assert cache.get("soon") is None  # past exp + leeway: it must be checked again (and will be refused)
    assert cache.get("later") is not None
    clock.now += 20
    assert cache.get("later") is None  # at most max_age after it was checked, whatever its exp
    assert cache.get("never seen") is None


def test_the_cache_is_bounded() -> None:
    cache = VerifiedTokenCache(0, size=100)
    far = time.time() + 3600
    for n in range(250):
        cache.put(str(n), VerifiedToken(str(n), far))
    assert len(cache._entries) <= 100
    assert cache.get("249") == VerifiedToken("249", far)
