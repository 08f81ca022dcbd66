"""results.csv and answers.csv: votes cast through the USSD webhook, exported, and read back
with the csv module. results.csv is always the shared view (a small commune suppressed with
its complement); answers.csv is for admins, one row per counted answer, with ids and
respondent keys drawn afresh for every export; formula cells neutralised; audited."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from gateway.operators import audit, exports
from gateway.operators.access import Role
from gateway.runtime import Runtime
from gateway.store.models import PollAnswer
from tests.operators.people import Person, cast
from tests.operators.voters import AGAIN, AREAS, VOTES, cast_votes

API = "/api/v1"
RESULTS = f"{API}/exports/results.csv"
ANSWERS = f"{API}/exports/answers.csv"
SCALE_COLUMNS = [f"{v}{s}" for v in ("not_at_all", "just_a_little", "somewhat", "a_lot",
                                     "dont_know", "refused")
                 for s in ("", "_pct", "_low", "_high")]


@pytest.fixture
def people(runtime: Runtime) -> dict[Role, Person]:
    return cast(runtime)


@pytest.fixture
def voted(client: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    cast_votes(client, runtime)


def parse(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


def download(client: TestClient, who: Person, url: str, **params: Any) -> list[dict[str, str]]:
    response = client.get(url, params=params, headers=who.auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.content.endswith(b"\r\n")
    return parse(response.content)


def audit_details(runtime: Runtime, action: str) -> list[tuple[str, str | None, Any]]:
    with runtime.db.transaction() as conn:
        found = audit.entries(conn, action=action).items
    return [(e.actor, e.object_id, json.loads(e.details)) for e in found]


@pytest.mark.parametrize(("url", "allowed"), [
    (f"{RESULTS}?poll=trust-fds&question=army&by=commune", {Role.admin, Role.operator}),
    (f"{ANSWERS}?poll=trust-fds", {Role.admin}),
])
def test_who_may_export(client: TestClient, people: dict[Role, Person], url: str,
                        allowed: set[Role]) -> None:
    for role, person in people.items():
        response = client.get(url, headers=person.auth)
        assert response.status_code == (200 if role in allowed else 403), (role, response.text)
    assert client.get(url).status_code == 401


def test_results_csv_is_the_shared_view(client: TestClient, runtime: Runtime,
                                        people: dict[Role, Person], voted: None) -> None:
    rows = download(client, people[Role.admin], RESULTS, poll="trust-fds", question="army",
                    by="commune")
    assert list(rows[0]) == ["level", "commune", "n", "suppressed", *SCALE_COLUMNS]
    assert [(r["level"], r["commune"], r["n"], r["suppressed"]) for r in rows] == [
        ("total", "", "12", "false"),
        ("group", "mopti-fatoma", "", "true"),  # 2 respondents
        ("group", "mopti-konna", "5", "false"),
        ("group", "djenne-djenne", "", "true"),  # its complement: 12 - 5 - 5 would be 2
    ]
    total, fatoma, konna, _ = rows
    assert (total["a_lot"], total["a_lot_pct"], total["a_lot_low"], total["a_lot_high"]) == (
        "5", "41.7", "19.3", "68.0")
    assert [konna[v] for v in ("not_at_all", "just_a_little", "somewhat", "a_lot",
                               "dont_know", "refused")] == ["1", "0", "1", "2", "1", "0"]
    assert all(fatoma[c] == "" for c in SCALE_COLUMNS)
    shared = client.get(f"{API}/polls/trust-fds/results", headers=people[Role.admin].auth,
                        params={"question": "army", "by": "commune", "suppress": "true"})
    assert [r["n"] for r in shared.json()["rows"]] == [None, 5, None]  # the API agrees

    assert audit_details(runtime, "export.results") == [("awa", "trust-fds", {
        "question": "army", "by": ["commune"], "since": None, "until": None})]


def test_results_csv_within_the_operators_cercles_by_two_dimensions(
        client: TestClient, people: dict[Role, Person], voted: None) -> None:
    moussa = people[Role.operator]  # Mopti and Koro
    rows = download(client, moussa, RESULTS, poll="trust-fds", question="army",
                    by=["cercle", "gender"], since="2026-11-01T00:00:00Z")
    assert [(r["level"], r["cercle"], r["gender"], r["n"], r["suppressed"]) for r in rows] == [
        ("total", "", "", "7", "false"),
        ("group", "mopti", "woman", "", "true"),
        ("group", "mopti", "man", "", "true"),
        ("group", "mopti", "refused", "", "true"),
    ]
    rows = download(client, moussa, RESULTS, poll="trust-fds", question="army", by="cercle")
    assert [(r["cercle"], r["n"]) for r in rows] == [("", "7"), ("mopti", "7")]


@pytest.mark.parametrize(("query", "status"), [
    ("?poll=nope&question=army", 404),
    ("?poll=trust-fds&question=village", 422),
    ("?poll=trust-fds&question=army&by=village", 422),
    ("?poll=trust-fds&question=army&by=commune&by=gender&by=week", 422),
    ("?poll=trust-fds&question=army&since=hier", 422),
    ("?question=army", 422),
])
def test_a_results_export_that_makes_no_sense_is_named(
        client: TestClient, people: dict[Role, Person], query: str, status: int) -> None:
    response = client.get(RESULTS + query, headers=people[Role.operator].auth)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_answers_csv_holds_every_counted_answer_and_no_one_who_gave_it(
        client: TestClient, runtime: Runtime, people: dict[Role, Person], voted: None) -> None:
    awa = people[Role.admin]
    response = client.get(ANSWERS, params={"poll": "trust-fds"}, headers=awa.auth)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="answers.csv"'
    assert b"2237000" not in response.content and b"+223" not in response.content
    with runtime.db.transaction() as conn:
        pseudonyms = {r[0] for r in conn.execute(
            PollAnswer.__table__.select().with_only_columns(  # type: ignore[attr-defined]
                PollAnswer.__table__.c.pseudonym))}  # type: ignore[attr-defined]
    assert not any(p.encode() in response.content for p in pseudonyms)
    rows = parse(response.content)
    assert list(rows[0]) == list(exports.ANSWER_HEADER)

    army = {r["respondent"]: r for r in rows if r["question"] == "army"}
    assert len(army) == 12  # one counted answer per person: 101's latest only
    latest = {**VOTES, **AGAIN}
    expected = sorted((a, g, ag, d, AREAS.cercle(c), c, w.date().isoformat())
                      for a, g, ag, d, c, w in latest.values())
    assert sorted((r["answer"], r["gender"], r["age_band"], r["displaced"], r["cercle"],
                   r["commune"], r["date"]) for r in army.values()) == expected
    by_person: dict[str, set[str]] = {}
    for r in rows:
        by_person.setdefault(r["respondent"], set()).add(r["question"])
    assert set(by_person) == set(army)  # within one export, a person's answers go together
    assert {"army", "gendarmerie", "police", "national_guard"} <= by_person[next(iter(army))]
    assert all(len(r["id"]) == 16 and r["poll"] == "trust-fds" and r["campaign"] == ""
               for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)

    again = parse(client.get(ANSWERS, params={"poll": "trust-fds"}, headers=awa.auth).content)
    assert len(again) == len(rows)
    assert not {r["id"] for r in again} & {r["id"] for r in rows}
    assert not {r["respondent"] for r in again} & {r["respondent"] for r in rows}
    assert audit_details(runtime, "export.answers") == [("awa", "trust-fds", {})] * 2


def test_answers_csv_neutralises_formula_cells_and_reads_in_batches(
        client: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    """Values no current flow gives (an old flow version's, a hand-made import) still
    leave as text a spreadsheet will not run."""
    payloads = ["=HYPERLINK(\"http://x\")", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "a_lot"]
    with runtime.db.transaction() as conn:
        conn.execute(insert(PollAnswer), [
            {"poll": "trust-fds", "pseudonym": f"p{i}", "question": "army", "answer": value,
             "flow_version": 1, "area": "=cmd" if i == 0 else "mopti-konna"}
            for i, value in enumerate(payloads)])
    rows = download(client, people[Role.admin], ANSWERS, poll="trust-fds")
    assert [r["answer"] for r in rows] == ["'" + p for p in payloads[:-1]] + ["a_lot"]
    assert rows[0]["cercle"] == rows[0]["commune"] == ""  # an area no list names
    assert rows[1]["commune"] == "mopti-konna"

    whole = [r[2:] for r in exports.answer_records(runtime.db, poll="trust-fds", areas=AREAS)]
    assert [r[2:] for r in exports.answer_records(
        runtime.db, poll="trust-fds", areas=AREAS, batch=2)] == whole
    assert len(whole) == len(payloads)


def test_an_answers_export_of_an_unknown_poll_is_not_found(
        client: TestClient, people: dict[Role, Person]) -> None:
    response = client.get(f"{ANSWERS}?poll=nope", headers=people[Role.admin].auth)
    assert response.status_code == 404
    assert client.get(ANSWERS, headers=people[Role.admin].auth).status_code == 422
