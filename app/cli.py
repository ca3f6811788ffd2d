"""``python manage.py``: the one door for people: migrations, the server, tokens and checks."""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta

import click
from sqlalchemy import text

from app import serving
from app.auth.tokens import InvalidTokenError, issue_token, user_id_from_claims
from config.logging import log_config
from config.settings import Settings, SettingsError, get_settings
from db.database import open_database
from db.engine import create_engine
from db.idempotency import purge_every_users_expired_keys
from db.schema_migrations import make_migration, pending_revisions, upgrade
from db.url import translate_database_url

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
CHECK_TIMEOUT_SECONDS = 5.0


def load_settings() -> Settings:
    """Settings from the environment, or exit with one line per bad value."""
    try:
        return get_settings()
    except SettingsError as exc:
        for line in exc.problems:
            click.secho(f"error: {line}", err=True, fg="red")
        sys.exit(1)


async def _pending(settings: Settings, database_url: str | None = None) -> list[str]:
    engine = create_engine(database_url or settings.database_url, settings.db_options, pooler=settings.database_pooler)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return await pending_revisions(engine)
    finally:
        await engine.dispose()


async def _ping(settings: Settings) -> None:
    engine = create_engine(settings.database_url, settings.db_options, pooler=settings.database_pooler)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def _purge_keys(settings: Settings) -> int:
    database = open_database(settings.database_url, settings.db_options, pooler=settings.database_pooler)
    try:
        return await purge_every_users_expired_keys(database, now=datetime.now(UTC))  # one autocommitted statement
    finally:
        await database.close()


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

    Connects to MIGRATIONS_DATABASE_URL when it is set (Neon's direct host), else DATABASE_URL.
    """
    settings = load_settings()
    database = translate_database_url(settings.migrations_url).render()
    try:
        upgrade(settings.migrations_url, revision, pooler=settings.database_pooler)
    except Exception as exc:  # alembic and the driver raise many types; report, never dump a trace
        click.secho(f"error: migrating {database} failed: {type(exc).__name__}: {exc}", err=True, fg="red")
        sys.exit(1)
    click.echo(f"Database {database} is at revision {revision}.")


@cli.command()
@click.option("-m", "--message", required=True, help="What the migration does.")
def makemigrations(message: str) -> None:
    """Create a migration from model changes.

    Compares the models with an up-to-date database (MIGRATIONS_DATABASE_URL or DATABASE_URL), like alembic
    autogenerate.
    """
    settings = load_settings()
    pending = asyncio.run(_pending(settings, settings.migrations_url))
    if pending:
        click.secho(f"error: apply pending migrations first ({', '.join(pending)}): manage.py migrate", err=True)
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

    Warns when migrations are pending. Docs at /docs, schema at /schema/openapi.json. SIGTERM stops it
    gracefully within SHUTDOWN_GRACE_SECONDS.
    """
    settings = load_settings()
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.web_concurrency
    if reload and workers > 1:
        raise click.UsageError("--reload runs one process; drop --workers")
    try:
        pending = asyncio.run(_pending(settings))
    except Exception as exc:  # the server still starts; /health/ready reports the database
        click.secho(f"warning: cannot read the migration state: {type(exc).__name__}", err=True, fg="yellow")
    else:
        if pending:
            click.secho(
                f"warning: {len(pending)} migration(s) not applied ({', '.join(pending)}); "
                "run `python manage.py migrate`",
                err=True,
                fg="yellow",
            )
    settings.signing_secret()  # create the development secret once, before workers start
    click.echo(f"Serving on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
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

    Exits non-zero when a setting is invalid, the database is unreachable or migrations are pending.
    """
    settings = load_settings()
    database = translate_database_url(settings.database_url).render()
    click.echo(f"settings: ok (APP_ENV={settings.app_env})")
    try:
        asyncio.run(_ping(settings))
    except Exception as exc:
        click.secho(f"database: cannot connect to {database}: {type(exc).__name__}", err=True, fg="red")
        sys.exit(1)
    click.echo(f"database: ok ({database})")
    if settings.redis_url:
        from app.ratelimit.redis_limiter import ping_redis, redis_location  # noqa: PLC0415 - only when configured

        location = redis_location(settings.redis_url)
        try:
            asyncio.run(ping_redis(settings.redis_url))
        except Exception as exc:
            click.secho(f"redis: cannot connect to {location}: {type(exc).__name__}", err=True, fg="red")
            sys.exit(1)
        click.echo(f"redis: ok ({location})")
    pending = asyncio.run(_pending(settings))
    if pending:
        click.secho(
            f"migrations: {len(pending)} pending ({', '.join(pending)}); run `python manage.py migrate`",
            err=True,
        )
        sys.exit(1)
    click.echo("migrations: up to date")


@cli.command()
def purgekeys() -> None:
    """Delete every user's idempotency keys older than 24 hours.

    Each keyed create already deletes its own user's expired keys; run this now and then (say, daily from
    cron) to clear those of users who stopped sending requests.
    """
    settings = load_settings()
    database = translate_database_url(settings.database_url).render()
    try:
        count = asyncio.run(_purge_keys(settings))
    except Exception as exc:
        click.secho(f"error: purging keys in {database} failed: {type(exc).__name__}", err=True, fg="red")
        sys.exit(1)
    click.echo(f"Deleted {count} expired idempotency key(s).")
