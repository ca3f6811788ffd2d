"""The token verifier the settings ask for: JWKS when ``JWT_JWKS_URL`` is set, else the shared secret."""

from __future__ import annotations

from app.auth.jwks import JwksVerifier
from app.auth.tokens import SharedSecretVerifier, TokenRules, TokenVerifier
from config.settings import Settings


def build_verifier(settings: Settings) -> TokenVerifier:
    """The verifier for ``settings``. In JWKS mode the shared secret is never consulted, so an HS256 token
    fails even when ``BETTER_AUTH_SECRET`` is set."""
    rules = TokenRules.from_settings(settings)
    if settings.jwt_jwks_url:
        return JwksVerifier(settings.jwt_jwks_url, rules)
    return SharedSecretVerifier(settings.signing_secret(), rules)
