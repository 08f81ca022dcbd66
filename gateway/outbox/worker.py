"""The outbox worker: runs in ``gateway serve`` (unless ``--no-worker``) or alone as
``gateway worker``. It claims due messages within the provider's rate, sends them, and
records each outcome. On SIGTERM it stops claiming and finishes what it holds: it only
ever holds messages it is sending.

Beside the sending loop it runs the composition's background ``jobs`` (the broadcasts'
expansion into outbox rows): one bounded step at a time, on a thread, paced so that a
job never holds the database for long stretches, and waking the sending loop when it
queued something.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.channels.base import OutboundSms, Sender, SendOutcome, SendResult
from gateway.outbox import outbox
from gateway.outbox.outbox import OutboxPolicy
from gateway.privacy.keys import KeyGone, KeyRing
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.models import utcnow

log = logging.getLogger("gateway.outbox.worker")

IDLE_SECONDS = 0.5
TICK_SECONDS = 0.02
TIDY_SECONDS = 5.0  # outbox housekeeping (expiry, dead leases), at most
PENDING_REPORTS_KEPT = timedelta(hours=48)
HOUSEKEEPING_EVERY = timedelta(minutes=10)  # and stopped contacts' queue, unmatched reports
PURGE_EVERY = timedelta(days=1)
PURGE_COUNTER = "retention_last_run"  # seconds since the epoch
JOBS_IDLE_SECONDS = 1.0  # how often the background jobs look for work when they had none
# After a step that left more to do, the jobs wait this many times as long as the step
# took (at least JOBS_PAUSE_SECONDS): the database, and the interpreter the USSD hops share,
# are busy with a job at most a third of the time.
JOBS_PAUSE_FACTOR = 1.0
JOBS_PAUSE_SECONDS = 0.005


@dataclass(frozen=True)
class Progress:
    """What one step of a background job did: messages it queued, and whether more work
    is waiting now (the next step then follows after a short pause, not an idle wait)."""

    queued: int = 0
    more: bool = False


class Worker:
    """Claims, sends and records outbox messages. ``wake`` gives the event set when a
    message is queued; ``daily`` is called about once a day from the housekeeping (the
    composition hands it the retention purge); ``jobs`` is called over and over beside
    the sending loop, on a thread, one bounded step each time (the composition hands it
    the broadcasts' expansion)."""

    def __init__(self, *, db: Database, keys: KeyRing, sender: Sender, policy: OutboxPolicy,
                 wake: Callable[[], asyncio.Event],
                 daily: Callable[[datetime], str] | None = None,
                 jobs: Callable[[datetime], Progress] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.keys = keys
        self.sender = sender
        self.policy = policy
        self.wake = wake
        self.daily = daily
        self.jobs = jobs
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.sent = 0
        self._last_housekeeping: datetime | None = None
        self._daily_task: asyncio.Future[None] | None = None
        self.daily_failures = 0
        self._last_tidy: datetime | None = None
        # Tidy often enough that a dead worker's lease is looked at soon after it runs out.
        self._tidy_every = timedelta(seconds=min(TIDY_SECONDS, self.policy.lease_seconds / 4))
        # When messages are due but the bucket is short of tokens, claim again once it holds
        # half a burst: soon enough that no token is lost to a full bucket, late enough that
        # a claim takes several messages (at 10/s the bucket holds one: claim each).
        self._want_tokens = max(1.0, self.policy.burst / 2)
        self._claim_at = 0.0  # time.monotonic() when the bucket holds them

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s started: provider %s, %.1f messages/s", self.owner,
                 self.policy.provider, self.policy.rate)
        wake = self.wake()
        jobs = asyncio.create_task(self._run_jobs(stop, wake)) if self.jobs else None
        try:
            await self._send_loop(stop, wake)
        finally:
            if jobs is not None:
                stop.set()
                await jobs  # finishes the step it is in: a thread cannot be cancelled
        if self._daily_task is not None and not self._daily_task.done():
            log.info("worker: letting the retention purge finish its batch")
            await asyncio.wait([self._daily_task])
        log.info("worker %s stopped after %d messages", self.owner, self.sent)

    async def _send_loop(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled, more = await self.step()
            except Exception as exc:  # the database may be away: wait and try again
                log.error("worker: %s; retrying shortly", exc.__class__.__name__)
                handled, more = 0, False
            delay = self._claim_at - time.monotonic()
            if handled and more and delay <= 0:
                continue
            # Nothing to send (wait for a wake-up), or waiting for the rate's tokens: wake
            # when they are due, not later (time spent with a full bucket is rate lost).
            wake.clear()
            timeout = IDLE_SECONDS
            if more:
                timeout = min(delay, IDLE_SECONDS) if delay > 0 else TICK_SECONDS
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()

    async def _run_jobs(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        assert self.jobs is not None
        while not stop.is_set():
            started = time.monotonic()
            try:
                progress = await self.run_jobs_once()
            except Exception as exc:  # the database may be away: wait and try again
                log.error("worker: background job: %s; retrying shortly",
                          exc.__class__.__name__)
                progress = Progress()
            if progress.queued:
                wake.set()
            took = time.monotonic() - started
            delay = (max(JOBS_PAUSE_SECONDS, took * JOBS_PAUSE_FACTOR) if progress.more
                     else JOBS_IDLE_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def run_jobs_once(self) -> Progress:
        """One step of the background jobs, on a thread (none: nothing done)."""
        if self.jobs is None:
            return Progress()
        return await asyncio.to_thread(self.jobs, self.clock())

    async def step(self) -> tuple[int, bool]:
        """Claim a batch, send it, record the outcomes: (how many, whether more are due)."""
        now, started = self.clock(), time.monotonic()
        if self._last_housekeeping is None or now - self._last_housekeeping > HOUSEKEEPING_EVERY:
            self._last_housekeeping = now  # a failure waits for the next round, not a loop
            if await asyncio.to_thread(self._housekeeping, now) and (
                    self._daily_task is None or self._daily_task.done()):
                # The daily job runs beside the sending, never in its way.
                self._daily_task = asyncio.ensure_future(asyncio.to_thread(self._daily, now))
        if self._last_tidy is None or now - self._last_tidy >= self._tidy_every:
            await asyncio.to_thread(self._tidy, now)
            self._last_tidy = now
        claimed, more = await asyncio.to_thread(self._claim, now, started)
        if not claimed:
            return 0, more
        results = await asyncio.gather(*(self._send(c) for c in claimed))
        await asyncio.to_thread(self._record, list(zip(claimed, results, strict=True)))
        self.sent += len(claimed)
        return len(claimed), more

    def _claim(self, now: datetime, started: float) -> tuple[list[outbox.Claimed], bool]:
        """Claim what the rate allows; whether more is due, and when to claim it (counted
        from ``started``, the monotonic time of ``now``: the bucket was read as of then)."""
        with self.db.transaction() as conn:
            claimed = outbox.claim(conn, policy=self.policy, owner=self.owner, now=now,
                                   tidy=False)
            more = outbox.any_due(conn, policy=self.policy, now=now)
            wait = outbox.seconds_to_tokens(conn, policy=self.policy, now=now,
                                            want=self._want_tokens) if more else 0.0
        self._claim_at = started + wait
        return claimed, more

    def _tidy(self, now: datetime) -> None:
        with self.db.transaction() as conn:
            outbox.housekeeping(conn, policy=self.policy, now=now, stopped=False)
        with self.db.transaction() as conn:
            if outbox.analyze_if_stale(conn):
                log.info("worker: outbox statistics refreshed")

    async def _send(self, claimed: outbox.Claimed) -> SendResult:
        try:
            to = outbox.open_recipient(self.keys, claimed)
        except KeyGone:
            # A shred sealed the row again under a new master key after this worker read
            # it: nothing left, so it is simply tried again (and read again) shortly.
            return SendResult(SendOutcome.retry, code="key-gone", retry_after=1.0)
        try:
            message = OutboundSms(claimed.id, to, claimed.text, claimed.encoding)
            return await self.sender.send(message)
        except Exception as exc:  # a provider adapter bug must not lose the row
            log.error("worker: %s sending outbox #%d", exc.__class__.__name__, claimed.id)
            return SendResult(SendOutcome.ambiguous, code=exc.__class__.__name__)

    def _record(self, results: list[tuple[outbox.Claimed, SendResult]]) -> None:
        with self.db.transaction() as conn:
            outbox.record(conn, policy=self.policy, owner=self.owner, results=results,
                          now=self.clock())

    def _housekeeping(self, now: datetime) -> bool:
        """Expire stale delivery reports; whether the daily job is due."""
        with self.db.transaction() as conn:
            outbox.cancel_stopped(conn, policy=self.policy, now=now)
        with self.db.transaction() as conn:
            expired = outbox.expire_pending(conn, older_than=now - PENDING_REPORTS_KEPT, now=now)
            last = queries.get_counter(conn, name=PURGE_COUNTER)
        if expired:
            log.warning("worker: %d delivery report(s) never matched a message", expired)
        return self.daily is not None and (
            last is None or now.timestamp() - last >= PURGE_EVERY.total_seconds())

    def _daily(self, now: datetime) -> None:
        """Run the daily job (on its own thread). A failure is logged, by its class only
        (a message may quote data), and tried again at a later housekeeping round; it
        never stops the sending."""
        assert self.daily is not None
        try:
            done = self.daily(now)
            with self.db.transaction() as conn:
                queries.set_counter(conn, name=PURGE_COUNTER, value=int(now.timestamp()), now=now)
        except Exception as exc:
            self.daily_failures += 1
            log.error("worker: retention purge failed (%s); sending goes on, the purge is "
                      "tried again in %d minutes", exc.__class__.__name__,
                      HOUSEKEEPING_EVERY.total_seconds() // 60)
            return
        log.info("worker: retention purge done (%s)", done)

