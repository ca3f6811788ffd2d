"""Authentication: bearer JWT verification (``tokens`` for the shared secret, ``jwks`` for Better Auth's keys,
``verifier`` picks one from the settings). The path-owner check is in ``app/access.py``."""
