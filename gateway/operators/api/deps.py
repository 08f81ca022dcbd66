"""What every operator endpoint depends on: the runtime, a database transaction, the
signed-in caller; and how the operator exceptions become HTTP answers.

Route signatures read as domain words::

    @router.get("/things/{thing_id}")
    def one_thing(thing_id: int, who: CurrentPrincipal, conn: Conn) -> Thing:
        require(who, Role.operator)           # 403 for another role
        row = things.get(conn, thing_id=thing_id)   # NotFound -> 404
        check_area(who, areas, row.area)      # OutOfScope -> 404, audited
        ...

``Conn`` is one transaction per request, committed before the response is sent (rolled
back if the endpoint raises); ``CurrentPrincipal`` resolves the bearer token, or the
dashboard's session cookie, inside it, on every request (a disabled account or a revoked
token is refused at once). Missing or bad credentials: 401 with ``WWW-Authenticate:
Bearer``. With the session cookie, a request that is not GET/HEAD/OPTIONS must carry the
session's CSRF token in the ``X-CSRF-Token`` header (403 otherwise).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from gateway.operators import accounts, audit
from gateway.operators.access import Forbidden, NotFound, OutOfScope, Principal
from gateway.operators.live import Hub
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store.models import utcnow

log = logging.getLogger("gateway.operators.api")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PARAM = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# tokenUrl is relative to the OpenAPI document (/api/v1/openapi.json): /api/v1/auth/token.
bearer = OAuth2PasswordBearer(tokenUrl="auth/token", auto_error=False)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime()
    return runtime


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Rt = Annotated[Runtime, Depends(get_runtime)]
AppSettings = Annotated[Settings, Depends(get_settings)]


async def get_live(rt: Rt) -> Hub:
    """The process's live-figures hub (``gateway.operators.live``), made on first use."""
    return rt.live_hub()


Live = Annotated[Hub, Depends(get_live)]


def get_conn(rt: Rt) -> Iterator[Connection]:
    with rt.db.transaction() as conn:
        yield conn


# scope="function": the transaction commits before the response goes out.
Conn = Annotated[Connection, Depends(get_conn, scope="function")]


def get_read_conn(rt: Rt) -> Iterator[Connection]:
    with rt.db.reading() as conn:
        yield conn


# A read-only transaction (Database.reading): on SQLite it holds no write lock, so a long
# results query never holds up a USSD hop. Endpoints that only read use it with Reader.
ReadConn = Annotated[Connection, Depends(get_read_conn, scope="function")]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def current_principal(request: Request, conn: Conn,
                      token: Annotated[str | None, Depends(bearer)]) -> Principal:
    """The caller: from ``Authorization: Bearer <token>`` when given, else from the
    dashboard's session cookie. Resolved again on every request."""
    return _resolve(request, conn, token)


def current_reader(request: Request, conn: ReadConn,
                   token: Annotated[str | None, Depends(bearer)]) -> Principal:
    """``current_principal`` for an endpoint that only reads (resolving the caller reads
    only), in its read-only transaction."""
    return _resolve(request, conn, token)


def _resolve(request: Request, conn: Connection, token: str | None) -> Principal:
    now = utcnow()
    if token is not None or "authorization" in request.headers:
        who = accounts.resolve_token(conn, token=token or "", now=now)
        if who is None:
            raise unauthorized("invalid or expired token")
    else:
        cookie = request.cookies.get(accounts.SESSION_COOKIE)
        if cookie is None:
            raise unauthorized("not authenticated")
        session = accounts.resolve_session(conn, cookie=cookie, now=now)
        if session is None:
            raise unauthorized("session expired or ended")
        if request.method not in SAFE_METHODS and \
                not accounts.csrf_ok(session, request.headers.get(accounts.CSRF_HEADER)):
            raise HTTPException(403, "missing or wrong CSRF token")
        who = session.principal
    request.state.principal = who
    return who


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
Reader = Annotated[Principal, Depends(current_reader)]


def client_address(request: Request) -> str:
    """The client's address as the server saw it (behind a reverse proxy, run uvicorn
    with --proxy-headers and --forwarded-allow-ips so this is the real client's)."""
    return request.client.host if request.client else "unknown"


def _record_out_of_scope(rt: Runtime, request: Request) -> None:
    who: Principal | None = getattr(request.state, "principal", None)
    route = getattr(request.scope.get("route"), "path", None)
    details: dict[str, str] = {"method": request.method[:16]}
    if route is not None:
        details["route"] = (request.scope.get("root_path", "") + route)[:120]
    for key, value in request.path_params.items():
        name = re.sub(r"[^a-z0-9_]", "_", str(key).lower())[:24] or "param"
        if _PARAM.match(str(value)) and audit.text_problem(str(value)) is None:
            details[f"param_{name}"] = str(value)
    with rt.db.transaction() as conn:
        audit.record(conn, actor=who.name if who else "(unknown)",
                     action="access.out_of_scope", object_type="request", object_id=None,
                     details=details, now=utcnow())


def install_error_handlers(api: FastAPI) -> None:
    """Forbidden -> 403; NotFound -> 404; OutOfScope -> the same 404, and audited."""

    async def forbidden(_request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": str(exc) or "forbidden"}, status_code=403)

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return JSONResponse({"detail": "not found"}, status_code=404)

    async def out_of_scope(request: Request, _exc: Exception) -> Response:
        try:
            await run_in_threadpool(_record_out_of_scope, get_runtime(request), request)
        except Exception as exc:  # the answer stays a 404 whatever happens
            log.error("audit: out-of-scope attempt not recorded (%s)", exc.__class__.__name__)
        return JSONResponse({"detail": "not found"}, status_code=404)

    api.add_exception_handler(Forbidden, forbidden)
    api.add_exception_handler(OutOfScope, out_of_scope)
    api.add_exception_handler(NotFound, not_found)
