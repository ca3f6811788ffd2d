"""The test secret and tokens signed with it."""

from __future__ import annotations

from datetime import timedelta

from app.auth.tokens import issue_token
from config.settings import Settings

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def bearer(user_id: str, expires_in: timedelta = timedelta(minutes=10)) -> dict[str, str]:
    """``Authorization`` headers for ``user_id`` that a server signing with :data:`TEST_SECRET` accepts."""
    token = issue_token(Settings(better_auth_secret=TEST_SECRET), user_id, expires_in)
    return {"Authorization": f"Bearer {token}"}
