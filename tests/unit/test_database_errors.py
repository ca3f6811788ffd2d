"""Which database errors mean "the database is unavailable" (a 503 with Retry-After), and which do not."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.errors import _is_database_unavailable


def _raised(make: Callable[[], BaseException], wrap: Callable[[BaseException], BaseException]) -> BaseException:
    """``wrap(make())`` raised from the original, as drivers and SQLAlchemy chain them."""
    try:
        try:
            raise make()
        except BaseException as inner:
            raise wrap(inner) from inner
    except BaseException as outer:
        return outer


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConnectionRefusedError(111, "Connect call failed"),
        lambda: ConnectionResetError(104, "Connection reset by peer"),
        lambda: TimeoutError("timed out"),
        lambda: asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        lambda: asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        lambda: asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        lambda: asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        lambda: asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        lambda: asyncpg.exceptions.LockNotAvailableError("could not obtain lock"),
        lambda: asyncpg.exceptions.InterfaceError("connection is closed"),
        lambda: PoolTimeoutError("QueuePool limit reached"),
        lambda: OperationalError("SELECT 1", {}, Exception("database is locked")),
    ],
)
def test_transient_database_errors_count_as_unavailable(make: Callable[[], BaseException]) -> None:
    assert _is_database_unavailable(make())
    assert _is_database_unavailable(_raised(make, lambda e: DBAPIError("SELECT 1", {}, e)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: asyncpg.exceptions.UniqueViolationError("duplicate key"),
        lambda: asyncpg.exceptions.InvalidPasswordError("password authentication failed"),
        lambda: asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress"),
        lambda: ValueError("a bug"),
    ],
)
def test_other_errors_are_not_unavailable(make: Callable[[], BaseException]) -> None:
    assert not _is_database_unavailable(make())
    assert not _is_database_unavailable(_raised(make, lambda e: DBAPIError("SELECT 1", {}, e)))
