"""``/api/v1/polls`` (operator, admin): the polls, and their results by group.

The figures are ``gateway.operators.results``'; this module only reads the request and
names the problems: an unknown poll is 404, an unknown question or dimension 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from gateway.operators.access import Areas, NotFound, Role, require
from gateway.operators.api.deps import AppSettings, Conn, CurrentPrincipal, Rt
from gateway.operators.results import BadQuery, find_poll, polls, results

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
    poll: str, who: CurrentPrincipal, conn: Conn, rt: Rt, settings: AppSettings,
    question: str, by: Annotated[list[Dimension] | None, Query()] = None,
    since: datetime | None = None, until: datetime | None = None, suppress: bool = False,
    wave: Annotated[int | None, Query(ge=1)] = None,
) -> Results:
    """Respondents to ``question`` in the caller's cercles (one counted answer per person:
    the latest), in total and by up to two of ``by``; ``since <= time < until`` (ISO 8601;
    without an offset, UTC). Groups under ``GATEWAY_MIN_CELL`` respondents are marked
    ``small``; ``suppress=true`` gives the shared view, where they are hidden with their
    complements. ``wave``: only the answers given under that version of the poll's flow
    (each published version of a poll starts a wave)."""
    require(who, Role.operator)
    found = find_poll(rt.engine.content, poll)
    try:
        asked = found.question(question)
    except NotFound:
        raise HTTPException(422, f"poll {poll} has no question {question!r}") from None
    try:
        figures = results(conn, who=who, areas=Areas.of(rt.engine.content.communes),
                          poll=poll, question=question, values=asked.value_ids,
                          by=by or [], since=since, until=until, suppress=suppress,
                          k=settings.min_cell, wave=wave)
    except BadQuery as exc:
        raise HTTPException(422, str(exc)) from None
    return Results.model_validate(figures)
