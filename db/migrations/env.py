"""Alembic environment: runs migrations on the async engine for ``MIGRATIONS_DATABASE_URL`` or, when that is
empty, ``DATABASE_URL`` (SQLite or PostgreSQL).

Called through ``db.schema_migrations`` (``manage.py migrate`` / ``makemigrations``), which passes the URL in
``config.attributes["database_url"]`` (``MIGRATIONS_DATABASE_URL`` when set) and ``DATABASE_POOLER`` in
``config.attributes["database_pooler"]``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from db.engine import create_engine
from db.models import metadata

config = context.config


def _skip_empty(_context: object, _revision: object, directives: list[Any]) -> None:
    # ``makemigrations`` with no model changes writes nothing, like Django's "No changes detected".
    if directives and directives[0].upgrade_ops.is_empty():
        directives[:] = []


def _configure(connection: Connection) -> None:
    context.configure(
        process_revision_directives=_skip_empty,
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(config.attributes["database_url"], pooler=config.attributes.get("database_pooler", "auto"))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
asyncio.run(_run_async())
