"""The commune digest: votes cast and reports filed through the USSD webhook come back as
one commune's sheet: trust per actor this period against the last, how many answered, and
reports by coded category and force; all suppressed like an export (a commune with 2
respondents, and the commune that would give it away, shown as suppressed)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from gateway.operators.access import Role
from gateway.runtime import Runtime
from gateway.store import queries
from gateway.store.models import utcnow
from tests.operators.people import Person, cast
from tests.operators.reporters import file_report
from tests.operators.voters import WEEK_49, Clock, cast_votes, vote

DIGEST = "/api/v1/polls/trust-fds/digest"
WEEK_48 = WEEK_49 - timedelta(days=7)
TWO_WEEKS = {"since": "2026-11-30T00:00:00Z", "until": "2026-12-14T00:00:00Z"}


@pytest.fixture
def people(runtime: Runtime) -> dict[Role, Person]:
    return cast(runtime)


@pytest.fixture
def voted(client: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    """The known distribution (weeks 49 and 50), and, the fortnight before, five people
    in Djenné with no trust in the army at all."""
    cast_votes(client, runtime)
    clock = Clock()
    runtime.ussd.clock = clock
    for number in ("401", "402", "403", "404", "405"):
        vote(client, clock, number, "not_at_all", "man", "25-34", "no", "djenne-djenne",
             WEEK_48)


def get(client: TestClient, who: Person, **params: Any) -> Any:
    response = client.get(DIGEST, params=params, headers=who.auth)
    assert response.status_code == 200, response.text
    return response.json()


def test_trust_per_actor_this_period_against_the_last(
        client: TestClient, people: dict[Role, Person], voted: None) -> None:
    body = get(client, people[Role.admin],
               commune="djenne-djenne", **TWO_WEEKS)
    assert body["commune"] == {"id": "djenne-djenne", "name": "Djenné", "cercle": "djenne",
                               "cercle_name": "Djenné"}
    assert body["period"] == {"since": "2026-11-30T00:00:00+00:00",
                              "until": "2026-12-14T00:00:00+00:00"}
    assert body["previous"] == {"since": "2026-11-16T00:00:00+00:00",
                                "until": "2026-11-30T00:00:00+00:00"}
    assert body["respondents"] == {"current": 5, "previous": 5}
    actors = {a["question"]: a for a in body["actors"]}
    assert list(actors) == ["army", "gendarmerie", "police", "national_guard"]
    army = actors["army"]
    assert army["label"]["fr"] == "Armée (FAMa)" and army["label"]["bm"]
    # 201 a lot, 202 just a little, 203 not at all, 204 refused, 205 a lot: 2 of 5 trust.
    assert army["current"]["trust"] == {"value": 40.0, "low": 11.8, "high": 76.9}
    assert army["current"]["percent"]["a_lot"]["value"] == 40.0
    assert army["previous"]["trust"]["value"] == 0.0  # the five of week 48
    assert army["trust_change"] == 40.0
    assert actors["police"]["current"]["trust"]["value"] == 100.0  # everyone pressed "a lot"


def test_a_small_commune_and_its_complement_are_suppressed(
        client: TestClient, people: dict[Role, Person], voted: None) -> None:
    moussa = people[Role.operator]  # Mopti and Koro
    # Fatoma: 2 respondents; Konna: 5, but with the cercle's total it would give Fatoma away.
    for commune in ("mopti-fatoma", "mopti-konna"):
        body = get(client, moussa, commune=commune, **TWO_WEEKS)
        assert body["respondents"]["current"] is None
        assert all(a["current"] == {"n": None, "suppressed": True, "percent": None,
                                    "trust": None} for a in body["actors"])
        assert all(a["trust_change"] is None for a in body["actors"])
    # Whoever asks, the same cells are hidden (the admin sees every cercle).
    assert get(client, people[Role.admin], commune="mopti-konna", **TWO_WEEKS) == body


def test_reports_by_category_and_force_counts_only(
        client: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    where = {"cercle": "Djenné", "commune": "Djenné"}
    for _ in range(5):
        file_report(client, runtime, category="Menace ou insulte", force="Police", **where,
                    text="Le sergent Traoré")
    for _ in range(4):
        file_report(client, runtime, category="Argent exigé", force="Police", **where)
    file_report(client, runtime, category="Arrestation abusive", force="Armée (FAMa)", **where)
    old = file_report(client, runtime, category="Arrestation abusive", **where)
    file_report(client, runtime)  # Konna: another commune
    with runtime.db.transaction() as conn:
        conn.execute(update(queries.reports).where(queries.reports.c.id == old.id)
                     .values(created_at=utcnow() - timedelta(days=40)))

    body = get(client, people[Role.admin], commune="djenne-djenne")  # the last 30 days
    reports = body["reports"]
    assert reports["n"] == 10
    assert [(c["value"], c["n"], c["suppressed"]) for c in reports["by_category"]] == [
        ("extortion", None, True),  # 4: hidden with arrest (1), which alone would show
        ("arrest", None, True),
        ("threat", 5, False),
    ]
    assert reports["by_category"][2]["label"]["fr"] == "Menace ou insulte"
    assert [(c["value"], c["n"]) for c in reports["by_force"]] == [
        ("army", None), ("police", None)]  # 1 and 9: 9 would give the 1 away
    assert "Traoré" not in str(body) and "sergent" not in str(body)
    assert body["respondents"] == {"current": 0, "previous": 0}


@pytest.mark.parametrize(("role", "status"), [
    (Role.admin, 200), (Role.operator, 200), (Role.reviewer, 403), (Role.radio, 403)])
def test_who_may_read_a_digest(client: TestClient, people: dict[Role, Person], role: Role,
                               status: int) -> None:
    response = client.get(DIGEST, params={"commune": "mopti-konna"},
                          headers=people[role].auth)
    assert response.status_code == status, response.text
    assert client.get(DIGEST, params={"commune": "mopti-konna"}).status_code == 401


@pytest.mark.parametrize(("query", "status"), [
    ({"commune": "djenne-djenne"}, 404),  # Djenné is not one of Moussa's cercles
    ({"commune": "mopti"}, 404),  # a cercle, not a commune
    ({"commune": "nowhere"}, 404),
    ({}, 422),
    ({"commune": "mopti-konna", "since": "2026-12-10", "until": "2026-12-01"}, 422),
    ({"commune": "mopti-konna", "since": "hier"}, 422),
])
def test_a_digest_that_makes_no_sense_is_named(client: TestClient,
                                               people: dict[Role, Person],
                                               query: dict[str, str], status: int) -> None:
    response = client.get(DIGEST, params=query, headers=people[Role.operator].auth)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert client.get("/api/v1/polls/nope/digest?commune=mopti-konna",
                      headers=people[Role.operator].auth).status_code == 404
