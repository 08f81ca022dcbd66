"""The outbox worker in a process of its own: ``gateway serve`` on PostgreSQL.

In the service's process, the worker's sends (an HTTP request each, at up to the send
rate) and a broadcast's chunks shared one event loop and one interpreter lock with the
USSD hops, and a hop that came in meanwhile waited its turn. Here the worker runs in a
child process with its own loop, its own copy of the service (the same settings, key file
and content) and its own connections, at a lower scheduling priority than the process that
answers residents. PostgreSQL already makes two workers safe (leases), so the child is the
same worker ``gateway worker`` runs.

The service wakes it when it queues a message (an SMS reply, a broadcast made) by writing
a byte down a pipe; without that the worker would only see the message at its next idle
look. The service stops it by closing the pipe: the child finishes the sends it has in
flight, records them and exits. A Ctrl-C or a SIGTERM sent to the whole process group is
ignored by the child, so the parent decides when it stops. If the child dies, the service
starts another; a message it had claimed comes back when its lease runs out.

SQLite keeps the worker in the service's process: one file has one writer at a time, and
in one process a hop waiting for the write lock goes before the worker's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.outbox.worker_process")

NICENESS = 5  # below the service's hops, which residents wait for on the line
RESTART_SECONDS = 1.0  # the child died: start another after this long, doubled up to
RESTART_MAX_SECONDS = 30.0  # this while each lived less than this
WATCH_SECONDS = 0.5  # how often the service looks whether the child is alive
STOP_SECONDS = 30.0  # the child's last sends and their records, then it is killed


class WorkerProcess:
    """The child process and the write end of its wake pipe. Any thread may ``wake``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: BaseProcess | None = None
        self._wakes: int | None = None  # the pipe's write end, non-blocking

    def start(self, forked_from: Runtime | None = None) -> None:
        """Start the child: a copy of this process made now (``forked_from``: its runtime;
        only before the service starts, while this process has one thread, no event loop
        and no database connection), else a fresh interpreter that builds its own."""
        if forked_from is not None:
            # Most of the service's memory (modules, content, caches) is then shared with
            # the child, not built again: start-up froze it out of the collector's sight.
            assert threading.active_count() == 1, "fork only a process with one thread"
            forked_from.db.engine.dispose()  # no connection crosses into the child
            forking = multiprocessing.get_context("fork")
            theirs, mine = forking.Pipe(duplex=False)
            process: BaseProcess = forking.Process(
                target=_forked, args=(forked_from, theirs, mine.fileno()),
                name="gateway-worker", daemon=True)
        else:
            spawning = multiprocessing.get_context("spawn")  # no copy of a loop or sockets
            theirs, mine = spawning.Pipe(duplex=False)
            process = spawning.Process(target=serve, args=(self.settings, theirs),
                                       name="gateway-worker", daemon=True)
        process.start()
        theirs.close()
        fd = os.dup(mine.fileno())
        mine.close()
        os.set_blocking(fd, False)
        self._process, self._wakes = process, fd

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def wake(self) -> None:
        """A message was queued: the worker looks now. A full pipe already says so."""
        fd = self._wakes
        if fd is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(fd, b"\1")

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Close the pipe, so the child finishes and exits; kill it after ``timeout``.
        Blocks: call it on a thread."""
        fd, self._wakes = self._wakes, None
        if fd is not None:
            os.close(fd)
        process = self._process
        if process is None:
            return
        process.join(timeout)
        if process.is_alive():
            log.error("the worker process did not stop within %.0f s: killed", timeout)
            process.kill()
            process.join(5)


async def run_worker_process(rt: Runtime, child: WorkerProcess | None = None) -> None:
    """The outbox worker for ``gateway serve``: in a child process on PostgreSQL (``child``,
    when started already; started again if it dies), in this process on SQLite. Runs until
    cancelled."""
    from gateway.runtime import run_worker

    if rt.db.sqlite:
        await run_worker(rt)
        return
    child = child or WorkerProcess(rt.settings)
    pause = RESTART_SECONDS
    try:
        while True:
            if not child.alive:
                child.start()
            rt.wake_elsewhere = child.wake
            log.info("worker process %s started", child.pid)
            began = time.monotonic()
            while child.alive:
                await asyncio.sleep(WATCH_SECONDS)
            rt.wake_elsewhere = None
            child.stop(0)  # reaped: closes the old pipe
            # One that dies at once (the database away at its start) is tried less often.
            pause = RESTART_SECONDS if time.monotonic() - began > RESTART_MAX_SECONDS \
                else min(pause * 2, RESTART_MAX_SECONDS)
            log.error("the worker process ended (exit code %s); starting another in %.0f s",
                      child.exit_code, pause)
            await asyncio.sleep(pause)
    finally:
        rt.wake_elsewhere = None
        await asyncio.to_thread(child.stop)


def _become_child() -> None:
    """The parent stops it (by closing the pipe), not a Ctrl-C or a SIGTERM sent to the
    whole process group; and the hops' processes go first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)


def serve(settings: Settings, wakes: Connection) -> None:
    """The child's main: the worker over a runtime of its own, until the pipe closes."""
    from gateway.logs import configure_logging
    from gateway.runtime import build_runtime

    _become_child()
    configure_logging()
    started = time.monotonic()
    rt = build_runtime(settings)  # the parent checked keys, content and schema already
    log.debug("worker process: runtime built in %.2f s", time.monotonic() - started)
    gc.collect()  # what start-up made lives as long as the process (as `gateway serve`)
    gc.freeze()
    asyncio.run(_work(rt, wakes))


def _forked(rt: Runtime, wakes: Connection, parents_end: int) -> None:
    """The forked child's main: the worker over the service's own runtime, copied."""
    os.close(parents_end)  # or the pipe would never close while the child lives
    _become_child()
    rt.db.engine.dispose(close=False)  # (empty: the parent disposed of it before the fork)
    asyncio.run(_work(rt, wakes))


async def _work(rt: Runtime, wakes: Connection) -> None:
    from gateway.runtime import make_worker

    loop = asyncio.get_running_loop()
    rt.loop, rt.wake = loop, asyncio.Event()
    stop = asyncio.Event()
    fd = wakes.fileno()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            got = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            got = b""
        if got:
            rt.wake.set()
        else:  # the service closed it (or is gone): finish and exit
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, readable)
    try:
        await make_worker(rt).run(stop)
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(fd)
        wakes.close()
        await rt.sender.close()
        rt.db.dispose()
