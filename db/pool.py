"""The PostgreSQL connection pool of the request path: asyncpg connections, bounded in number and in time.

Why our own pool rather than SQLAlchemy's or asyncpg's: a request should cost the round trips of its own
statements and nothing else, and every way the database can fail should end in an answer within a known
time. Concretely:

* **No round trip that the request does not need.** A connection handed out is not pinged when it was
  used within :attr:`PoolOptions.alive_window` (HikariCP's ``aliveBypassWindowMs``): it answered a moment
  ago. Older idle connections get one ``SELECT 1`` first, bounded by a third of the connect budget. Giving a
  connection back costs no round trip either (no ``ROLLBACK`` or ``RESET ALL``: the request path runs
  single statements in autocommit, and a connection given back inside a transaction is terminated).
* **Fair and bounded waiting.** Requests that find every connection busy wait in arrival order, each for at
  most :attr:`PoolOptions.wait_timeout`, then get :class:`PoolExhaustedError` (a 503 that says the server
  is busy, not that the database is away). Connections beyond ``min_size`` are opened on demand and closed
  only after :attr:`PoolOptions.idle_timeout` unused, so a steady load opens none and closes none.
* **Outages are detected, not waited out.** A statement still running after :attr:`PoolOptions.suspect_after`
  while no statement has completed meanwhile makes the watchdog check that the database still answers (a
  ``SELECT 1`` on a separate control connection). If it does not, the database is declared unreachable:
  every connection is dropped, every request waiting for one gets :class:`DatabaseUnavailableError`, and
  until a connect succeeds again, one connect attempt at a time speaks for all (the others wait for its
  outcome), so a burst during an outage costs one connect budget, not one each. A slow statement on a
  healthy database (a lock wait) is left alone: the control connection answers.
* **Opening a connection** is :class:`db.connections.RetryingConnect`: transient refusals while a database
  wakes are retried within ``DB_CONNECT_TIMEOUT``.

The pool never runs SQL for its callers: :class:`db.database.PostgresDatabase` borrows a connection with
:meth:`ConnectionPool.acquire`, runs its statement and gives it back with :meth:`ConnectionPool.release`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from config.settings import DatabaseLimits

logger = logging.getLogger("db.pool")
_MIN_CONNECT_SECONDS = 0.05  # a connect attempt with less time than this cannot succeed anyway
_CONTROL_KEEPALIVE_SECONDS = 60.0

Connect = Callable[..., Awaitable[Any]]  # ``connect(timeout=seconds)`` returns an asyncpg.Connection


class PoolExhaustedError(Exception):
    """Every connection stayed busy for the whole wait: the server is overloaded; the database may be fine."""

    def __init__(self, waited: float, stats: PoolStats) -> None:
        super().__init__(f"no free database connection within {waited:g} s ({stats})")
        self.waited = waited
        self.stats = stats


class DatabaseUnavailableError(Exception):
    """No working connection could be had, or the database stopped answering; ``__cause__`` says why."""


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Sizes and time limits (seconds). See ``DB_*`` in the settings for what each one is for."""

    min_size: int = 10  # kept open once opened (until recycled)
    max_size: int = 20  # never more open at once
    wait_timeout: float = 5.0  # for a free connection when all are busy
    connect_timeout: float = 1.5  # to open one, retries included; a third of it bounds a ping
    recycle: float = 300.0  # replace connections older than this (0: never)
    idle_timeout: float = 60.0  # close connections beyond min_size unused this long
    alive_window: float = 1.0  # a connection used this recently is handed out without a ping
    suspect_after: float = 0.5  # a statement running this long with nothing else completing: check the database

    @property
    def ping_timeout(self) -> float:
        """How long a ``SELECT 1`` may take before its connection counts as dead."""
        return self.connect_timeout / 3

    @classmethod
    def from_limits(cls, limits: DatabaseLimits, *, connect_timeout: float | None = None) -> PoolOptions:
        """The pool the ``DB_*`` settings ask for (``connect_timeout``: the URL's own, when it has one)."""
        return cls(
            min_size=limits.pool_size,
            max_size=limits.pool_size + limits.max_overflow,
            wait_timeout=limits.pool_timeout,
            connect_timeout=limits.connect_timeout if connect_timeout is None else connect_timeout,
            recycle=limits.pool_recycle,
        )


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot, for logs and metrics."""

    size: int  # open or being opened
    in_use: int
    idle: int
    waiting: int
    max_size: int

    def __str__(self) -> str:
        return f"{self.in_use} of {self.max_size} in use, {self.waiting} waiting"


class PooledConnection:
    """An asyncpg connection and what the pool knows about it."""

    __slots__ = ("busy_since", "last_used", "opened_at", "raw")

    def __init__(self, raw: Any, now: float) -> None:
        self.raw = raw
        self.opened_at = now
        self.last_used = now
        self.busy_since: float | None = None  # a statement is running on it since then


# A waiter is woken with a connection to use, or with None: a slot is free, open a new connection.
_Waiter = asyncio.Future[PooledConnection | None]


class ConnectionPool:
    """A bounded pool of asyncpg connections (see the module docstring). Create it inside the event loop."""

    def __init__(self, connect: Connect, options: PoolOptions) -> None:
        self._connect = connect
        self.options = options
        self._loop = asyncio.get_running_loop()
        self._idle: collections.deque[PooledConnection] = collections.deque()  # most recently used at the right
        self._in_use: set[PooledConnection] = set()
        self._opening = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._closed = False
        self._down = False  # declared unreachable; cleared by the next successful connect
        self._down_attempt: asyncio.Future[PooledConnection] | None = None
        self._last_ok = self._loop.time()  # a statement or check completed then
        self._control: Any = None  # the watchdog's and readiness check's own connection
        self._control_used = 0.0
        self._check_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- borrowing -----------------------------------------------------------------------------------------

    async def acquire(self, *, verify: bool = False) -> PooledConnection:
        """A working connection; ``verify`` pings it whatever its idle time (a retry after a dead one).

        Waiting for a free connection takes at most :attr:`PoolOptions.wait_timeout` (then
        :class:`PoolExhaustedError`); making sure it works (a ping, replacing a dead one, connecting and
        its retries) at most :attr:`PoolOptions.connect_timeout` in all (then :class:`DatabaseUnavailableError`,
        also raised at once while the database is declared unreachable and a connect attempt fails).
        """
        if self._closed:
            raise DatabaseUnavailableError("the connection pool is closed")
        deadline: float | None = None
        while True:
            connection = await self._take()
            if deadline is None:  # the budget starts once a connection (or a slot) is ours
                deadline = self._loop.time() + self.options.connect_timeout
            if connection is None:
                return await self._open(deadline)
            if await self._usable(connection, verify, deadline):
                return connection
            # It was dead or too old: it is gone, and its slot is free; look again (idle ones, or open one).

    def release(self, connection: PooledConnection) -> None:
        """Give a connection back. Never waits and never raises: a broken connection is dropped."""
        if connection not in self._in_use:  # given back already (or dropped by the pool)
            return
        self._in_use.remove(connection)
        raw = connection.raw
        if connection.busy_since is not None or raw.is_closed() or raw.is_in_transaction() or self._closed:
            # Cut off mid-statement (cancelled), gone, or left in a transaction: never lend it again.
            connection.busy_since = None
            raw.terminate()
            self._slot_freed()
            return
        connection.last_used = self._loop.time()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_use.add(connection)
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    def discard(self, connection: PooledConnection) -> None:
        """Drop a connection the caller found broken."""
        connection.busy_since = connection.busy_since or self._loop.time()  # release() terminates it
        self.release(connection)

    # -- statements ------------------------------------------------------------------------------------------

    def started(self, connection: PooledConnection) -> None:
        """A statement starts on ``connection`` (the watchdog watches it until :meth:`finished`)."""
        connection.busy_since = self._loop.time()
        if self._watchdog is None and not self._closed:
            self._watchdog = self._loop.create_task(self._watch(), name="db-pool-watchdog")

    def finished(self, connection: PooledConnection, *, ok: bool) -> None:
        """The statement on ``connection`` ended; ``ok``: the database answered (an error reply counts)."""
        connection.busy_since = None
        if ok:
            self._last_ok = self._loop.time()

    @property
    def declared_down(self) -> bool:
        """True while the database is considered unreachable (until a connect succeeds)."""
        return self._down

    def stats(self) -> PoolStats:
        """How many connections there are and what they do."""
        return PoolStats(
            size=len(self._idle) + len(self._in_use) + self._opening,
            in_use=len(self._in_use),
            idle=len(self._idle),
            waiting=sum(1 for w in self._waiters if not w.done()),
            max_size=self.options.max_size,
        )

    # -- the control connection: readiness and the watchdog ------------------------------------------------

    async def check(self, seconds: float, *, query_seconds: float | None = None) -> None:
        """``SELECT 1`` on the pool's own control connection, never behind request traffic.

        Within ``seconds`` in all, opening the control connection first when it is not open; the query itself
        within ``query_seconds`` (default: all that is left). A check already under way is shared, not queued
        behind. Raises :class:`DatabaseUnavailableError` when the database does not answer in time.
        """
        check = self._check_task
        if check is None or check.done():
            check = self._check_task = self._loop.create_task(self._check(seconds, query_seconds))
        try:
            async with asyncio.timeout(seconds):
                await asyncio.shield(check)
        except TimeoutError as exc:
            raise DatabaseUnavailableError("the database did not answer a check in time") from exc

    async def _check(self, seconds: float, query_seconds: float | None) -> None:
        deadline = self._loop.time() + seconds
        try:
            if self._control is None or self._control.is_closed():
                self._control = await self._connect(timeout=seconds)
            left = deadline - self._loop.time()
            async with asyncio.timeout(left if query_seconds is None else min(left, query_seconds)):
                await self._control.execute("SELECT 1")
            self._control_used = self._loop.time()
        except Exception as exc:
            control, self._control = self._control, None
            if control is not None:
                control.terminate()
            raise DatabaseUnavailableError("the database did not answer a check") from exc
        self._last_ok = self._loop.time()

    def _keep_control_open(self) -> None:
        """Keep the control connection open, in the background: reopened when it closed, and used at least
        every :data:`_CONTROL_KEEPALIVE_SECONDS` (servers drop idle connections; Neon after 5 minutes), so the
        next check is one ``SELECT 1``, not a connect that a hung network would stretch to the whole budget."""
        if self._closed or (self._check_task is not None and not self._check_task.done()):
            return
        control_open = self._control is not None and not self._control.is_closed()
        if control_open and self._loop.time() - self._control_used < _CONTROL_KEEPALIVE_SECONDS:
            return
        self._check_task = self._loop.create_task(self._check(self.options.connect_timeout, None))
        self._check_task.add_done_callback(_ignore_outcome)

    async def _watch(self) -> None:
        """Housekeeping, every ``suspect_after / 2`` s: check the database when a statement runs long while
        nothing else completes, and close connections beyond ``min_size`` that have been idle too long."""
        interval = self.options.suspect_after / 2
        while not self._closed:
            await asyncio.sleep(interval)
            self.close_idle_beyond_minimum()
            if not self._down:
                self._keep_control_open()
            now = self._loop.time()
            starts = [c.busy_since for c in self._in_use if c.busy_since is not None]
            if self._down or not starts or now - max(min(starts), self._last_ok) < self.options.suspect_after:
                continue
            control_open = self._control is not None and not self._control.is_closed()
            # A ping on an open connection, or else a connect first, which may rightly take longer.
            seconds = self.options.ping_timeout if self._idle or control_open else self.options.connect_timeout
            try:
                await _unless_the_loop_lags(self._probe(), seconds)
            except _LoopLagError:
                logger.debug("database check inconclusive: this process's event loop is lagging")
            except DatabaseUnavailableError as exc:
                self._declare_down(exc.__cause__ or exc)

    async def _probe(self) -> None:
        """Does the database still answer? A ``SELECT 1`` on an idle pooled connection (already open, so
        quick), else on the control connection. Raises :class:`DatabaseUnavailableError` when it does not;
        the caller bounds the time."""
        while self._idle and not self._waiters:
            connection = self._idle.pop()
            self._in_use.add(connection)
            if connection.raw.is_closed():  # dropped by the server: that says nothing of the database
                self.discard(connection)
                continue
            try:
                await connection.raw.execute("SELECT 1")
            except asyncio.CancelledError:
                self.discard(connection)  # cut off mid-ping (the caller's time limit): never lend it again
                raise
            except Exception:  # this connection broke; the database may be fine: ask another way
                self.discard(connection)
                continue
            self._last_ok = self._loop.time()
            self.release(connection)
            return
        await self.check(self.options.connect_timeout)

    def _declare_down(self, cause: BaseException) -> None:
        """The database cannot be reached: drop every connection and fail every waiter at once."""
        if self._down:
            return
        self._down = True
        sqlstate = str(getattr(cause, "sqlstate", "") or "")
        if sqlstate[:2] == "28" or sqlstate == "3D000":
            # Not an outage: the database refuses our credentials or has no such database. The request's error
            # handler names the cause once (app.errors); a second line here would only say it less clearly.
            logger.debug("database refuses our configuration (%s): dropping every connection", type(cause).__name__)
        else:
            logger.warning("database unreachable (%s): dropping every connection", type(cause).__name__)
        for connection in list(self._idle):
            connection.raw.terminate()
        self._idle.clear()
        for connection in list(self._in_use):
            connection.raw.terminate()  # a statement still running on it fails now
        error = DatabaseUnavailableError("the database stopped answering")
        error.__cause__ = cause
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    # -- internals -------------------------------------------------------------------------------------------

    async def _take(self) -> PooledConnection | None:
        """An idle connection, or ``None`` when the caller may open a new one (a slot is reserved for it)."""
        if not self._waiters:  # first come, first served: nobody may overtake a waiter
            if self._idle:
                connection = self._idle.pop()
                self._in_use.add(connection)
                return connection
            if len(self._in_use) + self._opening < self.options.max_size:
                self._opening += 1
                return None
        waiter: _Waiter = self._loop.create_future()
        self._waiters.append(waiter)
        # A plain timer, not asyncio.timeout(): this runs for every request that waits, under the heaviest load.
        expiry = self._loop.call_later(self.options.wait_timeout, _expire, waiter)
        try:
            handed = await waiter
        except _WaitExpiredError:
            raise PoolExhaustedError(self.options.wait_timeout, self.stats()) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                given = waiter.result()
                if given is None:
                    self._opening -= 1
                    self._slot_freed()
                else:
                    self.release(given)
            raise
        finally:
            expiry.cancel()
            with contextlib.suppress(ValueError):  # still queued when it expired or was cancelled
                self._waiters.remove(waiter)
        return handed  # a connection, or None: a slot was passed on (_slot_freed counted it as opening)

    def _slot_freed(self) -> None:
        """A connection is gone: pass its slot to the first waiter, who opens a new one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._opening += 1
                waiter.set_result(None)
                return

    async def _open(self, deadline: float) -> PooledConnection:
        """Open a connection in a reserved slot (``_opening`` counts it) by ``deadline``; while the database is
        declared down, one attempt at a time."""
        try:
            seconds = max(deadline - self._loop.time(), _MIN_CONNECT_SECONDS)
            if self._down:
                raw = await self._shared_attempt(seconds)
            else:
                raw = await self._connect(timeout=seconds)
        except BaseException as exc:
            self._opening -= 1
            self._slot_freed()
            if isinstance(exc, Exception):
                # With nothing open there is nothing to lose: declare it down, so the next openers share one
                # attempt. Open connections are left to the watchdog: a connect that fails under load (a
                # slot limit, a slow handshake) says little about the statements running on them.
                if not (self._in_use or self._idle):
                    self._declare_down(exc)
                raise DatabaseUnavailableError("cannot open a database connection") from exc
            raise
        self._opening -= 1
        connection = PooledConnection(raw, self._loop.time())
        self._in_use.add(connection)
        self._last_ok = connection.opened_at
        if self._down:
            self._down = False
            logger.info("database reachable again")
        self._keep_control_open()
        return connection

    async def _shared_attempt(self, seconds: float) -> Any:
        """While the database is declared down, every opener waits on one connect attempt."""
        attempt = self._down_attempt
        if attempt is None or attempt.done():
            attempt = self._down_attempt = self._loop.create_future()
            try:
                raw = await self._connect(timeout=seconds)
            except BaseException as exc:
                attempt.set_exception(exc if isinstance(exc, Exception) else DatabaseUnavailableError("cancelled"))
                attempt.exception()  # retrieved: the other waiters may be none
                raise
            attempt.set_result(raw)
            return raw
        async with asyncio.timeout(seconds):
            await asyncio.shield(attempt)  # its outcome, not its connection: that one belongs to its opener
        return await self._connect(timeout=max(seconds, _MIN_CONNECT_SECONDS))

    async def _usable(self, connection: PooledConnection, verify: bool, deadline: float) -> bool:
        """Check an idle connection just taken; a dead or old one is dropped (its slot freed)."""
        now = self._loop.time()
        raw = connection.raw
        if raw.is_closed():
            reason = None
        elif self.options.recycle and now - connection.opened_at > self.options.recycle:
            reason = "recycled"
        elif verify or now - connection.last_used > self.options.alive_window:
            try:
                async with asyncio.timeout(max(min(self.options.ping_timeout, deadline - now), 0)):
                    await raw.execute("SELECT 1")
            except Exception as exc:
                reason = f"failed its check ({type(exc).__name__})"
            else:
                self._last_ok = self._loop.time()
                return True
        else:
            return True
        self._in_use.discard(connection)
        if reason == "recycled":
            self._close_later(raw)
        else:
            raw.terminate()  # never wait on a dead peer to say goodbye
            if reason is not None:
                logger.debug("pooled connection %s", reason)
        self._slot_freed()
        return False

    def _close_later(self, raw: Any) -> None:
        task = self._loop.create_task(_close_politely(raw, self.options.ping_timeout))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def close_idle_beyond_minimum(self) -> int:
        """Close idle connections beyond ``min_size`` unused for ``idle_timeout``; returns how many."""
        now = self._loop.time()
        closed = 0
        keep: collections.deque[PooledConnection] = collections.deque()
        size = len(self._idle) + len(self._in_use)
        for connection in self._idle:  # oldest use first
            if size > self.options.min_size and now - connection.last_used > self.options.idle_timeout:
                self._close_later(connection.raw)
                size -= 1
                closed += 1
            else:
                keep.append(connection)
        self._idle = keep
        return closed

    async def close(self) -> None:
        """Close every connection (politely, within the ping timeout); later acquires fail."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        error = DatabaseUnavailableError("the connection pool is closed")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self._check_task is not None:
            self._check_task.cancel()
            with contextlib.suppress(BaseException):
                await self._check_task
        idle, self._idle = list(self._idle), collections.deque()
        others = [self._control] if self._control is not None else []
        await asyncio.gather(
            *(_close_politely(c.raw, self.options.ping_timeout) for c in idle),
            *(_close_politely(raw, self.options.ping_timeout) for raw in others),
            *self._background,
            return_exceptions=True,
        )
        for connection in list(self._in_use):  # still running: the shutdown grace period is over
            connection.raw.terminate()


class _WaitExpiredError(Exception):
    """A waiter's time for a free connection ran out."""


def _expire(waiter: _Waiter) -> None:
    if not waiter.done():
        waiter.set_exception(_WaitExpiredError())


def _ignore_outcome(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a background check that failed is not an error of its own


class _LoopLagError(Exception):
    """A check timed out while this process's event loop was too busy to tell a silent database from itself."""


_HEARTBEAT_SECONDS = 0.05


async def _unless_the_loop_lags(check: Awaitable[None], seconds: float) -> None:
    """Run ``check`` within ``seconds``; a timeout counts only if the event loop kept time meanwhile.

    When the process is starved of CPU, an answer that arrived may sit unread past any time limit. A heartbeat
    that should wake every 50 ms measures how late the loop runs; if it was late by more than a quarter of
    the limit, the timeout says nothing about the database and :class:`_LoopLagError` is raised instead.
    """
    loop = asyncio.get_running_loop()
    lag = 0.0

    async def heartbeat() -> None:
        nonlocal lag
        while True:
            expected = loop.time() + _HEARTBEAT_SECONDS
            await asyncio.sleep(_HEARTBEAT_SECONDS)
            lag = max(lag, loop.time() - expected)

    beating = loop.create_task(heartbeat())
    try:
        async with asyncio.timeout(seconds):
            await check
    except TimeoutError as exc:
        if lag > seconds / 4:
            raise _LoopLagError from None
        raise DatabaseUnavailableError("the database did not answer a check in time") from exc
    finally:
        beating.cancel()


async def _close_politely(raw: Any, seconds: float) -> None:
    try:
        await raw.close(timeout=seconds)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        raw.terminate()
