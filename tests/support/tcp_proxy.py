"""A TCP proxy between the app and PostgreSQL that a test switches between healthy and broken.

The fault tests point ``DATABASE_URL`` at this proxy and cut the database off for real:

* ``refuse()``: nothing listens on the port any more (connects fail with ``ECONNREFUSED``) and every open
  connection is severed, as when the server goes away or Neon scales to zero.
* ``blackhole()``: the port still accepts, but nothing flows in either direction, on new and on open
  connections, as when a network path or a proxy in between hangs. Bytes are held, not dropped: after
  ``up()`` they flow on, as they would after a partition heals.
* ``sever()``: cut every open connection from the server side (Neon dropping idle connections), and
  keep accepting new ones.
* ``sever_silently()``: the server side of every open connection is gone, but the client is only told
  (with a reset) when it next sends something: a connection that looks fine until a statement is on it.
* ``up()``: accept and forward again.

Cold starts are driven by counts, not by timing: ``reject_next(n, ...)`` answers the next ``n``
connection attempts with a reset or with PostgreSQL's own "the database system is starting up" error,
then forwards again; ``delay_next(n, seconds)`` holds the next ``n`` connections before forwarding.

The port stays reserved while the proxy refuses: a socket bound to it without listening (which the
kernel answers with a reset, i.e. a refused connect) keeps anything else from taking it.

With ``record=True`` the proxy also reads what clients say (``bench/pg_wire.py``): ``proxy.wire`` lists every
statement and counts the round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

from bench.pg_wire import WireLog

Rejection = Literal["reset", "starting-up"]
_SSL_REQUEST_CODE = 80877103
_GSSENC_REQUEST_CODE = 80877104


@dataclass(eq=False)
class _Link:
    """One client connection and, once forwarding, its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    silent: bool = False  # the server side is gone; the client hears of it when it next sends

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream``; start with :meth:`start`, stop with :meth:`close`."""

    def __init__(self, upstream_host: str, upstream_port: int, *, record: bool = False) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.wire = WireLog() if record else None
        self._reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._reservation.bind(("127.0.0.1", 0))
        self.port: int = self._reservation.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._rejections: list[Rejection] = []
        self._delays: list[float] = []
        self.accepted = 0  # connections accepted (whatever happened to them next)
        self.rejected = 0  # connections answered by reject_next
        self.forwarded = 0  # connections that reached PostgreSQL

    @property
    def open_connections(self) -> int:
        """Client connections currently open through the proxy."""
        return len(self._links)

    async def start(self) -> TcpProxy:
        """Listen and forward."""
        await self._listen()
        return self

    async def close(self) -> None:
        """Stop listening, cut every connection and release the port."""
        await self._stop_listening()
        self.sever()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        self._reservation.close()

    async def up(self) -> None:
        """Accept and forward (again); held bytes flow on."""
        self._flowing.set()
        await self._listen()

    async def refuse(self) -> None:
        """Refuse new connections (nothing listens) and sever the open ones."""
        await self._stop_listening()
        self.sever()

    def blackhole(self) -> None:
        """Accept connections but let nothing through, on new and open connections alike."""
        self._flowing.clear()

    def sever(self) -> None:
        """Cut every open connection, as a server that drops its clients does; new ones are still served."""
        for link in list(self._links):
            link.abort()
        self._links.clear()

    def sever_silently(self) -> None:
        """Drop the server side of every open connection; each client gets a reset when it next sends."""
        for link in list(self._links):
            link.silent = True
            if link.upstream is not None:
                link.upstream.transport.abort()

    def reject_next(self, count: int, how: Rejection) -> None:
        """Answer the next ``count`` connections with a reset, or with PostgreSQL's 57P03 startup error."""
        self._rejections.extend([how] * count)

    def delay_next(self, count: int, seconds: float) -> None:
        """Hold the next ``count`` connections for ``seconds`` before forwarding them."""
        self._delays.extend([seconds] * count)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))  # allowed: the reservation is bound but not listening
        self._server = await asyncio.start_server(self._accept, sock=listener)

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # the reservation keeps the port; connects to it are now refused

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        link = _Link(client=writer)
        self._links.add(link)
        try:
            if self._rejections:
                self.rejected += 1
                await self._reject(self._rejections.pop(0), reader, writer)
                return
            if self._delays:
                await asyncio.sleep(self._delays.pop(0))
            await self._flowing.wait()
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            link.upstream = up_writer
            if link not in self._links:  # severed while connecting
                up_writer.transport.abort()
                return
            self.forwarded += 1
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer, link, from_client=True)),
                asyncio.create_task(self._pump(up_reader, writer, link, from_client=False)),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
            if link.silent:  # keep the client side open until it speaks (its pump then resets it)
                await asyncio.wait(link.tasks[:1])
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.abort()
            self._links.discard(link)
            self._handlers.discard(task)
            if self.wire is not None:
                self.wire.closed(id(link))

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, *, from_client: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()  # read just as the black hole opened: hold it
                if link.silent:
                    if from_client:
                        _reset(link.client)
                    return
                if from_client and self.wire is not None:
                    self.wire.feed(id(link), data)
                writer.write(data)
                await writer.drain()

    @staticmethod
    async def _reject(how: Rejection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if how == "reset":
            _reset(writer)
            return
        # Speak just enough of the protocol to refuse as a PostgreSQL that is still starting up does.
        while True:
            length = struct.unpack("!i", await reader.readexactly(4))[0]
            payload = await reader.readexactly(length - 4)
            code = struct.unpack("!i", payload[:4])[0]
            if code in {_SSL_REQUEST_CODE, _GSSENC_REQUEST_CODE}:
                writer.write(b"N")  # no TLS here; the client goes on in plain text
                continue
            break
        fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
        writer.write(b"E" + struct.pack("!i", len(fields) + 4) + fields)
        await writer.drain()
        writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (RST), as a peer that is gone does, not with an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
