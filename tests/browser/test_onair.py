"""The radio pages in a browser: an operator makes a campaign, the on-air page opens on
the show card, says "too few" while fewer than five have voted, and moves by itself (no
reload) as listeners vote through the USSD webhook; the radio host sees the same page and
nothing of another station's."""

from __future__ import annotations

from datetime import timedelta

import httpx
from playwright.sync_api import Page, expect

from gateway.operators import accounts
from gateway.operators.access import Role
from gateway.store.models import utcnow
from tests.browser.conftest import Served, shoot, sign_in
from tests.operators.dashboard_client import PASSWORD
from tests.operators.radio import answer_poll, dial_code
from tests.phone import END


def make_host(served: Served, name: str = "kaoural") -> None:
    rt = served.rt
    with rt.db.transaction() as conn:
        accounts.create(conn, name=name, role=Role.radio, cercles=(), password=PASSWORD,
                        known_cercles=("mopti",), actor="cli", now=utcnow())


def listener_votes(served: Served, number: str) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        phone, _ = dial_code(client, number)
        phone.press("1")  # French
        assert answer_poll(phone, "4" if number[-1] != "9" else "1") == \
            END("Merci, réponse recue.")


def create_show(page: Page) -> None:
    now = utcnow()
    page.goto("/dashboard/campaigns")
    expect(page.get_by_text("Aucune campagne pour l'instant.")).to_be_visible()
    page.get_by_label("Émission").fill("Débat du jeudi")
    page.get_by_label("Radio", exact=True).fill("Radio Kaoural")
    page.get_by_label("Code USSD").fill("*123*5#")
    page.get_by_label("Mot-clé SMS").fill("Kaoural")
    page.get_by_label("Animateurs").fill("kaoural")
    page.get_by_label("Début").fill((now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Fin").fill((now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))
    shoot(page, "campaign-new")
    page.get_by_role("button", name="Créer la campagne").click()
    expect(page).to_have_url("/dashboard/onair/1")


def test_the_on_air_page_moves_as_listeners_vote(page: Page, served: Served) -> None:
    make_host(served)
    sign_in(page)
    create_show(page)
    card = page.locator(".show")
    expect(card.get_by_text("*123*5#", exact=True)).to_be_visible()
    expect(card.get_by_text("KAOURAL", exact=True)).to_be_visible()
    expect(card).to_contain_text("Pour répondre, composez le *123*5#.")
    tally = page.locator("[data-onair]")
    expect(tally.locator('[data-field="n"]')).to_have_text("—")
    expect(tally).to_contain_text("Pas encore assez de réponses")
    expect(tally.locator('[data-field="live"]')).to_have_text("En direct")
    shoot(page, "onair-too-few")
    weight = page.evaluate(
        "performance.getEntriesByType('navigation').concat(performance.getEntriesByType("
        "'resource')).filter(e => e.initiatorType !== 'other')"
        ".reduce((n, e) => n + (e.decodedBodySize || 0), 0)")
    assert 0 < weight < 100 * 1024, weight  # uncompressed, so gzip only helps
    page.evaluate("window.notReloaded = true")

    for n in range(1, 5):
        listener_votes(served, f"+2237000051{n}")
    listener_votes(served, "+22370000519")  # the fifth: "not at all"
    expect(tally.locator('[data-field="n"]')).to_have_text("5", timeout=5_000)
    expect(tally.locator('[data-field="sentence-fr"]')).to_have_text(
        "Sur 5 auditeurs, 80 % font beaucoup confiance à l'armée (FAMa).")
    expect(tally.locator('[data-value="a_lot"] [data-pct]')).to_have_text("80\u00a0%")
    expect(tally.locator('[data-field="too-few"]')).to_be_hidden()
    shoot(page, "onair")

    listener_votes(served, "+22370000515")
    expect(tally.locator('[data-field="n"]')).to_have_text("6", timeout=5_000)
    expect(tally.locator('[data-field="sentence-bm"]')).to_have_text(
        "Lamɛnnikɛla 6 la, 83 % da bɛ sɔrɔdasiw (FAMa) la kosɛbɛ.")
    assert page.evaluate("window.notReloaded") is True


def test_a_radio_host_sees_its_show_and_not_another(page: Page, served: Served) -> None:
    make_host(served)
    make_host(served, "jamana")
    sign_in(page)
    create_show(page)
    page.goto("/dashboard/campaigns")
    page.get_by_label("Émission").fill("Le grand débat")
    page.get_by_label("Radio", exact=True).fill("Radio Jamana")
    page.get_by_label("Code USSD").fill("*123*6#")
    page.get_by_label("Animateurs").fill("jamana")
    now = utcnow()
    page.get_by_label("Début").fill((now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Fin").fill((now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Créer la campagne").click()
    expect(page).to_have_url("/dashboard/onair/2")
    page.context.clear_cookies()

    sign_in(page, "kaoural")
    # Signed in before the next address is typed. (Once, under load, this sign-in was
    # refused: the first on-air page's stream, its cookies gone, had reopened the sign-in
    # page in the background and replaced the form's token; test_sign_in.py's two tabs.)
    page.wait_for_url("**/dashboard/")
    page.goto("/dashboard/campaigns")
    expect(page.get_by_role("link", name="Débat du jeudi")).to_be_visible()
    expect(page.get_by_text("Le grand débat")).to_have_count(0)
    expect(page.get_by_role("button", name="Créer la campagne")).to_have_count(0)
    shoot(page, "campaigns-radio")
    page.get_by_role("link", name="Débat du jeudi").click()
    expect(page.locator(".show h1")).to_have_text("Débat du jeudi")
    response = page.goto("/dashboard/onair/2")
    assert response is not None and response.status == 404
    response = page.goto("/dashboard/broadcasts")
    assert response is not None and response.status == 403
