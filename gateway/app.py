"""The FastAPI application: ``create_app(settings)``. A thin layer over the core, built
by ``gateway.runtime``.

Routes translate HTTP into canonical events with a provider adapter and hand them to a
service; they hold no business logic. Settings are passed in, never read at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from gateway.channels import africastalking as at
from gateway.channels import kannel
from gateway.channels.base import DeliveryReport, UssdEnded, UssdTurn
from gateway.channels.forms import Refused, read_form, read_raw_form
from gateway.dialogue.ussd import HopJobs, InThread
from gateway.dialogue.ussd_process import DbWorker
from gateway.logs import configure_logging
from gateway.operators.api import build_api
from gateway.operators.dashboard import dashboard_app
from gateway.outbox import outbox
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.batches import Batches
from gateway.store.db import (
    CHECKPOINT_SECONDS,
    Database,
    DatabaseBusy,
    DatabaseUnavailable,
    waiting,
)
from gateway.store.models import utcnow

log = logging.getLogger("gateway.app")

# PostgreSQL: request database work runs on this many threads of the service's own. Each
# waits on the network most of the time; many more would only contend for the interpreter
# lock (or queue for one of the pool's connections) and cost CPU per request.
DB_THREADS = 8
USSD_PATH = "/webhooks/africastalking/ussd"
GRACE_SECONDS = 0.25  # beyond the database wait: a job queued for a thread, the hand-back
READY_SECONDS = 0.8  # /readyz answers within a second
READY_WAIT_SECONDS = 0.5  # ... of which its probe waits this long for SQLite's lock
READY_CACHE_SECONDS = 0.5  # a probe's answer serves the /readyz requests this long after it
RETRY_AFTER_SECONDS = 5  # told to providers with a 503
DB_PROCESS_START_SECONDS = 60  # the start waits this long for the USSD database process
RESTART_SECONDS = 6.0  # a hop's patience while that process is replaced (AT allows 10 s)
# SQLite: a request waiting for the write lock tries again at least this often (another
# process holding the file's lock does not say when it lets go).
SQLITE_RETRY_SECONDS = 0.01


class GatewayApp(FastAPI):
    """FastAPI, with the USSD webhook answered ahead of the middleware stack.

    A USSD hop is the request a resident's phone waits on. The stack's error and
    exception middleware, routing and response wrappers cost about as much per request
    as the hop's own database work, and the hop needs none of them: its handler
    (``ussd_hop``, set by ``create_app``) applies the same body cap, token check and
    form decoding as every route (``read_form``) and never lets an exception out.
    """

    ussd_hop: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ussd_hop is not None and scope["type"] == "http" \
                and scope["path"] == USSD_PATH:
            await self.ussd_hop(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def deliver(rt: Runtime, report: DeliveryReport) -> str:
    with rt.db.transaction() as conn:
        return outbox.apply_delivery(conn, report=report, now=utcnow())


def probe(rt: Runtime) -> int:
    """A committed write (raises if the database cannot take one); the messages waiting
    to be sent."""
    with waiting(READY_WAIT_SECONDS):
        return rt.db.probe()


class Readiness:
    """The readiness probe (a committed write), run by one request at a time, its answer
    kept ``READY_CACHE_SECONDS`` unless the database failed since: a load balancer probing
    often costs one small write a moment, and requests arriving during a probe share its
    answer."""

    def __init__(self) -> None:
        self.at = -READY_CACHE_SECONDS
        self.depth: int | None = None
        self.running: asyncio.Future[int | None] | None = None

    async def queue_depth(self, rt: Runtime) -> int | None:
        """The messages waiting to be sent; None when the database cannot take a write."""
        failed = rt.db.failed_at
        if time.monotonic() - self.at < READY_CACHE_SECONDS and (
                failed is None or failed < self.at):
            return self.depth
        if self.running is None or self.running.done():
            self.running = asyncio.ensure_future(self._probe(rt))
        return await asyncio.shield(self.running)

    async def _probe(self, rt: Runtime) -> int | None:
        depth = None
        if rt.db.available():
            try:
                depth = await asyncio.wait_for(run_in_threadpool(probe, rt),
                                               timeout=READY_SECONDS)
            except TimeoutError:
                rt.db.note_failure()
            except Exception as exc:
                log.warning("readyz: the database cannot take a write (%s)",
                            exc.__class__.__name__)
        self.depth, self.at = depth, time.monotonic()
        return depth


def _within(fn: Callable[..., Any], args: tuple[Any, ...], deadline: float) -> Any:
    """A request's database work on a thread: not begun at all once its request has
    been answered (nothing half-stored), and waiting for SQLite's lock only until then."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DatabaseUnavailable()
    with waiting(left):
        return fn(*args)


async def checkpoint_wal(db: Database) -> None:
    """SQLite: copy the WAL into the database file every ``CHECKPOINT_SECONDS`` after
    anything was committed, on a thread, outside every transaction: SQLite's own
    checkpoint would run inside the commit that crossed its threshold, and every writer of
    the process (USSD hops included) would wait for its copying and fsyncs."""
    seen = db.commits
    while True:
        await asyncio.sleep(CHECKPOINT_SECONDS)
        if db.commits == seen:
            continue
        seen = db.commits
        try:
            await asyncio.to_thread(db.checkpoint)
        except Exception as exc:  # the file's disk may be full; SQLite's own takes over
            log.warning("database: WAL checkpoint failed (%s)", exc.__class__.__name__)


def driver_operational_errors() -> list[type[Exception]]:
    """The drivers' own OperationalError classes (raised by statements run straight on
    the driver connection)."""
    import sqlite3

    import psycopg

    return [sqlite3.OperationalError, psycopg.OperationalError]


def counters(rt: Runtime) -> dict[str, int]:
    """The named counters a deployer reads (floods refused, 429s, unmatched delivery
    reports...); empty when the database does not answer."""
    try:
        with rt.db.transaction() as conn:
            return queries.all_counters(conn)
    except Exception:
        return {}


def create_app(settings: Settings, *, runtime: Runtime | None = None,
               background: Callable[[Runtime], Coroutine[Any, Any, None]] | None = None,
               db_process: bool = False) -> FastAPI:
    """The HTTP service. ``background`` (the outbox worker) runs beside it when given.
    On PostgreSQL, USSD hops' database work runs in batches on a thread, or with
    ``db_process`` (``gateway serve``) in a process of its own
    (``gateway.dialogue.ussd_process``)."""
    configure_logging()
    db_threads: ThreadPoolExecutor | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal db_threads
        rt = runtime or build_runtime(settings)
        rt.loop = asyncio.get_running_loop()
        rt.wake = asyncio.Event()
        app.state.runtime = rt
        if not rt.db.sqlite:
            db_threads = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="gateway-db")
            if db_process:
                rt.hop_jobs = workers = DbWorker(settings, rt.loop)
                try:
                    await asyncio.wait_for(workers.ready(), timeout=DB_PROCESS_START_SECONDS)
                except Exception as exc:  # hops then answer the apology until it is
                    log.warning("the USSD database process is not ready (%s)",
                                exc.__class__.__name__)
            else:
                rt.batches = Batches(rt.db, rt.loop)
                rt.hop_jobs = InThread(rt.batches)
        task = asyncio.create_task(background(rt)) if background else None
        checkpoints = asyncio.create_task(checkpoint_wal(rt.db)) if rt.db.sqlite else None
        try:
            yield
        finally:
            for running in (task, checkpoints):
                if running is not None:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
            if isinstance(rt.hop_jobs, DbWorker):
                await rt.hop_jobs.aclose()
            if rt.batches is not None:
                await asyncio.to_thread(rt.batches.close)
                rt.batches = None
            rt.hop_jobs = None
            if db_threads is not None:
                db_threads.shutdown(wait=True)
                db_threads = None
            if runtime is None:
                await rt.sender.close()
                rt.db.dispose()

    app = GatewayApp(title="Dannaya gateway", version="0.1.0", lifespan=lifespan,
                  docs_url=None if settings.is_production else "/docs",
                  redoc_url=None, openapi_url=None if settings.is_production else "/openapi.json")
    if runtime is not None:
        app.state.runtime = runtime
    app.mount("/api/v1", build_api(settings, runtime=lambda: app.state.runtime))
    app.state.dashboard_seams = None  # None: the domain modules (tests may give others)
    app.mount("/dashboard", dashboard_app(settings, runtime=lambda: app.state.runtime,
                                          seams=lambda: app.state.dashboard_seams,
                                          gateway=lambda: app))

    def rt_of(request: Request) -> Runtime:
        rt: Runtime = request.app.state.runtime
        return rt

    async def form(request: Request) -> dict[str, str]:
        return await read_form(request, max_bytes=settings.max_body_bytes,
                               token=settings.token, timeout=settings.body_timeout_seconds)

    async def raw_form(request: Request) -> dict[str, bytes]:
        return await read_raw_form(request, max_bytes=settings.max_body_bytes,
                                   token=settings.token, timeout=settings.body_timeout_seconds)

    @app.exception_handler(Refused)
    async def _refused(_request: Request, exc: Refused) -> Response:
        return exc.response

    wait = settings.db_wait_seconds

    async def call(rt: Runtime, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a request's database work, waiting at most ``GATEWAY_DB_WAIT_SECONDS`` for
        the database; ``DatabaseUnavailable`` (nothing stored) when it cannot.

        SQLite work is short and serialised by its write lock: run it inline, without
        waiting for the lock; while another connection holds it, wait for the lock to be
        handed back without blocking the event loop (every other request, ``/readyz``),
        then try again inline, until ``wait`` has passed. A request waiting so goes before
        the background writers (a broadcast being queued, the outbox worker): it waits at
        most for the transaction in progress, and its work never runs on a thread, where
        it would take turns at the interpreter lock with the event loop. PostgreSQL round
        trips are network waits: run them on the service's database threads (the shared
        thread pool when the app runs without its lifespan)."""
        db = rt.db
        if not db.available():
            raise DatabaseUnavailable()
        if db.sqlite:
            deadline = time.monotonic() + wait
            while True:
                try:
                    with waiting(0):
                        return fn(*args)
                except DatabaseBusy:
                    pass
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DatabaseUnavailable()
                # Another process may hold the file's lock: nothing tells when it is free.
                await db.turn_free(min(left, SQLITE_RETRY_SECONDS))
        job = functools.partial(_within, fn, args, time.monotonic() + wait)
        if db_threads is None:  # PostgreSQL without the lifespan (SQLite returned above)
            pending: Awaitable[Any] = run_in_threadpool(job)
        else:
            pending = asyncio.get_running_loop().run_in_executor(db_threads, job)
        try:
            return await asyncio.wait_for(pending, timeout=wait + GRACE_SECONDS)
        except TimeoutError:
            db.note_failure()
            log.warning("database: no answer within %gs; answering 'try again later' for "
                        "a moment", wait)
            raise DatabaseUnavailable() from None

    @app.exception_handler(DatabaseUnavailable)
    @app.exception_handler(OperationalError)
    async def _unavailable(request: Request, exc: Exception) -> Response:
        log.warning("%s: database unavailable (%s); 503", request.url.path,
                    exc.__class__.__name__)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if request.url.path.startswith("/webhooks/"):
            return PlainTextResponse("Database unavailable; try again later",
                                     status_code=503, headers=headers)
        return JSONResponse({"detail": "The database is unavailable; try again later."},
                            status_code=503, headers=headers)

    for driver in driver_operational_errors():
        app.add_exception_handler(driver, _unavailable)

    async def ussd_hop(scope: Scope, receive: Receive, send: Send) -> None:
        """POST /webhooks/africastalking/ussd: one hop in, ``CON``/``END`` out, 200
        whatever happens (413 and 403 only before anything is read)."""
        request = Request(scope, receive)
        if request.method != "POST":
            response: Response = PlainTextResponse(
                "Method Not Allowed", status_code=405, headers={"Allow": "POST"})
            await response(scope, receive, send)
            return
        rt: Runtime = app.state.runtime
        try:
            fields = await form(request)
        except Refused as exc:
            await exc.response(scope, receive, send)
            return
        try:
            turn = at.parse_ussd(fields)
            if turn is None:
                log.warning("ussd: request without a session id or caller refused")
                body = rt.ussd.apology()
            elif not rt.db.available():
                body = rt.ussd.apology()  # the database just failed: answer at once
            elif rt.hop_jobs is not None:
                body = await batched_hop(rt, turn, rt.hop_jobs)
            else:
                body = await call(rt, rt.ussd.handle, turn)
        except DatabaseUnavailable:
            body = rt.ussd.apology()
        except Exception as exc:  # handle() never raises; this is the last line of defence
            log.error("ussd: %s before the hop was handled", exc.__class__.__name__)
            body = rt.ussd.apology()
        payload = body.encode("utf-8")
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(payload)).encode("ascii")),
        ]})
        await send({"type": "http.response.body", "body": payload})

    app.ussd_hop = ussd_hop

    async def batched_hop(rt: Runtime, turn: UssdTurn, jobs: HopJobs) -> str:
        """``handle_batched``, answered with the apology if the database has not done the
        hop's work within ``GATEWAY_DB_WAIT_SECONDS`` (more while the database process is
        being replaced: the hop then goes on, still within the provider's timeout)."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(rt.ussd.handle_batched(turn, jobs))
        started, limit = loop.time(), wait + GRACE_SECONDS
        while True:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, started + limit - loop.time()))
            if done:
                return task.result()
            if isinstance(jobs, DbWorker) and jobs.starting and limit < wait + RESTART_SECONDS:
                limit = wait + RESTART_SECONDS
                continue
            task.cancel()
            rt.db.note_failure()
            log.warning("ussd: no answer from the database within %gs; session %s got an "
                        "apology", limit, turn.session_id)
            return rt.ussd.apology()

    @app.post("/webhooks/africastalking/ussd/events", response_class=PlainTextResponse)
    async def at_ussd_events(request: Request) -> Response:
        rt = rt_of(request)
        event = at.parse_ussd_end(await form(request))
        if event is None:
            return PlainTextResponse("ignored: no sessionId")
        await call(rt, rt.ussd.ended, event)
        return PlainTextResponse("OK")

    @app.post("/webhooks/africastalking/sms", response_class=PlainTextResponse)
    async def at_sms(request: Request) -> Response:
        rt = rt_of(request)
        message = at.parse_sms(await form(request))
        if message is None:
            log.warning("sms: message without id or sender ignored")
            return PlainTextResponse("ignored: no id or sender")
        return PlainTextResponse(await call(rt, rt.sms.receive, message))

    @app.post("/webhooks/africastalking/delivery", response_class=PlainTextResponse)
    async def at_delivery(request: Request) -> Response:
        rt = rt_of(request)
        report = at.parse_delivery(await form(request))
        if report is None:
            return PlainTextResponse("ignored: no id")
        return PlainTextResponse(await call(rt, deliver, rt, report))

    @app.post("/webhooks/africastalking/optout", response_class=PlainTextResponse)
    async def at_optout(request: Request) -> Response:
        rt = rt_of(request)
        phone = at.parse_optout(await form(request))
        if phone is None:
            return PlainTextResponse("ignored: no phoneNumber")
        done = await call(rt, lambda: rt.sms.opt_out(provider=at.NAME, phone=phone))
        return PlainTextResponse("OK" if done else "ignored: unreadable phoneNumber")

    # Kannel's routes take GET or POST: one route per method, so that each has its own
    # operation id in /openapi.json (one route with both gives both the same id).
    @app.get("/webhooks/kannel/sms", response_class=PlainTextResponse)
    @app.post("/webhooks/kannel/sms", response_class=PlainTextResponse)
    async def kannel_sms(request: Request) -> Response:
        rt = rt_of(request)
        message = kannel.parse_sms(await raw_form(request))
        if message is None:
            log.warning("sms: Kannel message without id or sender ignored")
            return PlainTextResponse("ignored: no id or sender")
        return PlainTextResponse(await call(rt, rt.sms.receive, message))

    kannel_ussd = kannel.UssdConfig.from_settings(settings)


    @app.get("/webhooks/kannel/ussd", response_class=PlainTextResponse)
    @app.post("/webhooks/kannel/ussd", response_class=PlainTextResponse)
    async def kannel_ussd_hop(request: Request) -> Response:
        """One USSD operation through Kannel; the screen goes back in the answer, with
        its operation and session in X-Kannel-Meta-Data. 200 whatever happens."""
        rt = rt_of(request)
        hop = kannel.parse_ussd(await raw_form(request), kannel_ussd)
        body = ""
        try:
            if isinstance(hop.event, UssdEnded):
                await call(rt, rt.ussd.ended, hop.event)
            elif hop.event is not None and not rt.db.available():
                body = rt.ussd.apology()  # the database just failed: answer at once
            elif hop.event is not None and rt.hop_jobs is not None:
                body = await batched_hop(rt, hop.event, rt.hop_jobs)
            elif hop.event is not None:
                body = await call(rt, rt.ussd.handle, hop.event)
        except DatabaseUnavailable:
            body = "" if isinstance(hop.event, UssdEnded) else rt.ussd.apology()
        except Exception as exc:  # handle() never raises; ended() may lose its database
            log.error("ussd: %s on a Kannel operation", exc.__class__.__name__)
            body = "" if isinstance(hop.event, UssdEnded) else rt.ussd.apology()
        text, headers = kannel.ussd_reply(body, hop, kannel_ussd)
        return PlainTextResponse(text, headers=headers)

    @app.get("/webhooks/kannel/delivery", response_class=PlainTextResponse)
    @app.post("/webhooks/kannel/delivery", response_class=PlainTextResponse)
    async def kannel_delivery(request: Request) -> Response:
        rt = rt_of(request)
        report = kannel.parse_delivery(await raw_form(request))
        if report is None:
            return PlainTextResponse("ignored: no id")
        return PlainTextResponse(await call(rt, deliver, rt, report))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    readiness = Readiness()

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        """Whether the database takes a write (a real one, committed, on a disk with room),
        the keys are loaded and the queue is within bounds; 503 within a second
        otherwise."""
        rt = rt_of(request)
        depth = await readiness.queue_depth(rt)
        checks = {
            "database": depth is not None,
            "keys": True,
            "queue": depth is not None and depth <= settings.max_queue,
        }
        ready = all(checks.values())
        counted = await run_in_threadpool(counters, rt) if depth is not None else {}
        return JSONResponse({"ready": ready, "checks": checks, "queued": depth,
                             "counters": counted}, status_code=200 if ready else 503)

    return app
