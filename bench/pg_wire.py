"""What a client says to PostgreSQL, read off the wire: every statement and every round trip.

A proxy feeds this log the bytes each client sends: ``bench/round_trips.py`` (the benchmark report) and
:class:`tests.tcp_proxy.TcpProxy` (``record=True``, the round-trip tests). It parses
PostgreSQL's frontend protocol (version 3): after the start-up packets, every message is a type byte and a
length. What counts:

* a **statement** is a simple ``Query`` ('Q', its SQL as sent: ``BEGIN``, ``SELECT 1``, …) or an extended
  ``Execute`` ('E') of a prepared statement, named by the SQL it was parsed from ('P');
* a **round trip** is a message the client then waits on: a ``Query``, a ``Sync`` ('S') or a ``Flush``
  ('H'). Preparing a statement asyncpg has not seen on that connection costs one more (Parse, Describe,
  Flush) than running one it has (Bind, Execute, Sync).

This is the ground truth both count: no driver hook can hide a ``BEGIN``, ``ROLLBACK`` or ping.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

_STARTUP_CODES = {196608}  # protocol 3.0
_SSL_OR_GSS_OR_CANCEL = {80877103, 80877104, 80877102}


@dataclass
class _Link:
    buffer: bytearray = field(default_factory=bytearray)
    started: bool = False  # past the untyped start-up packets
    prepared: dict[str, str] = field(default_factory=dict)  # statement name -> SQL
    portals: dict[str, str] = field(default_factory=dict)  # portal name -> statement name


@dataclass
class WireLog:
    """Statements and round trips of every connection through the proxy, in order."""

    statements: list[str] = field(default_factory=list)
    round_trips: int = 0
    _links: dict[int, _Link] = field(default_factory=dict)

    def take(self) -> tuple[list[str], int]:
        """The statements and round trips since the last call (and forget them)."""
        taken = (self.statements, self.round_trips)
        self.statements, self.round_trips = [], 0
        return taken

    def feed(self, link_id: int, data: bytes) -> None:
        """Bytes a client sent on connection ``link_id``."""
        link = self._links.setdefault(link_id, _Link())
        link.buffer += data
        while True:
            if not link.started:
                if len(link.buffer) < 8:
                    return
                length, code = struct.unpack("!ii", link.buffer[:8])
                if len(link.buffer) < length:
                    return
                del link.buffer[:length]
                if code in _STARTUP_CODES:
                    link.started = True
                elif code not in _SSL_OR_GSS_OR_CANCEL:  # pragma: no cover - not PostgreSQL
                    raise ValueError(f"unexpected start-up packet {code}")
                continue
            if len(link.buffer) < 5:
                return
            kind = chr(link.buffer[0])
            (length,) = struct.unpack("!i", link.buffer[1:5])
            if len(link.buffer) < 1 + length:
                return
            payload = bytes(link.buffer[5 : 1 + length])
            del link.buffer[: 1 + length]
            self._message(link, kind, payload)

    def closed(self, link_id: int) -> None:
        """The connection ``link_id`` ended."""
        self._links.pop(link_id, None)

    def _message(self, link: _Link, kind: str, payload: bytes) -> None:
        if kind == "Q":
            self.statements.append(_cstring(payload, 0)[0])
            self.round_trips += 1
        elif kind == "P":
            name, at = _cstring(payload, 0)
            sql, _ = _cstring(payload, at)
            link.prepared[name] = sql
        elif kind == "B":
            portal, at = _cstring(payload, 0)
            statement, _ = _cstring(payload, at)
            link.portals[portal] = statement
        elif kind == "E":
            portal, _ = _cstring(payload, 0)
            self.statements.append(link.prepared.get(link.portals.get(portal, ""), "<unknown>"))
        elif kind in {"S", "H"}:
            self.round_trips += 1


def _cstring(payload: bytes, start: int) -> tuple[str, int]:
    end = payload.index(b"\0", start)
    return payload[start:end].decode(), end + 1
