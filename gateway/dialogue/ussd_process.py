"""A USSD hop's PostgreSQL work done by a process of its own (``gateway serve``).

The event loop answers hops; their database work (read the session or do a first hop,
save, carry out effects) runs in batches (``gateway.store.batches.run_batch``: one transaction
per batch). On a thread of the same process, that work had to take turns at Python's
interpreter lock with the busy event loop after every round trip to the server, and
waiting for those turns, not the statements, was most of a batch's time. Here the
batches run in a child process with its own interpreter, its own copy of the service
(the same settings, key file and content) and its own connections. The loop sends each
round of hops' jobs down a pipe as plain data (the turn, the row to save, the planned
effects) and gets their results back the same way; it never waits on the pipe.

If the child dies, the hops waiting on it get an ``OperationalError`` (they retry, then
answer with the apology) and the next hop starts a new child. Nothing is lost that was
committed; a batch the child had not committed is not, and its hops were not answered
as saved.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import signal
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any, cast

import psycopg

from gateway.channels.base import UssdTurn
from gateway.dialogue.ussd import Begun, Save, UssdService
from gateway.settings import Settings
from gateway.store import queries

log = logging.getLogger("gateway.dialogue.ussd_process")

MESSAGES_PER_BATCH = 32  # rounds of jobs the child puts in one transaction at most

# A job as it crosses the pipe: ("read", kwargs), ("save", SessionSave, kwargs or None)
# or ("ping",)
Spec = tuple[Any, ...]
# A result as it comes back: (True, value) or (False, (kind, exception class name))
Reply = tuple[bool, Any]


class DbWorker:
    """``ussd.HopJobs`` over a pipe to a child process. Loop thread only."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self._held: list[tuple[Spec, asyncio.Future[Any]]] = []
        self._sent: deque[list[asyncio.Future[Any]]] = deque()
        self._pipe: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.starting = True
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no copy of the loop or its sockets
        mine, theirs = context.Pipe()
        process = context.Process(target=serve, args=(self.settings, theirs),
                                  name="gateway-db", daemon=True)
        process.start()
        theirs.close()
        self._pipe, self._process = mine, process
        self.starting = True  # until its first answer
        self.loop.add_reader(mine.fileno(), self._readable)

    async def read_or_begin(self, service: UssdService, *, turn: UssdTurn, pseudonym: str,
                            read: bool) -> queries.SessionRow | Begun | None:
        found: queries.SessionRow | Begun | None = await self._give(
            ("read", {"turn": turn, "pseudonym": pseudonym, "read": read}))
        return found

    async def save(self, service: UssdService, save: queries.SessionSave, *, turn: UssdTurn,
                   pseudonym: str, plan: Save | None) -> bool:
        then = None if plan is None else {"turn": turn, "pseudonym": pseudonym, "plan": plan}
        saved: bool = await self._give(("save", save, then))
        return saved

    async def ready(self) -> None:
        """Wait until the child has started and reached the database: the first hops
        after a start are then not held up by it (they wait for the database only a
        bounded time, ``GATEWAY_DB_WAIT_SECONDS``)."""
        await self._give(("ping",))

    def _give(self, spec: Spec) -> asyncio.Future[Any]:
        """Queue a job; the jobs given during one turn of the loop go down together."""
        if self._pipe is None:
            self._start()
        future: asyncio.Future[Any] = self.loop.create_future()
        if not self._held:
            self.loop.call_soon(self._flush)
        self._held.append((spec, future))
        return future

    def _flush(self) -> None:
        held, self._held = self._held, []
        if not held:
            return
        futures = [future for _, future in held]
        try:
            assert self._pipe is not None
            self._pipe.send([spec for spec, _ in held])
        except (OSError, AssertionError):
            self._lost()
            _fail(futures)
            return
        self._sent.append(futures)

    def _readable(self) -> None:
        try:
            assert self._pipe is not None
            while self._pipe.poll(0):
                replies: list[Reply] = self._pipe.recv()
                self.starting = False
                for future, (ok, value) in zip(self._sent.popleft(), replies, strict=True):
                    if future.cancelled():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(_error(*value))
        except (EOFError, OSError, AssertionError):
            log.error("dbworker: the database process stopped; its waiting hops fail")
            self._lost()

    def _lost(self) -> None:
        """The child is gone: fail what waits on it; the next hop starts another."""
        if self._pipe is not None:
            self.loop.remove_reader(self._pipe.fileno())
            self._pipe.close()
        self._pipe = None
        while self._sent:
            _fail(self._sent.popleft())

    async def aclose(self) -> None:
        """Let the child finish what it was given, then stop it (on the loop's thread)."""
        self._flush()
        if self._pipe is not None:
            self.loop.remove_reader(self._pipe.fileno())
            self._pipe.close()  # the child reads EOF and exits after its batch
            self._pipe = None
        process, self._process = self._process, None
        if process is not None:
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.kill()
        while self._sent:
            _fail(self._sent.popleft())


def _fail(futures: list[asyncio.Future[Any]]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(psycopg.OperationalError("database process stopped"))


def _error(kind: str, name: str) -> Exception:
    """The child's exception as the hop's retry logic knows it (never its message, which
    may quote data)."""
    if kind == "integrity":
        return psycopg.IntegrityError(name)
    if kind == "operational":
        return psycopg.OperationalError(name)
    return WorkerError(name)


class WorkerError(Exception):
    """A job raised in the database process (its class name is the message)."""


# --- the child -------------------------------------------------------------------------


def serve(settings: Settings, pipe: Connection) -> None:
    """The child's main: the service built from the same settings, then batches of the
    jobs that come down the pipe until it closes."""
    from gateway.content import catalogs
    from gateway.dialogue.library import Library
    from gateway.dialogue.services import ussd_service
    from gateway.logs import configure_logging
    from gateway.privacy import keys as keys_mod
    from gateway.store.batches import Entry, run_batch
    from gateway.store.db import Database

    # The parent stops it by closing the pipe, once its own hops are done: a Ctrl-C or a
    # SIGTERM sent to the whole process group must not cut a batch short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging()
    # The parent built the same service from the same settings: keys and content are
    # there and checked, and the database is migrated.
    keyring = keys_mod.load(settings.key_file, create=False)
    content, _problems = catalogs.load(catalogs.locate(settings.content_dir))
    db = Database(settings.database_url)
    library = Library(db, content, poll_seconds=settings.flows_poll_seconds)
    service = ussd_service(settings, db=db, keys=keyring, content=content, library=library)
    # A thread keeps the pipe drained while a batch runs, so the parent's loop never
    # waits to send.
    inbox: queue.SimpleQueue[list[Spec] | None] = queue.SimpleQueue()

    def drain() -> None:
        try:
            while True:
                inbox.put(pipe.recv())
        except (EOFError, OSError):
            inbox.put(None)

    threading.Thread(target=drain, name="gateway-db-pipe", daemon=True).start()

    def entry(spec: Spec, index: int) -> Entry:
        key = cast("asyncio.Future[Any]", index)  # carried through to the outcome only
        if spec[0] == "ping":
            return (None, lambda conn: True, key, None)
        if spec[0] == "read":
            return (None, lambda conn: service._read_or_begin(conn, **spec[1]), key, None)
        then = spec[2]
        follow = None if then is None else \
            (lambda conn, saved: service._apply_if_saved(conn, saved, **then))
        return (queries.save_sessions, spec[1], key, follow)

    try:
        while True:
            first = inbox.get()
            if first is None:
                return
            rounds: list[list[Spec]] = [first]
            stopping = False
            while len(rounds) < MESSAGES_PER_BATCH:
                try:
                    more = inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                rounds.append(more)
            specs = [spec for one in rounds for spec in one]
            replies: list[Reply] = [(False, ("other", "NotRun"))] * len(specs)
            try:
                outcomes = run_batch(db, [entry(spec, i) for i, spec in enumerate(specs)])
                for index, exc, result in outcomes:
                    at = cast(int, index)
                    replies[at] = (True, result) if exc is None else (False, _kind(db, exc))
            except Exception as exc:
                replies = [(False, _kind(db, exc))] * len(specs)
            at = 0
            try:
                for one in rounds:
                    pipe.send(replies[at:at + len(one)])
                    at += len(one)
            except OSError:  # the parent is gone: nobody waits for these
                return
            if stopping:
                return
    finally:
        db.dispose()


def _kind(db: Any, exc: BaseException) -> tuple[str, str]:
    from sqlalchemy.exc import IntegrityError, OperationalError

    if isinstance(exc, (IntegrityError, db.driver_errors.IntegrityError)):
        return ("integrity", exc.__class__.__name__)
    if isinstance(exc, (OperationalError, db.driver_errors.OperationalError)):
        return ("operational", exc.__class__.__name__)
    return ("other", exc.__class__.__name__)
