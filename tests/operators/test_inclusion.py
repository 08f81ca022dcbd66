"""The inclusion monitor: an operator sets targets per cercle, and votes cast through the
USSD webhook show, per cercle, whose voices were heard against them (women, 15-24, the
displaced), with who may do what, scope, and the shared view."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.operators import audit
from gateway.operators.access import Role
from gateway.operators.inclusion import lacking, needed
from gateway.runtime import Runtime
from tests.operators.people import Person, cast
from tests.operators.voters import cast_votes

POLL = "/api/v1/polls/trust-fds"
TARGETS = {"women": 50, "young": 30, "displaced": 20}


@pytest.fixture
def people(runtime: Runtime) -> dict[Role, Person]:
    return cast(runtime)


@pytest.fixture
def voted(client: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    cast_votes(client, runtime)


def put(client: TestClient, who: Person, cercle: str, body: Any) -> Any:
    return client.put(f"{POLL}/inclusion/targets/{cercle}", headers=who.auth, json=body)


def table(body: dict[str, Any], measure: str) -> list[tuple[Any, ...]]:
    return [(c["cercle"], c["n"], c["measures"][measure]["count"],
             (c["measures"][measure]["percent"] or {}).get("value"),
             c["measures"][measure]["target"], c["measures"][measure]["met"],
             c["measures"][measure]["needed"]) for c in body["cercles"]]


def test_reached_against_target_per_cercle(client: TestClient, runtime: Runtime,
                                           people: dict[Role, Person], voted: None) -> None:
    awa, moussa = people[Role.admin], people[Role.operator]
    assert put(client, moussa, "mopti", TARGETS).json() == TARGETS
    assert put(client, awa, "djenne", TARGETS).status_code == 200
    body = client.get(f"{POLL}/inclusion", headers=awa.auth).json()
    assert (body["poll"], body["question"], body["k"]) == ("trust-fds", "army", 5)
    cercles = {c["cercle"]: c for c in body["cercles"]}
    assert set(cercles) == {"mopti", "youwarou", "djenne", "bandiagara", "koro", "bankass"}
    rows = {r[0]: r[1:] for r in table(body, "women")}
    #               n  women  %     target met    needed
    assert rows["mopti"] == (7, 3, 42.9, 50, False, 1)
    assert rows["djenne"] == (5, 3, 60.0, 50, True, 0)
    assert rows["koro"] == (0, None, None, None, None, None)  # nobody answered, no target
    young = {r[0]: r[1:] for r in table(body, "young")}
    assert young["mopti"] == (7, 3, 42.9, 30, True, 0)
    assert young["djenne"] == (5, 1, 20.0, 30, False, 1)
    displaced = {r[0]: r[1:] for r in table(body, "displaced")}
    assert displaced["djenne"] == (5, 1, 20.0, 20, True, 0)  # exactly the target
    assert cercles["mopti"]["measures"]["women"]["percent"] == {
        "value": 42.9, "low": 15.8, "high": 75.0}
    assert [(c["cercle"], c["small"]) for c in body["cercles"] if c["n"]] == [
        ("mopti", False), ("djenne", False)]
    assert lacking(body) == ["mopti"]  # where the next radio show should go

    [entry] = [e for e in audit_entries(runtime) if e.actor == "moussa"]
    assert (entry.object_id, json.loads(entry.details)) == (
        "trust-fds", {"cercle": "mopti", **TARGETS})


def audit_entries(runtime: Runtime) -> list[audit.Entry]:
    with runtime.db.transaction() as conn:
        return audit.entries(conn, action="inclusion.targets").items


def test_an_operator_sees_and_sets_only_their_cercles(
        client: TestClient, runtime: Runtime, people: dict[Role, Person], voted: None) -> None:
    moussa = people[Role.operator]  # Mopti and Koro
    body = client.get(f"{POLL}/inclusion", headers=moussa.auth).json()
    assert [(c["cercle"], c["n"]) for c in body["cercles"]] == [("mopti", 7), ("koro", 0)]
    assert put(client, moussa, "djenne", TARGETS).status_code == 404  # another region
    assert put(client, moussa, "tombouctou", TARGETS).status_code == 404  # no such cercle
    with runtime.db.transaction() as conn:
        [attempt] = audit.entries(conn, action="access.out_of_scope").items
    assert json.loads(attempt.details)["param_cercle"] == "djenne"
    assert audit_entries(runtime) == []
    # A target can be taken back: null is no target.
    put(client, moussa, "mopti", {"women": 50})
    put(client, moussa, "mopti", {"women": None, "young": 25})
    body = client.get(f"{POLL}/inclusion", headers=moussa.auth).json()
    assert [c["measures"]["women"]["target"] for c in body["cercles"]] == [None, None]
    assert [c["measures"]["young"]["target"] for c in body["cercles"]] == [25, None]


def test_the_shared_view_hides_what_results_hide(client: TestClient,
                                                 people: dict[Role, Person],
                                                 voted: None) -> None:
    body = client.get(f"{POLL}/inclusion?suppress=true", headers=people[Role.admin].auth)
    assert body.status_code == 200
    rows = {r[0]: r[1:3] for r in table(body.json(), "women")}
    # Mopti: 3 women, 3 men, 1 refused; Djenné 3 women, 2 men: every cell under 5 is
    # hidden with its complement, as results by cercle x gender hide them.
    assert rows["mopti"] == (7, None) and rows["djenne"] == (5, None)
    assert all("small" not in c for c in body.json()["cercles"])


@pytest.mark.parametrize(("role", "status"), [
    (Role.admin, 200), (Role.operator, 200), (Role.reviewer, 403), (Role.radio, 403)])
def test_who_may_read_and_set_targets(client: TestClient, people: dict[Role, Person],
                                      role: Role, status: int) -> None:
    who = people[role]
    assert client.get(f"{POLL}/inclusion", headers=who.auth).status_code == status
    assert put(client, who, "mopti", TARGETS).status_code == status
    assert client.get(f"{POLL}/inclusion").status_code == 401


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/api/v1/polls/nope/inclusion/targets/mopti", TARGETS, 404),
    (f"{POLL}/inclusion/targets/mopti", {"women": 101}, 422),
    (f"{POLL}/inclusion/targets/mopti", {"women": -1}, 422),
    (f"{POLL}/inclusion/targets/mopti", {"woman": 50}, 422),  # a misspelt measure
    (f"{POLL}/inclusion/targets/mopti", {"women": "half"}, 422),
])
def test_a_target_that_makes_no_sense_is_named(client: TestClient,
                                               people: dict[Role, Person], path: str,
                                               body: Any, status: int) -> None:
    response = client.put(path, headers=people[Role.admin].auth, json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert client.get(f"{POLL}/inclusion?question=village",
                      headers=people[Role.admin].auth).status_code == 422


@pytest.mark.nodb
@pytest.mark.parametrize(("count", "n", "target", "more"), [
    (3, 7, 50, 1), (0, 10, 50, 10), (5, 10, 50, 0), (1, 5, 30, 1), (0, 0, 50, 0),
    (2, 3, 100, None), (3, 3, 100, 0),
])
def test_how_many_more_would_meet_a_target(count: int, n: int, target: int,
                                           more: int | None) -> None:
    assert needed(count, n, target) == more
