"""The outbox worker: runs in ``gateway serve`` (unless ``--no-worker``) or alone as
``gateway worker``. It claims due messages within the provider's rate, sends them, and
records each outcome.

Sends are a bounded pool, not batches: up to ``policy.slots`` of them in flight (about
rate x timeout, see ``send_slots``), each with its own deadline, and the worker claims
again whenever a slot is free and the shared bucket holds a token, so what leaves still
follows the rate. A request that hangs until its timeout holds one slot while the others
keep the route busy. Outcomes are written as sends finish, a few at a time (a group of
RECORD_GROUP, or whatever waited RECORD_WAIT, or at once when nothing else is in flight);
a 429 is written at once, so every worker pauses and slows down together
(``outbox.throttle``). A send still waiting for its answer when half its lease is gone has
the lease renewed, so no other worker takes it for dead.

On SIGTERM it stops claiming, lets what is in flight finish (each send is bounded by its
deadline), records it, and returns: it only ever holds messages it is sending.

Beside the sending it runs the composition's background ``jobs`` (the broadcasts'
expansion into outbox rows, the referrals' delivery
to partners): one bounded step at a time, on a thread, paced so that a job never holds
the database for long stretches, and waking the sending loop when it queued something.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from gateway.channels.base import OutboundSms, Sender, SendOutcome, SendResult
from gateway.outbox import outbox
from gateway.outbox.outbox import OutboxPolicy
from gateway.privacy.keys import KeyGone, KeyRing
from gateway.store import queries
from gateway.store.db import Database, in_background
from gateway.store.models import utcnow

log = logging.getLogger("gateway.outbox.worker")
T = TypeVar("T")

IDLE_SECONDS = 0.5  # nothing due: look again after this (retries fall due unannounced)
TIDY_SECONDS = 5.0  # outbox housekeeping (expiry, dead leases), at most
RECORD_GROUP = 25  # finished sends written in one transaction ...
RECORD_WAIT = 0.1  # ... or fewer, once the oldest has waited this many seconds
DEADLINE_GRACE = 2.0  # the worker's deadline on a send, past the sender's own timeout
DB_RETRY_SECONDS = 1.0  # the database failed: wait this long before trying again
FINAL_WRITE_ATTEMPTS = 5  # at shutdown, tries to write what was sent
PENDING_REPORTS_KEPT = timedelta(hours=48)
BUDGET_USE_KEPT = timedelta(days=1)
HOUSEKEEPING_EVERY = timedelta(minutes=10)  # and stopped contacts' queue, unmatched reports
PURGE_EVERY = timedelta(days=1)
PURGE_COUNTER = "retention_last_run"  # seconds since the epoch
JOBS_IDLE_SECONDS = 1.0  # how often the background jobs look for work when they had none
# After a step that left more to do, the jobs wait this many times as long as the step
# took (at least JOBS_PAUSE_SECONDS): the database, and the interpreter the USSD hops share,
# are busy with a job at most a third of the time.
JOBS_PAUSE_FACTOR = 2.0
JOBS_PAUSE_SECONDS = 0.005


@dataclass(frozen=True)
class Progress:
    """What one step of a background job did: messages it queued, and whether more work
    is waiting now (the next step then follows after a short pause, not an idle wait)."""

    queued: int = 0
    more: bool = False

Finished = tuple[outbox.Claimed, SendResult, datetime]  # the message, its outcome, sent at


@dataclass
class _InFlight:
    claimed: outbox.Claimed
    task: asyncio.Task[None]
    renew_at: float  # time.monotonic() when its lease wants renewing


class Worker:
    """Claims, sends and records outbox messages. ``wake`` gives the event set when a
    message is queued; ``daily`` is called about once a day from the housekeeping (the
    composition hands it the retention purge); ``jobs`` is called over and over beside
    the sending loop, on a thread, one bounded step each time (the composition hands it
    the referrals' delivery, and on PostgreSQL the broadcasts' expansion); ``loop_jobs``
    likewise but on the event loop itself, for steps of a few milliseconds that must not
    wait for anything (on SQLite, the broadcasts' expansion: see ``make_worker``)."""

    def __init__(self, *, db: Database, keys: KeyRing, sender: Sender, policy: OutboxPolicy,
                 wake: Callable[[], asyncio.Event],
                 daily: Callable[[datetime], str] | None = None,
                 jobs: Callable[[datetime], Progress] | None = None,
                 loop_jobs: Callable[[datetime], Progress] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.keys = keys
        self.sender = sender
        self.policy = policy
        self.wake = wake
        self.daily = daily
        self.jobs = jobs
        self.loop_jobs = loop_jobs
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.sent = 0  # sends recorded
        self.slots = policy.slots
        self.deadline = policy.send_timeout + DEADLINE_GRACE
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
        self._claim_at = 0.0  # time.monotonic() when the next claim is due
        self._idle = False  # the last claim found nothing due: a wake-up claims at once
        self._db_retry_at = 0.0  # after a database error, nothing before this
        self._in_flight: dict[int, _InFlight] = {}
        self._finished: list[Finished] = []
        self._finished_since = 0.0  # time.monotonic() when the oldest of them finished
        self._urgent = False  # a 429 is waiting to be written: write it now
        self._stopping = False
        self._progress = asyncio.Event()  # a send finished that the loop should look at

    # --- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s started: provider %s, %.1f messages/s, up to %d in flight, "
                 "%.0f s a send", self.owner, self.policy.provider, self.policy.rate,
                 self.slots, self.policy.send_timeout)
        wake = self.wake()
        jobs = [asyncio.create_task(self._run_jobs(stop, wake, job, on_loop))
                for job, on_loop in ((self.jobs, False), (self.loop_jobs, True)) if job]
        try:
            while not stop.is_set():
                await self._turn_safely()
                await self._sleep(stop, wake)
        finally:
            if jobs:
                stop.set()  # the jobs end after the step they are in...
            await self._finish()
            for task in jobs:
                await task  # ... which a thread cannot cut short
        if self._daily_task is not None and not self._daily_task.done():
            log.info("worker: letting the retention purge finish its batch")
            await asyncio.wait([self._daily_task])
        log.info("worker %s stopped after %d messages", self.owner, self.sent)

    async def _run_jobs(self, stop: asyncio.Event, wake: asyncio.Event,
                        job: Callable[[datetime], Progress], on_loop: bool) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                progress = job(self.clock()) if on_loop else \
                    await self._thread(job, self.clock())
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

    @staticmethod
    def _thread(fn: Callable[..., T], *args: Any) -> Coroutine[Any, Any, T]:
        """``fn(*args)`` on a thread, as background work: on SQLite a request waiting for
        the write lock goes first."""
        return asyncio.to_thread(in_background, fn, *args)

    async def run_jobs_once(self) -> Progress:
        """One step of each background job (none: nothing done)."""
        done = [self.loop_jobs(self.clock())] if self.loop_jobs else []
        if self.jobs is not None:
            done.append(await self._thread(self.jobs, self.clock()))
        return Progress(queued=sum(p.queued for p in done), more=any(p.more for p in done))

    async def _turn_safely(self) -> None:
        try:
            await self._turn()
        except Exception as exc:  # the database may be away: wait and try again
            log.error("worker: %s; retrying shortly", exc.__class__.__name__)
            self._db_retry_at = time.monotonic() + DB_RETRY_SECONDS

    async def _turn(self) -> None:
        """Whatever is due now, in one trip to a thread: write finished sends, renew
        leases, claim into the free slots (then start those sends)."""
        mono = time.monotonic()
        if mono < self._db_retry_at:
            return
        now = self.clock()
        await self._chores(now)
        finished = self._finished_due(mono)
        renew = [i for i, f in self._in_flight.items() if f.renew_at <= mono]
        want = 0
        # After a 429 is written, claim at once: the claim reads the route's pause.
        if not self._stopping and (mono >= self._claim_at
                                   or any(r.throttled for _, r, _ in finished)):
            want = self.slots - len(self._in_flight)
        if not (finished or renew or want > 0):
            return
        claimed, claim_at, more = await self._thread(self._database, now, mono,
                                                          finished, renew, want)
        self._written(finished)
        for i in renew:
            if i in self._in_flight:
                self._in_flight[i].renew_at = mono + self.policy.lease_seconds / 2
        if want > 0:
            self._claim_at = claim_at
            self._idle = not more
        for message in claimed:
            self._start(message, now, mono)

    async def _chores(self, now: datetime) -> None:
        if self._last_housekeeping is None or now - self._last_housekeeping > HOUSEKEEPING_EVERY:
            self._last_housekeeping = now  # a failure waits for the next round, not a loop
            if await self._thread(self._housekeeping, now) and (
                    self._daily_task is None or self._daily_task.done()):
                # The daily job runs beside the sending, never in its way.
                self._daily_task = asyncio.ensure_future(self._thread(self._daily, now))
        if self._last_tidy is None or now - self._last_tidy >= self._tidy_every:
            await self._thread(self._tidy, now)
            self._last_tidy = now

    def _finished_due(self, mono: float) -> list[Finished]:
        """The finished sends to write now: a group's worth, an old enough one, a 429,
        the last of those in flight (a quiet route writes each at once), or everything
        when stopping."""
        if not self._finished:
            return []
        if self._urgent or self._stopping or not self._in_flight \
                or len(self._finished) >= RECORD_GROUP \
                or mono - self._finished_since >= RECORD_WAIT:
            return list(self._finished)
        return []

    def _written(self, finished: list[Finished]) -> None:
        if not finished:
            return
        # Sends that finished meanwhile were appended after these: keep them.
        del self._finished[:len(finished)]
        self.sent += len(finished)
        self._urgent = any(r.throttled for _, r, _ in self._finished)
        self._finished_since = time.monotonic()

    async def _sleep(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Wait until something is due: a claim (a free slot and the bucket's tokens), a
        group of finished sends to write, a lease to renew; or a wake-up, a freed slot,
        a 429, the stop."""
        mono = time.monotonic()
        due = [mono + IDLE_SECONDS]
        if len(self._in_flight) < self.slots:
            due.append(self._claim_at)
        if self._finished:
            due.append(mono if self._urgent or not self._in_flight
                       else self._finished_since + RECORD_WAIT)
        if self._in_flight:
            due.append(min(f.renew_at for f in self._in_flight.values()))
        timeout = max(min(due), self._db_retry_at) - mono
        if timeout <= 0:
            await asyncio.sleep(0)  # let finished sends report
            return
        wake.clear()
        self._progress.clear()
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait()),
                 asyncio.ensure_future(self._progress.wait())]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if wake.is_set() and self._idle:  # something was queued: claim it now
            self._claim_at = 0.0

    async def _finish(self) -> None:
        """Stop claiming; let the sends in flight finish (each within its deadline), keep
        their leases and write their outcomes."""
        self._stopping = True
        if self._in_flight:
            log.info("worker: finishing %d send(s) in flight", len(self._in_flight))
        while self._in_flight:
            await self._turn_safely()  # writes and renews, claims nothing
            tasks = [f.task for f in self._in_flight.values()]
            if tasks:
                await asyncio.wait(tasks, timeout=RECORD_WAIT * 5,
                                   return_when=asyncio.FIRST_COMPLETED)
        for _ in range(FINAL_WRITE_ATTEMPTS):
            if not self._finished:
                return
            self._db_retry_at = 0.0
            await self._turn_safely()
            if self._finished:
                await asyncio.sleep(DB_RETRY_SECONDS)
        if self._finished:
            log.error("worker: %d sent message(s) could not be recorded; their leases will "
                      "run out and they count as ambiguous", len(self._finished))

    # --- one round, for tools and tests -----------------------------------------------

    async def step(self) -> tuple[int, bool]:
        """One round outside the loop: claim what the rate and the slots allow, send it,
        wait for every send and record the outcomes: (how many, whether more are due).
        Tests and tools drain a queue with it; ``run`` is the worker."""
        now, mono = self.clock(), time.monotonic()
        await self._chores(now)
        claimed, _, more = await self._thread(self._database, now, mono, [], [],
                                                   self.slots)
        for message in claimed:
            self._start(message, now, mono)
        if self._in_flight:
            await asyncio.wait([f.task for f in self._in_flight.values()])
        finished = list(self._finished)
        if finished:
            await self._thread(self._database, self.clock(), mono, finished, [], 0)
            self._written(finished)
        return len(claimed), more

    # --- sending -----------------------------------------------------------------------

    def _start(self, claimed: outbox.Claimed, now: datetime, mono: float) -> None:
        task = asyncio.create_task(self._send_one(claimed, now))
        self._in_flight[claimed.id] = _InFlight(
            claimed, task, renew_at=mono + self.policy.lease_seconds / 2)

    async def _send_one(self, claimed: outbox.Claimed, sent_at: datetime) -> None:
        try:
            async with asyncio.timeout(self.deadline):
                result = await self._send(claimed)
        except TimeoutError:  # the sender's own timeout did not fire: it may have left
            log.warning("worker: outbox #%d had no answer within %.0f s", claimed.id,
                        self.deadline)
            result = SendResult(SendOutcome.ambiguous, code="deadline")
        full = len(self._in_flight) >= self.slots
        self._in_flight.pop(claimed.id, None)
        if not self._finished:
            self._finished_since = time.monotonic()
        self._finished.append((claimed, result, sent_at))
        if result.throttled:
            self._urgent = True
            self._claim_at = math.inf  # until the pause is written and read back
        if full or self._urgent or not self._in_flight \
                or len(self._finished) >= RECORD_GROUP:
            self._progress.set()

    async def _send(self, claimed: outbox.Claimed) -> SendResult:
        try:
            to = outbox.open_recipient(self.keys, claimed)
        except KeyGone:
            if outbox.copied_from_vault(claimed.recipient):
                # The contact was erased (their data key shredded) after it was queued.
                return SendResult(SendOutcome.failed, code="key-gone")
            # A shred sealed the row again under a new master key after this worker read
            # it: nothing left, so it is simply tried again (and read again) shortly.
            return SendResult(SendOutcome.retry, code="key-gone", retry_after=1.0)
        try:
            message = OutboundSms(claimed.id, to, claimed.text, claimed.encoding)
            return await self.sender.send(message)
        except Exception as exc:  # a provider adapter bug must not lose the row
            log.error("worker: %s sending outbox #%d", exc.__class__.__name__, claimed.id)
            return SendResult(SendOutcome.ambiguous, code=exc.__class__.__name__)

    # --- the database (on a thread) ---------------------------------------------------

    def _database(self, now: datetime, started: float, finished: list[Finished],
                  renew: list[int], want: int) -> tuple[list[outbox.Claimed], float, bool]:
        """Write ``finished`` (and any 429 among them to the route), renew leases, claim up
        to ``want``: (what was claimed, when to claim next, as time.monotonic() counted from
        ``started``, the monotonic time of ``now``; whether more is due)."""
        if finished:
            self._record(finished)
        if renew:
            with self.db.transaction() as conn:
                outbox.renew(conn, ids=renew, owner=self.owner,
                             until=now + timedelta(seconds=self.policy.lease_seconds))
        if want <= 0:
            return [], self._claim_at, True
        with self.db.transaction() as conn:
            claimed = outbox.claim(conn, policy=self.policy, owner=self.owner, now=now,
                                   limit=want, tidy=False)
            more = outbox.any_due(conn, policy=self.policy, now=now)
            wait = outbox.seconds_to_tokens(conn, policy=self.policy, now=now,
                                            want=min(self._want_tokens, want)) \
                if more else IDLE_SECONDS
        return claimed, started + wait, more

    def _record(self, finished: list[Finished]) -> None:
        now = self.clock()
        refused = [(sent_at, r.retry_after) for _, r, sent_at in finished if r.throttled]
        waits = [w for _, w in refused if w is not None]
        wait = max(waits) if waits else None
        with self.db.transaction() as conn:
            outbox.record(conn, policy=self.policy, owner=self.owner, now=now,
                          results=[(c, r) for c, r, _ in finished])
            rate = outbox.throttle(conn, policy=self.policy, now=now,
                                   sent_at=max(s for s, _ in refused), retry_after=wait,
                                   count=len(refused)) if refused else None
        if rate is not None:
            log.warning("worker: the provider throttled %d send(s); the route waits %s and "
                        "resumes at %.1f messages/s", len(refused),
                        "a moment" if wait is None else f"{wait:.0f} s", rate)

    def _tidy(self, now: datetime) -> None:
        with self.db.transaction() as conn:
            outbox.housekeeping(conn, policy=self.policy, now=now, stopped=False)
        with self.db.transaction() as conn:
            refreshed = queries.refresh_statistics(conn)
        if refreshed:
            log.debug("worker: statistics refreshed: %s", ", ".join(refreshed))

    def _housekeeping(self, now: datetime) -> bool:
        """Cancel what is queued for stopped contacts (a broadcast's hundred thousand are
        read, so not every few seconds), expire stale delivery reports; whether the daily
        job is due."""
        with self.db.reading() as conn:  # no write lock for the usual answer, none
            stopped = outbox.any_for_stopped(conn, policy=self.policy)
        if stopped:
            with self.db.transaction() as conn:
                outbox.cancel_stopped(conn, policy=self.policy, now=now)
        with self.db.transaction() as conn:
            expired = outbox.expire_pending(conn, older_than=now - PENDING_REPORTS_KEPT, now=now)
            # What the flood limits (dialogue/limits.py) no longer count: a day old.
            queries.forget_budget_use(conn, before=now - BUDGET_USE_KEPT)
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

