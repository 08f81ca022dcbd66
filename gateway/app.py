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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from gateway.channels import africastalking as at
from gateway.channels import kannel
from gateway.channels.base import DeliveryReport
from gateway.channels.forms import Refused, read_form
from gateway.dialogue.ussd import InThread
from gateway.dialogue.ussd_process import DbWorker
from gateway.logs import configure_logging
from gateway.outbox import outbox
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.batches import Batches
from gateway.store.models import utcnow

log = logging.getLogger("gateway.app")

# PostgreSQL: request database work runs on this many threads of the service's own. Each
# waits on the network most of the time; many more would only contend for the interpreter
# lock (or queue for one of the pool's connections) and cost CPU per request.
DB_THREADS = 8
USSD_PATH = "/webhooks/africastalking/ussd"


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


def queue_depth(rt: Runtime) -> int | None:
    """Messages waiting to be sent, or None when the database does not answer."""
    try:
        with rt.db.transaction() as conn:
            return outbox.queue_depth(conn)
    except Exception:
        return None


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
                rt.hop_jobs = DbWorker(settings, rt.loop)
            else:
                rt.batches = Batches(rt.db, rt.loop)
                rt.hop_jobs = InThread(rt.batches)
        task = asyncio.create_task(background(rt)) if background else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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

    def rt_of(request: Request) -> Runtime:
        rt: Runtime = request.app.state.runtime
        return rt

    async def form(request: Request) -> dict[str, str]:
        return await read_form(request, max_bytes=settings.max_body_bytes,
                               token=settings.token)

    @app.exception_handler(Refused)
    async def _refused(_request: Request, exc: Refused) -> Response:
        return exc.response

    async def call(rt: Runtime, fn: Callable[..., Any], *args: Any) -> Any:
        # SQLite work is short and serialised by its write lock: run it inline. PostgreSQL
        # round trips are network waits: run them on the service's database threads (the
        # shared thread pool when the app runs without its lifespan).
        if rt.db.sqlite:
            return fn(*args)
        if db_threads is None:
            return await run_in_threadpool(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(
            db_threads, functools.partial(fn, *args))

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
        except ClientDisconnect:
            return
        try:
            turn = at.parse_ussd(fields)
            if turn is None:
                log.warning("ussd: request without a session id or caller refused")
                body = rt.ussd.apology()
            elif rt.hop_jobs is not None:
                body = await rt.ussd.handle_batched(turn, rt.hop_jobs)
            else:
                body = await call(rt, rt.ussd.handle, turn)
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

    @app.api_route("/webhooks/kannel/sms", methods=["GET", "POST"],
                   response_class=PlainTextResponse)
    async def kannel_sms(request: Request) -> Response:
        rt = rt_of(request)
        message = kannel.parse_sms(await form(request))
        if message is None:
            log.warning("sms: Kannel message without id or sender ignored")
            return PlainTextResponse("ignored: no id or sender")
        return PlainTextResponse(await call(rt, rt.sms.receive, message))

    @app.api_route("/webhooks/kannel/delivery", methods=["GET", "POST"],
                   response_class=PlainTextResponse)
    async def kannel_delivery(request: Request) -> Response:
        rt = rt_of(request)
        report = kannel.parse_delivery(await form(request))
        if report is None:
            return PlainTextResponse("ignored: no id")
        return PlainTextResponse(await call(rt, deliver, rt, report))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        rt = rt_of(request)
        depth = await run_in_threadpool(queue_depth, rt)
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
