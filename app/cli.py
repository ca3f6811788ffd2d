"""``uv run manage.py``: the one door for people: migrations, the server, tokens, checks and a shell.

Fast by design: this module imports only click at the top, and each command imports what it needs when it
runs, so ``--help`` and the commands that reach neither the server nor the database (``createtoken``) load
no web framework, ORM or driver (``tests/test_cli_speed.py`` counts the modules). A new command is one
decorated function here with its imports inside it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from config.settings import Settings

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
CHECK_TIMEOUT_SECONDS = 5.0
MIGRATE_HINT = "run `uv run manage.py migrate`"
T = TypeVar("T")


def load_settings() -> Settings:
    """Settings from the environment, or exit with one line per bad value."""
    from config.settings import SettingsError, get_settings

    try:
        return get_settings()
    except SettingsError as exc:
        for line in exc.problems:
            click.secho(f"error: {line}", err=True, fg="red")
        sys.exit(1)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine in a new event loop (asyncio is imported only by the commands that need it)."""
    import asyncio

    return asyncio.run(coroutine)


def rendered(database_url: str) -> str:
    """The database URL as messages show it: never the password."""
    from db.url import translate_database_url

    return translate_database_url(database_url).render()


def driver_message(exc: BaseException) -> str:
    """What went wrong, in the driver's own words (``password authentication failed for user "app"``,
    ``database "x" does not exist``, ``[Errno 111] Connect call failed …``): the innermost error that is not
    SQLAlchemy's or alembic's wrapper. Driver messages name users, databases and addresses, never passwords."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 20 and current not in chain:
        chain.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    for error in reversed(chain):
        module = type(error).__module__
        if isinstance(error, TimeoutError):
            return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
        if not module.startswith(("sqlalchemy", "alembic", "advanced_alchemy")) and str(error):
            return f"{type(error).__name__}: {error}"
    return f"{type(exc).__name__}: {exc}"


async def _pending(settings: Settings, database_url: str | None = None) -> list[str]:
    import asyncio

    from db.engine import create_engine
    from db.schema_migrations import pending_revisions

    engine = create_engine(database_url or settings.database_url, settings.db_options, pooler=settings.database_pooler)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return await pending_revisions(engine)
    finally:
        await engine.dispose()


async def _ping(settings: Settings) -> None:
    import asyncio

    from sqlalchemy import text

    from db.engine import create_engine

    engine = create_engine(settings.database_url, settings.db_options, pooler=settings.database_pooler)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def sqlite_folder_problem(settings: Settings) -> str | None:
    """What is wrong with the folder of the SQLite file, if anything: it must exist (``DATA_DIR`` is created
    on first use) and be writable (SQLite writes its journal next to the file)."""
    import os
    from pathlib import Path

    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        return None
    folder = Path(url.database).resolve().parent
    if not folder.exists():
        if folder == settings.data_dir.resolve():
            return None
        return f"the folder {folder} of the SQLite file does not exist"
    if not folder.is_dir():
        return f"{folder} (the folder of the SQLite file) is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} of the SQLite file is not writable"
    return None


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def parse_duration(value: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``7d`` → a positive ``timedelta``."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        raise click.BadParameter("use a positive number and a unit: 90s, 15m, 1h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """todo-backend: a multi-user task API. Settings come from the environment and .env."""


@cli.command()
@click.option("--revision", default="head", show_default=True, help="Revision to migrate to.")
def migrate(revision: str) -> None:
    """Apply migrations to the database.

    Connects to MIGRATIONS_DATABASE_URL when it is set (Neon's direct host), else DATABASE_URL. Prints each
    migration it applied.
    """
    from db.schema_migrations import migration_name, upgrade

    settings = load_settings()
    database = rendered(settings.migrations_url)
    click.echo(f"Migrating {database}", err=True)  # which host: Neon's direct one, not the -pooler
    try:
        before = run(_pending(settings, settings.migrations_url))
        upgrade(settings.migrations_url, revision, pooler=settings.database_pooler)
        after = set(run(_pending(settings, settings.migrations_url)))
    except Exception as exc:  # alembic and the driver raise many types; report, never dump a trace
        click.secho(f"error: migrating {database} failed: {driver_message(exc)}", err=True, fg="red")
        sys.exit(1)
    applied = [name for name in before if name not in after]
    for name in applied:
        click.echo(f"Applied {migration_name(name)}")
    if not applied:
        click.echo("No migrations to apply.")


@cli.command()
def showmigrations() -> None:
    """List every migration, [X] when the database has it.

    Reads MIGRATIONS_DATABASE_URL when it is set, else DATABASE_URL.
    """
    from db.schema_migrations import all_revisions, migration_name

    settings = load_settings()
    try:
        pending = set(run(_pending(settings, settings.migrations_url)))
    except Exception as exc:
        click.secho(f"error: cannot read {rendered(settings.migrations_url)}: {driver_message(exc)}", err=True)
        sys.exit(1)
    for name in all_revisions():
        click.echo(f"[{' ' if name in pending else 'X'}] {migration_name(name)}")


@cli.command()
@click.option("-m", "--message", required=True, help="What the migration does.")
def makemigrations(message: str) -> None:
    """Create a migration from model changes.

    Compares the models with an up-to-date database (MIGRATIONS_DATABASE_URL or DATABASE_URL), like alembic
    autogenerate.
    """
    from db.schema_migrations import make_migration

    settings = load_settings()
    pending = run(_pending(settings, settings.migrations_url))
    if pending:
        click.secho(f"error: apply pending migrations first ({', '.join(pending)}): {MIGRATE_HINT}", err=True)
        sys.exit(1)
    path = make_migration(settings.migrations_url, message, pooler=settings.database_pooler)
    click.echo(f"Created {path}" if path else "No changes detected.")


@cli.command()
@click.option("--host", help="Interface to bind.  [default: HOST, 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to bind.  [default: PORT, 8000]")
@click.option("--workers", type=click.IntRange(1, 64), help="Processes.  [default: WEB_CONCURRENCY, 1]")
@click.option("--reload", is_flag=True, help="Restart on code changes (development; one process).")
def serve(host: str | None, port: int | None, workers: int | None, reload: bool) -> None:
    """Serve the API with uvicorn.

    Refuses to start with pending migrations when APP_ENV=production (warns otherwise). Docs at /docs,
    schema at /schema/openapi.json. SIGTERM stops it gracefully within SHUTDOWN_GRACE_SECONDS.
    """
    from app import serving
    from config.logging import log_config

    settings = load_settings()
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.web_concurrency
    if reload and workers > 1:
        raise click.UsageError("--reload runs one process; drop --workers")
    if settings.otel_exporter_otlp_endpoint and not _installed("opentelemetry.sdk"):
        click.secho(
            "error: OTEL_EXPORTER_OTLP_ENDPOINT is set but the tracing packages are not installed: "
            "uv run --group tracing manage.py serve",
            err=True,
            fg="red",
        )
        sys.exit(1)
    try:
        pending = run(_pending(settings))
    except Exception as exc:  # the server still starts; /health/ready reports the database
        click.secho(f"warning: cannot read the migration state: {driver_message(exc)}", err=True, fg="yellow")
    else:
        if pending and settings.is_production:
            click.secho(
                f"error: {len(pending)} migration(s) not applied ({', '.join(pending)}); {MIGRATE_HINT} before "
                "serving (APP_ENV=production)",
                err=True,
                fg="red",
            )
            sys.exit(1)
        if pending:
            click.secho(
                f"warning: {len(pending)} migration(s) not applied ({', '.join(pending)}); {MIGRATE_HINT}",
                err=True,
                fg="yellow",
            )
    settings.signing_secret()  # create the development secret once, before workers start
    click.echo(f"Serving on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
    with serving.metrics_folder(settings):
        serving.run(
            host=host,
            port=port,
            workers=workers,
            reload=reload,
            log_config=log_config(settings.log_level, settings.log_format),
            grace_seconds=settings.shutdown_grace_seconds,
        )


@cli.command()
@click.argument("user_id")
@click.option(
    "--expires",
    default="1h",
    show_default=True,
    callback=lambda _ctx, _param, value: parse_duration(value),
    help="Lifetime: 90s, 15m, 1h, 7d.",
)
def createtoken(user_id: str, expires: timedelta) -> None:
    """Print a bearer token for USER_ID.

    Signed with BETTER_AUTH_SECRET (or the development secret in DATA_DIR). Not in JWKS mode
    (JWT_JWKS_URL set): only Better Auth's keys sign tokens then.
    """
    from app.auth.tokens import InvalidTokenError, issue_token, user_id_from_claims

    settings = load_settings()
    if settings.jwt_jwks_url:
        click.secho(
            "error: JWT_JWKS_URL is set, so the API accepts only tokens signed by Better Auth's keys and refuses "
            "HS256 tokens; get one from the frontend (authClient.token()) instead",
            err=True,
            fg="red",
        )
        sys.exit(1)
    try:
        user_id_from_claims({"sub": user_id}, "sub")
    except InvalidTokenError:
        raise click.BadParameter("must be 1 to 255 printable characters", param_hint="USER_ID") from None
    click.echo(issue_token(settings, user_id, expires))


@cli.command()
def check() -> None:
    """Check settings, database and migrations.

    Exits non-zero when a setting is invalid, the database is unreachable or refuses our credentials, the
    SQLite file's folder is missing or read-only, or migrations are pending. Failures are reported in the
    driver's own words.
    """
    settings = load_settings()
    database = rendered(settings.database_url)
    click.echo(f"settings: ok (APP_ENV={settings.app_env})")
    folder_problem = sqlite_folder_problem(settings)
    if folder_problem:
        click.secho(f"database: {folder_problem} ({database})", err=True, fg="red")
        sys.exit(1)
    try:
        run(_ping(settings))
    except Exception as exc:
        click.secho(f"database: cannot connect to {database}: {driver_message(exc)}", err=True, fg="red")
        sys.exit(1)
    click.echo(f"database: ok ({database})")
    if settings.redis_url:
        from app.ratelimit.redis_limiter import ping_redis, redis_location

        location = redis_location(settings.redis_url)
        try:
            run(ping_redis(settings.redis_url))
        except Exception as exc:
            # redis-py's own error says it in full ("Error 111 connecting to host:port. Connection refused.")
            click.secho(f"redis: cannot connect to {location}: {type(exc).__name__}: {exc}", err=True, fg="red")
            sys.exit(1)
        click.echo(f"redis: ok ({location})")
    pending = run(_pending(settings))
    if pending:
        click.secho(f"migrations: {len(pending)} pending ({', '.join(pending)}); {MIGRATE_HINT}", err=True)
        sys.exit(1)
    click.echo("migrations: up to date")


@cli.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the document to this file.  [default: standard output]",
)
def openapi(output: Path | None) -> None:
    """Write the OpenAPI document (JSON).

    As served at /schema/openapi.json, and the same bytes on every run, for code generators
    (clients/typescript/). The token mode (JWT_JWKS_URL) changes only the security scheme's description.
    Touches no database and creates no secret.
    """
    import dataclasses
    import json

    from app.asgi import build_app

    settings = load_settings()
    # The document does not depend on the secret: a placeholder keeps build_app from creating the development one.
    placeholder = dataclasses.replace(settings, better_auth_secret=settings.better_auth_secret or "-" * 32)
    document = build_app(placeholder).openapi_schema.to_schema()
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"Wrote {output}", err=True)


@cli.command()
def purgekeys() -> None:
    """Delete every user's idempotency keys older than 24 hours.

    Each keyed create already deletes its own user's expired keys; run this now and then (say, daily from
    cron) to clear those of users who stopped sending requests.
    """
    settings = load_settings()

    async def purge() -> int:
        from datetime import UTC, datetime

        from db.database import open_database
        from db.idempotency import purge_every_users_expired_keys

        opened = open_database(settings.database_url, settings.db_options, pooler=settings.database_pooler)
        try:
            return await purge_every_users_expired_keys(opened, now=datetime.now(UTC))  # one statement
        finally:
            await opened.close()

    try:
        count = run(purge())
    except Exception as exc:
        click.secho(f"error: purging keys in {rendered(settings.database_url)} failed: {driver_message(exc)}", err=True)
        sys.exit(1)
    click.echo(f"Deleted {count} expired idempotency key(s).")


@cli.command()
def purgetrash() -> None:
    """Purge the trash and old deletions past their retention.

    Deletes tasks that have been in the trash longer than TRASH_RETENTION_DAYS. A purged task leaves a
    tombstone, so devices following the change feed still learn of it; tombstones older than
    TOMBSTONE_RETENTION_DAYS go too. Run it daily (from cron, say).
    """
    settings = load_settings()

    async def purge() -> tuple[int, int]:
        from datetime import UTC, datetime

        from db.database import open_database
        from db.feed import purge_every_users_old_tombstones, purge_every_users_old_trash

        now = datetime.now(UTC)
        opened = open_database(settings.database_url, settings.db_options, pooler=settings.database_pooler)
        try:  # two autocommitted statements: the trash first, so its tombstones are judged by their own age
            trash = await purge_every_users_old_trash(
                opened, before=now - timedelta(days=settings.trash_retention_days)
            )
            tombstones = await purge_every_users_old_tombstones(
                opened, before=now - timedelta(days=settings.tombstone_retention_days)
            )
            return trash, tombstones
        finally:
            await opened.close()

    try:
        trash, tombstones = run(purge())
    except Exception as exc:
        message = f"error: purging the trash in {rendered(settings.database_url)} failed: {driver_message(exc)}"
        click.secho(message, err=True)
        sys.exit(1)
    click.echo(f"Deleted {trash} task(s) from the trash and forgot {tombstones} old deletion(s).")


@cli.command()
def routes() -> None:
    """List every route: methods, path template and handler."""
    from litestar.routes import HTTPRoute

    from app.asgi import build_app

    app = build_app(load_settings())
    rows = []
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                methods = ",".join(sorted(handler.http_methods))
                rows.append((route.path_format, methods, handler.handler_name))
    width = max(len(methods) for _, methods, _ in rows)
    for path, methods, name in sorted(rows):
        click.echo(f"{methods:<{width}}  {path}  ({name})")


@cli.command()
def shell() -> None:
    """A Python shell with settings, engine and a session ready.

    The database objects are async; ``wait(coroutine)`` runs one to completion on their event loop, e.g.
    ``wait(session.execute(text("SELECT count(*) FROM tasks"))).scalar()``.
    """
    import asyncio
    import code
    import threading

    from sqlalchemy import select, text
    from sqlalchemy.ext.asyncio import AsyncSession

    from db.database import open_database
    from db.models import IdempotencyKey, Task

    settings = load_settings()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="shell-event-loop", daemon=True).start()

    def wait(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    async def opened() -> Any:
        return open_database(settings.database_url, settings.db_options, pooler=settings.database_pooler)

    database = wait(opened())
    session = AsyncSession(database.engine, expire_on_commit=False)
    names: dict[str, Any] = {
        "settings": settings,
        "database": database,
        "engine": database.engine,
        "session": session,
        "wait": wait,
        "select": select,
        "text": text,
        "Task": Task,
        "IdempotencyKey": IdempotencyKey,
    }
    example = 'wait(session.execute(text("SELECT count(*) FROM tasks"))).scalar()'
    banner = "\n".join(
        (
            f"todo-backend shell on {rendered(settings.database_url)}",
            f"Ready: {', '.join(names)}. Run a coroutine with wait(...), e.g.",
            f"  {example}",
        )
    )
    try:
        code.interact(banner=banner, local=names, exitmsg="")
    finally:
        wait(session.close())
        wait(database.close())
        loop.call_soon_threadsafe(loop.stop)
