"""Composition: everything the service and the worker share, built once from settings
(``build_runtime``), and the worker run over it. Nothing below imports this module."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from gateway import retention
from gateway.channels.base import Sender
from gateway.channels.senders import make_sender
from gateway.content import catalogs
from gateway.dialogue.engine import Engine
from gateway.dialogue.library import Engines, Library, import_files
from gateway.dialogue.services import engine_rules, limits, sms_rules, ussd_service
from gateway.dialogue.sms import SmsPolicy, SmsService, words
from gateway.dialogue.ussd import HopJobs, UssdService
from gateway.dialogue.validate import check_content, errors
from gateway.errors import StartupError
from gateway.operators import broadcasts, referrals
from gateway.operators.live import Hub
from gateway.operators.reports import vocabulary
from gateway.outbox.outbox import OutboxPolicy
from gateway.outbox.worker import Progress, Worker
from gateway.privacy import keys as keys_mod
from gateway.settings import Settings, production_problems
from gateway.store.batches import Batches
from gateway.store.db import Database, DatabaseBusy, waiting
from gateway.store.migrate import SchemaBehind, prepare_database
from gateway.store.models import utcnow

log = logging.getLogger("gateway.runtime")


@dataclass
class Runtime:
    """Everything built from settings at start, shared by the routes and the worker."""

    settings: Settings
    db: Database
    keys: keys_mod.KeyRing
    ussd: UssdService
    sms: SmsService
    sender: Sender
    outbox_policy: OutboxPolicy
    wake: asyncio.Event
    loop: asyncio.AbstractEventLoop | None = None
    batches: Batches | None = None  # PostgreSQL, while the app runs: USSD hops' jobs...
    hop_jobs: HopJobs | None = None  # ... given to these (InThread(batches), or DbWorker)
    live: Hub | None = None  # live figures (API and dashboard streams), made on first use
    library: Library | None = None  # the flow versions published, by generation
    # The worker runs in another process (gateway.outbox.worker_process): how to wake it.
    wake_elsewhere: Callable[[], None] | None = None

    def live_hub(self) -> Hub:
        """The process's one hub of live figures, shared by the API and the dashboard."""
        if self.live is None:
            self.live = Hub(self.db)
        return self.live

    @property
    def engine(self) -> Engine:
        """The USSD engine of the latest published content this process knows."""
        return self.ussd.engine

    def notify(self) -> None:
        """Wake the worker: a message was queued (safe from any thread)."""
        elsewhere = self.wake_elsewhere
        if elsewhere is not None:
            elsewhere()
        elif self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.wake.set)


def unwritable_sqlite(db: Database, exc: Exception) -> bool:
    """Whether ``exc`` says that an SQLite file that exists cannot work now (its disk full,
    most likely); a path that does not exist is a mistake to report, not to wait out."""
    if not db.sqlite or not isinstance(exc, (OperationalError, sqlite3.OperationalError)):
        return False
    path = make_url(db.url).database
    return bool(path) and os.path.exists(str(path))


def build_runtime(settings: Settings) -> Runtime:
    """Open the database, load keys and content; refuse to start on what is unsafe."""
    problems = production_problems(settings)
    if problems:
        raise StartupError("; ".join(problems))
    try:
        keyring = keys_mod.load(settings.key_file, create=not settings.is_production)
    except keys_mod.KeyFileError as exc:
        raise StartupError(str(exc)) from None
    root = catalogs.locate(settings.content_dir)
    content, load_problems = catalogs.load(root)
    rules = engine_rules(settings)
    bad = errors(load_problems + list(check_content(content, rules)))
    if bad:
        raise StartupError(f"content in {root} has {len(bad)} problem(s); run "
                           f"`gateway flows check {root}`. First: {bad[0]}")
    sender = make_sender(settings)  # refuses a provider without its settings: before any I/O
    db = Database(settings.database_url)
    try:
        prepare_database(db)
    except SchemaBehind as exc:
        db.dispose()
        raise StartupError(str(exc)) from None
    except Exception as exc:
        if not unwritable_sqlite(db, exc):
            db.dispose()
            raise
        # An existing SQLite file whose disk is full: serve anyway, answering "try again
        # later" (503, the apology screen, /readyz false) until the first transaction that
        # finds it writable runs the set-up it missed.
        log.warning("the SQLite database cannot take a write at start (%s): serving anyway, "
                    "answering 'try again later' until it can", exc.__class__.__name__)
        db.pending_setup = functools.partial(prepare_database, db)
        db.note_failure()
    library = Library(db, content, poll_seconds=settings.flows_poll_seconds)

    def import_flows() -> None:
        for line in import_files(db, library, root=root, now=utcnow()):
            log.info("flows: %s", line)

    migrate = db.pending_setup
    if migrate is not None:  # a full disk: the flows' files are imported with the rest
        def set_up() -> None:
            migrate()
            import_flows()

        db.pending_setup = set_up
    else:
        try:
            import_flows()
        except Exception:
            db.dispose()
            raise
    ussd = ussd_service(settings, db=db, keys=keyring, content=content, library=library)
    outbox_policy = OutboxPolicy(provider=sender.name, rate=settings.send_rate,
                                 lease_seconds=settings.send_lease_seconds,
                                 send_timeout=settings.send_timeout, quiet=settings.quiet)
    sms_policy = SmsPolicy(
        default_region=settings.default_region, stop_words=words(settings.stop_words),
        start_words=words(settings.start_words), erase_words=words(settings.erase_words),
        help_words=words(settings.help_words),
        yes_words=words(settings.yes_words), limits=limits(settings),
        help_interval=timedelta(minutes=settings.help_interval_minutes),
    )
    wake = asyncio.Event()
    sms = SmsService(db=db, keys=keyring, engine=Engines(sms_rules(settings), library),
                     policy=sms_policy, outbox_policy=outbox_policy)
    runtime = Runtime(settings, db, keyring, ussd, sms, sender, outbox_policy, wake,
                      library=library)
    sms.notify = runtime.notify
    return runtime


def make_worker(rt: Runtime, *, clock: Callable[[], datetime] = utcnow) -> Worker:
    """The outbox worker over the runtime's parts; it runs the retention purge (a job over
    every layer, so scheduled from here) through its daily hook, and through its jobs hook
    the broadcasts' expansion into outbox messages and the referrals' delivery to partners
    (operators), one step of each per call."""

    def purge(now: datetime) -> str:
        done = retention.purge(rt.db, retention=retention.Retention.of(rt.settings), now=now,
                               key_file=rt.settings.key_file)
        return str(done)

    rules = broadcasts.Rules.of(rt.settings, rt.engine.content)
    mail = referrals.Mail.of(rt.settings)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def expand(now: datetime) -> Progress:
        return broadcasts.run_due(rt.db, policy=rt.outbox_policy, rules=rules, now=now)

    def expand_on_loop(now: datetime) -> Progress:
        # SQLite: a chunk is a couple of milliseconds of work in C, serialised with every
        # other write of the process anyway. On a thread it took turns at the interpreter
        # lock with the event loop while holding the write lock, and a USSD hop waited for
        # all of those turns; on the loop it runs whole, between two requests, and never
        # waits for the lock (a hop holds it: next time).
        try:
            with waiting(0):
                return expand(now)
        except DatabaseBusy:
            return Progress(more=True)

    def deliver(now: datetime) -> Progress:
        _, more = referrals.deliver_due(rt.db, keys=rt.keys,
                                        vocab=vocabulary(rt.engine.content), mail=mail,
                                        owner=owner, now=now)
        return Progress(more=more)

    def jobs(now: datetime) -> Progress:
        if rt.db.sqlite:
            return deliver(now)
        expanded, delivered = expand(now), deliver(now)
        return Progress(queued=expanded.queued, more=expanded.more or delivered.more)

    return Worker(db=rt.db, keys=rt.keys, sender=rt.sender, policy=rt.outbox_policy,
                  wake=lambda: rt.wake, daily=purge, jobs=jobs,
                  loop_jobs=expand_on_loop if rt.db.sqlite else None, clock=clock)


async def run_worker(rt: Runtime, stop: asyncio.Event | None = None) -> None:
    """Work until ``stop`` is set or the task is cancelled (then finish the batch)."""
    stop = stop or asyncio.Event()
    task = asyncio.create_task(make_worker(rt).run(stop))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Exception):
            await task
        raise


async def run_worker_until_signal(rt: Runtime) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await make_worker(rt).run(stop)
    finally:
        await rt.sender.close()
