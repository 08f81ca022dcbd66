"""The operators' dashboard, served at ``/dashboard`` (BRIEF.md, "Operator contract",
Dashboard): server-rendered pages (Jinja2, French first with a Bambara toggle), static files
vendored in ``static/``, a strict CSP, CSRF tokens on every form.

One page module per domain (``auth``, ``home``, ``broadcasts``, ``campaigns``, ``flows``,
``reports``, ``audit``); what they share is in ``web``; what they need from the domain
modules is in ``seams``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from gateway.operators.access import Forbidden, NotFound, OutOfScope
from gateway.operators.api.deps import _record_out_of_scope as record_out_of_scope
from gateway.operators.api.no_nul import DropNulFromQuery
from gateway.operators.dashboard import (
    audit,
    auth,
    broadcasts,
    campaigns,
    flows,
    home,
    reports,
    results,
)
from gateway.operators.dashboard.seams import NotReady, Seams
from gateway.operators.dashboard.web import (
    PREFIX,
    BadForm,
    CsrfRefused,
    Dashboard,
    SecurityHeaders,
    SignInRequired,
)
from gateway.runtime import Runtime
from gateway.settings import Settings

__all__ = ["PREFIX", "Seams", "dashboard_app"]
log = logging.getLogger("gateway.operators.dashboard")
# What pages' scripts ask in the background (the recipients count, a broadcast's progress,
# the on-air stream), never typed in an address bar.
_ASKED_BY_SCRIPTS = ("/recipients", "/status", "/stream")


def dashboard_app(settings: Settings, *, runtime: Callable[[], Runtime],
                  seams: Callable[[], Seams | None] = lambda: None,
                  gateway: Callable[[], Any] = lambda: None) -> FastAPI:
    """The dashboard as an app of its own, to mount at ``/dashboard``. ``runtime`` is read
    per request (it exists once the gateway has started); ``seams``, when it gives some, is
    served instead of the domain modules (``wiring.default_seams``)."""
    dash = Dashboard(settings, runtime, seams, gateway=gateway)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(DropNulFromQuery)  # PostgreSQL text holds no NUL
    app.include_router(auth.router(dash))
    app.include_router(home.router(dash))
    app.include_router(broadcasts.router(dash))
    app.include_router(campaigns.router(dash))
    app.include_router(flows.router(dash))
    app.include_router(reports.router(dash))
    app.include_router(audit.router(dash))
    app.include_router(results.router(dash))

    @app.get("/static/{name}")
    async def static(request: Request, name: str) -> Response:
        return dash.assets.response(name, request.query_params.get("v"))

    def error(request: Request, status: int, key: str) -> Response:
        session = None  # error pages never look the session up again
        return dash.render(request, "error.html", session=session, status=status,
                           title_key=f"error.{key}", body_key=f"error.{key}.body")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _exc: Exception) -> Response:
        target = request.url.path
        if target.endswith(_ASKED_BY_SCRIPTS):
            # A page's own script (a progress poll, a live stream) whose session ended:
            # a plain 401 it can show, not a sign-in page it cannot read.
            return PlainTextResponse("Sign in again.", status_code=401,
                                     headers={"Cache-Control": "no-store"})
        if request.method != "GET":
            target = PREFIX + "/"
        return dash.redirect(f"{PREFIX}/login?next={target}")

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _exc: Exception) -> Response:
        return error(request, 403, "csrf")

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, _exc: Exception) -> Response:
        return error(request, 403, "forbidden")

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, _exc: Exception) -> Response:
        return error(request, 404, "not_found")

    @app.exception_handler(OutOfScope)
    async def _out_of_scope(request: Request, _exc: Exception) -> Response:
        """Answered exactly like a missing record, and audited (as the API does)."""
        try:
            await run_in_threadpool(record_out_of_scope, runtime(), request)
        except Exception as exc:  # the answer stays a 404 whatever happens
            log.error("audit: out-of-scope attempt not recorded (%s)",
                      exc.__class__.__name__)
        return error(request, 404, "not_found")

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, _exc: Exception) -> Response:
        return error(request, 503, "not_ready")

    @app.exception_handler(BadForm)
    async def _bad_form(request: Request, _exc: Exception) -> Response:
        return error(request, 400, "bad_request")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return error(request, 404, "not_found")
        return Response(status_code=status)

    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(SecurityHeaders)
    return app
