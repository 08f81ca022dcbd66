"""The reviewers' pages: the queue of reports in their cercles, and one report's page.

The queue filters by state, cercle, commune and date, pages by cursor (older reports), and
shows how many reports each (pseudonymous) reporter filed in the last seven days, never who.

A report's page opens the typed text for this view (audited by ``reports.open_report``,
like the API) and shows it as inert text: autoescaped, in a ``<pre>``, under the strict CSP.
Beside it, the redaction editor (the only text that ever leaves); the state buttons offer
only the moves allowed from where the report is; notes, assignment, and referral to a
partner after a confirmation page that shows exactly what the partner will receive.

The rules are ``gateway/operators/reports.py`` and ``referrals.py``; every form posts
here with its CSRF token and comes back to the report's page (post, redirect, get).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.operators import accounts, referrals, reports
from gateway.operators.access import MAX_ID, Principal, Role, require, visible_areas
from gateway.operators.dashboard.seams import Session
from gateway.operators.dashboard.web import PREFIX, Dashboard, check_csrf, read_form
from gateway.store.models import utcnow

BASE = PREFIX + "/reports"
T = TypeVar("T")


def _filters(request: Request) -> dict[str, str]:
    """The queue's filters as typed (empty ones left out)."""
    wanted = ("status", "cercle", "commune", "since", "until")
    return {k: v.strip() for k in wanted if (v := request.query_params.get(k, "")).strip()}


def _query(values: dict[str, Any]) -> str:
    return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def router(dash: Dashboard) -> APIRouter:
    r = APIRouter()

    async def reviewer(request: Request) -> Session:
        session = await dash.signed_in(request)
        require(session.principal, *reports.REVIEWERS)
        return session

    async def in_db(work: Callable[[Any], T]) -> T:
        rt = dash.runtime()

        def run() -> T:
            with rt.db.transaction() as conn:
                return work(conn)

        return await run_in_threadpool(run)

    def vocab() -> reports.Vocabulary:
        return reports.vocabulary(dash.runtime().engine.content)

    def cercles_of(who: Principal) -> list[tuple[str, str, list[tuple[str, str]]]]:
        """(cercle id, name, [(commune id, name)]) of the caller's scope, for the filters."""
        visible = visible_areas(who, vocab().areas)
        return [(c.id, c.name, [(m.id, m.name) for m in c.communes])
                for c in dash.runtime().engine.content.communes.cercles
                if visible is None or c.id in visible]

    @r.get("/reports")
    async def queue(request: Request) -> Response:
        session = await reviewer(request)
        who = session.principal
        typed = _filters(request)
        if "limit" in request.query_params:  # kept from page to page
            typed["limit"] = request.query_params["limit"][:3]
        cursor_text = request.query_params.get("cursor", "")
        cursor = int(cursor_text) if cursor_text.isdigit() and 0 < int(cursor_text) <= MAX_ID \
            else None
        limit_text = request.query_params.get("limit", "")
        limit = min(int(limit_text), reports.MAX_PAGE) if limit_text.isdigit() and \
            int(limit_text) > 0 else reports.PAGE
        words = vocab()
        error = None
        try:
            chosen = reports.filters(words, **{k: v for k, v in typed.items()
                                               if k != "limit"})
        except reports.Invalid as exc:
            chosen, error = reports.Filters(), str(exc)

        def read(conn: Any) -> tuple[reports.Page, int | None]:
            page = reports.queue(conn, who=who, vocab=words, chosen=chosen, cursor=cursor,
                                 limit=limit, now=utcnow())
            return page, (reports.limited(conn) if who.everywhere else None)

        page, limited = await in_db(read)
        return dash.render(
            request, "reports/queue.html", session=session, items=page.items,
            typed=typed, error=error, states=reports.STATES, cercles=cercles_of(who),
            limited=limited, place=words.place_names,
            next_url=f"{BASE}?{_query({**typed, 'cursor': page.next})}" if page.next else None,
            first_url=f"{BASE}?{_query(typed)}" if cursor else None)

    def report_page(request: Request, session: Session, found: dict[str, Any], *,
                    partners: list[referrals.PartnerInfo], assignees: list[str],
                    errors: dict[str, str] | None = None, done: str | None = None,
                    status: int = 200) -> Response:
        return dash.render(
            request, "reports/report.html", session=session, r=found,
            place=vocab().place_names, partners=[p for p in partners if not p.disabled],
            assignees=assignees, errors=errors or {}, done=done, status=status)

    def assignable(conn: Any, row_area: str | None) -> list[str]:
        """Who may be given the report: active reviewers who see its place, and admins."""
        areas = vocab().areas
        out = []
        for info in accounts.list_accounts(conn):
            if info.disabled or info.role not in (Role.reviewer, Role.admin):
                continue
            seen = visible_areas(info.principal, areas)
            if seen is None or (row_area is not None and row_area in seen):
                out.append(info.name)
        return out

    async def show(request: Request, session: Session, report_id: int, *,
                   errors: dict[str, str] | None = None, done: str | None = None,
                   status: int = 200) -> Response:
        who = session.principal
        rt = dash.runtime()

        def read(conn: Any) -> tuple[dict[str, Any], list[referrals.PartnerInfo], list[str]]:
            found = reports.open_report(conn, who=who, vocab=vocab(), keys=rt.keys,
                                        report_id=report_id, now=utcnow())
            area = found["commune"] or found["cercle"]
            return found, referrals.list_partners(conn), assignable(conn, area)

        found, partners, assignees = await in_db(read)
        return report_page(request, session, found, partners=partners, assignees=assignees,
                           errors=errors, done=done, status=status)

    @r.get("/reports/{report_id:int}")
    async def one(request: Request, report_id: int) -> Response:
        session = await reviewer(request)
        done = request.query_params.get("done")
        return await show(request, session, report_id,
                          done=done if done in DONE else None)

    async def act(request: Request, report_id: int, field: str, done: str,
                  work: Callable[[Any, Principal, dict[str, str]], object]) -> Response:
        """A form of the report's page: checked, done, then back to the page (or the page
        again with the refusal next to the field)."""
        session = await reviewer(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        values = dict(form.pairs)
        try:
            await in_db(lambda conn: work(conn, session.principal, values))
        except (reports.Invalid, reports.Conflict) as exc:
            return await show(request, session, report_id, errors={field: str(exc)},
                              status=409 if isinstance(exc, reports.Conflict) else 422)
        return dash.redirect(f"{BASE}/{report_id}?done={done}#{field}")

    def areas() -> Any:
        return vocab().areas

    @r.post("/reports/{report_id:int}/transition")
    async def transition(request: Request, report_id: int) -> Response:
        return await act(request, report_id, "state", "moved", lambda conn, who, v:
                         reports.move(conn, who=who, areas=areas(), report_id=report_id,
                                      to=v.get("to", ""), note=v.get("note") or None,
                                      now=utcnow()))

    @r.post("/reports/{report_id:int}/notes")
    async def note(request: Request, report_id: int) -> Response:
        return await act(request, report_id, "note", "noted", lambda conn, who, v:
                         reports.add_note(conn, who=who, areas=areas(), report_id=report_id,
                                          text=v.get("text", ""), now=utcnow()))

    @r.post("/reports/{report_id:int}/redaction")
    async def redaction(request: Request, report_id: int) -> Response:
        return await act(request, report_id, "redacted_text", "redacted", lambda conn, who, v:
                         reports.redact(conn, who=who, areas=areas(), report_id=report_id,
                                        text=v.get("redacted_text", ""), now=utcnow()))

    @r.post("/reports/{report_id:int}/assignee")
    async def assignee(request: Request, report_id: int) -> Response:
        return await act(request, report_id, "assignee", "assigned", lambda conn, who, v:
                         reports.assign(conn, who=who, areas=areas(), report_id=report_id,
                                        assignee=v.get("assignee") or None, now=utcnow()))

    @r.post("/reports/{report_id:int}/refer")
    async def confirm_referral(request: Request, report_id: int) -> Response:
        """The confirmation page: the partner, and exactly what it will receive."""
        session = await reviewer(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        name = form.get("partner")
        who = session.principal
        rt = dash.runtime()

        def read(conn: Any) -> tuple[dict[str, Any], referrals.PartnerInfo | None]:
            found = reports.open_report(conn, who=who, vocab=vocab(), keys=rt.keys,
                                        report_id=report_id, now=utcnow(),
                                        with_text=False)  # not shown: not opened
            partner = next((p for p in referrals.list_partners(conn)
                            if p.name == name and not p.disabled), None)
            return found, partner

        found, partner = await in_db(read)
        if partner is None:
            return await show(request, session, report_id,
                              errors={"referral": f"partner: no partner named {name!r}"},
                              status=422)
        return dash.render(request, "reports/refer.html", session=session, r=found,
                           partner=partner, place=vocab().place_names)

    @r.post("/reports/{report_id:int}/referrals")
    async def refer(request: Request, report_id: int) -> Response:
        return await act(request, report_id, "referral", "referred", lambda conn, who, v:
                         referrals.refer(conn, who=who, areas=areas(), report_id=report_id,
                                         partner=v.get("partner", ""), now=utcnow()))

    return r


DONE = ("moved", "noted", "redacted", "assigned", "referred")

