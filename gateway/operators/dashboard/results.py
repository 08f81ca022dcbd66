"""The poll result pages (operators, admins): trust per actor as bars, a table per commune,
a trend by week, for everyone or one group of respondents (gender, age band,
displacement), over a period; the inclusion monitor; the printable commune digest.

Figures come from ``gateway.operators.trust``, ``inclusion`` and ``digest`` (results'
scope and suppression): the pages show exact figures with small cells marked, or the shared
view (``?shared=1``) with them hidden. Charts are drawn on the server
(``gateway.operators.charts``): inline SVG on the page, and each downloadable as SVG or PNG
for the restitution workshops, always in the shared view (a chart leaves the gateway), each
download audited (``export.chart``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.operators import audit, charts, digest, exports, inclusion, trust
from gateway.operators.access import NotFound, Principal, Role, require
from gateway.operators.dashboard import strings
from gateway.operators.dashboard.seams import Session
from gateway.operators.dashboard.web import PREFIX, Dashboard, check_csrf, read_form
from gateway.operators.results import Poll, find_poll, polls, results
from gateway.operators.trust import Only, Share
from gateway.store.models import utcnow

BASE = PREFIX + "/results"
CHARTS = ("actors", "communes", "weeks")
ONLY_CHOICES = ("gender:woman", "gender:man", "age_band:15-24", "age_band:25-34",
                "age_band:35-49", "age_band:50+", "displaced:yes", "displaced:no")


@dataclass(frozen=True)
class Query:
    """What a result page shows: a question, one group or everyone, a period, a view."""

    question: str
    only: Only | None
    since: date | None
    until: date | None  # the last day included
    shared: bool

    @classmethod
    def of(cls, request: Request, poll: Poll, actors: Sequence[str]) -> Query:
        params = request.query_params
        question = params.get("question", "")
        if question not in actors:
            question = actors[0]
        return cls(question, Only.parse(params.get("only")), _day(params.get("since")),
                   _day(params.get("until")), params.get("shared") == "1")

    @property
    def start(self) -> datetime | None:
        return None if self.since is None else datetime.combine(self.since, time(), UTC)

    @property
    def end(self) -> datetime | None:
        if self.until is None:
            return None
        return datetime.combine(self.until + timedelta(days=1), time(), UTC)

    def params(self, **changed: Any) -> str:
        values = {"question": self.question, "only": str(self.only) if self.only else "",
                  "since": self.since.isoformat() if self.since else "",
                  "until": self.until.isoformat() if self.until else "",
                  "shared": "1" if self.shared else ""} | changed
        return urlencode({k: v for k, v in values.items() if v})


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def chart_words(t: Callable[..., str], k: int) -> charts.Words:
    return charts.Words(suppressed=t("results.suppressed"), small=t("results.small_note", k=k),
                        interval=t("results.interval_note"), band=t("results.band_note"),
                        nobody=t("results.nobody"))


def points(shares: Sequence[Share], label: Callable[[Any], str]) -> list[charts.Point]:
    return [charts.Point(label(s.key), s.value, s.low, s.high, s.n, s.small, s.suppressed)
            for s in shares]


def router(dash: Dashboard) -> APIRouter:
    r = APIRouter()

    def operator(session: Session) -> Principal:
        who = session.principal
        require(who, Role.operator)
        return who

    def poll_of(poll_id: str) -> tuple[Poll, list[str]]:
        found = find_poll(dash.runtime().engine.content, poll_id)
        return found, digest.actor_questions(found)

    def names(lang: str) -> Callable[[Any], str]:
        """The label of an actor (its force's name), a commune, a cercle or a week."""
        content = dash.runtime().engine.content
        places = {c.id: c.name for c in content.communes.cercles}
        places |= {m.id: m.name for c in content.communes.cercles for m in c.communes}
        forces = digest.report_labels(content, "force")
        t = strings.translator(lang)

        def label(key: Any) -> str:
            if key is None:
                return t("results.unknown_place")
            if key == "other":
                return t("results.other_place")
            if key in forces:
                return forces[key].get(lang) or forces[key].get("fr", str(key))
            return places.get(str(key), str(key))

        return label

    def figures(who: Principal, poll: Poll, actors: list[str], q: Query,
                shared: bool) -> dict[str, list[Share]]:
        k = dash.settings.min_cell
        common: dict[str, Any] = {"who": who, "areas": dash.areas, "poll": poll,
                                  "only": q.only, "since": q.start, "until": q.end,
                                  "suppress": shared, "k": k}
        with dash.runtime().db.transaction() as conn:
            return {
                "actors": trust.per_actor(conn, actors=actors, **common),
                "communes": trust.per_group(conn, question=q.question, by="commune",
                                            **common),
                "weeks": trust.per_group(conn, question=q.question, by="week", **common),
            }

    def svg(chart: str, found: dict[str, list[Share]], poll: Poll, q: Query,
            lang: str) -> str:
        t = strings.translator(lang)
        label = names(lang)
        words = chart_words(t, dash.settings.min_cell)
        group = t(f"only.{q.only}") if q.only else t("only.everyone")
        actor = label(q.question)
        if chart == "actors":
            return charts.bars(t("results.chart.actors", group=group),
                               points(found["actors"], label), words=words)
        if chart == "communes":
            return charts.bars(t("results.chart.communes", actor=actor, group=group),
                               points(found["communes"], label), words=words)
        return charts.trend(t("results.chart.weeks", actor=actor, group=group),
                            points(found["weeks"], str), words=words)

    def first_poll(page: str) -> Callable[[Request], Awaitable[Response]]:
        async def go(request: Request) -> Response:
            session = await dash.signed_in(request)
            operator(session)
            found = polls(dash.runtime().engine.content)
            if not found:
                raise NotFound("no poll")
            return dash.redirect(f"{PREFIX}/{page}/{found[0].id}")

        return go

    for page_name in ("results", "inclusion", "digest"):  # the first poll's page
        r.add_api_route(f"/{page_name}", first_poll(page_name), methods=["GET"])

    @r.get("/results/{poll_id}")
    async def page(request: Request, poll_id: str) -> Response:
        session = await dash.signed_in(request)
        who = operator(session)
        poll, actors = poll_of(poll_id)
        q = Query.of(request, poll, actors)
        found = await run_in_threadpool(figures, who, poll, actors, q, q.shared)
        lang, _ = dash.language(request)
        label = names(lang)
        scale = {v.value: v.label.get(lang) or v.label.get("fr", v.value)
                 for v in poll.question(q.question).values}
        inline = {chart: Markup(svg(chart, found, poll, q, lang)) for chart in CHARTS}  # noqa: S704 - charts escape every text they draw
        return dash.render(
            request, "results/page.html", session=session, poll=poll, actors=actors, q=q,
            found=found, inline=inline, label=label, only_choices=ONLY_CHOICES, scale=scale,
            k=dash.settings.min_cell, base=f"{BASE}/{poll.id}",
            csv=f"{BASE}/{poll.id}/results.csv?{q.params()}")

    @r.get("/results/{poll_id}/results.csv")
    async def results_csv(request: Request, poll_id: str) -> Response:
        """``results.csv`` of the page's question by commune (and by the page's group,
        when it keeps to one), as the API's export: the shared view, audited."""
        session = await dash.signed_in(request)
        who = operator(session)
        poll, actors = poll_of(poll_id)
        q = Query.of(request, poll, actors)
        dims = ["commune", *([q.only.dimension] if q.only else [])]

        def read() -> dict[str, Any]:
            with dash.runtime().db.transaction() as conn:
                found = results(conn, who=who, areas=dash.areas, poll=poll.id,
                                question=q.question,
                                values=poll.question(q.question).value_ids, by=dims,
                                since=q.start, until=q.end, suppress=True,
                                k=dash.settings.min_cell)
                audit.record(conn, actor=who.name, action="export.results",
                             object_type="poll", object_id=poll.id, now=utcnow(), details={
                                 "question": q.question, "by": dims,
                                 "since": q.start.isoformat() if q.start else None,
                                 "until": q.end.isoformat() if q.end else None})
                return found

        found = await run_in_threadpool(read)
        return StreamingResponse(
            exports.results_csv(found, dims), media_type=exports.MEDIA_TYPE,
            headers={"Content-Disposition": 'attachment; filename="results.csv"'})

    @r.get("/results/{poll_id}/charts/{name}")
    async def download(request: Request, poll_id: str, name: str) -> Response:
        session = await dash.signed_in(request)
        who = operator(session)
        chart, _, kind = name.partition(".")
        if chart not in CHARTS or kind not in ("svg", "png"):
            raise NotFound(name)
        poll, actors = poll_of(poll_id)
        q = Query.of(request, poll, actors)
        lang, _ = dash.language(request)

        def drawn() -> str:
            found = figures(who, poll, actors, q, True)  # a chart that leaves: shared view
            with dash.runtime().db.transaction() as conn:
                audit.record(conn, actor=who.name, action="export.chart",
                             object_type="poll", object_id=poll.id, now=utcnow(),
                             details={"chart": chart, "format": kind,
                                      "question": q.question,
                                      "only": str(q.only) if q.only else None})
            return svg(chart, found, poll, q, lang)

        drawing = await run_in_threadpool(drawn)
        filename = f"{poll.id}-{chart}-{q.question}.{kind}"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        if kind == "svg":
            return Response(drawing, media_type="image/svg+xml; charset=utf-8",
                            headers=headers)
        try:
            body = await run_in_threadpool(charts.png, drawing)
        except charts.PngUnavailable:
            return dash.render(request, "error.html", session=session, status=503,
                               title_key="error.not_ready", body_key="results.png_missing")
        return Response(body, media_type="image/png", headers=headers)

    # -- the inclusion monitor -----------------------------------------------------------

    @r.get("/inclusion/{poll_id}")
    async def inclusion_page(request: Request, poll_id: str) -> Response:
        session = await dash.signed_in(request)
        who = operator(session)
        poll, _ = poll_of(poll_id)

        def read() -> dict[str, Any]:
            with dash.runtime().db.transaction() as conn:
                return inclusion.inclusion(conn, who=who, areas=dash.areas, poll=poll,
                                           k=dash.settings.min_cell)

        found = await run_in_threadpool(read)
        lang, _ = dash.language(request)
        return dash.render(request, "results/inclusion.html", session=session, poll=poll,
                           found=found, lacking=inclusion.lacking(found), label=names(lang),
                           measures=list(inclusion.MEASURES), k=dash.settings.min_cell,
                           saved=request.query_params.get("saved") == "1")

    @r.post("/inclusion/{poll_id}")
    async def set_targets(request: Request, poll_id: str) -> Response:
        session = await dash.signed_in(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        who = operator(session)
        poll, _ = poll_of(poll_id)

        def percent(text: str) -> int | None:
            text = text.strip().rstrip("%").strip()
            if not text:
                return None
            value = int(text)
            if not 0 <= value <= 100:
                raise ValueError(text)
            return value

        def write() -> None:
            now = utcnow()
            with dash.runtime().db.transaction() as conn:
                current = inclusion.targets_of(conn, poll=poll.id)
                for cercle in form.all("cercle"):
                    wanted = inclusion.Targets(
                        *(percent(form.get(f"{m}_{cercle}")) for m in inclusion.MEASURES))
                    if wanted != current.get(cercle, inclusion.Targets()):
                        inclusion.set_targets(conn, who=who, areas=dash.areas, poll=poll.id,
                                              cercle=cercle, targets=wanted, now=now)

        try:
            await run_in_threadpool(write)
        except ValueError:
            return dash.render(request, "error.html", session=session, status=400,
                               title_key="error.bad_request", body_key="inclusion.bad_target")
        return dash.redirect(f"{PREFIX}/inclusion/{poll.id}?saved=1")

    # -- the commune digest --------------------------------------------------------------

    @r.get("/digest/{poll_id}")
    async def digest_page(request: Request, poll_id: str) -> Response:
        session = await dash.signed_in(request)
        who = operator(session)
        poll, _ = poll_of(poll_id)
        commune = request.query_params.get("commune", "")
        since = _day(request.query_params.get("since"))
        until = _day(request.query_params.get("until"))
        content = dash.runtime().engine.content
        choices = [(c, [(m.id, m.name) for m in c.communes]) for c in content.communes.cercles
                   if who.everywhere or c.id in who.cercles]
        sheet = None
        if commune:
            def read() -> dict[str, Any]:
                with dash.runtime().db.transaction() as conn:
                    return digest.digest(
                        conn, who=who, areas=dash.areas, content=content, poll=poll,
                        commune=commune,
                        since=datetime.combine(since, time(), UTC) if since else None,
                        until=(datetime.combine(until + timedelta(days=1), time(), UTC)
                               if until else None),
                        k=dash.settings.min_cell, now=utcnow())

            sheet = await run_in_threadpool(read)
        lang, _ = dash.language(request)
        return dash.render(request, "results/digest.html", session=session, poll=poll,
                           choices=choices, commune=commune, sheet=sheet, label=names(lang),
                           since=since.isoformat() if since else "",
                           until=until.isoformat() if until else "",
                           day=_shown_day, k=dash.settings.min_cell)

    return r


def _shown_day(iso: str, *, last: bool = False) -> str:
    """A period bound as a day (dd/mm/yyyy); ``last``: the day before an exclusive end."""
    at = datetime.fromisoformat(iso)
    if last:
        at -= timedelta(microseconds=1)
    return at.strftime("%d/%m/%Y")
