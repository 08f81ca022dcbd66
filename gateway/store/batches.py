"""Database jobs of many requests run together: one transaction per batch, on one thread
(``Batches``) or in the database process (``gateway.dialogue.ussd_process``, with ``run_batch``).

PostgreSQL only (SQLite work runs inline: its write lock serialises it anyway). A USSD hop
on PostgreSQL is one or two short jobs: read the session (unless the process remembers it),
save it. Running each on a thread of a pool costs more CPU than the statements themselves:
a thread hand-off per job, the interpreter lock passed back and forth, and a commit per
statement. Here one thread takes every job waiting when it is free (up to ``BATCH_SIZE``),
runs them one after the other in one transaction, commits once, and hands all the results
back to the event loop in one call. Nothing waits for a batch to fill: a lone job runs at
once, and jobs only group when they arrive while a batch is running (group commit).

A job is a function of the connection, or an item of a group: a group's items in a batch
go to its one function together (one round trip for all of them, such as the saves of
many USSD sessions), before the batch's other jobs. A group's item may come with a
function that follows it (``then``: the effects of a saved hop), run with the jobs.

A job must leave the transaction usable when it returns, and it may be run twice: if any
job of a batch raises, the batch is rolled back and each of its jobs runs again alone, in
its own transaction, so one bad job fails only itself. A lost connection fails the whole
batch (its jobs are not run again here: their callers retry on a fresh connection).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from gateway.store.db import Database

log = logging.getLogger("gateway.store.batches")

BATCH_SIZE = 64  # jobs in one transaction at most

T = TypeVar("T")
Job = Callable[[Connection], Any]
Group = Callable[[Connection, list[Any]], list[Any]]  # items in, a result per item out
Then = Callable[[Connection, Any], Any]  # an item's result in, the final result out
Outcome = tuple["asyncio.Future[Any]", BaseException | None, Any]
# (None, job, future, None) or (group, item, future, then or None)
Entry = tuple[Group | None, Any, "asyncio.Future[Any]", Then | None]


class Batches:
    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop, *,
                 size: int = BATCH_SIZE) -> None:
        self.db = db
        self.loop = loop
        self.size = size
        self._jobs: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="gateway-batches",
                                        daemon=True)
        self._thread.start()

    async def run(self, job: Callable[[Connection], T]) -> T:
        """Run ``job`` in the next batch; its result, or what it raised."""
        future: asyncio.Future[T] = self.loop.create_future()
        self._jobs.put((None, job, future, None))
        return await future

    async def run_in(self, group: Group, item: Any, then: Then | None = None) -> Any:
        """Hand ``item`` to ``group`` with the others of the next batch; its result, or,
        with ``then``, what ``then`` makes of it (in the same transaction)."""
        future: asyncio.Future[Any] = self.loop.create_future()
        self._jobs.put((group, item, future, then))
        return await future

    def close(self) -> None:
        """Finish the jobs already given, then stop the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.size:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            try:
                outcomes = run_batch(self.db, batch)
            except BaseException as exc:  # the thread must go on: its callers wait
                outcomes = [(future, exc, None) for _, _, future, _ in batch]
            try:
                self.loop.call_soon_threadsafe(_deliver, outcomes)
            except RuntimeError:  # the loop closed: nobody waits any more
                return


def run_batch(db: Database, batch: list[Entry]) -> list[Outcome]:
    """Each entry's outcome: the batch in one transaction, or, if a job raised, each job
    again alone; a lost connection fails them all. An entry's third member (its future
    here) is only carried into its outcome."""
    try:
        with db.transaction() as conn:
            results = _results(conn, batch)
    except Exception as exc:
        lost = isinstance(exc, (OperationalError, db.driver_errors.OperationalError))
        if len(batch) == 1 or lost:
            return [(future, exc, None) for _, _, future, _ in batch]
        log.warning("batches: a job of %d failed (%s); each runs again alone",
                    len(batch), exc.__class__.__name__)
        return [outcome for entry in batch for outcome in run_batch(db, [entry])]
    return [(future, None, result) for (_, _, future, _), result in zip(batch, results,
                                                                     strict=True)]


def _results(conn: Connection, batch: list[Entry]) -> list[Any]:
    """Every entry's result: each group's items first, together, then the jobs and what
    follows a group's item, in the order they came."""
    results: list[Any] = [None] * len(batch)
    groups: dict[Group, list[int]] = {}
    for i, (group, _, _, _) in enumerate(batch):
        if group is not None:
            groups.setdefault(group, []).append(i)
    for group, where in groups.items():
        out = group(conn, [batch[i][1] for i in where])
        for i, result in zip(where, out, strict=True):
            results[i] = result
    for i, (group, job, _, then) in enumerate(batch):
        if group is None:
            results[i] = job(conn)
        elif then is not None:
            results[i] = then(conn, results[i])
    return results


def _deliver(outcomes: list[Outcome]) -> None:
    for future, exc, result in outcomes:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
