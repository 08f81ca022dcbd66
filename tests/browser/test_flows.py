"""An operator rewords the Bambara army question in the editor, sees it in the preview,
saves and publishes it after the confirmation page, and walks the phone in the page to
the new wording; then goes back to the old wording in one confirmation."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Served, shoot, sign_in

NEW_BM_WRITTEN = "I dalen bɛ sɔrɔdasiw (FAMa) la wa?"
NEW_BM_SHOWN = "I dalen bè sòròdasiw (FAMa) la wa?"
OLD_BM_SHOWN = "I da bè sòròdasiw (FAMa) la wa?"


def test_edit_a_bambara_prompt_preview_publish_and_walk_the_phone(page: Page,
                                                                   served: Served) -> None:
    sign_in(page)
    page.get_by_role("link", name="Flux").first.click()
    page.get_by_role("link", name="poll").click()
    expect(page.locator(".flow-diagram")).to_be_visible()
    shoot(page, "flow")

    page.get_by_role("link", name="Modifier").click()
    page.locator('textarea[name="m.bm.poll-trust-army"]').fill(NEW_BM_WRITTEN)
    page.get_by_role("button", name="Vérifier et prévisualiser").click()
    expect(page.get_by_text("Aucun problème")).to_be_visible()
    expect(page.locator(".phone[lang=bm] .lcd").first).to_contain_text(NEW_BM_SHOWN)
    shoot(page, "flow-edit-preview")

    page.get_by_role("button", name="Enregistrer la nouvelle version").click()
    expect(page.get_by_role("status")).to_contain_text("Nouvelle version enregistrée")
    page.get_by_role("link", name="Publier…").click()
    expect(page.get_by_role("heading", name="Publier la version 2 de poll ?")).to_be_visible()
    shoot(page, "flow-publish-confirm")
    page.get_by_role("button", name="Oui, publier la version 2").click()
    expect(page.get_by_role("status")).to_contain_text("Publiée")

    page.get_by_role("link", name="Essayer sur un téléphone").click()
    expect(page.locator("[data-screen]")).to_contain_text("Langue / Kan / Demngal")
    for key in ("2", "2"):
        page.get_by_label("Votre réponse").fill(key)
        page.get_by_role("button", name="Envoyer").click()
    expect(page.locator("[data-screen]")).to_contain_text(NEW_BM_SHOWN)
    shoot(page, "flow-phone")

    page.goto("/dashboard/flows/poll")
    page.get_by_role("link", name="Revenir à cette version…").click()
    page.get_by_role("button", name="Oui, revenir à la version 1").click()
    expect(page.get_by_role("status")).to_contain_text("Publiée")
    page.get_by_role("link", name="Essayer sur un téléphone").click()
    # The test phone's language is known now: the main menu first, then the poll.
    expect(page.locator("[data-screen]")).to_contain_text("Dannaya")
    page.get_by_label("Votre réponse").fill("2")
    page.get_by_role("button", name="Envoyer").click()
    expect(page.locator("[data-screen]")).to_contain_text(OLD_BM_SHOWN)


def test_the_editor_checks_and_previews_as_one_types(page: Page, served: Served) -> None:
    """No button pressed: typing a Bambara thank-you too long for one USSD screen brings
    the problem with its reason and the phone marked over budget; shortening it takes them
    away. The count is read out by the aria-live region."""
    sign_in(page)
    page.goto("/dashboard/flows/poll/edit")
    entry = page.locator('textarea[name="m.bm.ack-answer"]')
    entry.fill("")
    entry.press_sequentially("I ni ce, jaabi sɔrɔla. " * 8)
    problem = page.locator(".problems li", has_text="key 'ack-answer' in bm")
    expect(problem).to_contain_text("end screen of 183 septets, budget 160")
    over = page.locator('.phone.over[lang="bm"]')
    expect(over).to_have_count(1)
    expect(over).to_contain_text("trop long")
    expect(page.locator("[data-check=status][aria-live=polite]")).to_have_text(
        "Vérification faite : 1 problème à corriger.")
    expect(page).to_have_url(f"{served.url}/dashboard/flows/poll/edit")  # no round trip
    shoot(page, "flow-edit-live-problem")

    entry.fill("I ni ce, jaabi sɔrɔla.")
    expect(page.locator(".problems li")).to_have_count(0)
    expect(page.get_by_text("Aucun problème")).to_be_visible()
    expect(page.locator(".phone.over")).to_have_count(0)
    expect(page.locator('.phone[lang="bm"] .lcd', has_text="I ni ce, jaabi sòròla.")
           ).to_have_count(1)
    expect(page.locator("[data-check=status]")).to_have_text(
        "Vérification faite : rien à corriger.")
    shoot(page, "flow-edit-live-fixed")
