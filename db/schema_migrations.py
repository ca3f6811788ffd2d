"""Schema management through alembic: apply, create and inspect migrations.

The schema is created only by these migrations, never by ``create_all``. The functions are synchronous
because alembic is; run them outside an event loop (the CLI does).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from db.url import PoolerMode

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str, pooler: PoolerMode = "auto") -> Config:
    """An alembic ``Config`` for ``db/migrations`` that targets ``database_url`` (``pooler``: DATABASE_POOLER)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    config.set_main_option("path_separator", "os")
    # ``%`` in a URL (escaped passwords) would be read as interpolation by configparser; pass it aside.
    config.attributes["database_url"] = database_url
    config.attributes["database_pooler"] = pooler
    return config


def upgrade(database_url: str, revision: str = "head", *, pooler: PoolerMode = "auto") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(alembic_config(database_url, pooler), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` empties the schema)."""
    command.downgrade(alembic_config(database_url), revision)


def make_migration(database_url: str, message: str, *, pooler: PoolerMode = "auto") -> str | None:
    """Autogenerate a revision from the models against an up-to-date database; returns its path."""
    script = command.revision(alembic_config(database_url, pooler), message=message, autogenerate=True)
    if script is None or isinstance(script, list):
        return None
    return script.path


def head_revisions() -> set[str]:
    """The head revision(s) of the migration scripts."""
    return set(ScriptDirectory.from_config(alembic_config("")).get_heads())


def all_revisions() -> list[str]:
    """Every revision of the migration scripts, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(""))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def migration_name(revision: str) -> str:
    """A revision as people name it: its file's name (``0003_task_version``)."""
    script = ScriptDirectory.from_config(alembic_config("")).get_revision(revision)
    return Path(script.path).stem if script is not None else revision


async def pending_revisions(engine: AsyncEngine) -> list[str]:
    """Revisions not yet applied to the database behind ``engine``, oldest first (empty when current)."""
    async with engine.connect() as connection:
        applied = await connection.run_sync(lambda sync: set(MigrationContext.configure(sync).get_current_heads()))
    script = ScriptDirectory.from_config(alembic_config(""))
    done = {rev.revision for head in applied for rev in script.iterate_revisions(head, "base")}
    return [rev.revision for rev in reversed(list(script.walk_revisions())) if rev.revision not in done]
