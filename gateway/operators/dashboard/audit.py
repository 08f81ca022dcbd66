"""The audit log page (admins): every entry, newest first, a page at a time, filtered by
actor or action, with the chain's state at the top (``gateway audit verify``'s check).
Entries hold account names, actions, object ids and times: never a phone number or a
report's text (``gateway/operators/audit.py`` refuses them)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.operators import audit
from gateway.operators.access import MAX_ID, Role, require
from gateway.operators.dashboard.web import PREFIX, Dashboard

BASE = PREFIX + "/audit"
PAGE = 100


def details_text(details: str) -> str:
    """An entry's details as short ``key: value`` pairs."""
    try:
        parsed = json.loads(details)
    except ValueError:
        return details
    if not isinstance(parsed, dict):
        return details
    return ", ".join(f"{k}: {v}" for k, v in parsed.items() if v is not None)


def router(dash: Dashboard) -> APIRouter:
    r = APIRouter()

    @r.get("/audit")
    async def log(request: Request) -> Response:
        session = await dash.signed_in(request)
        require(session.principal, Role.admin)
        typed = {k: v.strip()[:64] for k in ("actor", "action")
                 if (v := request.query_params.get(k, "")).strip()}
        cursor_text = request.query_params.get("cursor", "")
        cursor = int(cursor_text) if cursor_text.isdigit() and 0 < int(cursor_text) <= MAX_ID \
            else None
        rt = dash.runtime()

        check = request.query_params.get("verify") == "1"  # reads the whole log: on demand

        def read() -> tuple[audit.Page, audit.Broken | None, Any]:
            with rt.db.transaction() as conn:
                page = audit.entries(conn, cursor=cursor, limit=PAGE, **typed)
                return page, audit.verify(conn) if check else None, audit.head(conn)

        page, broken, head = await run_in_threadpool(read)
        return dash.render(
            request, "audit.html", session=session, entries=page.items, typed=typed,
            checked=check, broken=broken, count=head[0] if head else 0,
            details_text=details_text,
            next_url=f"{BASE}?{urlencode({**typed, 'cursor': page.next})}" if page.next
            else None,
            first_url=f"{BASE}?{urlencode(typed)}" if cursor else None)

    return r
