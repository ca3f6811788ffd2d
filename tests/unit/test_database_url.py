"""DATABASE_URL as people paste it (Neon's console, Heroku-style, SQLite paths) → async driver URLs."""

from __future__ import annotations

from typing import Any

import pytest

from db.url import DatabaseURLError, PoolerMode, pooler_connect_args, translate_database_url

NEON = (
    "postgresql://alex:AbC123dEf@ep-cool-darkness-123456.us-east-2.aws.neon.tech/dbname"
    "?sslmode=require&channel_binding=require"
)


def test_neon_url_is_translated_for_asyncpg() -> None:
    database = translate_database_url(NEON)
    assert database.url.drivername == "postgresql+asyncpg"
    assert database.url.host == "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
    assert database.url.username == "alex"
    assert database.url.password == "AbC123dEf"
    assert database.url.database == "dbname"
    assert dict(database.url.query) == {}  # asyncpg rejects sslmode and channel_binding in the URL
    assert database.connect_args == {"ssl": "require"}


def test_neon_pooler_url_keeps_its_host() -> None:
    database = translate_database_url(NEON.replace("ep-cool-darkness-123456", "ep-cool-darkness-123456-pooler"))
    assert database.url.host is not None
    assert database.url.host.startswith("ep-cool-darkness-123456-pooler.")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2"])
def test_postgres_schemes_are_accepted(scheme: str) -> None:
    database = translate_database_url(f"{scheme}://u:p@localhost:5432/db")
    assert database.url.drivername == "postgresql+asyncpg"
    assert database.dialect == "postgresql"
    assert database.connect_args == {}


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])
def test_every_libpq_sslmode_maps_to_asyncpg_ssl(mode: str) -> None:
    assert translate_database_url(f"postgresql://h/db?sslmode={mode}").connect_args == {"ssl": mode}


def test_other_libpq_parameters_are_translated() -> None:
    database = translate_database_url(
        "postgres://u@h/db?connect_timeout=10&application_name=todo&options=endpoint%3Dep-abc&sslmode=require"
    )
    assert database.connect_args == {
        "ssl": "require",
        "timeout": 10,
        "server_settings": {"application_name": "todo", "options": "endpoint=ep-abc"},
    }
    assert dict(database.url.query) == {}


def test_sqlite_urls_use_aiosqlite() -> None:
    assert translate_database_url("sqlite:///data/todo.db").url.drivername == "sqlite+aiosqlite"
    assert translate_database_url("sqlite:////abs/todo.db").url.database == "/abs/todo.db"
    assert translate_database_url("sqlite+aiosqlite:///x.db").dialect == "sqlite"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:p@h/db",
        "postgresql://u:p@h/db?sslmode=sometimes",
        "postgresql://u:p@h/db?connect_timeout=soon",
        "postgresql+pg8000://u:p@h/db",
        "not a url",
        "postgresql://u:p@h/db?sslmode=require&sslmode=disable",
    ],
)
def test_unusable_urls_are_refused_without_echoing_the_password(url: str) -> None:
    with pytest.raises(DatabaseURLError) as caught:
        translate_database_url(url)
    assert ":p@" not in str(caught.value)


def test_render_hides_the_password() -> None:
    assert "AbC123dEf" not in translate_database_url(NEON).render()


# -- when the pooler settings apply ------------------------------------------------------------------------

NEON_DIRECT = "postgresql://alex:AbC123dEf@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require"
NEON_POOLED = NEON_DIRECT.replace("ep-cool-darkness-123456", "ep-cool-darkness-123456-pooler")
POOLER_ARGS = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}


@pytest.mark.parametrize(
    ("url", "mode", "expected"),
    [
        (NEON_POOLED, "auto", POOLER_ARGS),  # Neon's pooled host is recognised by its name
        (NEON_DIRECT, "auto", {}),
        ("postgresql://u@db.example.com/x", "auto", {}),
        ("postgresql://u@pooler.example.com/x", "auto", {}),  # only a first label ending in -pooler counts
        ("postgresql://u@127.0.0.1:6432/x", "pgbouncer", POOLER_ARGS),  # any other PgBouncer: say so
        (NEON_POOLED, "none", {}),  # a PgBouncer with prepared statement support (1.21+) can opt out
        ("sqlite:///x.db", "pgbouncer", {}),
    ],
)
def test_pooler_settings_apply_to_pooled_hosts_or_when_asked(url: str, mode: PoolerMode, expected: Any) -> None:
    assert pooler_connect_args(translate_database_url(url), mode) == expected
