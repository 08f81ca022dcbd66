"""A NUL character wherever a request carries text gets a 422 that names where, on SQLite
and PostgreSQL alike. PostgreSQL text cannot hold one: an endpoint that forgot to check
answered 500 there (the fuzz test found ``GET /audit?action=%00``). The dashboard's pages
drop it from their query instead, as they do from their forms."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.operators.access import Role
from gateway.runtime import Runtime
from tests.operators.dashboard_client import ADMIN, seams_for, sign_in
from tests.operators.people import make

API = "/api/v1"
PARTNER = {"name": "AMDH", "webhook_url": "http://127.0.0.1:9/hook",
           "secret": "s3cret-for-the-tests"}

CASES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/audit?action=%00", None, "action"),
    ("GET", "/audit?limit=5&actor=aw%00a", None, "actor"),
    ("GET", "/polls/tr%00ust/results", None, "path"),
    ("GET", "/reports?cercle=mo%00pti", None, "cercle"),
    ("POST", "/partners", {**PARTNER, "name": "AM\x00DH"}, "body.name"),
    ("POST", "/broadcasts/preview",
     {"messages": {"fr": "Bonjour\x00"}, "audience": {"communes": ["mopti-konna"]}},
     "body.messages.fr"),
    ("POST", "/broadcasts/preview",
     {"messages": {"fr": "Bonjour"}, "audience": {"communes": ["mopti-konna", "mopti-\x00sio"]}},
     "body.audience.communes[1]"),
]


@pytest.mark.parametrize(("method", "path", "body", "where"), CASES,
                         ids=[f"{m} {p}" for m, p, _, _ in CASES])
def test_a_nul_character_is_a_422_naming_where(
        client: TestClient, runtime: Runtime, method: str, path: str,
        body: dict[str, Any] | None, where: str) -> None:
    admin = make(runtime, "awa", Role.admin)
    answer = client.request(method, API + path, headers=admin.auth, json=body)
    assert (answer.status_code, answer.json()) == (
        422, {"detail": f"{where}: a NUL character is not text"})


def test_a_json_body_sent_without_a_content_type_is_guarded_too(
        client: TestClient, runtime: Runtime) -> None:
    """FastAPI reads a body with no content type as JSON: so does the guard."""
    admin = make(runtime, "awa", Role.admin)
    answer = client.post(f"{API}/partners", headers=admin.auth,
                         content=b'{"name": "AM\\u0000DH", "webhook_url": '
                                 b'"http://127.0.0.1:9/hook", "secret": "s3cret-for-the-tests"}')
    assert (answer.status_code, answer.json()) == (
        422, {"detail": "body.name: a NUL character is not text"})


def test_the_same_requests_without_it_are_answered(client: TestClient,
                                                   runtime: Runtime) -> None:
    """The guard refuses the NUL, not the request: the same ones, clean, work."""
    admin = make(runtime, "awa", Role.admin)
    assert client.get(f"{API}/audit?action=account.create", headers=admin.auth) \
        .json()["items"][0]["action"] == "account.create"
    made = client.post(f"{API}/partners", headers=admin.auth, json=PARTNER)
    assert made.status_code == 201, made.text
    preview = client.post(f"{API}/broadcasts/preview", headers=admin.auth, json={
        "messages": {"fr": "Bonjour"}, "audience": {"communes": ["mopti-konna"]}})
    assert preview.status_code == 200, preview.text


def test_a_dashboard_page_drops_it_from_its_query(client: TestClient,
                                                  runtime: Runtime) -> None:
    client.app.state.dashboard_seams = seams_for(runtime)  # type: ignore[attr-defined]
    assert sign_in(client, ADMIN).status_code == 303
    page = client.get("/dashboard/audit?action=account.create%00")
    assert page.status_code == 200
    assert "account.create" in page.text
