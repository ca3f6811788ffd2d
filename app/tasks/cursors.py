"""Opaque cursors: a JSON payload signed with the server's cursor key, so a client cannot forge or alter one.

The list's page cursors (``app/tasks/listing.py``) and the change feed's sync cursors (``app/tasks/sync.py``)
both travel as ``base64url(signature + payload)``; what the payload holds, and what it is bound to, is
theirs to say.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import msgspec

SIGNATURE_BYTES = 16
encode = msgspec.json.Encoder().encode  # compact JSON, UTF-8 as is


class InvalidCursorError(ValueError):
    """The cursor is malformed, forged, or was issued for another list or user."""


def seal(payload: Any, key: bytes) -> str:
    """``payload`` (JSON-encodable) as an opaque, signed cursor."""
    data = encode(payload)
    signature = hmac.new(key, data, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(signature + data).decode().rstrip("=")


def unseal(cursor: str, key: bytes) -> Any:
    """The payload of a cursor :func:`seal` made with ``key``; :class:`InvalidCursorError` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        raise InvalidCursorError("the cursor is malformed") from None
    signature, data = raw[:SIGNATURE_BYTES], raw[SIGNATURE_BYTES:]
    expected = hmac.new(key, data, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    if len(signature) != SIGNATURE_BYTES or not hmac.compare_digest(signature, expected):
        raise InvalidCursorError("the cursor is malformed")
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:  # signed by us, so never, but never a 500 either
        raise InvalidCursorError("the cursor is malformed") from None
