"""``/api/v1/polls/{poll}/inclusion`` (operator, admin): whose voices a poll hears per
cercle against the targets set (``gateway.operators.inclusion``); ``PUT
…/inclusion/targets/{cercle}`` sets a cercle's targets. An unknown poll or cercle, or a
cercle outside the caller's scope (audited), is 404; an unknown question 422."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from gateway.operators import inclusion
from gateway.operators.access import Areas, NotFound, Role, require
from gateway.operators.api.deps import AppSettings, Conn, CurrentPrincipal, Rt
from gateway.operators.api.polls import Share
from gateway.operators.results import find_poll
from gateway.store.models import utcnow

router = APIRouter(prefix="/polls", tags=["inclusion"])

Percent = Annotated[int, Field(ge=0, le=100)]


class TargetsIn(BaseModel):
    """Whole percentages of a cercle's respondents; null or absent: no target."""

    model_config = {"extra": "forbid"}

    women: Percent | None = None
    young: Percent | None = Field(None, description="aged 15-24")
    displaced: Percent | None = None


class Measure(BaseModel):
    target: int | None
    count: int | None  # None: hidden in the shared view, or nobody answered
    percent: Share | None
    met: bool | None  # None: no target, or nothing to compare
    needed: int | None  # more such respondents that would meet the target


class Cercle(BaseModel):
    cercle: str
    n: int | None
    suppressed: bool
    measures: dict[str, Measure]  # women, young, displaced
    small: bool | None = None


class Inclusion(BaseModel):
    poll: str
    question: str
    k: int
    cercles: list[Cercle]


@router.put("/{poll}/inclusion/targets/{cercle}", responses={
    404: {"description": "No such poll or cercle, or a cercle outside the caller's"}})
def put_targets(poll: str, cercle: str, body: TargetsIn, who: CurrentPrincipal, conn: Conn,
                rt: Rt) -> TargetsIn:
    """Set ``poll``'s targets in ``cercle`` (replacing the ones it had), audited."""
    require(who, Role.operator)
    find_poll(rt.engine.content, poll)
    inclusion.set_targets(conn, who=who, areas=Areas.of(rt.engine.content.communes),
                          poll=poll, cercle=cercle, now=utcnow(),
                          targets=inclusion.Targets(body.women, body.young, body.displaced))
    return body


@router.get("/{poll}/inclusion", response_model_exclude_unset=True, responses={
    404: {"description": "No such poll"}, 422: {"description": "An unknown question"}})
def get_inclusion(poll: str, who: CurrentPrincipal, conn: Conn, rt: Rt,
                  settings: AppSettings, question: str | None = None,
                  suppress: bool = False) -> Inclusion:
    """Per cercle of the caller's: respondents, and for women, the young (15-24) and the
    displaced their count and share (95 % interval) against the target, whether it is met
    and how many more would meet it. Cercles under ``GATEWAY_MIN_CELL`` respondents are
    marked ``small``; ``suppress=true`` gives the shared view."""
    require(who, Role.operator)
    found = find_poll(rt.engine.content, poll)
    if question is not None:
        try:
            found.question(question)
        except NotFound:
            raise HTTPException(422, f"poll {poll} has no question {question!r}") from None
    figures = inclusion.inclusion(conn, who=who, areas=Areas.of(rt.engine.content.communes),
                                  poll=found, question=question, suppress=suppress,
                                  k=settings.min_cell)
    return Inclusion.model_validate(figures)
