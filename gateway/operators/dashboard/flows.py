"""The flow pages: the flows, each drawn as a diagram with every screen as a feature phone
shows it (French and Bambara, count, encoding, budget) and the validator's problems; an
editor for the definition and the flow's catalog entries (checked and previewed by a
server round trip: no script needed; with flowcheck.js, the same check runs as one types,
through ``POST /flows/{flow}/check``, whose fragment replaces the problems and the
preview); a diff between two versions; publish and roll back after a confirmation page;
and a phone in the page.

The phone in the page walks the published flows or a stored version through the real
USSD webhook (the gateway's own ASGI app, called in-process as Africa's Talking would
call it, token included), as a trial session (``gateway.dialogue.trial``): nothing it
answers is saved, so nothing counts in results or reaches a reviewer.

The rules, the scope and the audit are ``gateway.operators.flows``'; this module reads
forms and renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from fastapi import APIRouter
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.content.versions import FlowText, parse
from gateway.dialogue import trial
from gateway.operators import flows
from gateway.operators.access import NotFound, Role, require
from gateway.operators.dashboard import strings
from gateway.operators.dashboard.web import PREFIX, Dashboard, Form, check_csrf, read_form
from gateway.operators.flow_diagram import layout, svg
from gateway.store.models import utcnow

BASE = PREFIX + "/flows"
SHOWN = ("fr", "bm")  # the screens shown side by side (Fulfulde on request)
NEW_ROWS = 3  # blank rows for new catalog entries in the editor
USSD_PATH = "/webhooks/africastalking/ussd"


def _screens_by_step(screens: list[dict[str, Any]], languages: tuple[str, ...]
                     ) -> list[tuple[str, dict[str, list[dict[str, Any]]]]]:
    """[(step, {language: [its pages]})] in the flow's order."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for screen in screens:
        if screen["language"] in languages:
            found.setdefault(screen["step"], {}).setdefault(screen["language"], []).append(screen)
    return list(found.items())


def _diagram(definition: str, flow_id: str, version: int) -> Markup | None:
    flow, _ = parse(FlowText(flow_id, version, definition, {}))
    if flow is None:
        return None
    return Markup(svg(layout(flow), title=f"{flow_id} v{version}"))  # noqa: S704 - escaped by svg()


def _messages_of(form: Form, languages: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """The catalog entries typed in the editor: ``m.<lang>.<key>`` fields, and the new
    rows' ``new.key.<i>`` with ``new.<lang>.<i>``."""
    messages: dict[str, dict[str, str]] = {lang: {} for lang in languages}
    for name, value in form.pairs:
        if name.startswith("m."):
            _, lang, key = name.split(".", 2)
            if lang in messages and key:
                messages[lang][key] = value.strip()
    for i in range(NEW_ROWS):
        key = form.get(f"new.key.{i}").strip()
        if key:
            for lang in languages:
                messages[lang][key] = form.get(f"new.{lang}.{i}").strip()
    return messages


def router(dash: Dashboard) -> APIRouter:
    r = APIRouter()

    def render(request: Request, name: str, **values: Any) -> Response:
        return dash.render(request, name, language_names=strings.LANGUAGE_NAMES, **values)

    def rules() -> Any:
        return dash.runtime().ussd.engines.rules

    def library() -> Any:
        library = dash.runtime().library
        assert library is not None
        return library

    def languages() -> tuple[str, ...]:
        return tuple(dash.runtime().engine.content.languages)

    def transact(fn: Any) -> Any:
        def run() -> Any:
            with dash.runtime().db.transaction() as conn:
                return fn(conn)
        return run_in_threadpool(run)

    @r.get("/flows")
    async def flow_list(request: Request) -> Response:
        session = await dash.signed_in(request)
        found = await transact(lambda conn: flows.list_flows(
            conn, who=session.principal, library=library()))
        return render(request, "flows/list.html", session=session, flows=found)

    @r.get("/flows/{flow}")
    async def flow_page(request: Request, flow: str) -> Response:
        session = await dash.signed_in(request)
        asked = request.query_params.get("version")
        version = int(asked) if asked and asked.isdigit() else None
        found = await transact(lambda conn: flows.read_flow(
            conn, who=session.principal, library=library(), rules=rules(), flow=flow,
            version=version))
        shown = SHOWN if request.query_params.get("ff") != "1" else (*SHOWN, "ff")
        return render(
            request, "flows/show.html", session=session, f=found,
            diagram=_diagram(found["definition"], flow, found["version"]),
            screens=_screens_by_step(found["screens"], shown), shown=shown,
            notice=request.query_params.get("done"))

    async def editor(request: Request, session: Any, flow: str, *, definition: str,
                     messages: Mapping[str, Mapping[str, str]], base: int,
                     report: dict[str, Any] | None = None, status: int = 200) -> Response:
        langs = languages()
        keys = sorted({k for entries in messages.values() for k in entries})
        return render(
            request, "flows/edit.html", session=session, flow=flow, base=base,
            definition=definition, messages=messages, keys=keys, languages=langs,
            new_rows=range(NEW_ROWS), report=report, status=status,
            screens=_screens_by_step(report["screens"], SHOWN) if report else [],
            shown=SHOWN, diagram=_diagram(definition, flow, base) if report else None)

    @r.get("/flows/{flow}/edit")
    async def edit(request: Request, flow: str) -> Response:
        session = await dash.signed_in(request)
        asked = request.query_params.get("from")
        version = int(asked) if asked and asked.isdigit() else None
        found = await transact(lambda conn: flows.read_flow(
            conn, who=session.principal, library=library(), rules=rules(), flow=flow,
            version=version))
        return await editor(request, session, flow, definition=found["definition"],
                            messages=found["messages"], base=found["version"])

    @r.post("/flows/{flow}/edit")
    async def edit_post(request: Request, flow: str) -> Response:
        session = await dash.signed_in(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        definition = form.get("definition").replace("\r\n", "\n")
        messages = _messages_of(form, languages())
        base = int(form.get("base") or 0)
        if form.get("action") == "save":
            try:
                number, _warnings = await transact(lambda conn: flows.add_version(
                    conn, who=session.principal, library=library(), rules=rules(), flow=flow,
                    definition=definition, messages=messages, now=utcnow()))
            except flows.Invalid:
                pass  # shown below with the preview
            else:
                return dash.redirect(f"{BASE}/{flow}?version={number}&done=saved")
        report = await transact(lambda conn: flows.check_draft(
            conn, who=session.principal, library=library(), rules=rules(), flow=flow,
            definition=definition, messages=messages))
        status = 422 if report["errors"] and form.get("action") == "save" else 200
        return await editor(request, session, flow, definition=definition,
                            messages=messages, base=base, report=report, status=status)

    @r.post("/flows/{flow}/check")
    async def live_check(request: Request, flow: str) -> Response:
        """The editor's check as one types (flowcheck.js posts the editor's form): the
        problems, the preview and their count as an HTML fragment; nothing stored."""
        session = await dash.signed_in(request)
        require(session.principal, Role.operator)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        definition = form.get("definition").replace("\r\n", "\n")
        messages = _messages_of(form, languages())
        base = int(form.get("base")) if form.get("base").isdigit() else 0
        report = await transact(lambda conn: flows.check_draft(
            conn, who=session.principal, library=library(), rules=rules(), flow=flow,
            definition=definition, messages=messages))
        return render(request, "flows/check.html", session=session, report=report,
                      screens=_screens_by_step(report["screens"], SHOWN), shown=SHOWN,
                      diagram=_diagram(definition, flow, base),
                      headers={"Cache-Control": "no-store"})

    @r.get("/flows/{flow}/diff")
    async def diff(request: Request, flow: str) -> Response:
        session = await dash.signed_in(request)
        try:
            old = int(request.query_params.get("old", ""))
            new = int(request.query_params.get("new", ""))
        except ValueError:
            raise NotFound("no such versions") from None
        found = await transact(lambda conn: flows.diff(
            conn, who=session.principal, flow=flow, old=old, new=new))
        return render(request, "flows/diff.html", session=session, d=found)

    @r.get("/flows/{flow}/publish/{version}")
    async def confirm(request: Request, flow: str, version: int) -> Response:
        session = await dash.signed_in(request)
        found = await transact(lambda conn: flows.read_flow(
            conn, who=session.principal, library=library(), rules=rules(), flow=flow,
            version=version))
        changes = None
        if found["published"] is not None and found["published"] != version:
            changes = await transact(lambda conn: flows.diff(
                conn, who=session.principal, flow=flow, old=found["published"], new=version))
        return render(request, "flows/publish.html", session=session, f=found,
                           changes=changes, problems=None)

    @r.post("/flows/{flow}/publish/{version}")
    async def publish(request: Request, flow: str, version: int) -> Response:
        session = await dash.signed_in(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        try:
            await transact(lambda conn: flows.publish(
                conn, who=session.principal, library=library(), rules=rules(), flow=flow,
                version=version, now=utcnow()))
        except flows.Conflict as exc:
            found = await transact(lambda conn: flows.read_flow(
                conn, who=session.principal, library=library(), rules=rules(), flow=flow,
                version=version))
            return render(request, "flows/publish.html", session=session, f=found,
                               changes=None, problems=exc.problems, status=409)
        library().invalidate()  # this process's next hop reads the counter
        return dash.redirect(f"{BASE}/{flow}?done=published")

    async def hop(session_id: str, text: str) -> str:
        """One hop through the gateway's own USSD webhook, as the provider posts it."""
        gateway_app = dash.gateway()
        token = dash.settings.token
        transport = httpx.ASGITransport(app=gateway_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.post(
                USSD_PATH, params={"token": token} if token else None,
                data={"sessionId": session_id, "serviceCode": dash.settings.ussd_code,
                      "phoneNumber": trial.PHONE, "networkCode": "99999", "text": text})
        return response.text

    @r.get("/flows/{flow}/phone")
    async def phone(request: Request, flow: str) -> Response:
        session = await dash.signed_in(request)
        asked = request.query_params.get("version")
        version = int(asked) if asked and asked.isdigit() else None
        rt = dash.runtime()
        session_id = await transact(lambda conn: flows.start_trial(
            conn, who=session.principal, keys=rt.keys, flow=flow, version=version))
        screen = await hop(session_id, "")
        return render(request, "flows/phone.html", session=session, flow=flow,
                           version=version, trial=session_id, text="", screen=screen)

    @r.post("/flows/{flow}/phone")
    async def phone_post(request: Request, flow: str) -> Response:
        session = await dash.signed_in(request)
        require(session.principal, Role.operator)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        session_id = form.get("trial")
        if trial.parse(dash.runtime().keys, session_id) is None:
            raise NotFound("no such trial")
        typed = form.get("input").strip()[:160]
        text = form.get("text")[:1000]
        text = f"{text}*{typed}" if text else typed
        screen = await hop(session_id, text)
        asked = form.get("version")
        return render(request, "flows/phone.html", session=session, flow=flow,
                           version=int(asked) if asked.isdigit() else None,
                           trial=session_id, text=text, screen=screen)

    return r
