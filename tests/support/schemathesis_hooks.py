"""schemathesis hooks for tests/process/test_schemathesis.py (loaded by the ``schemathesis run`` it starts).

Every request to a task route carries a valid token for the ``{user_id}`` in its own path, so whatever user id
schemathesis generates, the call reaches the handlers as that user (a token for another user would be a
documented 403 at the guard, and the fuzzing would stop there). A user id that no token can carry (longer than
255 characters, not printable) gets a token the server refuses: a 401, which the schema documents.

Two rules of the API cannot be written in JSON Schema, and ``before_call`` keeps generated requests off them
(schemathesis re-checks a case against the schema after this hook changes it):
- a ``cursor`` is only valid as the server signed it in a ``Link`` header; a generated one is a forgery (400);
- tags are unique ignoring case and surrounding white space (``uniqueItems`` states exact uniqueness only), so a tag
  that only differs that way from an earlier one is dropped (exact repeats stay: the schema refuses them too).
Two headers depend on state the generator cannot know: an ``If-Match`` it makes up names a version the task does
not have (a documented 412, but to schemathesis a valid request rejected), so it is left out; an
``Idempotency-Key`` it reuses with another body is a documented 422, so each call gets a fresh key. Both have
their own tests (tests/api/test_api_etags.py, tests/api/test_idempotency.py).
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
import schemathesis
from requests.structures import CaseInsensitiveDict
from schemathesis import AuthContext, Case, HookContext

from app.auth.tokens import issue_token
from config.settings import Settings

SECRET_ENV = "FUZZ_SECRET"


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path_regex="^/api/")
class PathUserToken:
    """Signs a token for the path's user, with the server's secret (handed over in ``FUZZ_SECRET``)."""

    def get(self, case: Case[Any], ctx: AuthContext) -> Settings:
        """The settings to sign with; nothing is fetched."""
        return Settings(app_env="test", data_dir=Path(os.devnull), better_auth_secret=os.environ[SECRET_ENV])

    def set(self, case: Case[Any], data: Settings, ctx: AuthContext) -> None:
        """``Authorization: Bearer <token for the path's user_id>``."""
        sign_for_path_user(case, data)


def path_user(case: Case[Any]) -> str | None:
    """The user the server will read from the case's path.

    The fuzzing phase generates path values already percent-encoded and sends them as they are; the server
    decodes them. (A raw value that happens to contain ``%XX`` would be decoded wrongly here: a 403, never a
    false failure.)
    """
    user_id = (case.path_parameters or {}).get("user_id")
    return unquote(user_id) if isinstance(user_id, str) else None


def sign_for_path_user(case: Case[Any], settings: Settings) -> None:
    """Put a token for the case's path user in its ``Authorization`` header."""
    user_id = path_user(case)
    if user_id is not None:
        if case.headers is None:
            case.headers = CaseInsensitiveDict()
        case.headers["Authorization"] = f"Bearer {issue_token(settings, user_id, timedelta(minutes=15))}"


@schemathesis.hook
def before_call(context: HookContext, case: Case[Any], kwargs: dict[str, Any]) -> None:
    """Leave out what no schema can state: forged cursors, tags that repeat another ignoring case. And keep the
    token's user the path's user: some phases change path parameters after auth was applied (a link fills in
    ``user_id``, say). Only a token this module signed is re-signed; probes with no or broken credentials stay."""
    header = case.headers.get("Authorization") if case.headers is not None else None
    token = str(header or "").removeprefix("Bearer ")
    settings = Settings(app_env="test", data_dir=Path(os.devnull), better_auth_secret=os.environ[SECRET_ENV])
    try:
        claims = jwt.decode(token, settings.signing_secret(), algorithms=["HS256"])
    except jwt.PyJWTError:
        claims = None
    if claims is not None and claims.get("sub") != path_user(case):
        sign_for_path_user(case, settings)
    if isinstance(case.query, dict):
        case.query.pop("cursor", None)
    if case.headers is not None:
        case.headers.pop("If-Match", None)
        if "Idempotency-Key" in case.headers:
            case.headers["Idempotency-Key"] = uuid.uuid4().hex
    body = case.body
    tags = body.get("tags") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(tags, list):
        kept: list[Any] = []
        for tag in tags:
            if not (isinstance(tag, str) and tag not in kept and any(_same_tag(tag, other) for other in kept)):
                kept.append(tag)
        body["tags"] = kept


def _same_tag(tag: str, other: object) -> bool:
    return isinstance(other, str) and tag.strip().casefold() == other.strip().casefold()
