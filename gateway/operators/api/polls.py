"""``/api/v1/polls`` (operator, admin): the polls, and their results by group, once or
as a stream of Server-Sent Events (``gateway.operators.live``).

The figures are ``gateway.operators.results``'; this module only reads the request and
names the problems: an unknown poll is 404, an unknown question or dimension 422. Results
are read in a read-only transaction (``ReadConn``): on SQLite a long one never holds up a
USSD hop.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import Connection

from gateway.operators.access import Areas, NotFound, Principal, Role, require
from gateway.operators.api import sse
from gateway.operators.api.deps import AppSettings, CurrentPrincipal, Live, ReadConn, Reader, Rt
from gateway.operators.live import Figures
from gateway.operators.results import (
    BadQuery,
    check_dimensions,
    find_poll,
    fold_pending,
    polls,
    results,
)
from gateway.runtime import Runtime
from gateway.settings import Settings

router = APIRouter(prefix="/polls", tags=["polls"])

Dimension = Literal["cercle", "commune", "gender", "age_band", "displaced", "week", "campaign"]


class ValueOut(BaseModel):
    value: str
    label: dict[str, str]  # language -> text


class QuestionOut(BaseModel):
    question: str
    prompt: dict[str, str]
    values: list[ValueOut]


class PollOut(BaseModel):
    poll: str
    title: dict[str, str]
    flows: list[str]
    questions: list[QuestionOut]


class Share(BaseModel):
    """A percentage of the group's respondents, with its 95 % Wilson interval."""

    value: float
    low: float
    high: float


class Total(BaseModel):
    n: int | None  # None: fewer than k in the shared view
    counts: dict[str, int] | None
    percent: dict[str, Share] | None


class Row(BaseModel):
    group: dict[str, str | int | None]  # None: the question was not asked
    n: int | None
    counts: dict[str, int] | None
    percent: dict[str, Share] | None
    suppressed: bool
    small: bool | None = None  # exact figures only: the shared view would hide this group


class Results(BaseModel):
    poll: str
    question: str
    k: int
    total: Total
    rows: list[Row]


@router.get("")
def list_polls(who: CurrentPrincipal, rt: Rt) -> list[PollOut]:
    """Each poll the flows save, with its questions and their answer values."""
    require(who, Role.operator)
    return [PollOut.model_validate(p.as_json()) for p in polls(rt.engine.content)]


@router.get("/{poll}/results", response_model_exclude_unset=True, responses={
    404: {"description": "No such poll"},
    422: {"description": "An unknown question or dimension, or more than two"},
})
def poll_results(
    poll: str, who: Reader, conn: ReadConn, rt: Rt, settings: AppSettings,
    question: str, by: Annotated[list[Dimension] | None, Query()] = None,
    since: datetime | None = None, until: datetime | None = None, suppress: bool = False,
) -> Results:
    """Respondents to ``question`` in the caller's cercles (one counted answer per person:
    the latest), in total and by up to two of ``by``; ``since <= time < until`` (ISO 8601;
    without an offset, UTC). Groups under ``GATEWAY_MIN_CELL`` respondents are marked
    ``small``; ``suppress=true`` gives the shared view, where they are hidden with their
    complements."""
    values = _asked(rt, who, poll, question)
    fold_pending(rt.db)
    try:
        figures = _figures(conn, rt, settings, who, poll, question, values, by or [],
                           since, until, suppress)
    except BadQuery as exc:
        raise HTTPException(422, str(exc)) from None
    return Results.model_validate(figures)


@router.get("/{poll}/results/stream", response_class=sse.EventSourceResponse, responses={
    200: {"description": "Server-Sent Events: an event `results` (the results JSON) at "
          "once and whenever the figures change", "content": {"text/event-stream": {}}},
    404: {"description": "No such poll"},
    422: {"description": "An unknown question or dimension, or more than two"},
})
async def poll_results_stream(
    poll: str, who: Reader, rt: Rt, settings: AppSettings, live: Live, question: str,
    by: Annotated[list[Dimension] | None, Query()] = None,
    since: datetime | None = None, until: datetime | None = None, suppress: bool = False,
) -> sse.EventSourceResponse:
    """The results request above as a stream: an event ``results`` with the same JSON now,
    and again within two seconds whenever an answer (on any replica) changes it."""
    values = _asked(rt, who, poll, question)
    dims: list[str] = list(by or [])
    try:  # a bad request is a 422 now, not a stream that fails
        check_dimensions(dims, settings.min_cell)
    except BadQuery as exc:
        raise HTTPException(422, str(exc)) from None

    def compute() -> Figures:
        fold_pending(rt.db)
        with rt.db.reading() as conn:
            return _figures(conn, rt, settings, who, poll, question, values, dims, since,
                            until, suppress)

    key = ("results", poll, question, tuple(dims), since, until, suppress, who.role,
           who.cercles)
    return sse.stream(live, key, compute, event="results")


def _asked(rt: Runtime, who: Principal, poll: str, question: str) -> tuple[str, ...]:
    """The question's answer values; 403 for a role that may not read results, 404 for
    an unknown poll, 422 for a question it does not ask."""
    require(who, Role.operator)
    found = find_poll(rt.engine.content, poll)
    try:
        return found.question(question).value_ids
    except NotFound:
        raise HTTPException(422, f"poll {poll} has no question {question!r}") from None


def _figures(conn: Connection, rt: Runtime, settings: Settings, who: Principal, poll: str,
             question: str, values: tuple[str, ...], by: Sequence[str],
             since: datetime | None, until: datetime | None, suppress: bool) -> Figures:
    figures = results(conn, who=who, areas=Areas.of(rt.engine.content.communes), poll=poll,
                      question=question, values=values, by=by, since=since, until=until,
                      suppress=suppress, k=settings.min_cell, fold_changes=False)
    return Results.model_validate(figures).model_dump(exclude_unset=True, mode="json")
