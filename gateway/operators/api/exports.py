"""``/api/v1/exports``: streamed CSV (RFC 4180, UTF-8), each export audited. Cells a
spreadsheet would run are neutralised (``gateway/operators/exports.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from gateway.operators import audit, exports, reports
from gateway.operators.access import Areas, NotFound, Role, require
from gateway.operators.api.deps import AppSettings, Conn, CurrentPrincipal, Rt
from gateway.operators.api.polls import Dimension
from gateway.operators.api.reports import State, refusals
from gateway.operators.results import BadQuery, find_poll, results
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
    return _csv(exports.reports_csv(rt.db, who=who, vocab=vocab, chosen=chosen),
                "reports.csv")


def _csv(body: Iterator[bytes], filename: str) -> StreamingResponse:
    return StreamingResponse(
        body, media_type=exports.MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                 "Cache-Control": "no-store"})


@router.get("/results.csv", response_class=StreamingResponse, responses={
    200: {"content": {"text/csv": {}}, "description": "The total, then one row per group"},
    404: {"description": "No such poll"},
    422: {"description": "An unknown question or dimension, or more than two"}})
def results_csv(who: CurrentPrincipal, conn: Conn, rt: Rt, settings: AppSettings,
                poll: str, question: str,
                by: Annotated[list[Dimension] | None, Query()] = None,
                since: datetime | None = None, until: datetime | None = None,
                ) -> StreamingResponse:
    """A poll question's results in the caller's cercles, as ``GET
    /polls/{poll}/results`` gives them but always the shared view: groups under
    ``GATEWAY_MIN_CELL`` respondents are suppressed with their complements. Columns:
    ``level`` (total, group), each dimension, ``n``, ``suppressed``, and per answer value
    its count, percentage and 95 % interval."""
    require(who, Role.operator)
    found = find_poll(rt.engine.content, poll)
    try:
        asked = found.question(question)
    except NotFound:
        raise HTTPException(422, f"poll {poll} has no question {question!r}") from None
    dims = list(by or [])
    try:
        figures = results(conn, who=who, areas=Areas.of(rt.engine.content.communes),
                          poll=poll, question=question, values=asked.value_ids, by=dims,
                          since=since, until=until, suppress=True, k=settings.min_cell)
    except BadQuery as exc:
        raise HTTPException(422, str(exc)) from None
    audit.record(conn, actor=who.name, action="export.results", object_type="poll",
                 object_id=poll, details={
                     "question": question, "by": dims,
                     "since": since.isoformat() if since else None,
                     "until": until.isoformat() if until else None}, now=utcnow())
    return _csv(exports.results_csv(figures, dims), "results.csv")


@router.get("/answers.csv", response_class=StreamingResponse, responses={
    200: {"content": {"text/csv": {}}, "description": "One row per counted answer"},
    404: {"description": "No such poll"}})
def answers_csv(who: CurrentPrincipal, conn: Conn, rt: Rt, poll: str) -> StreamingResponse:
    """Admins: every counted answer to ``poll`` (each person's latest per question), one
    row each: ``id`` and ``respondent`` drawn afresh for every export (two exports cannot
    be joined on them), poll, question, answer, the UTC day, cercle, commune, gender, age
    band, displacement, campaign. No phone number, no pseudonym."""
    require(who)
    find_poll(rt.engine.content, poll)
    audit.record(conn, actor=who.name, action="export.answers", object_type="poll",
                 object_id=poll, details=None, now=utcnow())
    return _csv(exports.answers_csv(rt.db, poll=poll,
                                    areas=Areas.of(rt.engine.content.communes)),
                "answers.csv")
