"""``/api/v1/exports``: streamed CSV (RFC 4180, UTF-8), each export audited. Cells a
spreadsheet would run are neutralised (``gateway/operators/exports.py``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from gateway.operators import audit, exports, reports
from gateway.operators.access import require
from gateway.operators.api.deps import Conn, CurrentPrincipal, Rt
from gateway.operators.api.reports import State, refusals
from gateway.store.models import utcnow

router = APIRouter(prefix="/exports", tags=["exports"])


@router.get("/reports.csv", response_class=StreamingResponse, responses={
    200: {"content": {"text/csv": {}}, "description": "One row per report"}})
def reports_csv(who: CurrentPrincipal, conn: Conn, rt: Rt, status: State | None = None,
                cercle: str | None = None, commune: str | None = None,
                since: str | None = None, until: str | None = None) -> StreamingResponse:
    """The reports in the caller's cercles (the queue's filters), oldest first: id, date,
    channel, flow, state, each coded answer and its label, and the redacted text. Never
    the original text."""
    require(who, *reports.REVIEWERS)
    vocab = reports.vocabulary(rt.engine.content)
    with refusals():
        chosen = reports.filters(vocab, status=status, cercle=cercle, commune=commune,
                                 since=since, until=until)
    audit.record(conn, actor=who.name, action="export.reports", object_type="export",
                 object_id=None, details=chosen.details(), now=utcnow())
    return StreamingResponse(
        exports.reports_csv(rt.db, who=who, vocab=vocab, chosen=chosen),
        media_type=exports.MEDIA_TYPE,
        headers={"Content-Disposition": 'attachment; filename="reports.csv"',
                 "Cache-Control": "no-store"})
