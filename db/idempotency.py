"""Idempotency keys in the database: one user's keys, and the responses they got.

How a create with ``Idempotency-Key`` stays exactly-once across workers and instances, with no lock that a
crash could leave behind: everything happens in the request's one transaction.

1. :meth:`IdempotencyKeyRepository.claim` deletes the user's expired keys, then
   ``INSERT … ON CONFLICT DO NOTHING RETURNING`` the key. If the row went in, the transaction owns the key:
   the caller creates the task, :meth:`~IdempotencyKeyRepository.save_response` stores the response in the
   same row, and one commit makes the key, the task and the response durable together (or none of them).
2. A duplicate that arrives while the first is in flight blocks in that INSERT: on PostgreSQL on the unique
   index entry of the uncommitted row, on SQLite on the database's write lock (the engine's busy timeout
   makes it wait rather than fail). When the first commits, the duplicate's INSERT changes nothing and
   ``claim`` returns the stored response to replay; when the first rolls back (or its process dies, which
   ends its transaction), the duplicate's INSERT goes in and it proceeds as the first.
3. On PostgreSQL the wait is bounded by the transaction's ``lock_timeout``
   (:attr:`IdempotencyKeyRepository.in_flight_wait`, which the caller passes to
   ``Database.transaction(lock_timeout=…)``), after which :class:`KeyInFlightError` says "still in
   progress, retry"; on SQLite by the busy timeout.

Expired keys of users who stopped sending requests are removed by ``manage.py purgekeys``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import bindparam, delete

from db.database import DatabaseUnavailableError, Executor
from db.models import IdempotencyKey
from db.owned import OwnedTable
from db.query import Query

KEY_LIFETIME = timedelta(hours=24)
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout expires


class KeyInFlightError(Exception):
    """Another request with the same key is still in progress after the wait allowed for it."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What an earlier request with a key sent, and the response it got (``status`` None: not finished)."""

    request_hash: str
    status: int | None
    headers: dict[str, str]
    body: str | None


class IdempotencyKeyRepository(OwnedTable[IdempotencyKey]):
    """One user's idempotency keys. Every statement goes through ``OwnedTable``'s owner-scoped builders."""

    model_type = IdempotencyKey
    in_flight_wait: ClassVar[timedelta] = timedelta(seconds=5)

    async def claim(self, key: str, request_hash: str, *, now: datetime) -> StoredResponse | None:
        """Take ``key`` for this transaction (``None``), or return the response stored for it within 24 hours.

        Waits while another transaction holds the key (see the module docstring); raises
        :class:`KeyInFlightError` when that takes longer than the transaction's lock timeout (PostgreSQL).
        """
        dialect = self.executor.dialect_name

        def build() -> Any:
            values: dict[str, Any] = {
                "key": bindparam("b_key"),
                "request_hash": bindparam("b_hash"),
                "created_at": bindparam("b_now"),
            }
            insert_ = self._insert(dialect, values).on_conflict_do_nothing(index_elements=["user_id", "key"])
            return insert_.returning(IdempotencyKey.__table__.c.key)

        try:
            await self.purge_expired(now=now)
            claimed = await self._fetchrow(
                self._query("claim", build), {"b_key": key, "b_hash": request_hash, "b_now": now}
            )
        except DatabaseUnavailableError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                raise KeyInFlightError(key) from None
            raise
        if claimed is not None:
            return None
        return await self.stored(key)

    async def stored(self, key: str) -> StoredResponse | None:
        """The request hash and response stored under ``key``, if the key exists."""

        def build() -> Any:
            table = IdempotencyKey.__table__
            columns = (table.c.request_hash, table.c.response_status, table.c.response_headers, table.c.response_body)
            return self._select(*columns).where(table.c.key == bindparam("b_key"))

        row = await self._fetchrow(self._query("stored", build), {"b_key": key})
        if row is None:
            return None
        return StoredResponse(
            request_hash=row["request_hash"],
            status=row["response_status"],
            headers=dict(row["response_headers"] or {}),
            body=row["response_body"],
        )

    async def save_response(self, key: str, *, status: int, headers: dict[str, str], body: str) -> None:
        """Store the response to the request that claimed ``key`` (in the same transaction as its work)."""

        def build() -> Any:
            table = IdempotencyKey.__table__
            values = {
                "response_status": bindparam("b_status"),
                "response_headers": bindparam("b_headers", type_=table.c.response_headers.type),
                "response_body": bindparam("b_body"),
            }
            return self._update(values).where(table.c.key == bindparam("b_key"))

        values = {"b_key": key, "b_status": status, "b_headers": headers, "b_body": body}
        await self._fetch(self._query("save", build), values)

    async def purge_expired(self, *, now: datetime) -> int:
        """Delete this user's keys older than :data:`KEY_LIFETIME`; returns how many."""

        def build() -> Any:
            created_at = IdempotencyKey.__table__.c.created_at
            expired = created_at < bindparam("b_expired_before", type_=created_at.type)
            return self._delete().where(expired).returning(IdempotencyKey.__table__.c.key)

        return len(await self._fetch(self._query("purge", build), {"b_expired_before": now - KEY_LIFETIME}))


_EXPIRED_EVERYWHERE = Query(
    delete(IdempotencyKey)
    .where(IdempotencyKey.created_at < bindparam("expired_before", type_=IdempotencyKey.__table__.c.created_at.type))
    .returning(IdempotencyKey.__table__.c.key)
)


async def purge_every_users_expired_keys(executor: Executor, *, now: datetime) -> int:
    """Maintenance (``manage.py purgekeys``): delete every user's keys older than :data:`KEY_LIFETIME`.

    Not owner-scoped on purpose: it reads no key, returns none, and only removes what no request may replay.
    """
    return len(await executor.fetch(_EXPIRED_EVERYWHERE, {"expired_before": now - KEY_LIFETIME}))
