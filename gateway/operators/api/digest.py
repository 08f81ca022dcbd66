"""``/api/v1/polls/{poll}/digest?commune=`` (operator, admin): one commune's digest for its
local security committee (``gateway.operators.digest``), suppressed like an export. An
unknown poll or commune, or another region's commune (audited), is 404; a period that ends
before it starts 422."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from gateway.operators import digest
from gateway.operators.access import Areas, Role, require
from gateway.operators.api.deps import AppSettings, Conn, CurrentPrincipal, Rt
from gateway.operators.api.polls import Share
from gateway.operators.results import BadQuery, find_poll
from gateway.store.models import utcnow

router = APIRouter(prefix="/polls", tags=["digest"])


class Place(BaseModel):
    id: str
    name: str
    cercle: str
    cercle_name: str


class Period(BaseModel):
    since: str
    until: str


class Figures(BaseModel):
    n: int | None  # None: suppressed
    suppressed: bool
    percent: dict[str, Share] | None
    trust: Share | None  # "somewhat" or "a lot"


class Actor(BaseModel):
    question: str
    label: dict[str, str]  # language -> name of the actor
    current: Figures
    previous: Figures
    trust_change: float | None  # points, this period minus the previous


class Respondents(BaseModel):
    current: int | None
    previous: int | None


class Count(BaseModel):
    value: str
    label: dict[str, str]
    n: int | None
    suppressed: bool


class Reports(BaseModel):
    n: int | None
    by_category: list[Count]
    by_force: list[Count]


class Digest(BaseModel):
    poll: str
    k: int
    commune: Place
    period: Period
    previous: Period
    respondents: Respondents
    actors: list[Actor]
    reports: Reports


@router.get("/{poll}/digest", responses={
    404: {"description": "No such poll or commune, or a commune outside the caller's"},
    422: {"description": "A period that ends before it starts"}})
def get_digest(poll: str, commune: str, who: CurrentPrincipal, conn: Conn, rt: Rt,
               settings: AppSettings, since: datetime | None = None,
               until: datetime | None = None) -> Digest:
    """Trust per actor this period against the previous one of equal length (by default
    the last 30 days, then the 30 before), how many answered, and the reports received by
    coded category and force (counts only). Suppressed as an export is."""
    require(who, Role.operator)
    content = rt.engine.content
    found = find_poll(content, poll)
    try:
        figures = digest.digest(conn, who=who, areas=Areas.of(content.communes),
                                content=content, poll=found, commune=commune, since=since,
                                until=until, k=settings.min_cell, now=utcnow())
    except BadQuery as exc:
        raise HTTPException(422, str(exc)) from None
    return Digest.model_validate(figures)
