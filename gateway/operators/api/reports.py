"""``/api/v1/reports`` (reviewer, admin): the queue, one report, its states, notes,
assignee, redaction and referrals. The rules are in ``gateway/operators/reports.py`` and
``referrals.py``; a report of another region answers 404 exactly like a missing one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.operators import referrals, reports
from gateway.operators.access import MAX_ID, require
from gateway.operators.api.deps import Conn, CurrentPrincipal, Rt
from gateway.store.models import utcnow

router = APIRouter(prefix="/reports", tags=["reports"])

ReportId = Annotated[int, Path(ge=1, le=MAX_ID)]
State = Literal["new", "reviewed", "referred", "closed"]


@contextmanager
def refusals() -> Iterator[None]:
    """The report rules' refusals as HTTP answers: Invalid -> 422, Conflict -> 409."""
    try:
        yield
    except reports.Invalid as exc:
        raise HTTPException(422, str(exc)) from None
    except reports.Conflict as exc:
        raise HTTPException(409, str(exc)) from None


class Body(BaseModel):
    """A request body: unknown fields refused (a NUL character never gets this far:
    ``no_nul``)."""

    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    value: str
    label: str | None  # from the French catalog; None for a value no catalog names


class ReportItem(BaseModel):
    id: int
    created_at: str
    channel: str
    flow: str
    answers: dict[str, Answer]
    status: State
    assignee: str | None
    has_text: bool  # typed text is there to open (on the report's own page)
    text_erased: bool  # there was typed text; the reporter's erasure or retention took it
    redacted: bool  # a reviewer wrote the redacted text
    # How many reports the same (pseudonymous) reporter filed in the last seven days, of
    # those the caller may see; null once the reporter erased their data. Never who.
    reporter_week_count: int | None


class ReportPage(BaseModel):
    items: list[ReportItem]
    next: int | None  # pass as `cursor` for the next (older) page
    # Admins: reports refused by the per-reporter limit (GATEWAY_REPORT_LIMIT_HOUR/_DAY),
    # acknowledged and not kept, since the start; null for reviewers (a count of every
    # region's).
    limited: int | None = None


class NoteOut(BaseModel):
    id: int
    at: str
    author: str
    text: str


class HistoryEntry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    at: str
    actor: str
    action: str
    from_: str | None = Field(None, alias="from")
    to: str | None
    ref: str | None  # the partner or the account the entry names
    note: str | None


class ReferralOut(BaseModel):
    id: int
    report: int
    partner: str
    status: Literal["queued", "sending", "delivered", "failed"]
    attempts: int
    created_at: str
    created_by: str
    delivered_at: str | None
    last_error: str | None


class ReportDetail(ReportItem):
    text: str | None  # opened for this view only; each opening is in the audit log
    redacted_text: str | None
    cercle: str | None
    commune: str | None
    moves: list[State]  # the states it may move to now
    notes: list[NoteOut]
    history: list[HistoryEntry]
    referrals: list[ReferralOut]


class MoveIn(Body):
    to: State
    note: str | None = None


class StatusOut(BaseModel):
    id: int
    status: State
    moves: list[State]


class NoteIn(Body):
    text: str


class RedactionIn(Body):
    text: str


class RedactionOut(BaseModel):
    id: int
    redacted_text: str


class AssigneeIn(Body):
    assignee: str | None  # an account name; null takes the report back


class AssigneeOut(BaseModel):
    id: int
    assignee: str | None


class ReferralIn(Body):
    partner: str  # a partner's name (GET /api/v1/partners)


@router.get("")
def list_reports(who: CurrentPrincipal, conn: Conn, rt: Rt,
                 status: State | None = None, cercle: str | None = None,
                 commune: str | None = None, since: str | None = None,
                 until: str | None = None,
                 cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 limit: Annotated[int, Query(ge=1, le=reports.MAX_PAGE)] = reports.PAGE,
                 ) -> ReportPage:
    """The reports in the caller's cercles, newest first. `since`/`until`: a date
    (`2026-12-01`, until included) or a time with its offset. A cercle or commune outside
    the caller's scope finds nothing."""
    require(who, *reports.REVIEWERS)
    vocab = reports.vocabulary(rt.engine.content)
    with refusals():
        chosen = reports.filters(vocab, status=status, cercle=cercle, commune=commune,
                                 since=since, until=until)
    page = reports.queue(conn, who=who, vocab=vocab, chosen=chosen, cursor=cursor, limit=limit,
                         now=utcnow())
    return ReportPage.model_validate({
        "items": page.items, "next": page.next,
        "limited": reports.limited(conn) if who.everywhere else None})


@router.get("/{report_id}")
def one_report(report_id: ReportId, who: CurrentPrincipal, conn: Conn, rt: Rt) -> ReportDetail:
    """One report, with its typed text opened for this view (audited), the redacted
    text, notes, history and referrals. The text is the resident's own words: data, to be
    shown as inert text."""
    require(who, *reports.REVIEWERS)
    found = reports.open_report(conn, who=who, vocab=reports.vocabulary(rt.engine.content),
                                keys=rt.keys, report_id=report_id, now=utcnow())
    return ReportDetail.model_validate(found)


@router.post("/{report_id}/transitions", responses={
    409: {"description": "Not a move from the report's state; the detail names the allowed "
                         "moves"}})
def transition(report_id: ReportId, body: MoveIn, who: CurrentPrincipal, conn: Conn,
               rt: Rt) -> StatusOut:
    """new -> reviewed -> referred -> closed, or reviewed -> closed; with an optional
    note."""
    require(who, *reports.REVIEWERS)
    with refusals():
        status = reports.move(conn, who=who, areas=reports.vocabulary(rt.engine.content).areas,
                              report_id=report_id, to=body.to, note=body.note, now=utcnow())
    return StatusOut.model_validate({"id": report_id, "status": status,
                                     "moves": list(reports.MOVES[status])})


@router.post("/{report_id}/notes", status_code=201)
def add_note(report_id: ReportId, body: NoteIn, who: CurrentPrincipal, conn: Conn,
             rt: Rt) -> NoteOut:
    """A reviewer's note (up to 2,000 characters, no phone number)."""
    require(who, *reports.REVIEWERS)
    with refusals():
        note = reports.add_note(conn, who=who,
                                areas=reports.vocabulary(rt.engine.content).areas,
                                report_id=report_id, text=body.text, now=utcnow())
    return NoteOut.model_validate(note)


@router.put("/{report_id}/redaction")
def redact(report_id: ReportId, body: RedactionIn, who: CurrentPrincipal, conn: Conn,
           rt: Rt) -> RedactionOut:
    """The redacted text: the only text referrals and exports carry (up to 1,000
    characters, no phone number; empty: nothing of the text leaves)."""
    require(who, *reports.REVIEWERS)
    with refusals():
        text = reports.redact(conn, who=who, areas=reports.vocabulary(rt.engine.content).areas,
                              report_id=report_id, text=body.text, now=utcnow())
    return RedactionOut(id=report_id, redacted_text=text)


@router.put("/{report_id}/assignee")
def assign(report_id: ReportId, body: AssigneeIn, who: CurrentPrincipal, conn: Conn,
           rt: Rt) -> AssigneeOut:
    """Give the report to a reviewer who covers its cercle (or an admin); null: nobody."""
    require(who, *reports.REVIEWERS)
    with refusals():
        name = reports.assign(conn, who=who, areas=reports.vocabulary(rt.engine.content).areas,
                              report_id=report_id, assignee=body.assignee, now=utcnow())
    return AssigneeOut(id=report_id, assignee=name)


@router.post("/{report_id}/referrals", status_code=201, responses={
    409: {"description": "The report is not reviewed, or already referred to that partner"},
    422: {"description": "No such partner"}})
def refer(report_id: ReportId, body: ReferralIn, who: CurrentPrincipal, conn: Conn,
          rt: Rt) -> ReferralOut:
    """Send the report to a partner: its coded answers and redacted text only, never the
    original. Queued and delivered by the worker (retried until the partner accepts it,
    never twice after); a reviewed report becomes `referred`."""
    require(who, *reports.REVIEWERS)
    with refusals():
        made = referrals.refer(conn, who=who,
                               areas=reports.vocabulary(rt.engine.content).areas,
                               report_id=report_id, partner=body.partner, now=utcnow())
    return ReferralOut.model_validate(made)
