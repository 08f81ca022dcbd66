"""Live figures: poll results and on-air tallies pushed to their listeners (the API's
Server-Sent Events streams) when an answer changes them, on whichever replica it arrived.

The change travels through the database, never an in-process signal. Every change to the
tally goes through ``poll_tally_change``, and a trigger there (migration live00000001)
signals it: on SQLite it bumps the counter row ``poll_changes`` in the answer's own
transaction, which one watcher thread per process reads once a second (``POLL_SECONDS``);
on PostgreSQL it sends ``NOTIFY dannaya_poll_results`` at commit, which the watcher
LISTENs for on a connection of its own, waking at most every ``NOTIFY_GAP_SECONDS``.

One :class:`Hub` per process. The watcher runs only while someone listens: the first
listener starts it, the last one to leave stops it, so nobody listening costs nothing.
Listeners of the same figures (the same request in the same scope, or the same campaign)
share one :class:`Topic`: computed once per change, whatever the number of listeners, and
sent to them only when it differs from what they last got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

from sqlalchemy.engine import make_url

from gateway.store import queries
from gateway.store.db import Database

log = logging.getLogger("gateway.operators.live")

CHANNEL = "dannaya_poll_results"  # PostgreSQL NOTIFY channel (the migration's trigger)
COUNTER = "poll_changes"  # SQLite: the counter row the trigger bumps
POLL_SECONDS = 1.0  # SQLite: how often a process with listeners reads the counter
NOTIFY_GAP_SECONDS = 0.2  # PostgreSQL: at most this often a burst of votes wakes topics
RETRY_SECONDS = 2.0  # after the watcher lost the database

Figures = dict[str, Any]
VOLATILE = ("updated_at",)  # keys that change without the figures changing


class Topic:
    """One set of figures and its listeners: the latest figures and their version."""

    def __init__(self, hub: Hub, key: Hashable, compute: Callable[[], Figures]) -> None:
        self.hub, self.key, self.compute = hub, key, compute
        self.figures: Figures | None = None
        self.version = 0
        self.listeners = 0
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Compute now, then again after every change the watcher sees."""
        while True:
            generation = self.hub.generation
            try:
                figures = await asyncio.to_thread(self.compute)
            except Exception as exc:  # the next change tries again
                log.error("live: figures for a stream not computed (%s)",
                          exc.__class__.__name__)
            else:
                if self.figures is None or _steady(figures) != _steady(self.figures):
                    self.figures = figures
                    self.version += 1
                    self._changed.set()
                    self._changed = asyncio.Event()
            await self.hub.changed_after(generation)

    async def after(self, version: int) -> tuple[Figures, int]:
        """The figures once their version is past ``version``."""
        while self.version <= version or self.figures is None:
            await self._changed.wait()
        return self.figures, self.version


def _steady(figures: Figures) -> Figures:
    return {k: v for k, v in figures.items() if k not in VOLATILE}


class Hub:
    """The process's listeners, their topics, and the one watcher of the database."""

    def __init__(self, db: Database, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self.generation = 0  # changes seen by the watcher since it started
        self.topics: dict[Hashable, Topic] = {}
        self._changed = asyncio.Event()
        self._stop: threading.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def watching(self) -> bool:
        return self._stop is not None

    async def follow(self, key: Hashable, compute: Callable[[], Figures], *,
                     seconds: float | None = None) -> AsyncIterator[Figures]:
        """The figures ``compute`` gives, now and after each change that alters them,
        for ``seconds`` (None: until the listener leaves). ``key`` names them: listeners
        with the same key share one computation."""
        ends = None if seconds is None else asyncio.get_running_loop().time() + seconds
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic(self, key, compute)
            self._start()
            topic.task = asyncio.create_task(topic.run())
        topic.listeners += 1
        try:
            seen = 0
            while True:
                left = None if ends is None else ends - asyncio.get_running_loop().time()
                try:
                    figures, seen = await asyncio.wait_for(topic.after(seen), left)
                except TimeoutError:
                    return
                yield figures
        finally:
            topic.listeners -= 1
            if topic.listeners == 0 and self.topics.get(key) is topic:
                del self.topics[key]
                if topic.task is not None:
                    topic.task.cancel()
                if not self.topics:
                    self._stop_watching()

    async def changed_after(self, generation: int) -> None:
        while self.generation <= generation:
            await self._changed.wait()

    def _signal(self) -> None:
        """A change was seen (on the event loop's thread)."""
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the watcher ---------------------------------------------------------------

    def _start(self) -> None:
        if self._stop is not None:
            return
        self._loop = asyncio.get_running_loop()
        stop = self._stop = threading.Event()
        watch = self._watch_sqlite if self.db.sqlite else self._watch_postgres
        threading.Thread(target=watch, args=(stop,), name="live-results-watcher",
                         daemon=True).start()

    def _stop_watching(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _changed_from_thread(self, stop: threading.Event) -> None:
        loop = self._loop
        if loop is not None and not stop.is_set() and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._signal)

    def _counter(self) -> int:
        with self.db.reading() as conn:
            return queries.get_counter(conn, name=COUNTER) or 0

    def _watch_sqlite(self, stop: threading.Event) -> None:
        last: int | None = None
        while not stop.is_set():
            try:
                value = self._counter()
            except Exception as exc:
                log.warning("live: change counter unreadable (%s)", exc.__class__.__name__)
                stop.wait(RETRY_SECONDS)
                continue
            if value != last:  # the first reading too: a change just before it
                self._changed_from_thread(stop)
            last = value
            stop.wait(self.poll_seconds)

    def _watch_postgres(self, stop: threading.Event) -> None:
        import psycopg

        url = make_url(self.db.url).set(drivername="postgresql")
        while not stop.is_set():
            try:
                with psycopg.connect(url.render_as_string(hide_password=False),
                                     autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._changed_from_thread(stop)  # anything missed while connecting
                    while not stop.is_set():
                        if not any(True for _ in conn.notifies(timeout=1.0, stop_after=1)):
                            continue
                        stop.wait(NOTIFY_GAP_SECONDS)  # a burst of votes: one wake-up
                        for _ in conn.notifies(timeout=0.01):
                            pass
                        self._changed_from_thread(stop)
            except Exception as exc:
                log.warning("live: LISTEN connection lost (%s)", exc.__class__.__name__)
                stop.wait(RETRY_SECONDS)
