"""Database engines: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or PostgreSQL (psycopg).

Every transaction that may write starts with ``BEGIN IMMEDIATE`` on SQLite, so a read
that later writes never fails with SQLITE_BUSY (reference/security-and-reliability.md
§3.3, rule 10). On PostgreSQL rows are locked explicitly where a race matters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

BUSY_TIMEOUT_MS = 10_000
WAL_CHECKPOINT_PAGES = 10_000
KEPT_CONNECTIONS = 8
KEPT_IDLE_SECONDS = 10.0  # a kept connection idle longer goes back through the pool's ping


def idle_clock() -> float:
    """The clock kept connections are aged by (a test moves it on)."""
    return time.monotonic()


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


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
    # USSD hops keep their own), so the pool allows that many beyond its usual ten.
    return create_engine(url, pool_size=10, max_overflow=2 * KEPT_CONNECTIONS + 4,
                         pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the begin hook below issues BEGIN IMMEDIATE
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        # Checkpoint the WAL every ~40 MB rather than every 4 MB: each checkpoint stalls
        # the writer for its fsyncs (a few ms), so fewer of them keep latency's tail short.
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    # The dialect's own begin hook sends BEGIN IMMEDIATE straight to the driver: SQLAlchemy
    # wraps its errors like any statement's (a lock timeout is an OperationalError), and no
    # engine event listener is left to dispatch around every statement of the hot path.
    def _begin_immediate(dbapi_conn: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
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

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction committed when the block ends, rolled back if it raises."""
        conn = self._take(self._kept) or self.engine.connect()
        try:
            with conn.begin():
                yield conn
        except BaseException as exc:
            self._drop(conn, exc)
            raise
        self._keep(conn, self._kept)

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
        self._close_kept()
        self.engine.dispose()
