"""The radio pages over HTTP (TestClient): who may open them (a table of role x page), no
inline script or style on them, CSRF on the form, the problems named on the form, and
another cercle's campaign a 404. The browser walk is tests/browser/test_onair.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.operators import accounts
from gateway.operators.access import Principal, Role
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store.models import utcnow
from tests.operators.dashboard_client import (
    ADMIN,
    DJENNE,
    OPERATOR,
    PASSWORD,
    REVIEWER,
    assets,
    hidden,
    seams_for,
    sign_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
HOST = Principal(5, "kaoural", Role.radio)
NOW = utcnow()


def show_form(**change: str) -> dict[str, str]:
    return {"name": "Débat du jeudi", "station": "Radio Kaoural", "question": "army",
            "service_code": "*123*5#", "keyword": "Kaoural", "hosts": "kaoural",
            "starts_at": (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (NOW + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")} | change


@pytest.fixture
def dash(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(settings, runtime=runtime)
    app.state.dashboard_seams = seams_for(runtime)
    with runtime.db.transaction() as conn:
        accounts.create(conn, name=HOST.name, role=HOST.role, cercles=(), password=PASSWORD,
                        known_cercles=("mopti",), actor="cli", now=utcnow())
    with TestClient(app) as client:
        yield client


def post_show(client: TestClient, **change: str) -> int:
    page = client.get("/dashboard/campaigns")
    response = client.post("/dashboard/campaigns", follow_redirects=False,
                           data=show_form(**change) | {"csrf": hidden(page.text, "csrf")})
    return response.status_code


@pytest.fixture
def show(dash: TestClient) -> int:
    assert sign_in(dash, OPERATOR).status_code == 303
    assert post_show(dash) == 303
    dash.cookies.clear()
    return 1


# role -> (campaigns page, on-air page, on-air stream) for Mopti and Koro's show
PAGES = {ADMIN: (200, 200), OPERATOR: (200, 200), REVIEWER: (403, 403), HOST: (200, 200),
         DJENNE: (200, 404)}


@pytest.mark.parametrize("who", list(PAGES), ids=lambda p: p.role.value + "-" + p.name)
def test_role_by_page(dash: TestClient, show: int, who: Principal) -> None:
    assert sign_in(dash, who).status_code == 303
    listing, onair = PAGES[who]
    assert dash.get("/dashboard/campaigns").status_code == listing
    page = dash.get(f"/dashboard/onair/{show}")
    assert page.status_code == onair
    if onair == 200:
        found = assets(page.text)
        assert found.inline == []
        assert any("onair.js" in url for url in found.urls)
        assert "script-src 'self'" in page.headers["content-security-policy"]


def test_signed_out_the_pages_send_to_the_sign_in(dash: TestClient, show: int) -> None:
    for path in ("/dashboard/campaigns", f"/dashboard/onair/{show}"):
        response = dash.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/dashboard/login")
    # The page's stream is told, not sent to a page it cannot show.
    assert dash.get(f"/dashboard/onair/{show}/stream",
                    follow_redirects=False).status_code == 401


def test_the_form_needs_its_csrf_token_and_names_the_problems(dash: TestClient,
                                                              show: int) -> None:
    assert sign_in(dash, OPERATOR).status_code == 303
    refused = dash.post("/dashboard/campaigns", data=show_form(keyword="Autre"),
                        follow_redirects=False)
    assert refused.status_code == 403
    assert post_show(dash) == 409  # the same code and keyword at the same time
    again = dash.post("/dashboard/campaigns", data=show_form(keyword="STOP") | {
        "csrf": hidden(dash.get("/dashboard/campaigns").text, "csrf")})
    assert again.status_code == 422
    assert "already a keyword or a stop" in again.text
    assert 'value="STOP"' in again.text  # what was typed stays in the form
    assert post_show(dash, starts_at="") == 422
    host = dash.get("/dashboard/campaigns")
    assert "Débat du jeudi" in host.text
