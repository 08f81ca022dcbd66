"""``/api/v1/broadcasts`` (operator, admin): preview, send with an ``Idempotency-Key``,
list, read with live counts, cancel. The logic is ``gateway.operators.broadcasts``.

A body that does not validate is a 422 naming the field (FastAPI's ``detail`` shape); an
audience outside the caller's cercles a 403, audited; another region's broadcast a 404,
audited; the same ``Idempotency-Key`` with another body a 409.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from gateway.operators import audit, broadcasts
from gateway.operators.access import Principal
from gateway.operators.api.deps import Conn, CurrentPrincipal, Rt, get_runtime
from gateway.operators.broadcasts import (
    AudienceOutOfScope,
    BroadcastRequest,
    Conflict,
    Invalid,
    Rules,
)
from gateway.runtime import Runtime
from gateway.store.models import utcnow

log = logging.getLogger("gateway.operators.api.broadcasts")

router = APIRouter(prefix="/broadcasts", tags=["broadcasts"])


def get_rules(rt: Rt) -> Rules:
    return Rules.of(rt.settings, rt.engine.content)


BroadcastRules = Annotated[Rules, Depends(get_rules)]
Json = dict[str, Any]
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The role may not send broadcasts, or the audience reaches a "
                         "cercle outside the caller's"},
    422: {"description": "A field that does not validate, named in `detail[].loc`"},
}


def _invalid(exc: Invalid) -> HTTPException:
    return HTTPException(422, exc.detail())


@router.post("/preview", responses=_ERRORS)
def preview(body: BroadcastRequest, who: CurrentPrincipal, conn: Conn,
            rules: BroadcastRules) -> Json:
    """Who would receive it and what, per language: `recipients`, `text` as it goes over
    the air, `encoding` (`GSM-7` or `UCS-2`) and `segments`; the total `segments`, and
    with `GATEWAY_SMS_PRICE` the estimated `cost` beside what it would cost without
    transliteration."""
    try:
        return broadcasts.preview(conn, who=who, rules=rules, request=body,
                                  now=utcnow()).as_json()
    except Invalid as exc:
        raise _invalid(exc) from None


@router.post("", status_code=201, responses={
    **_ERRORS, 200: {"description": "The same Idempotency-Key and body again: the same "
                                    "broadcast, nothing queued twice"},
    409: {"description": "The Idempotency-Key was used with another body"},
})
def send(body: BroadcastRequest, who: CurrentPrincipal, conn: Conn, rules: BroadcastRules,
         response: Response,
         idempotency_key: Annotated[str, Header(alias="Idempotency-Key")]) -> Json:
    """Send (from `send_at`, default now, until `valid_until`, default 24 hours later).
    It is queued in the background; `GET /broadcasts/{id}` follows it."""
    now = utcnow()
    try:
        made, created = broadcasts.create(conn, who=who, rules=rules, request=body,
                                          idempotency_key=idempotency_key, now=now)
    except Invalid as exc:
        raise HTTPException(422, exc.detail(
            "header" if exc.problems[0].loc[0] == "idempotency-key" else "body")) from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    if created:
        audit.record(conn, actor=who.name, action="broadcast.create",
                     object_type="broadcast", object_id=made.id,
                     details=made.audit_details(), now=now)
    else:
        response.status_code = 200
    return made.as_json()


@router.get("")
def list_broadcasts(who: CurrentPrincipal, conn: Conn,
                    cursor: Annotated[int | None, Query(ge=1)] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    status: Annotated[list[str] | None, Query()] = None) -> Json:
    """The broadcasts in the caller's cercles, newest first, with their `status` and
    `counts`; `next` is the `cursor` of the next page."""
    if status is not None and not set(status) <= set(broadcasts.STATUSES):
        raise HTTPException(422, [{"loc": ["query", "status"], "type": "value_error",
                                   "msg": f"one of {', '.join(broadcasts.STATUSES)}"}])
    items, following = broadcasts.list_page(conn, who=who, before=cursor, limit=limit,
                                            statuses=status)
    return {"items": [b.as_json() for b in items], "next": following}


@router.get("/{broadcast_id}")
def one(broadcast_id: int, who: CurrentPrincipal, conn: Conn) -> Json:
    """One broadcast: its `status` (`scheduled`, `sending`, `done`, `cancelled`) and its
    `counts` (`recipients`, `queued`, `sent`, `delivered`, `failed`, `expired`,
    `cancelled`), kept current by the delivery reports."""
    return broadcasts.get(conn, who=who, broadcast_id=broadcast_id).as_json()


@router.post("/{broadcast_id}/cancel", responses={
    409: {"description": "Already done: every message was handed over"}})
def cancel(broadcast_id: int, who: CurrentPrincipal, conn: Conn) -> Json:
    """Nothing of it not yet handed to the provider goes out."""
    now = utcnow()
    before = broadcasts.get(conn, who=who, broadcast_id=broadcast_id)
    try:
        done = broadcasts.cancel(conn, who=who, broadcast_id=broadcast_id, now=now)
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    if before.status != "cancelled":
        audit.record(conn, actor=who.name, action="broadcast.cancel",
                     object_type="broadcast", object_id=done.id,
                     details={**done.audit_details(), "counts_sent": done.counts.sent,
                              "counts_cancelled": done.counts.cancelled}, now=now)
    return done.as_json()


def _record_audience_out_of_scope(rt: Runtime, who: Principal | None) -> None:
    with rt.db.transaction() as conn:
        audit.record(conn, actor=who.name if who else "(unknown)",
                     action="broadcast.audience_out_of_scope", object_type="broadcast",
                     object_id=None, details={}, now=utcnow())


def install(api: FastAPI) -> None:
    """The router, and the 403 for an audience outside the caller's cercles (audited
    after the request's transaction has rolled back)."""
    api.include_router(router)

    async def audience_out_of_scope(request: Request, exc: Exception) -> Response:
        who: Principal | None = getattr(request.state, "principal", None)
        try:
            await run_in_threadpool(_record_audience_out_of_scope, get_runtime(request), who)
        except Exception as failure:  # the answer stays a 403 whatever happens
            log.error("audit: out-of-scope audience not recorded (%s)",
                      failure.__class__.__name__)
        return JSONResponse({"detail": str(exc)}, status_code=403)

    api.add_exception_handler(AudienceOutOfScope, audience_out_of_scope)
