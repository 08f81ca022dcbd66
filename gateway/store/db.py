"""Database engines: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or PostgreSQL (psycopg).

Every transaction that may write starts with ``BEGIN IMMEDIATE`` on SQLite, so a read
that later writes never fails with SQLITE_BUSY (reference/security-and-reliability.md
§3.3, rule 10); one that only reads (``Database.reading``) starts with a plain ``BEGIN``
and takes no write lock. On PostgreSQL rows are locked explicitly where a race matters.

When the database stalls (an SQLite file locked by another process, a full disk,
PostgreSQL unreachable) requests must answer at once rather than queue: ``waiting`` bounds
how long the transactions of the current context wait for SQLite's write lock (none at all:
``DatabaseBusy``, so the caller can wait off the event loop instead), and after a failure
that says the database is unavailable, ``available`` is False for a moment, so that
requests answer "try again later" without touching it until one of them (or a readiness
probe) finds it writable again.

A full disk: the readiness probe also fails while the SQLite file's disk has less than
``MIN_FREE_BYTES`` free (``DiskFull``), even when its write went through (SQLite reuses the
space of its write-ahead log, so a small write may still fit when nothing else will). An
SQLite database that cannot be opened for writing at start (its disk full) gets its set-up
(``pending_setup``: the migrations) run by the first transaction that finds it writable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from gateway.store.models import utcnow

BUSY_TIMEOUT_MS = 10_000  # background work (the worker, the purge, commands)
PG_CONNECT_TIMEOUT = 5  # seconds: never hang on an unreachable server
RETRY_AFTER_SECONDS = 1.0  # after a failure, the database is left alone this long
MIN_FREE_BYTES = 1 << 20  # readiness: an SQLite file's disk needs at least this much free
T = TypeVar("T")
_WAIT: ContextVar[float | None] = ContextVar("gateway_db_wait", default=None)
_DEFERRED: ContextVar[bool] = ContextVar("gateway_db_deferred", default=False)
_BACKGROUND: ContextVar[bool] = ContextVar("gateway_db_background", default=False)
# SQLite: a background writer (``background()``) waits this long at most, in steps of
# YIELD_STEP_SECONDS, while a request waits for this process's writing turn.
YIELD_MAX_SECONDS = 0.05
YIELD_STEP_SECONDS = 0.0005


class DatabaseBusy(Exception):
    """Another connection holds SQLite's write lock and this context chose not to wait
    (``waiting(0)``): nothing was done."""


class DatabaseUnavailable(Exception):
    """The database cannot take the work now (locked, full, unreachable, or it just failed
    and is being left alone): nothing was stored; try again later."""


class WritersTurn:
    """This process's SQLite writers' turn: a lock that any thread may hand back, and
    that the thread holding it may enter again. A transaction may end on another thread
    than the one it began on (FastAPI runs a dependency's start and end as two calls to
    its thread pool), which a ``threading.RLock`` refuses: the turn then stayed taken
    for good, and every later write of the process waited for it and failed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        # Requests waiting for the turn (``Database.turn_free``): background writers let
        # them go first. Callbacks to call once when the turn is next handed back.
        self.wanted = 0
        self._on_release: list[Callable[[], None]] = []
        self._callbacks = threading.Lock()

    def acquire(self, *, blocking: bool = True, timeout: float = -1) -> bool | None:
        """True: taken; False: not in time; None: this thread holds it already."""
        me = threading.get_ident()
        if self._owner == me:
            return None
        got = self._lock.acquire(blocking, timeout) if blocking else \
            self._lock.acquire(False)
        if got:
            self._owner = me
        return got

    def release(self) -> None:
        self._owner = None
        self._lock.release()
        if self._on_release:
            with self._callbacks:
                callbacks, self._on_release = self._on_release, []
            for callback in callbacks:
                callback()

    def when_free(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the releasing thread) when the turn is next handed back,
        or at once if nobody holds it."""
        with self._callbacks:
            if self._lock.locked():
                self._on_release.append(callback)
                return
        callback()

    def want(self, change: int) -> None:
        """A request starts (+1) or stops (-1) waiting for the turn."""
        with self._callbacks:
            self.wanted += change

    def let_requests_first(self) -> None:
        """A background writer's courtesy: while a request waits for the turn, wait (a
        little) before taking it."""
        if not self.wanted:
            return
        give_up = time.monotonic() + YIELD_MAX_SECONDS
        while self.wanted and time.monotonic() < give_up:
            time.sleep(YIELD_STEP_SECONDS)


class DiskFull(DatabaseUnavailable):
    """The SQLite file's disk has (almost) no space left."""


@contextmanager
def background() -> Iterator[None]:
    """Within this block (this thread or task), transactions are background work (the
    outbox worker, broadcasts being queued, the purge): on SQLite they let a request that
    waits for this process's writing turn go first."""
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


def in_background(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` as background work (see ``background``); for ``asyncio.to_thread``."""
    with background():
        return fn(*args)


@contextmanager
def waiting(seconds: float | None) -> Iterator[None]:
    """Within this block (this thread or task), a transaction waits at most ``seconds`` for
    SQLite's write lock (``None``: the default, ten seconds)."""
    token = _WAIT.set(seconds)
    try:
        yield
    finally:
        _WAIT.reset(token)


def _unavailable(exc: BaseException) -> bool:
    """Whether an error says the database itself cannot work now (rather than that one
    statement or transaction failed)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.OperationalError):
        return True  # locked, full, unreadable: the file
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg ships with the gateway
        return False
    if isinstance(orig, (psycopg.errors.TransactionRollback, psycopg.errors.QueryCanceled)):
        return False  # a deadlock or a cancelled statement: that transaction only
    return isinstance(orig, psycopg.OperationalError)
# SQLite's WAL is copied back into the database file by ``Database.checkpoint``, which a
# service runs in the background every CHECKPOINT_SECONDS; a checkpoint by SQLite itself,
# which runs in the transaction whose commit crossed this many pages (~200 MB) while that
# transaction still held this process's writing turn (every writer waited behind its
# copying and fsyncs: 100 ms and more), is only the safety net of a process that runs no
# background checkpoints (a command, a test).
WAL_CHECKPOINT_PAGES = 50_000
CHECKPOINT_SECONDS = 0.5
KEPT_CONNECTIONS = 8
KEPT_IDLE_SECONDS = 10.0  # a kept connection idle longer goes back through the pool's ping


def idle_clock() -> float:
    """The clock kept connections are aged by (a test moves it on)."""
    return time.monotonic()


def _busy(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# PostgreSQL plans a read over a large table (a broadcast's hundred thousand outbox rows,
# a million answers) with parallel workers: on the two cores a deployment in Mopti has,
# the query then takes every core for its duration, and the USSD hops arriving meanwhile
# wait (a progress page's counts, asked every 3 s, were a quarter of the slowest hops
# while a broadcast was queued). The gateway's reads are operators' and background work,
# lower in priority than the hops: one core each, a little slower, the rest left to the
# hops. The setting is the session's default; a statement may raise it with SET LOCAL.
PARALLEL_WORKERS = "-c max_parallel_workers_per_gather=0"


def _options(url: str) -> str:
    """libpq's ``options`` for the gateway's connections: the URL's own, if it has any
    (``?options=-csearch_path%3Ddannaya``), then PARALLEL_WORKERS."""
    given = make_url(url).query.get("options")
    given = given[-1] if isinstance(given, tuple) else given
    return f"{given} {PARALLEL_WORKERS}" if given else PARALLEL_WORKERS


def make_engine(url: str) -> Engine:
    if is_sqlite(url):
        # A small pool: opening a connection re-runs the PRAGMAs below.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=8, max_overflow=8,
        )
        _configure_sqlite(engine)
        return engine
    # Up to 2 x KEPT_CONNECTIONS stay checked out between uses (transactions and autocommit
    # USSD hops keep their own), so the pool allows that many beyond its usual ten. No
    # query plans parallel workers (PARALLEL_WORKERS): see there.
    return create_engine(url, pool_size=10, max_overflow=2 * KEPT_CONNECTIONS + 4,
                         pool_pre_ping=True,
                         connect_args={"connect_timeout": PG_CONNECT_TIMEOUT,
                                       "options": _options(url)})


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the begin hook below issues BEGIN IMMEDIATE
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")  # see above
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    # The dialect's own begin hook sends BEGIN IMMEDIATE straight to the driver: SQLAlchemy
    # wraps its errors like any statement's (a lock timeout is an OperationalError), and no
    # engine event listener is left to dispatch around every statement of the hot path.
    def _begin_immediate(dbapi_conn: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("BEGIN" if _DEFERRED.get() else "BEGIN IMMEDIATE")
        finally:
            cursor.close()

    engine.dialect.do_begin = _begin_immediate  # type: ignore[method-assign,assignment]


class Database:
    """An engine plus the one way to run a transaction.

    Up to ``KEPT_CONNECTIONS`` connections stay checked out between transactions: taking
    one from SQLAlchemy's pool and handing it back costs as much as a USSD hop's own
    statements on SQLite. A connection whose transaction raised is closed, not kept, and
    one left idle for ``KEPT_IDLE_SECONDS`` is handed back to the pool, whose pre-ping
    then finds out whether PostgreSQL restarted meanwhile.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.engine = make_engine(url)
        # The driver module (sqlite3, psycopg): its exceptions are what statements run
        # straight on the driver connection raise (store.Driver).
        self.driver_errors: Any = self.engine.dialect.dbapi
        # (connection, when it was last used); list.pop and append are atomic
        self._kept: list[tuple[Connection, float]] = []
        self._kept_autocommit: list[tuple[Connection, float]] = []  # PostgreSQL USSD hops
        self.failed_at: float | None = None  # time.monotonic() of the last failure
        # Set-up the database still needs (the migrations it could not take at start):
        # run by the first transaction, once, under ``_setup_lock``.
        self.pending_setup: Callable[[], None] | None = None
        self._setup_lock = threading.Lock()
        # SQLite: this process's writers take turns here before BEGIN IMMEDIATE. Waiting
        # on SQLite's own lock means its busy handler's sleeps (growing to 100 ms each), so
        # a USSD hop behind a background job's transaction (a broadcast being queued) could
        # sleep through several turns; this lock hands over the moment a transaction ends.
        # The time spent here counts against the wait the context allows. (Other processes
        # still meet at SQLite's lock.)
        self._writers = WritersTurn() if self.sqlite else None
        self.commits = 0  # transactions committed (roughly: threads may race on it)
        self._checkpointer: Any = None  # SQLite: the raw connection checkpoints run on
        self._checkpoint_lock = threading.Lock()

    @contextmanager
    def _turn(self) -> Iterator[float | None]:
        """Take this process's writing turn (SQLite); yields what is left of the wait this
        context allows (None: the default). Not had in time: ``DatabaseBusy`` without a
        wait, ``DatabaseUnavailable`` after one."""
        wait = _WAIT.get()
        if self._writers is None:
            yield wait
            return
        started = time.monotonic()
        if _BACKGROUND.get():
            self._writers.let_requests_first()
        if wait is None:
            mine = self._writers.acquire(timeout=BUSY_TIMEOUT_MS / 1000)
        elif wait <= 0:
            mine = self._writers.acquire(blocking=False)
        else:
            mine = self._writers.acquire(timeout=wait)
        if mine is None:  # this thread holds the turn already (a transaction within one)
            yield None if wait is None else wait
            return
        if not mine:
            if wait is not None and wait <= 0:
                raise DatabaseBusy()
            if wait is not None:
                raise DatabaseUnavailable()
        try:
            yield None if wait is None else max(0.0, wait - (time.monotonic() - started))
        finally:
            if mine:
                self._writers.release()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction committed when the block ends, rolled back if it raises."""
        if self.pending_setup is not None:
            self._set_up()
        with self._turn() as left:
            conn = self._take(self._kept) or self.engine.connect()
            wait = self._set_wait(conn, left) if self.sqlite else None
            try:
                with conn.begin():
                    yield conn
            except BaseException as exc:
                if wait == 0 and _busy(exc):
                    conn.close()  # nothing wrong with the database: someone holds the lock
                    raise DatabaseBusy() from None
                self._drop(conn, exc)
                raise
            self._keep(conn, self._kept)
            self.failed_at = None
            self.commits += 1

    def checkpoint(self) -> int | None:
        """SQLite: copy what the WAL holds into the database file, as far as the readers
        allow (a passive checkpoint: it takes no lock a reader or a writer waits for, and
        waits for none), on a connection of its own; how many of the WAL's frames are in
        the file now. Run it off the request path (a service does, every
        ``CHECKPOINT_SECONDS``). PostgreSQL: None."""
        if not self.sqlite:
            return None
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = self.engine.raw_connection()
            try:
                row = self._checkpointer.cursor().execute(
                    "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except Exception:
                self._checkpointer.close()
                self._checkpointer = None
                raise
        return int(row[2]) if row else 0

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A transaction that only reads. On SQLite a deferred one (``BEGIN``): it takes
        no write lock, so a long read (poll results over a million answers) never holds
        up a USSD hop, and in WAL mode the hops' writes do not wait for it either. Writing
        in it is a mistake (it would fail when a writer got in first). On PostgreSQL, an
        ordinary transaction."""
        if not self.sqlite:
            with self.transaction() as conn:
                yield conn
            return
        if self.pending_setup is not None:
            self._set_up()
        # No writing turn (Database._turn): a read waits for no writer, and none for it.
        conn = self._take(self._kept) or self.engine.connect()
        self._set_wait(conn, _WAIT.get())
        try:
            token = _DEFERRED.set(True)
            try:
                transaction = conn.begin()  # sends BEGIN now (_begin_immediate)
            finally:
                _DEFERRED.reset(token)
            with transaction:
                yield conn
        except BaseException as exc:
            self._drop(conn, exc)
            raise
        self._keep(conn, self._kept)
        self.failed_at = None

    def _set_up(self) -> None:
        with self._setup_lock:
            setup = self.pending_setup
            if setup is None:
                return
            self.pending_setup = None  # the set-up's own transactions must not run it again
            try:
                setup()
            except Exception:
                self.pending_setup = setup
                self.note_failure()
                raise

    def free_bytes(self) -> int | None:
        """Free space on the SQLite file's disk (None: PostgreSQL, or not known)."""
        if not self.sqlite:
            return None
        path = make_url(self.url).database
        if not path or path == ":memory:":
            return None
        try:
            stat = os.statvfs(os.path.dirname(os.path.abspath(path)))
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def _set_wait(self, conn: Connection, left: float | None) -> float | None:
        """Give an SQLite connection the busy timeout this context asks for (``left``: what
        remains of it after this process's writing turn); the wait asked for."""
        wait = _WAIT.get()
        ms = BUSY_TIMEOUT_MS if left is None else max(0, int(left * 1000))
        info = conn.connection.info
        if info.get("busy_ms") != ms:
            raw: Any = conn.connection.driver_connection
            raw.execute(f"PRAGMA busy_timeout={ms}")
            info["busy_ms"] = ms
        return wait

    async def turn_free(self, timeout: float) -> None:
        """Wait, without blocking the event loop, until this process's SQLite writing turn
        is handed back or ``timeout`` passes (another process may hold SQLite's own lock:
        then nothing tells, and the caller tries again after the timeout). Background
        writers let the caller go first meanwhile."""
        writers = self._writers
        if writers is None:
            return
        loop = asyncio.get_running_loop()
        freed = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed since
                loop.call_soon_threadsafe(freed.set)

        writers.want(+1)
        try:
            writers.when_free(wake)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(freed.wait(), timeout)
        finally:
            writers.want(-1)

    def available(self) -> bool:
        """False for a moment after the database failed: requests answer "try again later"
        without waiting on it; then one is let through to find out."""
        failed = self.failed_at
        return failed is None or time.monotonic() - failed >= RETRY_AFTER_SECONDS

    def note_failure(self) -> None:
        """The database failed (or did not answer in time): leave it alone a moment."""
        self.failed_at = time.monotonic()

    def probe(self) -> int:
        """A real write, committed (the readiness check): raises if the database cannot
        take one, or ``DiskFull`` if its disk is (almost) full. Returns the messages
        waiting to be sent."""
        from gateway.store import queries  # queries is above this module

        free = self.free_bytes()
        if free is not None and free < MIN_FREE_BYTES:
            raise DiskFull(f"{free} bytes free on the database's disk")
        with self.transaction() as conn:
            queries.set_counter(conn, name="readiness_probe", value=int(time.time()),
                                now=utcnow())
            return int(conn.execute(text(
                "SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending')")).scalar_one())

    @contextmanager
    def hop(self) -> Iterator[Connection]:
        """A connection for one USSD hop.

        SQLite: one ``BEGIN IMMEDIATE`` transaction; the write lock orders hops anyway.
        PostgreSQL: autocommit, so reading the session and saving it cost one round trip
        each instead of four (BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT). The save is
        conditional on the hop count read (``store.update_session``), and writes that must
        land together go in ``together``.
        """
        if self.sqlite:
            with self.transaction() as conn:
                yield conn
            return
        conn = self._take(self._kept_autocommit) or \
            self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            yield conn
            if conn.in_transaction():  # SQLAlchemy's own bookkeeping; nothing to send
                conn.commit()
        except BaseException as exc:
            self._drop(conn, exc)
            raise
        self._keep(conn, self._kept_autocommit)
        self.failed_at = None

    @contextmanager
    def together(self, conn: Connection, *, needed: bool = True) -> Iterator[None]:
        """Writes of a hop that commit or fail together: on SQLite the hop's transaction
        already does that, and so does a batch's (``Batches``); on PostgreSQL's autocommit
        connection, an explicit one."""
        if self.sqlite or not needed:
            yield
            return
        raw: Any = conn.connection.dbapi_connection
        if not raw.autocommit:  # already in a transaction: a batch's
            yield
            return
        with raw.transaction():
            yield

    def _drop(self, conn: Connection, exc: BaseException) -> None:
        """Close a connection whose work raised; if the database itself failed (a lost
        connection, a restart), the kept ones are likely dead too: close them all."""
        conn.close()
        if isinstance(exc, (OperationalError, self.driver_errors.OperationalError)):
            self._close_kept()
            if _unavailable(exc):
                self.note_failure()

    def _close_kept(self) -> None:
        for kept in (self._kept, self._kept_autocommit):
            while True:
                try:
                    conn, _ = kept.pop()
                except IndexError:  # empty, or another thread took the last one
                    break
                conn.close()

    @staticmethod
    def _take(kept: list[tuple[Connection, float]]) -> Connection | None:
        while True:
            try:
                conn, used = kept.pop()
            except IndexError:
                return None
            if idle_clock() - used <= KEPT_IDLE_SECONDS:
                return conn
            conn.close()

    @staticmethod
    def _keep(conn: Connection, kept: list[tuple[Connection, float]]) -> None:
        if conn.invalidated or len(kept) >= KEPT_CONNECTIONS:
            conn.close()
        else:
            kept.append((conn, idle_clock()))

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        self._close_kept()
        self.engine.dispose()
