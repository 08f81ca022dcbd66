"""``/api/v1/campaigns``: radio campaigns. Operators (and admins) make them within their
cercles; radio hosts read the ones they host: the on-air tally, once or as a stream.

The rules are ``gateway.operators.campaigns``'; here, the request and its refusals: a
body that does not validate 422, a code or keyword another campaign uses at the same
time 409, a cercle outside the caller's 403, another station's campaign 404 (audited).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from gateway.operators import campaigns
from gateway.operators.access import Areas
from gateway.operators.api import sse
from gateway.operators.api.deps import (
    AppSettings,
    Conn,
    CurrentPrincipal,
    Live,
    ReadConn,
    Reader,
    Rt,
)
from gateway.operators.api.reports import Body
from gateway.operators.live import Figures
from gateway.operators.results import fold_pending
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store.models import utcnow

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


class CampaignIn(Body):
    name: str
    station: str
    poll: str
    question: str
    keyword: str | None = None  # a neutral word (a brand or a number), texted by SMS
    service_code: str | None = None  # a USSD code such as *123*5#
    hosts: list[str] = Field(default_factory=list)  # user names of role radio
    starts_at: datetime
    ends_at: datetime
    cercles: list[str] | None = None  # default: the caller's (an admin's: every cercle)

    @field_validator("hosts", "cercles")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        for item in value or ():
            if len(item) > 64:
                raise ValueError("a name of at most 64 characters")
        return value


class CampaignOut(BaseModel):
    id: int
    name: str
    station: str
    poll: str
    question: str
    keyword: str | None  # as announced: upper case, accents folded
    service_code: str | None
    cercles: list[str]
    hosts: list[str]
    starts_at: str
    ends_at: str
    created_by: str
    created_at: str


class OnAirCampaign(CampaignOut):
    running: bool


class Languages(BaseModel):
    fr: str
    bm: str


class OnAir(BaseModel):
    campaign: OnAirCampaign
    question: str
    n: int | None  # None while fewer than GATEWAY_MIN_CELL have answered
    percent: dict[str, float] | None  # answer value -> % of n
    suppressed: bool
    sentence: Languages  # what the host reads out
    announce: Languages  # how listeners answer: the code to dial, the keyword to text
    updated_at: str


@contextmanager
def refusals() -> Iterator[None]:
    try:
        yield
    except campaigns.BadCampaign as exc:
        raise HTTPException(422, str(exc)) from None
    except campaigns.CampaignConflict as exc:
        raise HTTPException(409, str(exc)) from None


def words_of(rt: Runtime, settings: Settings) -> campaigns.Words:
    """What a campaign keyword and code may not be, in this deployment."""
    policy = rt.sms.policy
    reserved = policy.stop_words | policy.start_words | policy.erase_words | policy.yes_words
    return campaigns.Words.of(rt.engine.content, main_code=settings.ussd_code,
                              reserved=reserved)


@router.post("", status_code=201, responses={
    403: {"description": "A cercle outside the caller's, or a role that may not"},
    404: {"description": "No such poll"},
    409: {"description": "Another campaign uses this code or keyword at that time"},
    422: {"description": "A field that does not validate (named in the detail)"},
})
def create_campaign(body: CampaignIn, who: CurrentPrincipal, conn: Conn, rt: Rt,
                    settings: AppSettings) -> CampaignOut:
    """A campaign (operator, admin; audited): dialling ``service_code`` or texting
    ``keyword`` opens ``poll`` directly, and the answers that arrive that way between
    ``starts_at`` and ``ends_at`` count for it (``by=campaign``)."""
    content = rt.engine.content
    with refusals():
        made = campaigns.create(
            conn, who=who, content=content, words=words_of(rt, settings),
            known_cercles=Areas.of(content.communes).communes_of.keys(), name=body.name,
            station=body.station, poll=body.poll, question=body.question,
            keyword=body.keyword, service_code=body.service_code, hosts=body.hosts,
            starts_at=body.starts_at, ends_at=body.ends_at, cercles=body.cercles,
            now=utcnow())
    return CampaignOut.model_validate(made.as_json())


@router.get("")
def list_campaigns(who: Reader, conn: ReadConn) -> list[CampaignOut]:
    """The campaigns the caller may see, latest first: a radio host's own, an
    operator's within its cercles, every one for an admin."""
    return [CampaignOut.model_validate(c.as_json())
            for c in campaigns.list_campaigns(conn, who=who)]


@router.get("/{campaign_id}", responses={404: {"description": "No such campaign, or "
                                                               "not the caller's"}})
def get_campaign(campaign_id: int, who: Reader, conn: ReadConn) -> CampaignOut:
    return CampaignOut.model_validate(
        campaigns.get(conn, who=who, campaign_id=campaign_id).as_json())


def _onair(rt: Runtime, settings: Settings, campaign: campaigns.CampaignInfo) -> Figures:
    fold_pending(rt.db)
    with rt.db.reading() as conn:
        figures: dict[str, Any] = campaigns.onair(
            conn, campaign=campaign, content=rt.engine.content, k=settings.min_cell,
            now=utcnow())
    return OnAir.model_validate(figures).model_dump(mode="json")


@router.get("/{campaign_id}/onair", responses={404: {"description": "No such campaign, "
                                                                     "or not the caller's"}})
def onair(campaign_id: int, who: Reader, conn: ReadConn, rt: Rt,
          settings: AppSettings) -> OnAir:
    """The studio's tally: the answers that came through the campaign, always in the
    shared view (``suppressed`` under ``GATEWAY_MIN_CELL``), with the sentence to read
    out in French and Bambara."""
    campaign = campaigns.get(conn, who=who, campaign_id=campaign_id)
    return OnAir.model_validate(_onair(rt, settings, campaign))


@router.get("/{campaign_id}/onair/stream", response_class=sse.EventSourceResponse,
            responses={
                200: {"description": "Server-Sent Events: an event `onair` (the on-air "
                      "JSON) at once and whenever the tally changes",
                      "content": {"text/event-stream": {}}},
                404: {"description": "No such campaign, or not the caller's"}})
async def onair_stream(campaign_id: int, who: Reader, conn: ReadConn, rt: Rt,
                       settings: AppSettings, live: Live) -> sse.EventSourceResponse:
    """The on-air tally as a stream: now, and within two seconds of each vote."""
    campaign = await run_in_threadpool(campaigns.get, conn, who=who, campaign_id=campaign_id)
    return sse.stream(live, ("onair", campaign_id),
                      lambda: _onair(rt, settings, campaign), event="onair")
