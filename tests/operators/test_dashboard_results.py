"""The result pages over HTTP (TestClient), from votes cast through the USSD webhook: trust
per actor, the commune table and the weeks, filters, the shared view, chart downloads (SVG
and PNG, shared view, audited), the inclusion page and its targets, the commune digest.
The browser side is tests/browser/test_results.py."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.operators import audit
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import SERVICE_MISSING
from tests.operators.dashboard_client import ADMIN, REVIEWER, hidden, seams_for, sign_in
from tests.operators.voters import cast_votes

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PAGE = "/dashboard/results/trust-fds"


@pytest.fixture
def dash(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(settings, runtime=runtime)
    app.state.dashboard_seams = seams_for(runtime)
    with TestClient(app) as client:
        cast_votes(client, runtime)
        yield client


@pytest.fixture
def operator(dash: TestClient) -> TestClient:
    assert sign_in(dash).status_code == 303  # awa: Mopti and Koro
    return dash


def rows(html: str, table_id: str) -> list[list[str]]:
    """A table's body rows as plain text cells."""
    body = html.split(f'id="{table_id}"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    out = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        out.append([" ".join(re.sub(r"<[^>]+>", " ", c).replace("&nbsp;", " ").split())
                    for c in cells])
    return out


def test_trust_per_actor_and_per_commune_in_the_operators_cercles(operator: TestClient) -> None:
    page = operator.get(PAGE)
    assert page.status_code == 200
    assert len(page.content) < 100 * 1024
    # Mopti's 7: 101, 102, 301 a lot; 103, 302 somewhat; 104 not at all; 105 don't know.
    assert "Armée (FAMa)</th><td class=\"num\">7</td><td><strong>71&nbsp;%</strong>" in page.text
    assert rows(page.text, "communes") == [
        ["Fatoma", "2", "100 % [34–100] petit effectif", "50 %", "50 %", "0 %", "0 %", "0 %"],
        ["Konna", "5", "60 % [23–88]", "40 %", "20 %", "0 %", "20 %", "20 %"],
    ]
    assert page.text.count("<svg") == 3  # the actors, the communes and the weeks
    assert "Djenné" not in page.text.split("<main", 1)[1].split("</main>", 1)[0]


def test_the_shared_view_and_a_filter(operator: TestClient) -> None:
    shared = operator.get(PAGE, params={"shared": "1"})
    assert [r[:3] for r in rows(shared.text, "communes")] == [
        ["Fatoma", "—", "masqué"], ["Konna", "—", "masqué"]]  # Konna: Fatoma's complement
    women = operator.get(PAGE, params={"only": "gender:woman"})
    # Mopti's women: 101 (Konna), 102 (Konna), 302 (Fatoma).
    assert [r[:2] for r in rows(women.text, "communes")] == [["Fatoma", "1"], ["Konna", "2"]]
    assert '<option value="gender:woman" selected>' in women.text


def test_charts_download_as_svg_and_png_in_the_shared_view(operator: TestClient,
                                                           runtime: Runtime) -> None:
    svg = operator.get(f"{PAGE}/charts/communes.svg", params={"question": "army"})
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml; charset=utf-8"
    assert svg.headers["content-disposition"] == \
        'attachment; filename="trust-fds-communes-army.svg"'
    assert svg.text.count("masqué (trop peu de réponses)") == 2  # not the operator's view
    png = operator.get(f"{PAGE}/charts/actors.png", params={"only": "gender:woman"})
    if png.status_code == 503:
        pytest.skip(f"{SERVICE_MISSING}: libcairo2 (scripts/install-cairo)")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert operator.get(f"{PAGE}/charts/other.svg").status_code == 404
    with runtime.db.transaction() as conn:
        entries = audit.entries(conn, action="export.chart").items
    assert [(e.actor, json.loads(e.details)) for e in entries] == [
        ("awa", {"chart": "actors", "format": "png", "question": "army",
                 "only": "gender:woman"}),
        ("awa", {"chart": "communes", "format": "svg", "question": "army", "only": None})]


def test_the_inclusion_page_shows_where_womens_voices_are_missing(operator: TestClient,
                                                                  runtime: Runtime) -> None:
    page = operator.get("/dashboard/inclusion/trust-fds")
    assert page.status_code == 200 and 'id="lacking"' not in page.text  # no target yet
    saved = operator.post("/dashboard/inclusion/trust-fds", data={
        "csrf": hidden(page.text, "csrf"), "cercle": ["mopti", "koro"],
        "women_mopti": "50", "young_mopti": "30", "displaced_mopti": "20",
        "women_koro": "50", "young_koro": "", "displaced_koro": ""}, follow_redirects=True)
    assert saved.status_code == 200 and "Objectifs enregistrés." in saved.text
    lacking = html.unescape(saved.text.split('id="lacking"', 1)[1].split("</div>", 1)[0])
    assert "Mopti</strong> : femmes : 3 sur 7 répondants, objectif 50 % (il en faut 1 de " \
        "plus)" in lacking
    assert "Koro" in lacking and "personne n'a encore répondu" in lacking
    with runtime.db.transaction() as conn:
        entries = audit.entries(conn, action="inclusion.targets").items
    assert sorted(json.loads(e.details)["cercle"] for e in entries) == ["koro", "mopti"]
    refused = operator.post("/dashboard/inclusion/trust-fds", data={
        "csrf": hidden(page.text, "csrf"), "cercle": "mopti", "women_mopti": "150"})
    assert refused.status_code == 400
    no_csrf = operator.post("/dashboard/inclusion/trust-fds", data={"cercle": "mopti"})
    assert no_csrf.status_code == 403


def test_the_commune_digest_page(dash: TestClient) -> None:
    assert sign_in(dash, ADMIN).status_code == 303
    page = dash.get("/dashboard/digest/trust-fds", params={
        "commune": "djenne-djenne", "since": "2026-11-30", "until": "2026-12-13"})
    assert page.status_code == 200
    sheet = page.text.split('<article class="sheet"', 1)[1]
    assert "Djenné" in sheet and "Du 30/11/2026 au 13/12/2026" in sheet
    assert "<strong>40&nbsp;%</strong>" in sheet  # the army: 2 of 5
    bm = dash.get("/dashboard/digest/trust-fds", params={
        "commune": "djenne-djenne", "since": "2026-11-30", "until": "2026-12-13",
        "lang": "bm"})
    assert "Komini sɛbɛn" in bm.text and "Dannaya" in bm.text
    assert dash.get("/dashboard/digest/trust-fds",
                    params={"commune": "nowhere"}).status_code == 404


@pytest.mark.parametrize("path", [PAGE, "/dashboard/inclusion/trust-fds",
                                  "/dashboard/digest/trust-fds", f"{PAGE}/charts/actors.svg"])
def test_a_reviewer_may_not_read_results(dash: TestClient, path: str) -> None:
    assert sign_in(dash, REVIEWER).status_code == 303
    assert dash.get(path).status_code == 403


def test_the_first_poll_is_the_default(operator: TestClient) -> None:
    for page in ("results", "inclusion", "digest"):
        found = operator.get(f"/dashboard/{page}", follow_redirects=False)
        assert found.headers["location"] == f"/dashboard/{page}/trust-fds"


def test_the_csv_link_exports_the_shared_view_with_the_session(operator: TestClient) -> None:
    page = operator.get(PAGE, params={"question": "police"})
    found = re.search(r'href="([^"]*/results\.csv[^"]*)"', page.text)
    assert found is not None
    export = operator.get(html.unescape(found.group(1)))
    assert export.status_code == 200
    assert export.headers["content-type"] == "text/csv; charset=utf-8"
    lines = export.text.splitlines()
    assert lines[0].startswith("level,commune,n,suppressed,")
    assert lines[1].startswith("total,,7,false,")
    assert lines[2].startswith("group,mopti-fatoma,,true")
