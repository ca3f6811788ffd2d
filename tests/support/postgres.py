"""The PostgreSQL server the tests may create and drop databases on (``TEST_POSTGRES_URL``)."""

from __future__ import annotations

import os

import asyncpg
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_admin_url() -> str:
    """A URL on which the tests may create and drop databases."""
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


async def admin(sql: str) -> None:
    """Run one statement on the admin URL (``CREATE DATABASE`` and the like)."""
    url = make_url(postgres_admin_url()).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()
