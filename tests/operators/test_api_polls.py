"""``/api/v1/polls``: who may read results (a table of role x endpoint), the figures of
votes cast through the USSD webhook as the contract shapes them, scope, and the problems
named for requests that make no sense."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.operators.access import Role
from gateway.runtime import Runtime
from tests.operators.people import Person, cast
from tests.operators.voters import SCALE, cast_votes

RESULTS = "/api/v1/polls/trust-fds/results"


@pytest.fixture
def people(runtime: Runtime) -> dict[Role, Person]:
    return cast(runtime)


@pytest.fixture
def voted(client: TestClient, runtime: Runtime, people: dict[Role, Person]) -> Person:
    cast_votes(client, runtime)
    return people[Role.admin]


def get(client: TestClient, who: Person, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=who.auth)
    assert response.status_code == 200, response.text
    return response.json()


def counts(**found: int) -> dict[str, int]:
    return {value: found.get(value, 0) for value in SCALE}


OPERATORS = {Role.admin: 200, Role.operator: 200, Role.reviewer: 403, Role.radio: 403}


@pytest.mark.parametrize("path", ["/api/v1/polls", f"{RESULTS}?question=army",
                                  f"{RESULTS}?question=army&by=commune&suppress=true"])
def test_role_by_endpoint(client: TestClient, people: dict[Role, Person], path: str) -> None:
    for role, status in OPERATORS.items():
        response = client.get(path, headers=people[role].auth)
        assert response.status_code == status, (role, response.text)
    assert client.get(path).status_code == 401


def test_the_polls_with_their_questions_and_values(client: TestClient,
                                                   people: dict[Role, Person]) -> None:
    [poll] = get(client, people[Role.operator], "/api/v1/polls")
    assert poll["poll"] == "trust-fds" and poll["title"]["fr"] == "Sondage"
    questions = {q["question"]: [v["value"] for v in q["values"]] for q in poll["questions"]}
    assert questions["army"] == list(SCALE)
    assert questions["gender"] == ["woman", "man", "refused"]
    assert questions["age_band"] == ["15-24", "25-34", "35-49", "50+", "refused"]
    assert questions["displaced"] == ["yes", "no", "refused"]


def test_results_by_commune_and_gender_as_the_contract_shapes_them(
        client: TestClient, voted: Person) -> None:
    body = get(client, voted, RESULTS, question="army", by=["commune", "gender"])
    assert set(body) == {"poll", "question", "k", "total", "rows"}
    assert (body["poll"], body["question"], body["k"]) == ("trust-fds", "army", 5)
    assert body["total"]["n"] == 12
    assert body["total"]["counts"] == counts(a_lot=5, somewhat=2, not_at_all=2, dont_know=1,
                                             just_a_little=1, refused=1)
    assert body["total"]["percent"]["a_lot"] == {"value": 41.7, "low": 19.3, "high": 68.0}
    rows = [(r["group"], r["n"], r["small"]) for r in body["rows"]]
    assert rows == [
        ({"commune": "mopti-fatoma", "gender": "woman"}, 1, True),
        ({"commune": "mopti-fatoma", "gender": "man"}, 1, True),
        ({"commune": "mopti-konna", "gender": "woman"}, 2, True),
        ({"commune": "mopti-konna", "gender": "man"}, 2, True),
        ({"commune": "mopti-konna", "gender": "refused"}, 1, True),
        ({"commune": "djenne-djenne", "gender": "woman"}, 3, True),
        ({"commune": "djenne-djenne", "gender": "man"}, 2, True),
    ]
    first = body["rows"][0]
    assert set(first) == {"group", "n", "counts", "percent", "suppressed", "small"}
    assert first["counts"] == counts(somewhat=1) and first["suppressed"] is False


def test_the_shared_view_hides_a_small_commune_and_its_complement(
        client: TestClient, voted: Person) -> None:
    body = get(client, voted, RESULTS, question="army", by="commune", suppress="true")
    assert [(r["group"]["commune"], r["n"], r["counts"], r["suppressed"])
            for r in body["rows"]] == [
        ("mopti-fatoma", None, None, True),
        ("mopti-konna", 5, counts(a_lot=2, somewhat=1, not_at_all=1, dont_know=1), False),
        ("djenne-djenne", None, None, True),
    ]
    assert all("small" not in row for row in body["rows"])
    assert body["total"]["n"] == 12


def test_an_operator_sees_only_their_cercles(client: TestClient, voted: Person,
                                             people: dict[Role, Person]) -> None:
    moussa = people[Role.operator]  # Mopti and Koro
    body = get(client, moussa, RESULTS, question="army", by="commune")
    assert [(r["group"]["commune"], r["n"]) for r in body["rows"]] == [
        ("mopti-fatoma", 2), ("mopti-konna", 5)]
    assert body["total"]["n"] == 7
    everyone = get(client, voted, RESULTS, question="army", by="cercle")
    assert [(r["group"]["cercle"], r["n"]) for r in everyone["rows"]] == [
        ("mopti", 7), ("djenne", 5)]


def test_since_and_until(client: TestClient, voted: Person) -> None:
    later = get(client, voted, RESULTS, question="army", by="commune",
                since="2026-12-07T10:00:00+00:00")
    assert [(r["group"]["commune"], r["n"]) for r in later["rows"]] == [
        ("mopti-fatoma", 2), ("mopti-konna", 1), ("djenne-djenne", 3)]
    earlier = get(client, voted, RESULTS, question="army", by="week", until="2026-12-07")
    assert [(r["group"]["week"], r["n"]) for r in earlier["rows"]] == [("2026-W49", 6)]


@pytest.mark.parametrize(("query", "status", "detail"), [
    ("", 422, None),  # no question
    ("?question=village", 422, "poll trust-fds has no question 'village'"),
    ("?question=army&by=commune&by=gender&by=week", 422, "at most 2 dimensions at once"),
    ("?question=army&by=commune&by=commune", 422, "a dimension is given twice"),
    ("?question=army&by=village", 422, None),
    ("?question=army&since=yesterday", 422, None),
    # Times that exist where they were written but not in UTC (schemathesis found these).
    ("?question=army&since=0001-01-01T00:00:00%2B05:00", 422,
     "0001-01-01T00:00:00+05:00 is out of range"),
    ("?question=army&until=9999-12-31T23:59:59-05:00", 422,
     "9999-12-31T23:59:59-05:00 is out of range"),
])
def test_a_request_that_makes_no_sense_is_named(client: TestClient,
                                                people: dict[Role, Person], query: str,
                                                status: int, detail: str | None) -> None:
    response = client.get(RESULTS + query, headers=people[Role.operator].auth)
    assert response.status_code == status, response.text
    if detail is not None:
        assert response.json() == {"detail": detail}
    else:
        assert response.json()["detail"]  # FastAPI's list of what did not validate


def test_an_unknown_poll_is_not_found(client: TestClient, people: dict[Role, Person]) -> None:
    response = client.get("/api/v1/polls/nope/results?question=army",
                          headers=people[Role.admin].auth)
    assert response.status_code == 404
    assert response.json() == {"detail": "not found"}
