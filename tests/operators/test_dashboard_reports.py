"""The reviewers' pages and the audit log page, through the dashboard as a browser uses it
(signed in through the form, forms posted with the CSRF token read off the page): the
queue of one's cercles with its filters, pages and weekly counts; a report's page with the
text escaped and each opening audited, only the allowed moves, the redaction, notes,
assignment and a referral after its confirmation; the audit log for admins only."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from gateway.operators import audit
from gateway.operators.access import Role
from gateway.runtime import Runtime
from tests.operators.dashboard_client import assets, hidden, sign_in
from tests.operators.people import PASSWORD, Person, make
from tests.operators.reporters import file_report

PAGES = "/dashboard/reports"


@pytest.fixture
def people(runtime: Runtime) -> dict[str, Person]:
    return {"admin": make(runtime, "awa", Role.admin),
            "mopti": make(runtime, "mariam", Role.reviewer, "mopti"),
            "operator": make(runtime, "moussa", Role.operator, "mopti")}


def browser(client: TestClient, person: Person) -> TestClient:
    """A browser of its own (its own cookies), signed in as ``person``."""
    tab = TestClient(client.app)
    signed = sign_in(tab, person.principal, password=PASSWORD)
    assert signed.status_code == 303, signed.text
    return tab


def post(tab: TestClient, path: str, page_html: str, **fields: str) -> Response:
    return tab.post(path, data={"csrf": hidden(page_html, "csrf"), **fields},
                    follow_redirects=False)


def rows(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'href="/dashboard/reports/(\d+)"', html)]


def views(runtime: Runtime) -> list[audit.Entry]:
    with runtime.db.transaction() as conn:
        return audit.entries(conn, action="report.text_view", limit=500).items


def test_the_queue_of_ones_cercles_with_filters_pages_and_weekly_counts(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    first = file_report(client, runtime, text="Au barrage")
    again = file_report(client, runtime, number=first.number, commune="Sio")
    other = file_report(client, runtime, commune="Sio")
    koro = file_report(client, runtime, cercle="Koro", commune="Koro")
    tab = browser(client, people["mopti"])

    page = tab.get(PAGES)
    assert page.status_code == 200
    assert rows(page.text) == [other.id, again.id, first.id]  # newest first; not Koro's
    assert assets(page.text).inline == []  # nothing the CSP would refuse
    weekly = re.findall(r'<td class="num">(\d+)</td>', page.text)
    assert weekly == ["1", "2", "2"]  # how many each reporter filed in 7 days, never who
    assert first.number[1:] not in page.text and "Au barrage" not in page.text
    assert "refusés par la limite" not in page.text  # the limit's count is for admins

    assert rows(tab.get(f"{PAGES}?commune=mopti-sio").text) == [other.id, again.id]
    assert rows(tab.get(f"{PAGES}?cercle=koro").text) == []  # another region: nothing
    assert rows(tab.get(f"{PAGES}?status=reviewed").text) == []
    refused = tab.get(f"{PAGES}?since=hier")
    assert "since: 'hier' is not an ISO 8601" in refused.text.replace("&#39;", "'")

    seen: list[int] = []
    url = f"{PAGES}?limit=2"
    while url:
        html = tab.get(url).text
        seen += rows(html)
        found = re.search(r'href="(/dashboard/reports\?[^"]*cursor=\d+[^"]*)"', html)
        url = found.group(1).replace("&amp;", "&") if found else ""
    assert seen == [other.id, again.id, first.id]

    admin = browser(client, people["admin"])
    assert koro.id in rows(admin.get(PAGES).text)
    assert "0 signalements refusés par la limite" in admin.get(PAGES).text.replace(
        "\u202f", " ")
    assert browser(client, people["operator"]).get(PAGES).status_code == 403


def test_a_reports_page_shows_the_text_as_text_and_each_opening_is_audited(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    typed = '<script>alert(1)</script><img src=x onerror=alert(2)>{{7*7}}'
    filed = file_report(client, runtime, text=typed)
    tab = browser(client, people["mopti"])
    page = tab.get(f"{PAGES}/{filed.id}")
    assert page.status_code == 200
    assert typed not in page.text and "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;{{7*7}}" \
        in page.text
    assert "49" not in page.text.split('data-report-text>')[1].split("</pre>")[0]
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "Argent exigé" in page.text and "Gendarmerie" in page.text  # labels, not codes
    assert [(e.actor, e.object_id) for e in views(runtime)] == [("mariam", str(filed.id))]
    tab.get(f"{PAGES}/{filed.id}")
    assert len(views(runtime)) == 2  # every opening


def test_a_reviewer_works_a_report_through_to_a_referral(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    client.post("/api/v1/partners", headers=people["admin"].auth, json={
        "name": "AMDH Mopti", "webhook_url": "http://127.0.0.1:9/hook",
        "secret": "s3cret-for-the-tests"})
    filed = file_report(client, runtime, text="Le sergent Traoré a pris 5000F")
    tab = browser(client, people["mopti"])
    url = f"{PAGES}/{filed.id}"

    page = tab.get(url).text
    assert re.findall(r'name="to" value="(\w+)"', page) == ["reviewed"]  # allowed moves only
    assert "Examinez le signalement avant de le transmettre" in page

    done = post(tab, f"{url}/redaction", page, redacted_text="Un agent a pris 5000F.")
    assert done.status_code == 303
    assert done.headers["location"] == f"{url}?done=redacted#redacted_text"
    page = tab.get(done.headers["location"]).text
    assert "Version expurgée enregistrée." in page
    assert ">Un agent a pris 5000F.</textarea>" in page

    refused = post(tab, f"{url}/notes", page, text="Rappeler le 76 12 34 56")
    assert refused.status_code == 422
    assert "phone number" in refused.text
    post(tab, f"{url}/notes", page, text="Vu avec le comité.")
    post(tab, f"{url}/assignee", page, assignee="mariam")
    post(tab, f"{url}/transition", page, to="reviewed")
    page = tab.get(url).text
    assert "Vu avec le comité." in page
    assert re.findall(r'name="to" value="(\w+)"', page) == ["referred", "closed"]
    assert '<option value="mariam" selected>' in page

    opened = len(views(runtime))
    confirm = post(tab, f"{url}/refer", page, partner="AMDH Mopti")
    assert confirm.status_code == 200
    assert len(views(runtime)) == opened  # the original is not on it: not opened
    shown = confirm.text
    assert "Transmettre le signalement n° " in shown and "AMDH Mopti" in shown
    assert "Un agent a pris 5000F." in shown and "Traoré" not in shown
    sent = post(tab, f"{url}/referrals", shown, partner="AMDH Mopti")
    assert sent.status_code == 303
    page = tab.get(url).text
    assert "Transmis" in page and "En file" in page
    assert re.findall(r'name="to" value="(\w+)"', page) == ["closed"]
    # A move the state does not allow, posted anyway: refused, naming the allowed ones.
    again = post(tab, f"{url}/transition", page, to="reviewed")
    assert again.status_code == 409
    assert "allowed moves: closed" in again.text


def test_the_audit_log_page_is_for_admins(client: TestClient, runtime: Runtime,
                                          people: dict[str, Person]) -> None:
    filed = file_report(client, runtime, text="Au barrage de Konna")
    browser(client, people["mopti"]).get(f"{PAGES}/{filed.id}")
    admin = browser(client, people["admin"])
    page = admin.get("/dashboard/audit?action=report.text_view")
    assert page.status_code == 200
    assert "mariam" in page.text and f'href="/dashboard/reports/{filed.id}"' in page.text
    assert "Au barrage" not in page.text and filed.number[1:] not in page.text
    checked = admin.get("/dashboard/audit?verify=1").text
    assert "Chaîne intacte" in checked
    assert browser(client, people["mopti"]).get("/dashboard/audit").status_code == 403
