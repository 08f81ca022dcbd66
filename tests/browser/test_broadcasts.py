"""A broadcast from compose to delivered, and a scheduled one cancelled, as an operator
does it; and the same journey with JavaScript off."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from gateway.channels.fake import FakeSender
from gateway.operators import audit
from tests.browser.conftest import Served, shoot, sign_in


def compose_for_konna(page: Page, *, send_at: str = "") -> None:
    page.goto("/dashboard/broadcasts/new")
    page.locator("details.communes summary", has_text="Mopti").click()
    page.get_by_label("Konna").check()
    page.get_by_label("En français").fill("Réunion de sécurité samedi à 10 h à la mairie.")
    page.get_by_label("En bambara").fill("Lakana ɲɔgɔnye bɛ kɛ sibiri sɔgɔma mèri ka so.")
    if send_at:
        page.get_by_label("Envoyer le (heure de Bamako)").fill(send_at)
    page.get_by_label("Titre (pour vous, il n'est pas envoyé)").fill("Réunion samedi")


def test_send_to_a_commune_and_watch_it_delivered(page: Page, served: Served) -> None:
    sign_in(page)
    compose_for_konna(page)
    expect(page.locator("[data-recipients]")).to_have_text("2")
    expect(page.locator("[data-by-language]")).to_have_text("Bamanankan 1 · Français 1")
    expect(page.locator("[data-cost]")).to_have_text("50")  # 2 x 1 SMS x 25 XOF
    shoot(page, "compose")

    page.get_by_role("button", name="Vérifier avant l'envoi").click()
    expect(page.get_by_role("heading", name="Vérifiez avant d'envoyer")).to_be_visible()
    expect(page.locator("[data-check-recipients]")).to_have_text("2")
    # As sent: GSM-safe letters, tone marks dropped (the grave on "mèri" included).
    expect(page.get_by_text("Lakana nyògònye bè kè sibiri sògòma meri ka so.")).to_be_visible()
    shoot(page, "check")

    page.get_by_role("button", name="Envoyer à 2 personnes").dblclick()
    expect(page.get_by_role("status")).to_contain_text("Diffusion créée.")
    assert re.search(r"/dashboard/broadcasts/1\?created=1$", page.url)

    # The worker hands both messages to the fake provider, which reports them delivered;
    # the page follows on its own (no reload).
    deadline_ms = 10_000
    expect(page.locator("[data-count=sent]")).not_to_have_text("0", timeout=deadline_ms)
    assert served.report_deliveries() == 2
    expect(page.locator("[data-count=delivered]").first).to_have_text("2",
                                                                       timeout=deadline_ms)
    expect(page.locator("[data-status]")).to_have_text("Terminée", timeout=deadline_ms)
    expect(page.locator("[data-cancel]")).to_be_hidden()
    shoot(page, "progress-delivered")

    page.get_by_role("link", name="Retour").click()
    expect(page.get_by_role("row")).to_have_count(2)  # the header and one broadcast
    shoot(page, "broadcasts")
    page.get_by_role("link", name="Accueil").click()
    expect(page.get_by_text("100 %")).to_be_visible()  # the delivery rate
    shoot(page, "home-after")


def test_cancel_a_scheduled_broadcast(page: Page) -> None:
    sign_in(page)
    compose_for_konna(page, send_at="2099-01-01T09:00")
    page.get_by_role("button", name="Vérifier avant l'envoi").click()
    page.get_by_role("button", name="Programmer l'envoi à 2 personnes").click()
    expect(page.locator("[data-status]")).to_have_text("Programmée")
    expect(page.get_by_text("Programmée pour le 01/01/2099 09:00")).to_be_visible()
    shoot(page, "progress-scheduled")

    page.get_by_role("link", name="Annuler la diffusion").click()
    expect(page.get_by_role("heading", name="Annuler la diffusion n° 1 ?")).to_be_visible()
    shoot(page, "cancel")
    page.get_by_role("button", name="Oui, annuler la diffusion").click()
    expect(page.get_by_role("status")).to_have_text("Diffusion annulée.")
    expect(page.locator("[data-status]")).to_have_text("Annulée")
    expect(page.get_by_role("link", name="Annuler la diffusion")).to_have_count(0)


def test_the_journey_works_without_javascript(browser: Browser, served: Served) -> None:
    context = browser.new_context(java_script_enabled=False, base_url=served.url,
                                  viewport={"width": 360, "height": 640})
    page = context.new_page()
    sign_in(page)
    compose_for_konna(page)
    expect(page.get_by_text("Le nombre exact s'affiche à l'étape suivante.")).to_be_visible()
    expect(page.get_by_text("1 SMS = 160 caractères")).to_be_visible()
    page.get_by_role("button", name="Vérifier avant l'envoi").click()
    page.get_by_role("button", name="Envoyer à 2 personnes").click()
    expect(page.get_by_role("status")).to_contain_text("Diffusion créée.")
    expect(page.get_by_role("link", name="Actualiser")).to_be_visible()
    page.screenshot(path=page_path("progress-nojs-360x640"), full_page=True)
    context.close()


def page_path(name: str) -> str:
    from tests.browser.conftest import SHOTS

    SHOTS.mkdir(exist_ok=True)
    return str(SHOTS / f"{name}.png")


def test_the_operator_of_mopti_and_koro_reaches_two_communes_and_no_one_else(
        page: Page, served: Served) -> None:
    """Issue 11's walk: awa (cercles Mopti and Koro) writes in French and Bambara to Konna
    and Sio, sees who and what it costs, double-clicks the send, watches it delivered;
    the stopped, the unsubscribed and those living elsewhere get nothing; the audit log
    names her and its chain verifies."""
    sign_in(page)
    page.goto("/dashboard/broadcasts/new")
    mopti = page.locator("details.communes summary", has_text="Mopti")
    mopti.click()
    page.get_by_label("Konna").check()
    page.get_by_label("Sio").check()
    page.get_by_label("En français").fill("Réunion de sécurité samedi à 10 h à la mairie.")
    page.get_by_label("En bambara").fill("Lakana ɲɔgɔnye bɛ kɛ sibiri sɔgɔma mèri ka so.")
    expect(page.locator("[data-recipients]")).to_have_text("3")
    expect(page.locator("[data-by-language]")).to_have_text("Bamanankan 1 · Français 2")
    expect(page.locator("[data-cost]")).to_have_text("75")  # 3 x 1 SMS x 25 XOF
    page.get_by_role("button", name="Vérifier avant l'envoi").click()
    expect(page.locator("[data-check-recipients]")).to_have_text("3")
    page.get_by_role("button", name="Envoyer à 3 personnes").dblclick()
    expect(page.get_by_role("status")).to_contain_text("Diffusion créée.")
    expect(page.locator("[data-count=sent]")).to_have_text("3", timeout=10_000)
    assert served.report_deliveries() == 3
    expect(page.locator("[data-count=delivered]").first).to_have_text("3", timeout=10_000)
    expect(page.locator("[data-status]")).to_have_text("Terminée", timeout=10_000)
    shoot(page, "done-when-delivered")

    sender = served.rt.sender
    assert isinstance(sender, FakeSender)
    assert sorted(m.to for m in sender.sent) == [  # Konna fr and bm, Sio fr; one each
        "+22370000101", "+22370000102", "+22370000103"]
    with served.rt.db.transaction() as conn:
        made = audit.entries(conn, actor="awa", action="broadcast.create").items
        assert [(e.object_type, e.object_id) for e in made] == [("broadcast", "1")]
        assert audit.verify(conn) is None
