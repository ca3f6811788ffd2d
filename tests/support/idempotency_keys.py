"""Idempotency keys written straight to the table, for the tests of their expiry and clean-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.models import IdempotencyKey


async def insert_key(
    engine: AsyncEngine, user: str, key: str, *, age: timedelta, status: int | None = 201, body_hash: str = "0" * 64
) -> None:
    """A stored key written straight to the table, as an earlier request (``age`` ago) would have left it."""
    async with AsyncSession(engine) as session:
        session.add(
            IdempotencyKey(
                user_id=user,
                key=key,
                request_hash=body_hash,
                created_at=datetime.now(UTC) - age,
                response_status=status,
                response_headers={"Location": "/elsewhere"} if status else None,
                response_body='{"old": true}' if status else None,
            )
        )
        await session.commit()
