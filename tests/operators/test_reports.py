"""The reviewers' queue and report page: who may call what (a table of role x route, read
from the API's own route table), scope (another region's report is a 404 like a missing
one, and audited), the states (every move of the table), notes, assignment, redaction,
the typed text opened only on the report's page and audited, erased with the reporter."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from starlette.routing import Mount

from gateway import retention
from gateway.operators import audit
from gateway.operators.access import Role
from gateway.operators.reports import MOVES, STATES
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.models import utcnow
from tests.operators.people import Person, cast, make
from tests.operators.reporters import erase, file_report
from tests.operators.test_audit import cli_verify

API = "/api/v1"
WEBHOOK = {"webhook_url": "http://127.0.0.1:9/hook", "secret": "s3cret-for-the-tests"}


@pytest.fixture
def people(runtime: Runtime) -> dict[str, Person]:
    """An admin, an operator, a radio host, and reviewers for Mopti, Koro and Djenné."""
    base = cast(runtime)
    return {
        "admin": base[Role.admin], "operator": base[Role.operator], "radio": base[Role.radio],
        "djenne": base[Role.reviewer],
        "mopti": make(runtime, "mariam", Role.reviewer, "mopti"),
        "koro": make(runtime, "oumar", Role.reviewer, "koro", "bankass"),
    }


def entries(runtime: Runtime, action: str) -> list[audit.Entry]:
    with runtime.db.transaction() as conn:
        return audit.entries(conn, action=action, limit=500).items


def api_of(client: TestClient) -> FastAPI:
    app = client.app
    assert isinstance(app, FastAPI)
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == API)
    assert isinstance(mount.app, FastAPI)
    return mount.app


# -- who may call what -------------------------------------------------------------------


def _partner(client: TestClient, admin: Person) -> None:
    response = client.post(f"{API}/partners", headers=admin.auth,
                           json={"name": "AMDH Mopti", **WEBHOOK})
    assert response.status_code == 201, response.text


def _reviewed(client: TestClient, admin: Person, report_id: int) -> None:
    response = client.post(f"{API}/reports/{report_id}/transitions", headers=admin.auth,
                           json={"to": "reviewed"})
    assert response.status_code == 200, response.text


def _ready_to_refer(client: TestClient, admin: Person, report_id: int) -> None:
    _reviewed(client, admin, report_id)
    if client.get(f"{API}/partners", headers=admin.auth).json() == []:
        _partner(client, admin)


Setup = Callable[[TestClient, Person, int], None] | None
REVIEWERS = {"admin": 0, "mopti": 0, "operator": 403, "radio": 403}  # 0: the route's success
ADMIN_ONLY = {"admin": 0, "mopti": 403, "operator": 403, "radio": 403}

# (method, path, body, success status, who, setup before each allowed call)
ROUTES: list[tuple[str, str, dict[str, Any] | None, int, dict[str, int], Setup]] = [
    ("GET", "/reports", None, 200, REVIEWERS, None),
    ("GET", "/reports/{id}", None, 200, REVIEWERS, None),
    ("POST", "/reports/{id}/transitions", {"to": "reviewed"}, 200, REVIEWERS, None),
    ("POST", "/reports/{id}/notes", {"text": "Vu avec le comité."}, 201, REVIEWERS, None),
    ("PUT", "/reports/{id}/redaction", {"text": "Un barrage."}, 200, REVIEWERS, None),
    ("PUT", "/reports/{id}/assignee", {"assignee": "mariam"}, 200, REVIEWERS, None),
    ("POST", "/reports/{id}/referrals", {"partner": "AMDH Mopti"}, 201, REVIEWERS,
     _ready_to_refer),
    ("GET", "/partners", None, 200, REVIEWERS, None),
    ("POST", "/partners", {"name": "AMDH {who}", **WEBHOOK}, 201, ADMIN_ONLY, None),
    ("GET", "/exports/reports.csv", None, 200, REVIEWERS, None),
]


def test_every_route_of_this_domain_is_in_the_table(client: TestClient) -> None:
    """A new route under /reports, /partners or /exports/reports without a row here fails
    (the poll exports' roles are tested with them, in test_poll_exports.py)."""
    served = {
        (method.upper(), path) for path, methods in api_of(client).openapi()["paths"].items()
        if path.startswith(("/reports", "/partners", "/exports/reports")) for method in methods
    }
    assert served == {(m, p.replace("{id}", "{report_id}")) for m, p, *_ in ROUTES}


@pytest.mark.parametrize(("method", "path", "body", "success", "who", "setup"), ROUTES,
                         ids=[f"{m} {p}" for m, p, *_ in ROUTES])
def test_role_by_route(client: TestClient, runtime: Runtime, people: dict[str, Person],
                       method: str, path: str, body: dict[str, Any] | None, success: int,
                       who: dict[str, int], setup: Setup) -> None:
    shared = file_report(client, runtime).id  # in Mopti: admin's and mariam's scope
    for name, expected in who.items():
        person = people[name]
        report_id = shared
        if expected == 0:  # a report of its own: a success may change it
            report_id = file_report(client, runtime).id
            if setup is not None:
                setup(client, people["admin"], report_id)
        sent = json.loads(json.dumps(body).replace("{who}", name)) if body else None
        url = API + path.replace("{id}", str(report_id))
        response = client.request(method, url, headers=person.auth, json=sent)
        assert response.status_code == (expected or success), (name, response.text)
        if expected == 403:
            assert response.json() == {"detail": f"the {person.role} role may not do this"}
        for headers in ({}, {"Authorization": "Bearer dny_not-a-token"}):
            refused = client.request(method, url, headers=headers, json=sent)
            assert refused.status_code == 401, (headers, refused.text)
            assert refused.headers["WWW-Authenticate"] == "Bearer"


# -- scope -------------------------------------------------------------------------------

ID_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "", None),
    ("POST", "/transitions", {"to": "reviewed"}),
    ("POST", "/notes", {"text": "Vu."}),
    ("PUT", "/redaction", {"text": "Un barrage."}),
    ("PUT", "/assignee", {"assignee": None}),
    ("POST", "/referrals", {"partner": "AMDH Mopti"}),
]


def test_a_reviewer_sees_the_queue_of_their_cercles_only(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    konna = file_report(client, runtime, cercle="Mopti", commune="Konna",
                        text="Ils ont pris 5000F au barrage")
    koro = file_report(client, runtime, cercle="Koro", commune="Koro", category="Violence, "
                       "mauvais traitement", force="Armée (FAMa)", when="Aujourd'hui")
    djenne = file_report(client, runtime, cercle="Djenné", commune=None)
    nowhere = file_report(client, runtime, cercle="Autre / je ne sais pas")

    def ids(person: Person, query: str = "") -> list[int]:
        response = client.get(f"{API}/reports{query}", headers=person.auth)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids(people["mopti"]) == [konna.id]
    assert ids(people["koro"]) == [koro.id]
    assert ids(people["djenne"]) == [djenne.id]
    # A report with no place (cercle "other") is seen by admins only (access.area_filter).
    assert ids(people["admin"]) == [nowhere.id, djenne.id, koro.id, konna.id]
    # Asking for another region finds nothing, the same as a region with no report.
    assert ids(people["mopti"], "?cercle=koro") == []
    assert ids(people["mopti"], "?commune=koro-koro") == []
    assert ids(people["mopti"], "?cercle=youwarou") == []

    listed = client.get(f"{API}/reports", headers=people["mopti"].auth)
    [item] = listed.json()["items"]
    assert item.pop("created_at").startswith(str(utcnow().year))
    assert item == {
        "id": konna.id, "channel": "ussd", "flow": "report", "status": "new",
        "assignee": None, "has_text": True, "text_erased": False, "redacted": False,
        "reporter_week_count": 1,
        "answers": {
            "category": {"value": "extortion", "label": "Argent exigé"},
            "force": {"value": "gendarmerie", "label": "Gendarmerie"},
            "when": {"value": "this_week", "label": "Cette semaine"},
            "cercle": {"value": "mopti", "label": "Mopti"},
            "commune": {"value": "mopti-konna", "label": "Konna"},
        },
    }
    assert "5000F" not in listed.text  # the text is opened on the report's own page only
    assert entries(runtime, "report.text_view") == []
    [djenne_item] = client.get(f"{API}/reports", headers=people["djenne"].auth).json()["items"]
    assert djenne_item["answers"]["commune"] == {"value": "other",
                                                 "label": "Autre / je ne sais pas"}


@pytest.mark.parametrize(("method", "suffix", "body"), ID_ROUTES,
                         ids=[f"{m} {s or '/'}" for m, s, _ in ID_ROUTES])
def test_another_regions_report_is_a_404_like_a_missing_one_and_audited(
        client: TestClient, runtime: Runtime, people: dict[str, Person], method: str,
        suffix: str, body: dict[str, Any] | None) -> None:
    koro = file_report(client, runtime, cercle="Koro", commune="Koro", text="Au marché")
    _ready_to_refer(client, people["admin"], koro.id)
    mariam = people["mopti"]
    before = client.get(f"{API}/reports/{koro.id}", headers=people["admin"].auth).json()

    other = client.request(method, f"{API}/reports/{koro.id}{suffix}", headers=mariam.auth,
                           json=body)
    missing = client.request(method, f"{API}/reports/999999{suffix}", headers=mariam.auth,
                             json=body)
    assert (other.status_code, other.json()) == (404, {"detail": "not found"})
    assert (missing.status_code, missing.json()) == (404, {"detail": "not found"})
    assert set(other.headers) == set(missing.headers)

    [attempt] = entries(runtime, "access.out_of_scope")
    assert attempt.actor == "mariam"
    assert json.loads(attempt.details)["param_report_id"] == str(koro.id)
    assert entries(runtime, "report.text_view")[0].actor == "awa"  # admin's view only
    after = client.get(f"{API}/reports/{koro.id}", headers=people["admin"].auth).json()
    assert {k: v for k, v in after.items() if k != "history"} == \
        {k: v for k, v in before.items() if k != "history"}
    assert after["history"] == before["history"]


def test_a_report_id_too_large_for_the_database_is_refused_not_a_500(
        client: TestClient, people: dict[str, Person]) -> None:
    response = client.get(f"{API}/reports/99999999999", headers=people["admin"].auth)
    assert response.status_code == 422
    response = client.get(f"{API}/reports?cursor=99999999999", headers=people["admin"].auth)
    assert response.status_code == 422


# -- the report's page -------------------------------------------------------------------


def test_the_report_page_opens_the_text_and_each_opening_is_audited(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    filed = file_report(client, runtime, text="Barrage de Konna, 5000F pris")
    mariam = people["mopti"]
    for _ in range(2):
        page = client.get(f"{API}/reports/{filed.id}", headers=mariam.auth)
        assert page.status_code == 200
    found = page.json()
    assert found["text"] == "Barrage de Konna, 5000F pris"
    assert (found["has_text"], found["text_erased"], found["redacted_text"]) == \
        (True, False, None)
    assert (found["cercle"], found["commune"], found["moves"]) == \
        ("mopti", "mopti-konna", ["reviewed"])
    assert (found["notes"], found["history"], found["referrals"]) == ([], [], [])
    views = entries(runtime, "report.text_view")
    assert [(e.actor, e.object_type, e.object_id) for e in views] == \
        [("mariam", "report", str(filed.id))] * 2
    with runtime.db.transaction() as conn:
        every = audit.entries(conn, limit=500).items
        assert audit.verify(conn) is None
    assert not any("Barrage" in e.details or "5000" in e.details for e in every)
    assert not any(filed.number[1:] in str(e) for e in every)


def test_a_report_without_text_is_a_plain_view(client: TestClient, runtime: Runtime,
                                               people: dict[str, Person]) -> None:
    filed = file_report(client, runtime)
    found = client.get(f"{API}/reports/{filed.id}", headers=people["mopti"].auth).json()
    assert (found["text"], found["has_text"], found["text_erased"]) == (None, False, False)
    assert [e.object_id for e in entries(runtime, "report.view")] == [str(filed.id)]
    assert entries(runtime, "report.text_view") == []


XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def test_a_script_in_a_report_comes_back_as_data(client: TestClient, runtime: Runtime,
                                                  people: dict[str, Person]) -> None:
    filed = file_report(client, runtime, text=XSS)
    response = client.get(f"{API}/reports/{filed.id}", headers=people["mopti"].auth)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["text"] == XSS  # as typed: the dashboard escapes it in pages
    redacted = client.put(f"{API}/reports/{filed.id}/redaction", headers=people["mopti"].auth,
                          json={"text": XSS})
    assert redacted.headers["content-type"] == "application/json"
    assert redacted.json()["redacted_text"] == XSS


# -- states --------------------------------------------------------------------------------

PATH_TO = {"new": [], "reviewed": ["reviewed"], "referred": ["reviewed", "referred"],
           "closed": ["reviewed", "closed"]}


@pytest.mark.parametrize("start", STATES)
def test_transitions(client: TestClient, runtime: Runtime, people: dict[str, Person],
                     start: str) -> None:
    """From ``start``, each state: the allowed moves work, every other one is a 409 that
    names the allowed moves and changes nothing."""
    mariam = people["mopti"]
    for to in STATES:
        filed = file_report(client, runtime)
        url = f"{API}/reports/{filed.id}/transitions"
        for step in PATH_TO[start]:
            assert client.post(url, headers=mariam.auth, json={"to": step}).status_code == 200
        moved = client.post(url, headers=mariam.auth, json={"to": to, "note": "Vu au comité."})
        page = client.get(f"{API}/reports/{filed.id}", headers=mariam.auth).json()
        if to in MOVES[start]:
            assert moved.status_code == 200, moved.text
            assert moved.json() == {"id": filed.id, "status": to, "moves": list(MOVES[to])}
            assert page["status"] == to
            assert page["history"][-1] | {"at": None} == {
                "at": None, "actor": "mariam", "action": "transition", "from": start,
                "to": to, "ref": None, "note": "Vu au comité."}
            last = entries(runtime, "report.transition")[0]
            assert (last.object_id, json.loads(last.details)) == \
                (str(filed.id), {"from": start, "to": to})
        else:
            allowed = ", ".join(MOVES[start]) or f"none ({start} is final)"
            assert moved.status_code == 409, (start, to)
            assert moved.json() == {"detail": f"a {start} report cannot move to {to}; "
                                              f"allowed moves: {allowed}"}
            assert page["status"] == start
            assert len(page["history"]) == len(PATH_TO[start])


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("POST", "/notes", {"text": "a\x00b"}),
    ("PUT", "/redaction", {"text": "a\x00b"}),
    ("PUT", "/assignee", {"assignee": "mariam\x00"}),
    ("POST", "/referrals", {"partner": "AMDH\x00"}),
    ("POST", "/transitions", {"to": "reviewed", "note": "\x00"}),
])
def test_a_nul_character_is_a_422_not_a_database_error(
        client: TestClient, runtime: Runtime, people: dict[str, Person], method: str,
        suffix: str, body: dict[str, Any]) -> None:
    filed = file_report(client, runtime)
    response = client.request(method, f"{API}/reports/{filed.id}{suffix}",
                              headers=people["mopti"].auth, json=body)
    assert response.status_code == 422, response.text
    assert "a NUL character is not text" in response.text


def test_a_move_to_no_state_is_a_422(client: TestClient, runtime: Runtime,
                                     people: dict[str, Person]) -> None:
    filed = file_report(client, runtime)
    for body in ({"to": "archived"}, {}, {"to": "reviewed", "extra": 1}):
        response = client.post(f"{API}/reports/{filed.id}/transitions",
                               headers=people["mopti"].auth, json=body)
        assert response.status_code == 422, body


# -- notes, assignment, redaction ----------------------------------------------------------


def test_notes(client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    filed = file_report(client, runtime)
    url = f"{API}/reports/{filed.id}/notes"
    made = client.post(url, headers=people["mopti"].auth, json={"text": " Suivi demandé. "})
    assert made.status_code == 201
    note = made.json()
    assert (note["author"], note["text"]) == ("mariam", "Suivi demandé.")
    page = client.get(f"{API}/reports/{filed.id}", headers=people["admin"].auth).json()
    assert page["notes"] == [note]
    [entry] = entries(runtime, "report.note")
    assert json.loads(entry.details) == {"note": note["id"]}
    for text, problem in [("  ", "a note needs some words"),
                          ("x" * 2001, "2001 characters; at most 2000"),
                          ("Rappeler le 76 12 34 56", "looks like a phone number")]:
        refused = client.post(url, headers=people["mopti"].auth, json={"text": text})
        assert refused.status_code == 422
        assert problem in refused.json()["detail"]


def test_assignment_to_a_reviewer_of_the_reports_cercle(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    filed = file_report(client, runtime)
    url = f"{API}/reports/{filed.id}/assignee"
    admin = people["admin"]
    assert client.put(url, headers=admin.auth, json={"assignee": "mariam"}).json() == \
        {"id": filed.id, "assignee": "mariam"}
    [item] = client.get(f"{API}/reports", headers=people["mopti"].auth).json()["items"]
    assert item["assignee"] == "mariam"
    for name, problem in [("fanta", "does not review this report's cercle"),
                          ("moussa", "is not a reviewer"),
                          ("nobody", "no active account named 'nobody'")]:
        refused = client.put(url, headers=admin.auth, json={"assignee": name})
        assert refused.status_code == 422
        assert problem in refused.json()["detail"]
    assert client.put(url, headers=admin.auth, json={"assignee": "awa"}).status_code == 200
    assert client.put(url, headers=admin.auth, json={"assignee": None}).json() == \
        {"id": filed.id, "assignee": None}
    assert [json.loads(e.details) for e in entries(runtime, "report.assign")] == \
        [{"assignee": None}, {"assignee": "awa"}, {"assignee": "mariam"}]


def test_redaction_sits_beside_the_original(client: TestClient, runtime: Runtime,
                                            people: dict[str, Person]) -> None:
    filed = file_report(client, runtime, text="Le sergent Traoré a pris 5000F à Konna")
    url = f"{API}/reports/{filed.id}/redaction"
    mariam = people["mopti"]
    done = client.put(url, headers=mariam.auth, json={"text": "Un agent a pris 5000F."})
    assert done.json() == {"id": filed.id, "redacted_text": "Un agent a pris 5000F."}
    page = client.get(f"{API}/reports/{filed.id}", headers=mariam.auth).json()
    assert page["text"] == "Le sergent Traoré a pris 5000F à Konna"
    assert page["redacted_text"] == "Un agent a pris 5000F."
    assert page["history"][-1]["action"] == "redact"
    [entry] = entries(runtime, "report.redact")
    assert json.loads(entry.details) == {"chars": 22}
    for text in ("Son numéro: +223 76 12 34 56", "x" * 1001):
        assert client.put(url, headers=mariam.auth, json={"text": text}).status_code == 422
    assert client.get(f"{API}/reports", headers=mariam.auth).json()["items"][0]["redacted"]


# -- erasure ---------------------------------------------------------------------------------


def test_the_original_text_goes_with_the_reporters_data_and_the_report_says_so(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    filed = file_report(client, runtime, text="Au poste de Sévaré")
    kept = file_report(client, runtime, text="Au marché de Konna")
    mariam = people["mopti"]
    client.put(f"{API}/reports/{filed.id}/redaction", headers=mariam.auth,
               json={"text": "Au poste."})
    erase(client, filed.number)  # SUPPRIMER, by USSD

    page = client.get(f"{API}/reports/{filed.id}", headers=mariam.auth).json()
    assert (page["text"], page["has_text"], page["text_erased"]) == (None, False, True)
    assert page["redacted_text"] == "Au poste."  # the reviewer's words stay
    assert page["answers"]["category"]["value"] == "extortion"  # coded answers stay
    items = {i["id"]: i for i in client.get(f"{API}/reports", headers=mariam.auth)
             .json()["items"]}
    assert (items[filed.id]["has_text"], items[filed.id]["text_erased"]) == (False, True)
    assert (items[kept.id]["has_text"], items[kept.id]["text_erased"]) == (True, False)


def test_the_retention_job_erases_old_text_and_the_report_says_so(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    filed = file_report(client, runtime, text="Au poste de Sévaré")
    later = utcnow() + timedelta(days=runtime.settings.retention_text_days + 1)
    retention.purge(runtime.db, retention=retention.Retention.of(runtime.settings), now=later)
    page = client.get(f"{API}/reports/{filed.id}", headers=people["mopti"].auth).json()
    assert (page["text"], page["text_erased"]) == (None, True)


# -- filters and pages -----------------------------------------------------------------------


def test_filters_and_pages(client: TestClient, runtime: Runtime,
                           people: dict[str, Person]) -> None:
    konna = [file_report(client, runtime, commune="Konna") for _ in range(3)]
    sio = file_report(client, runtime, commune="Sio")
    koro = file_report(client, runtime, cercle="Koro", commune="Koro")
    admin = people["admin"]
    client.post(f"{API}/reports/{konna[0].id}/transitions", headers=admin.auth,
                json={"to": "reviewed"})

    def ids(query: str) -> list[int]:
        response = client.get(f"{API}/reports?{query}", headers=admin.auth)
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["items"]]

    everything = [koro.id, sio.id, *[f.id for f in reversed(konna)]]
    assert ids("") == everything
    assert ids("status=reviewed") == [konna[0].id]
    assert ids("status=new&cercle=mopti") == [sio.id, konna[2].id, konna[1].id]
    assert ids("commune=mopti-sio") == [sio.id]
    assert ids("cercle=koro") == [koro.id]
    today = utcnow().date()
    assert ids(f"since={today}&until={today}") == everything
    assert ids(f"until={today - timedelta(days=1)}") == []
    assert ids(f"since={today + timedelta(days=1)}") == []
    assert ids("since=2020-01-01T00:00:00%2B00:00") == everything

    seen: list[int] = []
    cursor = ""
    while True:
        page = client.get(f"{API}/reports?limit=2{cursor}", headers=admin.auth).json()
        seen += [i["id"] for i in page["items"]]
        if page["next"] is None:
            break
        cursor = f"&cursor={page['next']}"
    assert seen == everything

    for query, problem in [("status=archived", "status"),
                           ("cercle=bamako", "cercle: 'bamako' is not a cercle id"),
                           ("commune=mopti", "commune: 'mopti' is not a commune id"),
                           ("since=yesterday", "since: 'yesterday' is not an ISO 8601"),
                           ("until=2026-12-01T10:00:00", "until: give the time with its offset"),
                           ("until=9999-12-31", "until: '9999-12-31' is out of range"),
                           ("since=0001-01-01T00:00:00%2B05:00", "is out of range"),
                           ("limit=0", "limit")]:
        refused = client.get(f"{API}/reports?{query}", headers=admin.auth)
        assert refused.status_code == 422, query
        assert problem in json.dumps(refused.json()), (query, refused.json())


def test_the_place_is_kept_on_the_report_for_filtering(client: TestClient,
                                                       runtime: Runtime) -> None:
    file_report(client, runtime, cercle="Bankass", commune=None)
    file_report(client, runtime, cercle="Youwarou", commune="Dirma")
    with runtime.db.transaction() as conn:
        areas = conn.execute(select(queries.reports.c.area)
                             .order_by(queries.reports.c.id)).scalars().all()
    assert areas == ["bankass", "youwarou-dirma"]


# -- a queue nobody can flood ------------------------------------------------------------


def test_the_queue_counts_each_reporters_week_never_who_they_are(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    busy = file_report(client, runtime, text="Au barrage")
    again = [file_report(client, runtime, number=busy.number) for _ in range(2)]
    elsewhere = file_report(client, runtime, cercle="Koro", commune="Koro",
                            number=busy.number)
    once = file_report(client, runtime, commune="Sio")
    old = file_report(client, runtime, commune="Sio", number=once.number)
    with runtime.db.transaction() as conn:  # filed eight days ago
        conn.execute(update(queries.reports).where(queries.reports.c.id == old.id)
                     .values(created_at=utcnow() - timedelta(days=8)))
        pseudonyms = set(conn.execute(select(queries.reports.c.pseudonym)).scalars())

    def counts(person: Person) -> dict[int, int | None]:
        response = client.get(f"{API}/reports", headers=person.auth)
        assert response.status_code == 200, response.text
        assert not any(p in response.text for p in pseudonyms if p)  # no stable reporter id
        return {i["id"]: i["reporter_week_count"] for i in response.json()["items"]}

    mopti = [busy.id, *(f.id for f in again)]
    # Mariam (Mopti) counts the busy reporter's three Mopti reports: the Koro one is not
    # hers to know of. The old report is outside the week; its reporter filed one since.
    assert counts(people["mopti"]) == {**dict.fromkeys(mopti, 3), once.id: 1, old.id: 1}
    assert counts(people["admin"]) == {**dict.fromkeys([*mopti, elsewhere.id], 4),
                                       once.id: 1, old.id: 1}
    page = client.get(f"{API}/reports/{busy.id}", headers=people["mopti"].auth).json()
    assert page["reporter_week_count"] == 3

    erase(client, busy.number)  # the link to the reporter goes with their data
    assert counts(people["mopti"]) == {**dict.fromkeys(mopti, None), once.id: 1, old.id: 1}


def test_reports_past_the_limit_are_counted_for_admins(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    first = file_report(client, runtime)
    for _ in range(5):  # the default limit: 5 an hour
        file_report(client, runtime, number=first.number)
    admin_page = client.get(f"{API}/reports", headers=people["admin"].auth).json()
    assert len(admin_page["items"]) == 5  # the sixth was acknowledged, not kept
    assert admin_page["limited"] == 1
    assert {i["reporter_week_count"] for i in admin_page["items"]} == {5}
    # A reviewer does not get the count: it is every region's.
    assert client.get(f"{API}/reports", headers=people["mopti"].auth).json()["limited"] is None


# -- a trail nobody can quietly edit -----------------------------------------------------


def _alter(runtime: Runtime, entry_id: int) -> None:
    with runtime.db.transaction() as conn:  # someone with the database puts the blame on awa
        conn.execute(update(audit.log_table).where(audit.log_table.c.id == entry_id)
                     .values(actor="awa"))


def _delete(runtime: Runtime, entry_id: int) -> None:
    with runtime.db.transaction() as conn:  # or takes the view out of the log
        conn.execute(delete(audit.log_table).where(audit.log_table.c.id == entry_id))


@pytest.mark.parametrize(("tamper", "reason"), [
    (_alter, "its content does not match its hash (altered)"),
    (_delete, "missing (deleted): the log goes from entry {before} to entry {after}"),
], ids=["altered", "deleted"])
def test_a_view_taken_out_of_the_audit_log_is_caught(
        client: TestClient, runtime: Runtime, settings: Settings, people: dict[str, Person],
        tamper: Callable[[Runtime, int], None], reason: str) -> None:
    filed = file_report(client, runtime, text="Au barrage de Konna")
    mariam, admin = people["mopti"], people["admin"]
    assert client.get(f"{API}/reports/{filed.id}", headers=mariam.auth).status_code == 200
    assert client.get(f"{API}/exports/reports.csv", headers=mariam.auth).status_code == 200
    [view] = entries(runtime, "report.text_view")
    assert client.get(f"{API}/audit/verify", headers=admin.auth).json()["intact"] is True

    tamper(runtime, int(view.id))
    found = client.get(f"{API}/audit/verify", headers=admin.auth).json()
    expected = reason.format(before=view.id - 1, after=view.id + 1)
    assert (found["intact"], found["reason"]) == (False, expected)
    assert found["broken_entry"] == view.id
    done = cli_verify(settings)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0] == \
        f"audit entry {view.id} does not verify: {expected}"
