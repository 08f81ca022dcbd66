"""Who may call what, for every route the application serves: the table of rules below
against the application's own route table (``app.routes``, the API mounted at /api/v1
walked too), so that a route nobody wrote a rule for fails here, by name.

Every route is called by each role (admin, operator, reviewer, radio), with no
credentials, with a bad token, as a disabled account and with a revoked token:
- a route for some roles answers 401 to the four without valid credentials, 403 to the
  roles it does not name, and neither (nor a 5xx) to those it names;
- a public route answers the same to everybody (an operator's token opens nothing more);
- a webhook answers 403 to anybody without the webhook token, whatever else they carry;
- a dashboard page sends anybody without a live session to the sign-in page (an API token
  is no dashboard credential), answers 403 to the roles it does not name, and neither to
  those it names (signed in through a session, forms carrying its CSRF token).

And on every route that takes an id: another cercle's record answers exactly like a
missing one (same status, same body), and the attempt is audited.

Adding a route: add its rule to ``RULES`` ("METHOD /path": who may call it, and what a
valid call sends, so that a refusal is the role's and not the body's; ``page=True`` for
the dashboard's); a new path parameter also needs a sample in ``SAMPLES`` and a line in
``SCOPED`` or ``UNSCOPED``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from httpx2 import Response
from starlette.routing import BaseRoute, Mount

from gateway.app import USSD_PATH, create_app
from gateway.operators import accounts, audit
from gateway.operators.access import Role
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store.models import utcnow
from tests.conftest import REPO
from tests.operators.people import PASSWORD, Person, make
from tests.operators.reporters import file_report

WEBHOOK_TOKEN = "jeton-des-webhooks-1234"


# -- the route table ---------------------------------------------------------------------


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, Mount):
            sub = getattr(route.app, "routes", None)
            if sub is not None:
                yield from _walk(list(sub), prefix + route.path)
            continue
        methods = set(getattr(context, "methods", None) or ())
        if "GET" in methods:
            methods.discard("HEAD")  # answered as the GET is
        for method in sorted(methods):
            yield method, prefix + str(context.path)


def served(app: FastAPI) -> list[str]:
    """Every "METHOD /path" the application answers: its route table, the sub-apps mounted
    in it, and the USSD webhook it answers ahead of that table (``GatewayApp``)."""
    found = {f"{method} {path}" for method, path in _walk(list(app.routes))}
    found.add(f"POST {USSD_PATH}")
    return sorted(found)


def _app_for_collection() -> FastAPI:
    """The application as configured for the tests, made only to read its route table
    (nothing is started: the runtime is built when the app starts)."""
    where = Path("/nonexistent-route-table")
    return create_app(Settings(_env_file=None, database_url=f"sqlite:///{where}/gateway.db",
                               key_file=where / "gateway.keys", content_dir=REPO))


ROUTES = served(_app_for_collection())
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


# -- what the tests call with ------------------------------------------------------------


@dataclass
class World:
    """The people and records a call needs, made on first use."""

    client: TestClient
    runtime: Runtime
    people: dict[str, Person]
    sessions: dict[str, accounts.NewSession] = field(default_factory=dict)
    made: dict[str, str] = field(default_factory=dict)

    def once(self, key: str, make: Callable[[], str]) -> str:
        if key not in self.made:
            self.made[key] = make()
        return self.made[key]

    def report(self, cercle: str = "Mopti", commune: str = "Konna") -> str:
        return self.once(f"report:{cercle}", lambda: str(file_report(
            self.client, self.runtime, cercle=cercle, commune=commune, text="Au barrage",
            token=WEBHOOK_TOKEN).id))

    def broadcast(self, cercle: str = "mopti") -> str:
        def make() -> str:
            response = self.client.post(
                "/api/v1/broadcasts", headers={**self.people["admin"].auth,
                                               "Idempotency-Key": f"rules-{cercle}"},
                json={"messages": {"fr": "Réunion au marché jeudi."},
                      "audience": {"cercles": [cercle]}})
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        return self.once(f"broadcast:{cercle}", make)

    def campaign(self, cercle: str = "mopti") -> str:
        def make() -> str:
            now = utcnow()
            response = self.client.post(
                "/api/v1/campaigns", headers=self.people["admin"].auth, json={
                    "name": f"Débat {cercle}", "station": f"Radio {cercle}",
                    "poll": "trust-fds", "question": "army", "keyword": f"Show{cercle}",
                    "service_code": None, "hosts": [], "cercles": [cercle],
                    "starts_at": (now - timedelta(hours=1)).isoformat(),
                    "ends_at": (now + timedelta(hours=2)).isoformat()})
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        return self.once(f"campaign:{cercle}", make)

    def flow(self) -> dict[str, Any]:
        """The poll flow as the API gives it: its published definition and messages."""
        response = self.client.get("/api/v1/flows/poll", headers=self.people["admin"].auth)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def login_form(self) -> str:
        """The sign-in form's token (its cookie stays with the client, as a browser's;
        the session of a sign-in before is dropped, as after a sign-out)."""
        self.client.cookies.clear()
        page = self.client.get("/dashboard/login")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text
        return found.group(1)

    def poll(self) -> dict[str, Any]:
        response = self.client.get("/api/v1/polls", headers=self.people["admin"].auth)
        assert response.status_code == 200, response.text
        first: dict[str, Any] = response.json()[0]
        return first


@dataclass(frozen=True)
class Call:
    """What a valid call of a route sends, besides credentials."""

    query: dict[str, str] = field(default_factory=dict)
    json: Any = None
    form: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


Send = Callable[[World], Call]
PUBLIC: Literal["public"] = "public"  # anybody, with or without credentials
WEBHOOK: Literal["webhook"] = "webhook"  # a provider, with ?token=<GATEWAY_WEBHOOK_TOKEN>


@dataclass(frozen=True)
class Rule:
    who: frozenset[Role] | Literal["public", "webhook"]
    send: Send = lambda _w: Call()
    page: bool = False  # a dashboard page: a session cookie, and a CSRF token in forms
    # A stream of Server-Sent Events: refusals are checked here; an allowed call would
    # stream until its end, so the streams' own tests (tests/operators/test_live.py, two
    # real processes) check that the allowed roles get their events.
    stream: bool = False


def roles(*who: Role) -> frozenset[Role]:
    return frozenset({Role.admin, *who})


ADMIN = roles()
REVIEWERS = roles(Role.reviewer)
OPERATORS = roles(Role.operator)
SIGNED_IN = frozenset(Role)
PARTNER = {"webhook_url": "http://127.0.0.1:9/hook", "secret": "s3cret-for-the-tests"}
BROADCAST = {"messages": {"fr": "Réunion au marché jeudi."}, "audience": {"cercles": ["mopti"]}}


def page(who: frozenset[Role], send: Send = lambda _w: Call()) -> Rule:
    return Rule(who, send, page=True)


HOSTS = roles(Role.operator, Role.radio)  # radio: only the campaigns it hosts


def new_version(w: World) -> Call:
    flow = w.flow()
    return Call(json={"definition": flow["definition"], "messages": flow["messages"]})

# "METHOD /path" as the route table spells it -> who may call it, and a valid call.
RULES: dict[str, Rule] = {
    # the service
    "GET /healthz": Rule(PUBLIC),
    "GET /readyz": Rule(PUBLIC),
    "GET /openapi.json": Rule(PUBLIC),
    "GET /docs": Rule(PUBLIC),
    "GET /docs/oauth2-redirect": Rule(PUBLIC),
    # the providers' webhooks
    "POST /webhooks/africastalking/ussd": Rule(WEBHOOK),
    "POST /webhooks/africastalking/ussd/events": Rule(WEBHOOK),
    "POST /webhooks/africastalking/sms": Rule(WEBHOOK),
    "POST /webhooks/africastalking/delivery": Rule(WEBHOOK),
    "POST /webhooks/africastalking/optout": Rule(WEBHOOK),
    "GET /webhooks/kannel/sms": Rule(WEBHOOK),
    "POST /webhooks/kannel/sms": Rule(WEBHOOK),
    "GET /webhooks/kannel/ussd": Rule(WEBHOOK),
    "POST /webhooks/kannel/ussd": Rule(WEBHOOK),
    "GET /webhooks/kannel/delivery": Rule(WEBHOOK),
    "POST /webhooks/kannel/delivery": Rule(WEBHOOK),
    # the operator API
    "GET /api/v1/openapi.json": Rule(PUBLIC),
    "GET /api/v1/docs": Rule(PUBLIC),
    "GET /api/v1/docs/oauth2-redirect": Rule(PUBLIC),
    "POST /api/v1/auth/token": Rule(PUBLIC, lambda _w: Call(
        form={"username": "awa", "password": PASSWORD})),
    "GET /api/v1/auth/me": Rule(SIGNED_IN),
    "POST /api/v1/auth/logout": Rule(SIGNED_IN),
    "GET /api/v1/audit": Rule(ADMIN),
    "GET /api/v1/audit/verify": Rule(ADMIN),
    "GET /api/v1/polls": Rule(OPERATORS),
    "GET /api/v1/polls/{poll}/results": Rule(OPERATORS, lambda w: Call(
        query={"question": w.poll()["questions"][0]["question"]})),
    "GET /api/v1/polls/{poll}/results/stream": Rule(OPERATORS, lambda w: Call(
        query={"question": w.poll()["questions"][0]["question"]}), stream=True),
    "GET /api/v1/polls/{poll}/inclusion": Rule(OPERATORS),
    "PUT /api/v1/polls/{poll}/inclusion/targets/{cercle}": Rule(OPERATORS, lambda _w: Call(
        json={"women": 50, "young": 30, "displaced": 20})),
    "GET /api/v1/polls/{poll}/digest": Rule(OPERATORS, lambda _w: Call(
        query={"commune": "mopti-konna"})),
    "GET /api/v1/exports/results.csv": Rule(OPERATORS, lambda w: Call(query={
        "poll": str(w.poll()["poll"]), "question": w.poll()["questions"][0]["question"]})),
    "GET /api/v1/exports/answers.csv": Rule(ADMIN, lambda w: Call(
        query={"poll": str(w.poll()["poll"])})),
    "POST /api/v1/campaigns": Rule(OPERATORS, lambda _w: Call(json={
        "name": "Débat", "station": "Radio Kaoural", "poll": "trust-fds", "question": "army",
        "keyword": "Kaoural", "hosts": [], "starts_at": "2026-01-01T10:00:00+00:00",
        "ends_at": "2026-01-01T12:00:00+00:00"})),
    "GET /api/v1/campaigns": Rule(HOSTS),
    "GET /api/v1/campaigns/{campaign_id}": Rule(HOSTS),
    "GET /api/v1/campaigns/{campaign_id}/onair": Rule(HOSTS),
    "GET /api/v1/campaigns/{campaign_id}/onair/stream": Rule(HOSTS, stream=True),
    "GET /api/v1/flows": Rule(OPERATORS),
    "GET /api/v1/flows/{flow}": Rule(OPERATORS),
    "GET /api/v1/flows/{flow}/diff": Rule(OPERATORS, lambda _w: Call(
        query={"old": "1", "new": "1"})),
    "POST /api/v1/flows/{flow}/check": Rule(OPERATORS, new_version),
    "POST /api/v1/flows/{flow}/versions": Rule(OPERATORS, new_version),
    "POST /api/v1/flows/{flow}/versions/{version}/publish": Rule(OPERATORS),
    "POST /api/v1/flows/{flow}/trials": Rule(OPERATORS, lambda _w: Call(json={})),
    "GET /api/v1/reports": Rule(REVIEWERS),
    "GET /api/v1/reports/{report_id}": Rule(REVIEWERS),
    "POST /api/v1/reports/{report_id}/transitions": Rule(REVIEWERS, lambda _w: Call(
        json={"to": "reviewed"})),
    "POST /api/v1/reports/{report_id}/notes": Rule(REVIEWERS, lambda _w: Call(
        json={"text": "Vu avec le comité."})),
    "PUT /api/v1/reports/{report_id}/redaction": Rule(REVIEWERS, lambda _w: Call(
        json={"text": "Un barrage."})),
    "PUT /api/v1/reports/{report_id}/assignee": Rule(REVIEWERS, lambda _w: Call(
        json={"assignee": None})),
    "POST /api/v1/reports/{report_id}/referrals": Rule(REVIEWERS, lambda _w: Call(
        json={"partner": "AMDH Mopti"})),
    "GET /api/v1/partners": Rule(REVIEWERS),
    "POST /api/v1/partners": Rule(ADMIN, lambda _w: Call(
        json={"name": "AMDH Mopti", **PARTNER})),
    "GET /api/v1/exports/reports.csv": Rule(REVIEWERS),
    "POST /api/v1/broadcasts/preview": Rule(OPERATORS, lambda _w: Call(json=BROADCAST)),
    "POST /api/v1/broadcasts": Rule(OPERATORS, lambda _w: Call(
        json=BROADCAST, headers={"Idempotency-Key": "rules-new"})),
    "GET /api/v1/broadcasts": Rule(OPERATORS),
    "GET /api/v1/broadcasts/{broadcast_id}": Rule(OPERATORS),
    "POST /api/v1/broadcasts/{broadcast_id}/cancel": Rule(OPERATORS),
    # the dashboard
    "GET /dashboard/login": Rule(PUBLIC),
    "POST /dashboard/login": Rule(PUBLIC, lambda w: Call(
        form={"csrf": w.login_form(), "username": "awa", "password": PASSWORD})),
    "GET /dashboard/static/{name}": Rule(PUBLIC),
    "POST /dashboard/logout": page(SIGNED_IN),
    "GET /dashboard/": page(SIGNED_IN),
    "GET /dashboard/broadcasts": page(OPERATORS),
    "GET /dashboard/broadcasts/new": page(OPERATORS),
    "POST /dashboard/broadcasts/new": page(OPERATORS, lambda _w: Call(
        form={"message_fr": "Réunion au marché jeudi."})),
    "GET /dashboard/broadcasts/recipients": page(OPERATORS, lambda _w: Call(
        query={"cercle": "mopti"})),
    "POST /dashboard/broadcasts/check": page(OPERATORS, lambda _w: Call(
        form={"message_fr": "Réunion au marché jeudi.", "cercle": "mopti"})),
    "POST /dashboard/broadcasts": page(OPERATORS, lambda _w: Call(
        form={"message_fr": "Réunion au marché jeudi.", "cercle": "mopti", "key": "k1"})),
    "GET /dashboard/broadcasts/{broadcast_id:int}": page(OPERATORS),
    "GET /dashboard/broadcasts/{broadcast_id:int}/status": page(OPERATORS),
    "GET /dashboard/broadcasts/{broadcast_id:int}/cancel": page(OPERATORS),
    "POST /dashboard/broadcasts/{broadcast_id:int}/cancel": page(OPERATORS),
    "GET /dashboard/reports": page(REVIEWERS),
    "GET /dashboard/reports/{report_id:int}": page(REVIEWERS),
    "POST /dashboard/reports/{report_id:int}/transition": page(REVIEWERS, lambda _w: Call(
        form={"to": "reviewed"})),
    "POST /dashboard/reports/{report_id:int}/notes": page(REVIEWERS, lambda _w: Call(
        form={"text": "Vu avec le comité."})),
    "POST /dashboard/reports/{report_id:int}/redaction": page(REVIEWERS, lambda _w: Call(
        form={"redacted_text": "Un barrage."})),
    "POST /dashboard/reports/{report_id:int}/assignee": page(REVIEWERS, lambda _w: Call(
        form={"assignee": ""})),
    "POST /dashboard/reports/{report_id:int}/refer": page(REVIEWERS, lambda _w: Call(
        form={"partner": "AMDH Mopti"})),
    "POST /dashboard/reports/{report_id:int}/referrals": page(REVIEWERS, lambda _w: Call(
        form={"partner": "AMDH Mopti"})),
    "GET /dashboard/audit": page(ADMIN),
    "GET /dashboard/results": page(OPERATORS),
    "GET /dashboard/results/{poll_id}": page(OPERATORS),
    "GET /dashboard/results/{poll_id}/results.csv": page(OPERATORS),
    "GET /dashboard/results/{poll_id}/charts/{name}": page(OPERATORS),
    "GET /dashboard/inclusion": page(OPERATORS),
    "GET /dashboard/inclusion/{poll_id}": page(OPERATORS),
    "POST /dashboard/inclusion/{poll_id}": page(OPERATORS, lambda _w: Call(
        form={"women_mopti": "50"})),
    "GET /dashboard/digest": page(OPERATORS),
    "GET /dashboard/digest/{poll_id}": page(OPERATORS, lambda _w: Call(
        query={"commune": "mopti-konna"})),
    "GET /dashboard/campaigns": page(HOSTS),
    "POST /dashboard/campaigns": page(OPERATORS, lambda _w: Call(form={
        "name": "Débat", "station": "Radio Kaoural", "keyword": "Kaoural", "hosts": ""})),
    "GET /dashboard/onair/{campaign_id}": page(HOSTS),
    "GET /dashboard/onair/{campaign_id}/stream": Rule(HOSTS, page=True, stream=True),
    "GET /dashboard/flows": page(OPERATORS),
    "GET /dashboard/flows/{flow}": page(OPERATORS),
    "GET /dashboard/flows/{flow}/edit": page(OPERATORS),
    "POST /dashboard/flows/{flow}/edit": page(OPERATORS, lambda w: Call(form={
        "definition": w.flow()["definition"], "action": "check"})),
    "POST /dashboard/flows/{flow}/check": page(OPERATORS, lambda w: Call(form={
        "definition": w.flow()["definition"]})),
    "GET /dashboard/flows/{flow}/diff": page(OPERATORS, lambda _w: Call(
        query={"old": "1", "new": "1"})),
    "GET /dashboard/flows/{flow}/publish/{version}": page(OPERATORS),
    "POST /dashboard/flows/{flow}/publish/{version}": page(OPERATORS),
    "GET /dashboard/flows/{flow}/phone": page(OPERATORS),
    "POST /dashboard/flows/{flow}/phone": page(OPERATORS, lambda _w: Call(form={"input": ""})),
}

# A path parameter -> a value naming a record the Mopti accounts may see.
SAMPLES: dict[str, Callable[[World], str]] = {
    "report_id": lambda w: w.report(),
    "poll": lambda w: str(w.poll()["poll"]),
    "broadcast_id": lambda w: w.broadcast(),
    "name": lambda _w: "app.css",
    "campaign_id": lambda w: w.campaign(),
    "flow": lambda _w: "poll",
    "version": lambda _w: "1",
    "poll_id": lambda w: str(w.poll()["poll"]),
    "cercle": lambda _w: "mopti",
}


@dataclass(frozen=True)
class Scoped:
    """A parameter naming a record that belongs to a region: how to make another
    region's (outside every Mopti account's scope) and a value that names nothing."""

    elsewhere: Callable[[World], str]
    missing: str


# A path parameter naming a record with a place -> another region's and a missing one.
SCOPED: dict[str, Scoped] = {
    "report_id": Scoped(lambda w: w.report("Koro", "Koro"), missing="2147483647"),
    "broadcast_id": Scoped(lambda w: w.broadcast("koro"), missing="2147483647"),
    "campaign_id": Scoped(lambda w: w.campaign("koro"), missing="2147483647"),
    "cercle": Scoped(lambda _w: "koro", missing="atlantis"),
}
# A path parameter naming something every cercle shares -> why no region owns it.
UNSCOPED: dict[str, str] = {
    "poll": "a poll is the same in every cercle; its figures are filtered to the caller's",
    "name": "a static file of the dashboard (CSS, JavaScript, icon): the same for everybody",
    "flow": "a flow is the same dialogue in every cercle (operators of any cercle edit it)",
    "version": "a version of a flow, which no region owns either",
    "poll_id": "a poll is the same in every cercle; its figures are filtered to the caller's",
}

# Callers without valid credentials, and what they send.
NOBODY: dict[str, Callable[[dict[str, Person]], dict[str, str]]] = {
    "no credentials": lambda _p: {},
    "bad token": lambda _p: {"Authorization": "Bearer dny_not-a-token"},
    "disabled account": lambda p: p["disabled"].auth,
    "revoked token": lambda p: p["revoked"].auth,
}


# Callers of a dashboard page without a live session, and the cookie or header they send.
NO_SESSION: dict[str, Callable[[World], dict[str, str]]] = {
    "no session": lambda _w: {},
    "bad session": lambda _w: {"Cookie": f"{accounts.SESSION_COOKIE}=pas-une-session"},
    "disabled account": lambda w: cookie(w.sessions["disabled"]),
    "ended session": lambda w: cookie(w.sessions["ended"]),
    "API token": lambda w: w.people["admin"].auth,  # not a dashboard credential
}


def cookie(session: accounts.NewSession) -> dict[str, str]:
    return {"Cookie": f"{accounts.SESSION_COOKIE}={session.cookie}"}


def rule_of(route: str) -> Rule:
    rule = RULES.get(route)
    if rule is None:
        pytest.fail(f"{route}: no rule says who may call this route. Add a line to RULES in "
                    f"tests/operators/test_route_rules.py, e.g. "
                    f"\"{route}\": Rule(REVIEWERS) (or ADMIN, OPERATORS, roles(Role.radio), "
                    f"SIGNED_IN, PUBLIC, WEBHOOK), with what a valid call sends.",
                    pytrace=False)
    return rule


def path_of(route: str, world: World, values: dict[str, str] | None = None) -> str:
    path = route.split(" ", 1)[1]
    for name in PARAM.findall(path):
        if values and name in values:
            value = values[name]
        elif name in SAMPLES:
            value = SAMPLES[name](world)
        else:
            pytest.fail(f"{route}: no sample value for the path parameter {{{name}}}. Add one "
                        f"to SAMPLES in tests/operators/test_route_rules.py.", pytrace=False)
        path = re.sub(r"\{" + name + r"(?::\w+)?\}", value, path)
    return path


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The test settings, with a webhook token: the webhooks' own credential."""
    return Settings(_env_file=None, database_url=database_url,
                    key_file=tmp_path / "gateway.keys", content_dir=REPO, send_rate=1000.0,
                    webhook_token=WEBHOOK_TOKEN)


@pytest.fixture
def world(client: TestClient, runtime: Runtime) -> World:
    """An admin; an operator, a reviewer and a radio host for Mopti; and two admins whose
    credentials no longer work (the account disabled; its tokens revoked)."""
    people = {
        "admin": make(runtime, "awa", Role.admin),
        "operator": make(runtime, "moussa", Role.operator, "mopti"),
        "reviewer": make(runtime, "mariam", Role.reviewer, "mopti"),
        "radio": make(runtime, "kaoural", Role.radio),
        "disabled": make(runtime, "ancien", Role.admin),
        "revoked": make(runtime, "revoque", Role.admin),
    }
    now = utcnow()
    with runtime.db.transaction() as conn:
        sessions = {name: accounts.create_session(
            conn, account_id=person.principal.account_id, hours=1, now=now)
            for name, person in people.items()}
        sessions["ended"] = accounts.create_session(
            conn, account_id=people["admin"].principal.account_id, hours=1, now=now)
        accounts.end_session(conn, cookie=sessions["ended"].cookie, now=now)
        accounts.disable(conn, name="ancien", actor="cli", now=now)
        accounts.revoke_tokens(conn, name="revoque", actor="cli", now=now)
    return World(client, runtime, people, sessions)


def call(world: World, route: str, headers: dict[str, str], *, token: bool = False,
         values: dict[str, str] | None = None, csrf: str | None = None) -> Response:
    rule = rule_of(route)
    sent = rule.send(world)
    method = route.split(" ", 1)[0]
    query = dict(sent.query)
    if token:
        query["token"] = WEBHOOK_TOKEN
    form = sent.form
    if rule.page and method == "POST":
        form = {**(form or {}), "csrf": csrf or ""}
    return world.client.request(method, path_of(route, world, values), params=query,
                                headers={**sent.headers, **headers}, json=sent.json,
                                data=form, follow_redirects=False)


def as_role(world: World, role: Role, rule: Rule) -> tuple[dict[str, str], str | None]:
    """What ``role`` sends: its API token, or its dashboard session and CSRF token."""
    if rule.page:
        session = world.sessions[role.value]
        return cookie(session), session.csrf_token
    return world.people[role.value].auth, None


def to_sign_in(response: Response) -> bool:
    """Sent to sign in (not the sign-out's own way back to the sign-in page)."""
    return response.status_code == 303 and \
        response.headers.get("location", "").startswith("/dashboard/login?next=")


# What pages' scripts ask in the background: without a session, a 401 they can show.
ASKED_BY_SCRIPTS = ("/recipients", "/status", "/stream")


def signed_out_answer(route: str, response: Response) -> bool:
    if route.endswith(ASKED_BY_SCRIPTS):
        return response.status_code == 401 and "set-cookie" not in response.headers
    return to_sign_in(response)


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.nodb
def test_the_rules_name_only_routes_that_exist() -> None:
    """A rule left behind by a route that moved or went: the table must say what is."""
    stale = sorted(set(RULES) - set(ROUTES))
    assert not stale, f"rules for routes the application does not serve: {stale}"


@pytest.mark.nodb
@pytest.mark.parametrize("route", ROUTES)
def test_every_route_has_a_rule(route: str) -> None:
    rule_of(route)
    for name in PARAM.findall(route):
        assert name in SAMPLES, f"{route}: add a sample for {{{name}}} to SAMPLES"
        assert name in SCOPED or name in UNSCOPED, (
            f"{route}: say in SCOPED (how to make another region's) or UNSCOPED (why no "
            f"region owns it) what the path parameter {{{name}}} names")


@pytest.mark.parametrize("route", ROUTES)
def test_route_by_role(world: World, route: str) -> None:
    rule = rule_of(route)
    people = world.people
    if rule.who == PUBLIC:
        answers = {who: call(world, route, people[who].auth).status_code
                   for who in ("admin", "operator", "reviewer", "radio")}
        answers.update({who: call(world, route, headers(people)).status_code
                        for who, headers in NOBODY.items()})
        assert len(set(answers.values())) == 1, (route, answers)
        assert next(iter(answers.values())) not in (401, 403), (route, answers)
        assert max(answers.values()) < 500, (route, answers)
        return
    if rule.who == WEBHOOK:
        callers = {"admin": people["admin"].auth,
                   **{who: headers(people) for who, headers in NOBODY.items()}}
        for who, sent in callers.items():
            refused = call(world, route, sent)
            assert refused.status_code == 403, (route, who, refused.text)
        with_token = call(world, route, {}, token=True)
        assert with_token.status_code not in (401, 403), (route, with_token.text)
        assert with_token.status_code < 500, (route, with_token.text)
        return
    if rule.page:
        for who, sends in NO_SESSION.items():
            refused = call(world, route, sends(world))
            assert signed_out_answer(route, refused), (route, who, refused.status_code,
                                                       refused.headers.get("location"))
    else:
        for who, nobody in NOBODY.items():
            refused = call(world, route, nobody(people))
            assert refused.status_code == 401, (route, who, refused.text)
            assert refused.headers["WWW-Authenticate"] == "Bearer", (route, who)
            assert set(refused.json()) == {"detail"}, (route, who)
    for role in (Role.operator, Role.reviewer, Role.radio):
        if role in rule.who:
            continue
        headers, csrf = as_role(world, role, rule)
        refused = call(world, route, headers, csrf=csrf)
        assert refused.status_code == 403, (route, role, refused.text)
        if not rule.page:
            assert refused.json() == {"detail": f"the {role} role may not do this"}, (
                route, role)
    if rule.stream:
        return  # see Rule.stream
    for role in sorted(rule.who):
        headers, csrf = as_role(world, role, rule)
        allowed = call(world, route, headers, csrf=csrf)
        assert allowed.status_code not in (401, 403), (route, role, allowed.text)
        assert not to_sign_in(allowed), (route, role, "sent to the sign-in page")
        assert allowed.status_code < 500, (route, role, allowed.text)


ID_ROUTES = [r for r in ROUTES if any(name in SCOPED for name in PARAM.findall(r))]


@pytest.mark.parametrize("route", ID_ROUTES)
def test_another_regions_record_answers_like_a_missing_one(world: World, route: str) -> None:
    rule = rule_of(route)
    assert isinstance(rule.who, frozenset), route
    scoped_roles = sorted(rule.who - {Role.admin, Role.radio})  # admins: every region
    assert scoped_roles, f"{route}: admins only, so no region to step out of"
    names = [n for n in PARAM.findall(route) if n in SCOPED]
    elsewhere = {n: SCOPED[n].elsewhere(world) for n in names}
    missing = {n: SCOPED[n].missing for n in names}
    for role in scoped_roles:
        headers, csrf = as_role(world, role, rule)
        before = len(out_of_scope(world))
        other = call(world, route, headers, values=elsewhere, csrf=csrf)
        after_other = len(out_of_scope(world))
        absent = call(world, route, headers, values=missing, csrf=csrf)
        # (a page names its own address, in its language switch: the ids aside)
        ids = "|".join(re.escape(v) for v in (*elsewhere.values(), *missing.values()))
        shown = [(r.status_code, re.sub(rf"/({ids})\b", "/{id}", r.text))
                 for r in (other, absent)]
        assert shown[0] == shown[1], (route, role, other.text, absent.text)
        assert other.status_code == 404, (route, role, other.text)
        assert after_other == before + 1, f"{route}: the out-of-scope attempt is not audited"
        assert len(out_of_scope(world)) == after_other, f"{route}: a missing one is audited"


def out_of_scope(world: World) -> list[audit.Entry]:
    with world.runtime.db.transaction() as conn:
        return audit.entries(conn, action="access.out_of_scope", limit=500).items


BEYOND = ("2147483648", "99999999999999999999")  # past the database's 32-bit ids


@pytest.mark.parametrize("route", ID_ROUTES)
def test_an_id_past_the_databases_integers_is_refused_not_a_500(world: World,
                                                                route: str) -> None:
    rule = rule_of(route)
    assert isinstance(rule.who, frozenset), route
    headers, csrf = as_role(world, Role.admin, rule)
    names = [n for n in PARAM.findall(route) if n in SCOPED]
    for value in BEYOND:
        answer = call(world, route, headers, values=dict.fromkeys(names, value), csrf=csrf)
        assert answer.status_code in (404, 422), (route, value, answer.text[:300])


@pytest.mark.parametrize("path", [
    "/api/v1/audit", "/api/v1/broadcasts", "/api/v1/reports", "/dashboard/reports",
    "/dashboard/audit"])
def test_a_cursor_past_the_databases_integers_is_refused_not_a_500(world: World,
                                                                    path: str) -> None:
    route = f"GET {path}"
    rule = rule_of(route)
    headers, _ = as_role(world, Role.admin, rule)
    for value in BEYOND:
        answer = world.client.get(path, params={"cursor": value}, headers=headers)
        assert answer.status_code in (200, 422), (path, value, answer.text[:300])
