"""Authentication: bearer JWT verification and the path-owner guard."""
