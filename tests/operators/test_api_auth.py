"""The operator API's front door: who may call what (a table of role x endpoint), the
OAuth2 password flow and its throttling, credentials refused the moment they are revoked,
the error mapping every router shares, and the audit log as admins read it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.routing import Mount

from gateway.app import create_app
from gateway.operators import accounts, audit
from gateway.operators.access import NotFound, Role, check_cercles, require
from gateway.operators.api.deps import CurrentPrincipal
from gateway.privacy import keys as keys_mod
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store.models import utcnow
from tests.conftest import REPO
from tests.operators.people import PASSWORD, Person, cast

TOKEN_URL = "/api/v1/auth/token"


@pytest.fixture
def people(runtime: Runtime) -> dict[Role, Person]:
    return cast(runtime)


def api_of(client: TestClient) -> FastAPI:
    app = client.app
    assert isinstance(app, FastAPI)
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/api/v1")
    assert isinstance(mount.app, FastAPI)
    return mount.app


def from_address(client: TestClient, address: str) -> TestClient:
    """The same app, as seen from another client address."""
    return TestClient(client.app, client=(address, 50000))


# -- who may call what -------------------------------------------------------------------

ALL = {Role.admin: 200, Role.operator: 200, Role.reviewer: 200, Role.radio: 200}
ADMIN_ONLY = {Role.admin: 200, Role.operator: 403, Role.reviewer: 403, Role.radio: 403}


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/api/v1/audit", ADMIN_ONLY),
    ("GET", "/api/v1/audit?cursor=5&limit=2", ADMIN_ONLY),
    ("GET", "/api/v1/audit/verify", ADMIN_ONLY),
    ("GET", "/api/v1/auth/me", ALL),
    ("POST", "/api/v1/auth/logout", dict.fromkeys(Role, 204)),
])
def test_role_by_endpoint(client: TestClient, people: dict[Role, Person], method: str,
                          path: str, expected: dict[Role, int]) -> None:
    for role, status in expected.items():
        response = client.request(method, path, headers=people[role].auth)
        assert response.status_code == status, (role, response.text)
        if status == 403:
            assert response.json() == {"detail": f"the {role} role may not do this"}
    for headers in ({}, {"Authorization": "Bearer dny_not-a-token"},
                    {"Authorization": "Bearer "}, {"Authorization": "Basic YXdhOnB3"},
                    {"Authorization": people[Role.admin].token}):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert set(response.json()) == {"detail"}


# -- signing in --------------------------------------------------------------------------


def test_sign_in_gives_a_bearer_token(client: TestClient, people: dict[Role, Person]) -> None:
    response = client.post(TOKEN_URL, data={"username": "moussa", "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 12 * 3600
    me = client.get("/api/v1/auth/me",
                    headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json() == {"name": "moussa", "role": "operator", "cercles": ["koro", "mopti"]}
    # OAuth2's grant_type may be given (it must then be "password")
    assert client.post(TOKEN_URL, data={"grant_type": "password", "username": "awa",
                                        "password": PASSWORD}).status_code == 200
    assert client.post(TOKEN_URL, data={"grant_type": "client_credentials", "username": "awa",
                                        "password": PASSWORD}).status_code == 422


@pytest.mark.parametrize(("username", "password"), [
    ("moussa", "pas le bon mot de passe"),
    ("personne", PASSWORD),
    ("moussa", PASSWORD + " "),
])
def test_wrong_credentials_answer_401(client: TestClient, people: dict[Role, Person],
                                      username: str, password: str) -> None:
    response = client.post(TOKEN_URL, data={"username": username, "password": password})
    assert response.status_code == 401
    assert response.json() == {"detail": "incorrect username or password"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_form_that_does_not_validate_answers_422(client: TestClient) -> None:
    response = client.post(TOKEN_URL, data={"username": "moussa"})
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "password"] and problem["type"] == "missing"


@pytest.mark.parametrize("field", ["username", "password"])
def test_a_nul_character_in_the_form_is_a_422_not_a_database_error(
        client: TestClient, field: str) -> None:  # found by the schemathesis run
    form = {"username": "moussa", "password": "pas le bon mot de passe", field: "a\x00b"}
    response = client.post(TOKEN_URL, data=form)
    assert (response.status_code, response.json()) == (
        422, {"detail": f"{field}: a NUL character is not text"})


def test_five_failures_for_one_account_then_429_even_for_the_right_password(
        client: TestClient, people: dict[Role, Person]) -> None:
    for i in range(5):
        wrong = from_address(client, f"10.0.0.{i}").post(
            TOKEN_URL, data={"username": "moussa", "password": f"mauvais mot {i}"})
        assert wrong.status_code == 401
    right = from_address(client, "10.0.0.99").post(
        TOKEN_URL, data={"username": "moussa", "password": PASSWORD})
    assert right.status_code == 429
    assert right.json() == {"detail": "too many failed sign-ins; try again later"}
    assert 890 <= int(right.headers["Retry-After"]) <= 900
    # other accounts are not affected
    assert client.post(TOKEN_URL, data={"username": "fanta",
                                        "password": PASSWORD}).status_code == 200


def test_five_failures_from_one_address_then_429_for_every_name_from_it(
        client: TestClient, people: dict[Role, Person]) -> None:
    attacker = from_address(client, "203.0.113.7")
    for name in ("awa", "fanta", "moussa", "kaoural", "admin"):
        assert attacker.post(TOKEN_URL, data={"username": name,
                                              "password": "devine devine"}).status_code == 401
    refused = attacker.post(TOKEN_URL, data={"username": "awa", "password": PASSWORD})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    # the same account from elsewhere: one failure only, it signs in
    assert from_address(client, "198.51.100.1").post(
        TOKEN_URL, data={"username": "awa", "password": PASSWORD}).status_code == 200


# -- refused at once -------------------------------------------------------------------


def test_a_disabled_account_is_refused_at_once(client: TestClient, runtime: Runtime,
                                               people: dict[Role, Person]) -> None:
    moussa = people[Role.operator]
    login = client.post(TOKEN_URL, data={"username": "moussa", "password": PASSWORD})
    login_auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert client.get("/api/v1/auth/me", headers=moussa.auth).status_code == 200
    assert client.get("/api/v1/auth/me", headers=login_auth).status_code == 200
    with runtime.db.transaction() as conn:
        accounts.disable(conn, name="moussa", actor="awa", now=utcnow())
    assert client.get("/api/v1/auth/me", headers=moussa.auth).status_code == 401
    assert client.get("/api/v1/auth/me", headers=login_auth).status_code == 401
    assert client.post(TOKEN_URL, data={"username": "moussa",
                                        "password": PASSWORD}).status_code == 401


def test_a_revoked_token_is_refused_at_once(client: TestClient, runtime: Runtime,
                                            people: dict[Role, Person]) -> None:
    awa = people[Role.admin]
    assert client.get("/api/v1/audit", headers=awa.auth).status_code == 200
    with runtime.db.transaction() as conn:
        accounts.revoke_tokens(conn, name="awa", actor="cli", now=utcnow())
    assert client.get("/api/v1/audit", headers=awa.auth).status_code == 401


def test_logout_revokes_the_token_used(client: TestClient, people: dict[Role, Person]) -> None:
    token = client.post(TOKEN_URL, data={"username": "fanta", "password": PASSWORD})
    auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert client.post("/api/v1/auth/logout", headers=auth).status_code == 204
    assert client.get("/api/v1/auth/me", headers=auth).status_code == 401
    assert client.get("/api/v1/auth/me", headers=people[Role.reviewer].auth).status_code == 200


# -- the dashboard's session cookie --------------------------------------------------------


def test_the_session_cookie_works_and_unsafe_calls_need_the_csrf_token(
        client: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    with runtime.db.transaction() as conn:
        session = accounts.create_session(
            conn, account_id=people[Role.operator].principal.account_id, hours=8, now=utcnow())
    client.cookies.set(accounts.SESSION_COOKIE, session.cookie)
    assert client.get("/api/v1/auth/me").json()["name"] == "moussa"
    assert client.get("/api/v1/audit").status_code == 403  # the operator role
    refused = client.post("/api/v1/auth/logout")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "missing or wrong CSRF token"}
    assert client.post("/api/v1/auth/logout",
                       headers={accounts.CSRF_HEADER: "0" * 64}).status_code == 403
    assert client.post("/api/v1/auth/logout",
                       headers={accounts.CSRF_HEADER: session.csrf_token}).status_code == 204
    assert client.get("/api/v1/auth/me").status_code == 401
    # a bearer header wins over the cookie, and a bad one is not rescued by it
    client.cookies.set(accounts.SESSION_COOKIE, "dead")
    assert client.get("/api/v1/auth/me", headers=people[Role.admin].auth).json()["name"] == "awa"


# -- the error mapping every router gets ---------------------------------------------------


@pytest.fixture
def probed(client: TestClient) -> Iterator[TestClient]:
    """The API with a probe route that needs the operator role and Djenné."""
    api = api_of(client)

    def probe(thing_id: str, who: CurrentPrincipal) -> dict[str, str]:
        require(who, Role.operator)
        if thing_id == "missing":
            raise NotFound("no such thing")
        check_cercles(who, ["djenne"])
        return {"thing": thing_id}

    api.add_api_route("/probe/{thing_id}", probe, methods=["GET"])
    yield client


def test_out_of_scope_is_404_like_a_missing_record_and_audited(
        probed: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    moussa, awa = people[Role.operator], people[Role.admin]
    hidden = probed.get("/api/v1/probe/b-17", headers=moussa.auth)
    missing = probed.get("/api/v1/probe/missing", headers=moussa.auth)
    assert (hidden.status_code, hidden.json()) == (404, {"detail": "not found"})
    assert (missing.status_code, missing.json()) == (404, {"detail": "not found"})
    assert probed.get("/api/v1/probe/b-17", headers=awa.auth).json() == {"thing": "b-17"}
    assert probed.get("/api/v1/probe/b-17", headers=people[Role.radio].auth).status_code == 403
    with runtime.db.transaction() as conn:
        [entry] = audit.entries(conn, action="access.out_of_scope").items
    assert entry.as_dict()["details"] == {
        "method": "GET", "route": "/api/v1/probe/{thing_id}", "param_thing_id": "b-17"}
    assert (entry.actor, entry.object_type) == ("moussa", "request")


def test_an_out_of_scope_path_that_looks_like_a_phone_number_is_not_recorded_as_one(
        probed: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    response = probed.get("/api/v1/probe/22370000001", headers=people[Role.operator].auth)
    assert response.status_code == 404
    with runtime.db.transaction() as conn:
        [entry] = audit.entries(conn, action="access.out_of_scope").items
    assert "22370000001" not in entry.details


# -- the audit log, as admins read it ------------------------------------------------------


def test_the_audit_log_shows_sign_ins_and_account_changes(
        client: TestClient, runtime: Runtime, people: dict[Role, Person]) -> None:
    client.post(TOKEN_URL, data={"username": "moussa", "password": "pas le bon"})
    client.post(TOKEN_URL, data={"username": "moussa", "password": PASSWORD})
    client.post(TOKEN_URL, data={"username": "inconnu", "password": PASSWORD})
    awa = people[Role.admin].auth
    first = client.get("/api/v1/audit?limit=3", headers=awa).json()
    assert [(e["actor"], e["action"], e["details"].get("reason")) for e in first["items"]] == [
        ("inconnu", "auth.sign_in_failed", "unknown_account"),
        ("moussa", "auth.sign_in", None),
        ("moussa", "auth.sign_in_failed", "wrong_password"),
    ]
    item = first["items"][1]
    assert set(item) == {"id", "at", "actor", "action", "object_type", "object_id",
                         "details", "prev_hash", "hash"}
    assert item["object_type"] == "account" and item["details"] == {
        "via": "api", "client": "testclient"}
    rest = client.get(f"/api/v1/audit?cursor={first['next']}", headers=awa).json()
    assert rest["next"] is None
    assert [e["action"] for e in rest["items"]] == ["account.token", "account.create"] * 4
    everything = first["items"] + rest["items"]
    assert [e["id"] for e in everything] == list(range(11, 0, -1))
    assert all(a["prev_hash"] == b["hash"] for a, b in itertools.pairwise(everything))
    assert client.get("/api/v1/audit?cursor=0", headers=awa).status_code == 422
    assert client.get("/api/v1/audit?limit=501", headers=awa).status_code == 422
    with runtime.db.transaction() as conn:
        stored = " ".join(str(tuple(r)) for r in conn.execute(select(audit.log_table)))
    assert PASSWORD not in stored and "pas le bon" not in stored
    assert client.get("/api/v1/audit/verify", headers=awa).json() == {
        "intact": True, "entries": 11, "head": everything[0]["hash"],
        "broken_entry": None, "reason": None}


# -- OpenAPI ---------------------------------------------------------------------------------


def test_openapi_at_api_v1_with_the_oauth2_password_flow(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert {"/auth/token", "/auth/me", "/audit"} <= set(spec["paths"])
    assert spec["servers"] == [{"url": "/api/v1"}]
    [scheme] = spec["components"]["securitySchemes"].values()
    assert scheme["flows"]["password"]["tokenUrl"] == "auth/token"
    assert client.get("/api/v1/docs").status_code == 200


def test_in_production_the_docs_are_off_and_the_openapi_document_stays(
        tmp_path: Path, database_url: str) -> None:
    keys = tmp_path / "gateway.keys"
    keys_mod.write_new(keys)
    settings = Settings(_env_file=None, env="production", webhook_token="t0ken",
                        database_url=database_url, key_file=keys, content_dir=REPO)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/v1/docs").status_code == 404
        assert client.get("/docs").status_code == 404
        assert client.get("/api/v1/openapi.json").status_code == 200
