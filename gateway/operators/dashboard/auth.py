"""Sign-in and sign-out. The accounts module decides (passwords, throttling, audit); this
page only shows its answer and sets or clears the session cookie."""

from __future__ import annotations

import math

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.operators.dashboard.seams import SignedIn, Throttled
from gateway.operators.dashboard.web import (
    LOGIN_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    Dashboard,
    check_csrf,
    login_token,
    read_form,
    safe_next,
)

LOGIN_PATH = PREFIX + "/login"


def router(dash: Dashboard) -> APIRouter:
    r = APIRouter()

    def login_page(request: Request, *, username: str = "",
                   error: tuple[str, dict[str, int]] | None = None,
                   notice: str | None = None, status: int = 200,
                   headers: dict[str, str] | None = None) -> Response:
        token = login_token(request)
        response = dash.render(request, "login.html", session=None, status=status,
                               headers=headers,
                               login_csrf=token, username=username, error=error,
                               notice=notice,
                               next=safe_next(request.query_params.get("next")))
        dash.set_cookie(response, LOGIN_COOKIE, token, max_age=3600, path=LOGIN_PATH,
                        same_site="strict")
        return response

    @r.get("/login")
    async def login_form(request: Request) -> Response:
        if await dash.session(request) is not None:
            return dash.redirect(safe_next(request.query_params.get("next")))
        signed_out = request.query_params.get("signed_out") == "1"
        return login_page(request, notice="login.signed_out" if signed_out else None)

    @r.post("/login")
    async def login(request: Request) -> Response:
        form = await read_form(request)
        check_csrf(request, form, request.cookies.get(LOGIN_COOKIE))
        accounts = dash.seams().need_accounts()
        username = form.get("username").strip()
        password = form.get("password")
        client = request.client.host if request.client else ""
        outcome = await run_in_threadpool(
            lambda: accounts.sign_in(username=username, password=password, client=client))
        if isinstance(outcome, SignedIn):
            response = dash.redirect(safe_next(form.get("next")))
            dash.set_cookie(response, SESSION_COOKIE, outcome.session_id,
                            max_age=dash.settings.session_hours * 3600)
            response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
            return response
        if isinstance(outcome, Throttled):
            minutes = max(1, math.ceil(outcome.retry_after_seconds / 60))
            error = ("login.throttled.one", {}) if minutes == 1 else \
                ("login.throttled", {"n": minutes})
            return login_page(request, username=username, error=error, status=429,
                              headers={"Retry-After": str(outcome.retry_after_seconds)})
        return login_page(request, username=username, error=("login.wrong", {}), status=401)

    @r.post("/logout")
    async def logout(request: Request) -> Response:
        session = await dash.signed_in(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        sid = request.cookies.get(SESSION_COOKIE, "")
        accounts = dash.seams().need_accounts()
        await run_in_threadpool(lambda: accounts.sign_out(session_id=sid))
        response = dash.redirect(LOGIN_PATH + "?signed_out=1")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    return r
