"""``Idempotency-Key`` on create: a retried POST replays the first response instead of creating a second task.

The same key with the same body (the same JSON value: white space and key order do not matter) within
24 hours gets the original status, body, ``Location`` and ``ETag`` again, plus ``Idempotent-Replayed: true``;
nothing new is created. The same key with another body is a 422. A duplicate that arrives while the first
is still running waits for it and then replays its response (409 if that takes longer than the wait allows).
Keys are per user and live in the database (``db/idempotency.py`` has the transaction design), so this holds
across workers and instances.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import MediaType, Response
from litestar.exceptions import HTTPException
from litestar.params import HeaderParameter

from db.database import Database, Executor
from db.idempotency import IdempotencyKeyRepository, KeyInFlightError
from db.models import IDEMPOTENCY_KEY_MAX_LENGTH

REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        description=(
            f"1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters, not starting or ending with a space "
            "(HTTP strips those), unique per create: a UUID is a good choice. A retry with the same key and "
            "body within 24 hours replays the first response (with `Idempotent-Replayed: true`) and creates "
            "nothing; the same key with another body is a 422."
        ),
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
        required=False,
    ),
]


class Created(msgspec.Struct, frozen=True):
    """A response to store and send: status, headers and the encoded JSON body."""

    status: int
    headers: dict[str, str]
    body: bytes


def request_hash(body: bytes) -> str:
    """SHA-256 of the body's JSON value in a canonical form (sorted keys, no white space), as hex."""
    canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted")
    return hashlib.sha256(canonical).hexdigest()


async def create_once(
    database: Database, owner: str, key: str, body: bytes, create: Callable[[Executor], Awaitable[Created]]
) -> Response[bytes]:
    """Run ``create`` at most once per key, or replay what it answered before.

    The key, whatever ``create`` writes through the executor it is given, and the stored response commit
    together in one transaction (with the atomic batch, the only places a request commits more than one statement).
    """
    fingerprint = request_hash(body)
    created: Created | None = None
    try:
        wait = IdempotencyKeyRepository.in_flight_wait.total_seconds()
        async with database.transaction(lock_timeout=wait) as transaction:
            keys = IdempotencyKeyRepository(owner_id=owner, executor=transaction)
            stored = await keys.claim(key, fingerprint, now=datetime.now(UTC))
            if stored is None:
                created = await create(transaction)
                body_text = created.body.decode()
                await keys.save_response(key, status=created.status, headers=created.headers, body=body_text)
    except KeyInFlightError:
        raise _in_flight() from None
    if created is not None:  # committed: only now does the client hear of the task
        return Response(created.body, status_code=created.status, headers=created.headers, media_type=MediaType.JSON)
    if stored is None or stored.request_hash != fingerprint:
        raise HTTPException(
            status_code=422,
            detail="This Idempotency-Key was already used with a different request body; use a new key.",
        )
    if stored.status is None or stored.body is None:
        raise _in_flight()
    return Response(
        stored.body.encode(),
        status_code=stored.status,
        headers={**stored.headers, REPLAYED_HEADER: "true"},
        media_type=MediaType.JSON,
    )


def _in_flight() -> HTTPException:
    return HTTPException(
        status_code=409,
        detail="A request with this Idempotency-Key is still in progress; retry shortly.",
        headers={"Retry-After": "1"},
    )
