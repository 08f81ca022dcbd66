"""A report's text is the attacker's: payloads typed by a resident, filed through the real
USSD and SMS webhooks of the running gateway, opened in Chromium by a reviewer and an admin.
Nothing runs (no dialog, no console error, no CSP refusal: the page fixture fails on any),
no element is injected, and the text reads back exactly as typed: in the report's own
page, in the redaction box and a note, and on the referral's confirmation page.

Screenshots at 1280x800 and 360x640: the queue, a report's page, the confirmation, the
audit log (tests/browser/screenshots/, git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from gateway.operators import accounts
from gateway.store.models import utcnow
from tests.browser.conftest import Served, shoot, sign_in
from tests.handset import Handset
from tests.operators.dashboard_client import ADMIN, REVIEWER
from tests.operators.reporters import file_report

# (how it is filed, what the resident types): at most 120 characters; USSD cannot carry
# "*" (it separates the answers in the provider's text), so those go by SMS.
PAYLOADS = [
    ("ussd", "<script>alert(1)</script>"),
    ("ussd", "<img src=x onerror=alert(2)>"),
    ("ussd", '<a href="javascript:alert(3)">Voir la preuve</a>'),
    ("ussd", "javascript:alert(4)"),
    ("ussd", "<svg onload=alert(5)><circle r=40></circle></svg>"),
    ("ussd", '"><script>alert(6)</script><textarea>'),
    ("sms", "{{7*7}} ${7*7} {% print(7*7) %} #{7*7}"),
    ("sms", "</pre></textarea><iframe src=javascript:alert(8)></iframe>"),
]

# Elements no report text may add to a page: anything that runs or loads, or links away.
INJECTED = ("main script, main img, main svg:not(.bar), main iframe, main object, "
            "main embed, main [onerror], main [onload], main [onclick], "
            "a[href^='javascript']")


@pytest.fixture
def web(served: Served) -> Iterator[httpx.Client]:
    """The provider's side: plain HTTP to the running gateway's webhooks."""
    with httpx.Client(base_url=served.url, timeout=10) as client:
        yield client


def by_sms(web: httpx.Client, served: Served, number: str, text: str) -> int:
    """A report by SMS: the keyword, the no-trace warning confirmed, the questions, then
    the text (no place: an admin's report)."""
    handset = Handset(web, served.rt, number)
    for answer in ("D1", "1", "3", "6", "3", "7", "1", text):
        handset.deliver(answer)
    with served.rt.db.transaction() as conn:
        from sqlalchemy import select

        from gateway.store import queries

        return int(conn.execute(select(queries.reports.c.id)
                                .order_by(queries.reports.c.id.desc()).limit(1)).scalar_one())


@pytest.fixture
def filed(web: httpx.Client, served: Served) -> list[tuple[int, str, str]]:
    """Each payload filed through the webhooks: (report id, channel, text)."""
    out = []
    for n, (channel, text) in enumerate(PAYLOADS):
        number = f"+2237690{n:04d}"
        if channel == "ussd":
            report_id = file_report(web, served.rt, text=text, number=number).id
        else:
            report_id = by_sms(web, served, number, text)
        out.append((report_id, channel, text))
    return out


@pytest.fixture
def dialogs(page: Page) -> list[str]:
    """Every alert, confirm or prompt a page tries to open (none may)."""
    opened: list[str] = []

    def seen(dialog: Dialog) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", seen)
    return opened


def admin_token(served: Served) -> dict[str, str]:
    with served.rt.db.transaction() as conn:
        token = accounts.new_cli_token(conn, name=ADMIN.name, label="xss", actor="cli",
                                       now=utcnow())
    return {"Authorization": f"Bearer {token}"}


def assert_inert(page: Page, typed: str) -> None:
    expect(page.locator("[data-report-text]")).to_have_text(typed, use_inner_text=True)
    assert page.locator("[data-report-text]").evaluate("e => e.childElementCount") == 0
    assert page.locator(INJECTED).count() == 0, page.locator(INJECTED).first.evaluate(
        "e => e.outerHTML")
    own = page.evaluate("[...document.scripts].map(s => s.getAttribute('src') || 'inline')")
    assert all(src.startswith("/dashboard/static/") for src in own), own


def test_payloads_typed_into_reports_show_as_text(
        page: Page, served: Served, web: httpx.Client, filed: list[tuple[int, str, str]],
        dialogs: list[str]) -> None:
    api = admin_token(served)
    for report_id, _, text in filed:  # the worst a reviewer can do: copy it all over
        assert web.put(f"/api/v1/reports/{report_id}/redaction", headers=api,
                       json={"text": text}).status_code == 200
        assert web.post(f"/api/v1/reports/{report_id}/notes", headers=api,
                        json={"text": text}).status_code == 201

    sign_in(page, ADMIN.name)
    page.goto("/dashboard/reports")
    expect(page.get_by_role("heading", name="Signalements")).to_be_visible()
    assert page.locator(INJECTED).count() == 0
    shoot(page, "reports-queue-admin")

    for report_id, channel, text in filed:
        page.goto(f"/dashboard/reports/{report_id}")
        expect(page.get_by_role("heading", name=f"Signalement n° {report_id}")).to_be_visible()
        assert_inert(page, text)
        expect(page.locator("#redacted_text")).to_have_value(text)
        expect(page.locator(".note-text")).to_have_text(text, use_inner_text=True)
        if channel == "sms":
            assert "49" not in page.locator("main").inner_text()  # no template ran
    shoot(page, "report-xss")
    assert dialogs == []

    page.goto("/dashboard/audit")
    expect(page.get_by_role("heading", name="Journal d'audit")).to_be_visible()
    assert all(text not in page.content() for _, _, text in filed)
    shoot(page, "audit-log")


def test_a_reviewer_redacts_and_refers_a_payload_without_running_it(
        page: Page, served: Served, web: httpx.Client, dialogs: list[str]) -> None:
    api = admin_token(served)
    assert web.post("/api/v1/partners", headers=api, json={
        "name": "AMDH Mopti", "webhook_url": "http://127.0.0.1:9/hook",
        "secret": "s3cret-for-the-tests"}).status_code == 201
    typed = '<img src=x onerror=alert("ref")>Barrage de Konna'
    report_id = file_report(web, served.rt, text=typed, number="+22376999999").id

    sign_in(page, REVIEWER.name)
    page.goto("/dashboard/reports")
    page.get_by_role("link", name=f"N° {report_id}").click()
    assert_inert(page, typed)
    shoot(page, "report-new")
    page.get_by_label("Texte sans rien qui identifie").fill(typed)  # pasted as it came
    page.get_by_role("button", name="Enregistrer la version expurgée").click()
    expect(page.get_by_role("status")).to_have_text("Version expurgée enregistrée.")
    page.get_by_role("button", name="Marquer comme examiné").click()
    expect(page.get_by_role("button", name="Marquer comme examiné")).to_have_count(0)
    page.get_by_role("button", name="Vérifier avant de transmettre").click()
    expect(page.get_by_role("heading", name="Transmettre le signalement")).to_be_visible()
    expect(page.locator("pre.resident-text")).to_have_text(typed, use_inner_text=True)
    assert page.locator(INJECTED).count() == 0
    shoot(page, "report-refer-confirm")
    page.get_by_role("button", name="Oui, transmettre à AMDH Mopti").click()
    expect(page.get_by_role("status")).to_contain_text("Transmission en file")
    expect(page.get_by_text("Transmis").first).to_be_visible()
    assert dialogs == []
