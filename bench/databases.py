"""Helpers shared by the benchmark scripts: database URLs and database lifecycle."""

from __future__ import annotations

import re

import asyncpg
from sqlalchemy.engine import make_url

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/bench_main"
_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def asyncpg_dsn(database_url: str, *, database: str | None = None) -> str:
    """``database_url`` (``postgres://``, ``postgresql://`` or ``postgresql+asyncpg://``) as an asyncpg DSN."""
    url = make_url(database_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def database_name(database_url: str) -> str:
    """The database a URL names; refused unless it is a plain identifier (it is interpolated into DDL)."""
    name = make_url(database_url).database or ""
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"database name {name!r} must be a plain identifier")
    return name


async def create_database(database_url: str, *, exist_ok: bool = True) -> bool:
    """Create the database ``database_url`` names (via the ``postgres`` database); True if it was created."""
    name = database_name(database_url)
    admin = await asyncpg.connect(asyncpg_dsn(database_url, database="postgres"), timeout=10)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            if not exist_ok:
                raise RuntimeError(f"database {name} already exists")
            return False
        await admin.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await admin.close()


async def drop_database(database_url: str) -> None:
    """Drop the database ``database_url`` names, closing its connections."""
    name = database_name(database_url)
    admin = await asyncpg.connect(asyncpg_dsn(database_url, database="postgres"), timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
