"""The broadcast pages: list, compose, check, send, progress, cancel.

Compose → check → send, one decision per page, everything carried in the form (no draft
storage). The compose page gets an idempotency key made here when it renders; it travels in
a hidden field through the check page to the send, so a double submit makes one broadcast
(the broadcasts module deduplicates by key). Works without JavaScript: ``compose.js`` adds
the live counter and the recipient count, ``progress.js`` refreshes the progress page, and
``app.js`` disables a submit button once pressed.

The counter's tables come from ``gateway.text.encoding.client_rules`` (rendered into the
page as JSON in a data attribute), so the browser counts as the server does.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.content.catalogs import Cercle
from gateway.operators.access import Forbidden, Principal, Role, require
from gateway.operators.dashboard import strings
from gateway.operators.dashboard.seams import (
    COUNTS,
    MESSAGE_LANGUAGES,
    Audience,
    Broadcast,
    Broadcasts,
    Conflict,
    Draft,
    Invalid,
    Preview,
    Session,
)
from gateway.operators.dashboard.web import (
    PREFIX,
    Dashboard,
    Form,
    check_csrf,
    local_time,
    parse_local,
    read_form,
)
from gateway.text.encoding import client_rules

BASE = PREFIX + "/broadcasts"
POLL_SECONDS = 3
ACTIVE = ("scheduled", "sending")
QUIET_MARGIN = timedelta(minutes=2)  # a start later than this: the quiet hours hold it


@dataclass
class Composed:
    """The compose form's fields, as typed (redisplayed on every page of the journey)."""

    messages: dict[str, str] = field(default_factory=dict)
    cercles: list[str] = field(default_factory=list)
    communes: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    title: str = ""
    send_at: str = ""
    valid_until: str = ""
    key: str = ""

    @classmethod
    def of(cls, form: Form) -> Composed:
        return cls(
            messages={lang: form.get(f"message_{lang}") for lang in MESSAGE_LANGUAGES
                      if f"message_{lang}" in form.names()},
            cercles=form.all("cercle"), communes=form.all("commune"),
            languages=form.all("language"),
            title=form.get("title").strip()[:200], send_at=form.get("send_at").strip(),
            valid_until=form.get("valid_until").strip(), key=form.get("key"),
        )

    def hidden(self) -> list[tuple[str, str]]:
        """The fields as hidden inputs, for the check page's two forms."""
        out = [(f"message_{lang}", text) for lang, text in self.messages.items()]
        out += [("cercle", c) for c in self.cercles] + [("commune", c) for c in self.communes]
        out += [("language", x) for x in self.languages]
        out += [("title", self.title), ("send_at", self.send_at),
                ("valid_until", self.valid_until), ("key", self.key)]
        return out

    def draft(self) -> tuple[Draft | None, dict[str, str]]:
        """The broadcasts module's draft, or the fields in error (field → string key)."""
        errors: dict[str, str] = {}
        messages = {lang: text.strip() for lang, text in self.messages.items() if text.strip()}
        if not messages:
            errors["message_fr"] = "field.required"
        when: dict[str, datetime | None] = {}
        for name in ("send_at", "valid_until"):
            try:
                when[name] = parse_local(getattr(self, name))
            except ValueError:
                errors[name] = f"field.{name}"
        if errors:
            return None, errors
        audience = Audience(tuple(self.cercles), tuple(self.communes), tuple(self.languages))
        return Draft(messages=messages, audience=audience, title=self.title,
                     send_at=when["send_at"], valid_until=when["valid_until"]), {}


# The broadcasts module names fields as the API body does; the form's names differ.
FIELD_OF = {"messages.fr": "message_fr", "messages.bm": "message_bm",
            "messages.ff": "message_ff", "messages": "message_fr",
            "audience.cercles": "cercle", "audience.communes": "commune",
            "audience.languages": "language", "audience": "cercle", "send_at": "send_at",
            "valid_until": "valid_until", "title": "title"}


def scope_cercles(dash: Dashboard, who: Principal) -> list[Cercle]:
    everything = dash.runtime().engine.content.communes.cercles
    return [c for c in everything if who.everywhere or c.id in who.cercles]


def audience_of(request: Request) -> Audience:
    q = request.query_params
    return Audience(tuple(q.getlist("cercle")), tuple(q.getlist("commune")),
                    tuple(q.getlist("language")))


def final(b: Broadcast) -> bool:
    """Nothing more will change: cancelled, or done with every message's fate known."""
    return b.status == "cancelled" or (
        b.status == "done" and not b.counts.get("queued") and not b.counts.get("sent"))


def status_json(b: Broadcast, t: Any) -> dict[str, Any]:
    return {
        "id": b.id, "status": b.status, "status_label": t(f"status.{b.status}"),
        "counts": {k: b.counts.get(k, 0) for k in COUNTS},
        "final": final(b),
        "updated": local_time(datetime.now(UTC), "%H:%M:%S"),
    }


def router(dash: Dashboard) -> APIRouter:
    r = APIRouter(prefix="/broadcasts")

    async def operator(request: Request) -> tuple[Session, Broadcasts]:
        session = await dash.signed_in(request)
        require(session.principal, Role.operator)
        return session, dash.seams().need_broadcasts()

    def compose_page(request: Request, session: Session, composed: Composed,
                     errors: Mapping[str, str] | None = None) -> Response:
        broadcasts = dash.seams().need_broadcasts()
        tariff = broadcasts.tariff()
        rules = client_rules()
        config = {
            "rules": rules, "price": str(tariff.price_per_segment),
            "currency": tariff.currency, "default_language": tariff.default_language,
            "recipients_url": f"{BASE}/recipients",
        }
        return dash.render(
            request, "broadcasts/compose.html", session=session, c=composed,
            cercles=scope_cercles(dash, session.principal), tariff=tariff,
            languages=tariff.languages,
            message_languages=[x for x in tariff.languages if x in MESSAGE_LANGUAGES],
            language_names=strings.LANGUAGE_NAMES, errors=dict(errors or {}),
            config=json.dumps(config, ensure_ascii=False, separators=(",", ":")),
            status=422 if errors else 200)

    @r.get("")
    async def list_page(request: Request) -> Response:
        session, broadcasts = await operator(request)
        items = await run_in_threadpool(lambda: broadcasts.list(session.principal))
        return dash.render(request, "broadcasts/list.html", session=session,
                           items=sorted(items, key=lambda b: b.id, reverse=True))

    @r.get("/new")
    async def new(request: Request) -> Response:
        session, _ = await operator(request)
        return compose_page(request, session, Composed(key=secrets.token_urlsafe(18)))

    @r.post("/new")
    async def change(request: Request) -> Response:
        """Back from the check page ("Modifier"): the compose page, filled in, same key."""
        session, _ = await operator(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        composed = Composed.of(form)
        composed.key = composed.key or secrets.token_urlsafe(18)
        return compose_page(request, session, composed)

    @r.get("/recipients")
    async def recipients(request: Request) -> Response:
        session, broadcasts = await operator(request)
        audience = audience_of(request)
        try:
            by_language = await run_in_threadpool(
                lambda: broadcasts.recipients(session.principal, audience))
        except Forbidden:  # the audience reaches a cercle outside the caller's scope
            return JSONResponse({"detail": "audience outside your cercles"}, status_code=403)
        except Invalid as exc:
            return JSONResponse({"detail": exc.message}, status_code=422)
        return JSONResponse({"recipients": sum(by_language.values()),
                             "languages": dict(by_language)})

    async def checked(request: Request) -> tuple[Session, Broadcasts, Composed, Form]:
        session, broadcasts = await operator(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        return session, broadcasts, Composed.of(form), form

    @r.post("/check")
    async def check(request: Request) -> Response:
        session, broadcasts, composed, _ = await checked(request)
        draft, errors = composed.draft()
        if draft is None:
            return compose_page(request, session, composed, errors)
        try:
            preview = await run_in_threadpool(lambda: broadcasts.preview(session.principal,
                                                                         draft))
        except Invalid as exc:
            return compose_page(request, session, composed,
                                {FIELD_OF.get(exc.field, "message_fr"): exc.message})
        except Forbidden:  # the role was checked: the audience is outside the scope
            return compose_page(request, session, composed, {"cercle": "field.scope"})
        return check_page(request, session, composed, draft, preview)

    def check_page(request: Request, session: Session, composed: Composed, draft: Draft,
                   preview: Preview) -> Response:
        communes = {m.id: m.name for c in scope_cercles(dash, session.principal)
                    for m in c.communes}
        soon = datetime.now(UTC) + QUIET_MARGIN
        quiet = draft.send_at is None and preview.sends_from is not None and \
            preview.sends_from > soon
        return dash.render(
            request, "broadcasts/check.html", session=session, c=composed, draft=draft,
            preview=preview, hidden=composed.hidden(),
            quiet_until=local_time(preview.sends_from) if quiet else "",
            cercle_names=[dash.cercle_name(x) for x in draft.audience.cercles],
            commune_names=[communes.get(x, x) for x in draft.audience.communes],
            language_names=strings.LANGUAGE_NAMES)

    @r.post("")
    async def create(request: Request) -> Response:
        session, broadcasts, composed, _ = await checked(request)
        draft, errors = composed.draft()
        if not composed.key:
            errors["message_fr"] = "field.idempotency"
        if draft is None or errors:
            return compose_page(request, session, composed, errors)
        try:
            made = await run_in_threadpool(lambda: broadcasts.create(
                session.principal, draft, idempotency_key=composed.key))
        except Invalid as exc:
            return compose_page(request, session, composed,
                                {FIELD_OF.get(exc.field, "message_fr"): exc.message})
        except Forbidden:
            return compose_page(request, session, composed, {"cercle": "field.scope"})
        except Conflict:
            composed.key = secrets.token_urlsafe(18)
            return compose_page(request, session, composed, {"message_fr": "field.conflict"})
        return dash.redirect(f"{BASE}/{made.id}?created=1")

    @r.get("/{broadcast_id:int}")
    async def progress(request: Request, broadcast_id: int) -> Response:
        session, broadcasts = await operator(request)
        b = await run_in_threadpool(lambda: broadcasts.get(session.principal, broadcast_id))
        return dash.render(
            request, "broadcasts/progress.html", session=session, b=b, counts=COUNTS,
            active=b.status in ACTIVE, final=final(b), poll_seconds=POLL_SECONDS,
            created=request.query_params.get("created") == "1",
            cancelled=request.query_params.get("cancelled") == "1",
            updated=local_time(datetime.now(UTC), "%H:%M:%S"),
            language_names=strings.LANGUAGE_NAMES)

    @r.get("/{broadcast_id:int}/status")
    async def status(request: Request, broadcast_id: int) -> Response:
        session, broadcasts = await operator(request)
        b = await run_in_threadpool(lambda: broadcasts.get(session.principal, broadcast_id))
        lang, _ = dash.language(request)
        return JSONResponse(status_json(b, strings.translator(lang)))

    @r.get("/{broadcast_id:int}/cancel")
    async def cancel_page(request: Request, broadcast_id: int) -> Response:
        session, broadcasts = await operator(request)
        b = await run_in_threadpool(lambda: broadcasts.get(session.principal, broadcast_id))
        if b.status not in ACTIVE:
            return dash.redirect(f"{BASE}/{b.id}")
        return dash.render(request, "broadcasts/cancel.html", session=session, b=b)

    @r.post("/{broadcast_id:int}/cancel")
    async def cancel(request: Request, broadcast_id: int) -> Response:
        session, broadcasts = await operator(request)
        form = await read_form(request)
        check_csrf(request, form, session.csrf_token)
        await run_in_threadpool(lambda: broadcasts.cancel(session.principal, broadcast_id))
        return dash.redirect(f"{BASE}/{broadcast_id}?cancelled=1")

    return r
