"""The radio pages: the campaigns (list, and a form to make one) and the on-air page a
studio keeps on screen during the show.

The on-air page (``/dashboard/onair/{id}``) puts the show card first (the code and the
keyword to announce, what to say in French and Bambara), then the tally in type large
enough to read across a studio, and the sentence to read out. ``onair.js`` follows
``…/stream`` (Server-Sent Events over the dashboard session, from the process's live hub)
and updates the figures in place; without it the page shows the figures of its load. Every
figure is the shared view: nothing but "too few" under ``GATEWAY_MIN_CELL`` voters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.operators import campaigns
from gateway.operators.access import Principal, Role, require
from gateway.operators.api import sse
from gateway.operators.api.campaigns import words_of
from gateway.operators.dashboard.web import (
    PREFIX,
    Dashboard,
    Form,
    check_csrf,
    parse_local,
    read_form,
)
from gateway.operators.results import Poll, find_poll, fold_pending, polls
from gateway.store.models import utcnow

BASE = PREFIX + "/campaigns"
ONAIR = PREFIX + "/onair"
FIELDS = ("name", "station", "question", "keyword", "service_code", "hosts", "starts_at",
          "ends_at")


def router(dash: Dashboard) -> APIRouter:
    r = APIRouter()

    def listing(who: Principal) -> list[campaigns.CampaignInfo]:
        with dash.runtime().db.reading() as conn:
            return campaigns.list_campaigns(conn, who=who)

    def one(who: Principal, campaign_id: int) -> campaigns.CampaignInfo:
        with dash.runtime().db.reading() as conn:
            return campaigns.get(conn, who=who, campaign_id=campaign_id)

    def figures(campaign: campaigns.CampaignInfo) -> dict[str, Any]:
        rt = dash.runtime()
        fold_pending(rt.db)
        with rt.db.reading() as conn:
            return campaigns.onair(conn, campaign=campaign, content=rt.engine.content,
                                   k=rt.settings.min_cell, now=utcnow())

    async def page(request: Request, *, form: Form | None = None,
                   errors: dict[str, str] | None = None, status: int = 200) -> Response:
        session = await dash.signed_in(request)
        who = session.principal
        require(who, Role.operator, Role.radio)
        items = await run_in_threadpool(listing, who)
        poll = _poll(dash)
        questions = [(q.id, q.prompt.get("fr", q.id)) for q in poll.questions] \
            if poll is not None and who.role is not Role.radio else []
        now = datetime.now(UTC)
        return dash.render(
            request, "campaigns.html", session=session, status=status, items=items,
            now=now, may_create=who.role is not Role.radio, questions=questions,
            form={name: (form.get(name) if form else "") for name in FIELDS},
            errors=errors or {})

    @r.get("/campaigns")
    async def list_page(request: Request) -> Response:
        return await page(request)

    @r.post("/campaigns")
    async def create(request: Request) -> Response:
        session = await dash.signed_in(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        who = session.principal
        require(who, Role.operator)
        errors: dict[str, str] = {}
        when: dict[str, datetime | None] = {}
        for name in ("starts_at", "ends_at"):
            try:
                when[name] = parse_local(form.get(name))
            except ValueError:
                when[name] = None
            if when[name] is None:
                errors[name] = f"field.{name}"
        if errors:
            return await page(request, form=form, errors=errors, status=422)
        rt = dash.runtime()
        content = rt.engine.content
        poll = _poll(dash)

        def make() -> campaigns.CampaignInfo:
            with rt.db.transaction() as conn:
                return campaigns.create(
                    conn, who=who, content=content, words=words_of(rt, rt.settings),
                    known_cercles=dash.areas.communes_of.keys(), name=form.get("name"),
                    station=form.get("station"), poll=poll.id if poll else "",
                    question=form.get("question") or "army", keyword=form.get("keyword"),
                    service_code=form.get("service_code"),
                    hosts=[h for h in form.get("hosts").replace(",", " ").split() if h],
                    starts_at=when["starts_at"] or utcnow(),
                    ends_at=when["ends_at"] or utcnow(), now=utcnow())

        try:
            made = await run_in_threadpool(make)
        except (campaigns.BadCampaign, campaigns.CampaignConflict) as exc:
            return await page(request, form=form, errors={"campaign": str(exc)},
                              status=409 if isinstance(exc, campaigns.CampaignConflict)
                              else 422)
        return dash.redirect(f"{ONAIR}/{made.id}")

    @r.get("/onair/{campaign_id}")
    async def onair(request: Request, campaign_id: int) -> Response:
        session = await dash.signed_in(request)
        campaign = await run_in_threadpool(one, session.principal, campaign_id)
        shown = await run_in_threadpool(figures, campaign)
        content = dash.runtime().engine.content
        asked = find_poll(content, campaign.poll).question(campaign.question)
        return dash.render(
            request, "onair.html", session=session, c=campaign, f=shown,
            prompt=asked.prompt, values=[(v.value, v.label) for v in asked.values],
            stream=f"{ONAIR}/{campaign.id}/stream")

    @r.get("/onair/{campaign_id}/stream")
    async def stream(request: Request, campaign_id: int) -> Response:
        session = await dash.signed_in(request)
        campaign = await run_in_threadpool(one, session.principal, campaign_id)
        return sse.stream(dash.runtime().live_hub(), ("onair", campaign_id),
                          lambda: figures(campaign), event="onair")

    return r


def _poll(dash: Dashboard) -> Poll | None:
    """The poll a campaign asks (the first the flows save; the API may name another)."""
    found = polls(dash.runtime().engine.content)
    return found[0] if found else None
