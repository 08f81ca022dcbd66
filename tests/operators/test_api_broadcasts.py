"""``/api/v1/broadcasts`` over HTTP: who may call what (a table of role x endpoint), the
contract's shapes and status codes, 404 for another region's broadcast, idempotency, 422
naming the field, cancel, counts following delivery reports, and the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.app import deliver
from gateway.channels.base import DeliveryReport, DeliveryStatus, SendOutcome, SendResult
from gateway.operators import audit, broadcasts
from gateway.operators.access import Role
from gateway.outbox import outbox
from gateway.runtime import Runtime
from gateway.store.models import utcnow
from tests.operators.people import Person, cast, make
from tests.operators.test_broadcasts import BM, BM_AIR, FR, FR_AIR, queue_all, seed, send_due

BASE = "/api/v1/broadcasts"
KONNA = {"messages": {"fr": FR, "bm": BM}, "audience": {"communes": ["mopti-konna"]}}


@pytest.fixture
def people(runtime: Runtime) -> dict[Role, Person]:
    return cast(runtime)


def post(client: TestClient, who: Person, body: dict[str, Any], key: str = "k1",
         path: str = BASE) -> Any:
    return client.post(path, json=body, headers={**who.auth, "Idempotency-Key": key})


def actions(runtime: Runtime) -> list[tuple[str, str, str | None]]:
    with runtime.db.transaction() as conn:
        rows = conn.execute(select(audit.log_table).order_by(audit.log_table.c.id)).all()
    return [(r.actor, r.action, r.object_id) for r in rows if r.action.startswith("broadcast")]


OPERATORS = {Role.admin: 200, Role.operator: 200, Role.reviewer: 403, Role.radio: 403}


@pytest.mark.parametrize(("method", "path", "body", "expected"), [
    ("POST", f"{BASE}/preview", KONNA, OPERATORS),
    ("POST", BASE, KONNA, {**OPERATORS, Role.admin: 201, Role.operator: 201}),
    ("GET", BASE, None, OPERATORS),
    ("GET", f"{BASE}/1", None, OPERATORS),
    ("POST", f"{BASE}/1/cancel", None, OPERATORS),
])
def test_role_by_endpoint(client: TestClient, runtime: Runtime, people: dict[Role, Person],
                          method: str, path: str, body: dict[str, Any] | None,
                          expected: dict[Role, int]) -> None:
    seed(runtime, "mopti-konna", "fr")
    post(client, people[Role.operator], KONNA, key="first")  # broadcast 1, in Mopti
    for role, status in expected.items():
        response = client.request(method, path, json=body, headers={
            **people[role].auth, "Idempotency-Key": f"key-{role}"})
        assert response.status_code == status, (role, response.text)
    for headers in ({}, {"Authorization": "Bearer dny_not-a-token"}):
        response = client.request(method, path, json=body,
                                  headers={**headers, "Idempotency-Key": "x"})
        assert response.status_code == 401


def test_the_preview_has_the_contracts_shape(client: TestClient, runtime: Runtime,
                                             people: dict[Role, Person]) -> None:
    seed(runtime, "mopti-konna", "fr", 2)
    seed(runtime, "mopti-konna", "bm")
    response = client.post(f"{BASE}/preview", json=KONNA, headers=people[Role.operator].auth)
    assert response.status_code == 200
    found = response.json()
    assert (found["recipients"], found["segments"]) == (3, 3)
    assert {k: {f: v[f] for f in ("recipients", "text", "encoding", "segments")}
            for k, v in found["languages"].items()} == {
        "fr": {"recipients": 2, "text": FR_AIR, "encoding": "GSM-7", "segments": 1},
        "bm": {"recipients": 1, "text": BM_AIR, "encoding": "GSM-7", "segments": 1},
    }
    assert found["cost"] is None  # GATEWAY_SMS_PRICE unset


@pytest.mark.parametrize(("body", "loc"), [
    ({**KONNA, "audience": {"communes": ["mopti-nulle-part"]}},
     ["body", "audience", "communes", 0]),
    ({**KONNA, "audience": {"cercles": ["gao"]}}, ["body", "audience", "cercles", 0]),
    ({**KONNA, "messages": {"fr": "", "bm": BM}}, ["body", "messages", "fr"]),
    ({**KONNA, "messages": {"fr": FR, "bm": BM, "en": "Hi"}}, ["body", "messages", "en"]),
    ({**KONNA, "messages": {"fr": "a" * 1000, "bm": BM}}, ["body", "messages", "fr"]),
    ({**KONNA, "send_at": "2020-01-01T09:00:00+00:00"}, ["body", "send_at"]),
    ({**KONNA, "messages": {"fr": FR}}, ["body", "messages", "bm"]),
    ({**KONNA, "send_at": "2099-01-01T09:00:00"}, ["body", "send_at"]),  # no offset
])
def test_a_body_that_does_not_validate_is_a_422_naming_the_field(
        client: TestClient, runtime: Runtime, people: dict[Role, Person],
        body: dict[str, Any], loc: list[Any]) -> None:
    seed(runtime, "mopti-konna", "bm")
    for path in (f"{BASE}/preview", BASE):
        response = post(client, people[Role.operator], body, path=path)
        assert response.status_code == 422, response.text
        assert [p["loc"] for p in response.json()["detail"]] == [loc]


def test_the_idempotency_key_is_required(client: TestClient,
                                         people: dict[Role, Person]) -> None:
    response = client.post(BASE, json=KONNA, headers=people[Role.operator].auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_an_audience_outside_the_callers_cercles_is_a_403_and_audited(
        client: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    body = {**KONNA, "audience": {"cercles": ["bandiagara"]}}
    for path in (f"{BASE}/preview", BASE):
        response = post(client, people[Role.operator], body, path=path)
        assert response.status_code == 403
        assert set(response.json()) == {"detail"}
    assert actions(runtime) == [("moussa", "broadcast.audience_out_of_scope", None)] * 2


def test_a_double_click_sends_once(client: TestClient, runtime: Runtime,
                                   people: dict[Role, Person]) -> None:
    seed(runtime, "mopti-konna", "fr", 2)
    seed(runtime, "mopti-konna", "bm")
    operator = people[Role.operator]
    first = post(client, operator, KONNA)
    again = post(client, operator, KONNA)
    assert (first.status_code, again.status_code) == (201, 200)
    made = first.json()
    assert again.json()["id"] == made["id"]
    assert made["status"] == "scheduled" and made["counts"]["recipients"] == 0
    assert post(client, operator, {**KONNA, "title": "autre"}).status_code == 409
    queue_all(runtime, broadcasts.Rules.of(runtime.settings, runtime.engine.content))
    send_due(runtime)
    found = client.get(f"{BASE}/{made['id']}", headers=operator.auth).json()
    assert found["counts"] == {"recipients": 3, "queued": 0, "sent": 3, "delivered": 0,
                               "failed": 0, "expired": 0, "cancelled": 0}
    assert actions(runtime) == [("moussa", "broadcast.create", str(made["id"]))]


def test_another_regions_broadcast_is_not_found(client: TestClient, runtime: Runtime,
                                                people: dict[Role, Person]) -> None:
    bandiagara = make(runtime, "issa", Role.operator, "bandiagara")
    theirs = post(client, bandiagara, {**KONNA, "audience": {"cercles": ["bandiagara"]}})
    ours = post(client, people[Role.operator], KONNA)
    operator = people[Role.operator].auth
    for method, path in (("GET", f"{BASE}/{theirs.json()['id']}"),
                         ("POST", f"{BASE}/{theirs.json()['id']}/cancel"),
                         ("GET", f"{BASE}/999")):
        response = client.request(method, path, headers=operator)
        assert (response.status_code, response.json()) == (404, {"detail": "not found"})
    listed = client.get(BASE, headers=operator).json()
    assert [b["id"] for b in listed["items"]] == [ours.json()["id"]] and listed["next"] is None
    everyone = client.get(BASE, headers=people[Role.admin].auth).json()
    assert len(everyone["items"]) == 2


def test_cancel_and_counts_follow_the_delivery_reports(client: TestClient, runtime: Runtime,
                                                       people: dict[Role, Person]) -> None:
    seed(runtime, "koro", "fr", 4)
    operator = people[Role.operator]
    made = post(client, operator, {**KONNA, "audience": {"cercles": ["koro"]}}).json()
    rules = broadcasts.Rules.of(runtime.settings, runtime.engine.content)
    queue_all(runtime, rules)
    with runtime.db.transaction() as conn:  # two handed over, then the operator cancels
        handed = outbox.claim(conn, policy=runtime.outbox_policy, owner="w",
                              now=utcnow(), limit=2)
        outbox.record(conn, policy=runtime.outbox_policy, owner="w", now=utcnow(),
                      results=[(c, SendResult(SendOutcome.accepted, f"p{c.id}")) for c in handed])
    response = client.post(f"{BASE}/{made['id']}/cancel", headers=operator.auth)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert send_due(runtime) == 0
    for c in handed:
        deliver(runtime, DeliveryReport("fake", DeliveryStatus.delivered, "1", f"p{c.id}"))
    found = client.get(f"{BASE}/{made['id']}", headers=operator.auth).json()
    assert found["counts"] == {"recipients": 4, "queued": 0, "sent": 0, "delivered": 2,
                               "failed": 0, "expired": 0, "cancelled": 2}
    assert client.post(f"{BASE}/{made['id']}/cancel", headers=operator.auth).status_code == 200
    assert [a for _, a, _ in actions(runtime)] == ["broadcast.create", "broadcast.cancel"]


def test_a_done_broadcast_cannot_be_cancelled(client: TestClient, runtime: Runtime,
                                              people: dict[Role, Person]) -> None:
    seed(runtime, "koro", "fr")
    operator = people[Role.operator]
    made = post(client, operator, {**KONNA, "audience": {"cercles": ["koro"]}}).json()
    rules = broadcasts.Rules.of(runtime.settings, runtime.engine.content)
    queue_all(runtime, rules)
    send_due(runtime)
    queue_all(runtime, rules)
    response = client.post(f"{BASE}/{made['id']}/cancel", headers=operator.auth)
    assert response.status_code == 409

