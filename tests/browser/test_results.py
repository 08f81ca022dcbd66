"""The result pages in a browser, after residents voted through the USSD webhook: trust
per actor, the commune table and the weeks, a filter, chart downloads, the inclusion page
(targets set, the cercles lacking women's voices named) and the printable commune digest,
printed to PDF by Chromium on one page, in French and in Bambara."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Served, shoot, sign_in
from tests.operators.dashboard_client import ADMIN
from tests.operators.reporters import file_report
from tests.operators.voters import cast_votes

# Reports filed in Djenné in the digest's period: a category and force table of several
# rows each, the fullest sheet the tests print.
REPORTS = [("Menace ou insulte", "Police")] * 5 + [("Argent exigé", "Gendarmerie")] * 5 + [
    ("Arrestation abusive", "Armée (FAMa)"), ("Vol ou confiscation", "Garde nationale"),
    ("Aide ou protection", "Je ne sais pas"), ("Personne disparue", "Autre")]


@pytest.fixture
def voted(served: Served) -> Served:
    with httpx.Client(base_url=served.url) as phone_network:
        # Numbers the seeded residents do not use (they would answer in Bambara).
        cast_votes(phone_network, served.rt, prefix="+22376543")  # type: ignore[arg-type]
    return served


def pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


def test_results_per_actor_commune_and_week_with_a_filter(page: Page, voted: Served) -> None:
    sign_in(page)
    page.get_by_role("link", name="Résultats").click()
    expect(page.get_by_role("heading", name="Résultats du sondage")).to_be_visible()
    actors = page.get_by_role("region", name="Confiance par acteur")
    expect(actors.get_by_role("row", name=re.compile("Armée"))).to_contain_text("71 %")
    expect(page.locator("#communes tbody tr")).to_have_count(2)
    expect(page.locator("#communes tbody tr").first).to_contain_text("petit effectif")
    expect(page.locator("figure.chart svg")).to_have_count(3)
    shoot(page, "results")

    page.get_by_label("Répondants").select_option("gender:woman")
    page.get_by_role("button", name="Afficher").click()
    expect(page).to_have_url(re.compile(r"only=gender%3Awoman"))
    expect(page.locator("#communes tbody tr").nth(1)).to_contain_text("Konna")
    shoot(page, "results-women")

    with page.expect_download() as svg:
        actors.get_by_role("link", name="SVG").click()
    assert svg.value.suggested_filename == "trust-fds-actors-army.svg"
    with page.expect_download() as png:
        actors.get_by_role("link", name="PNG").click()
    path = png.value.path()
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"

    page.get_by_label("Vue partagée (comme à la radio et dans les exports)").check()
    page.get_by_role("button", name="Afficher").click()
    expect(page.locator("#communes tbody tr").first).to_contain_text("masqué")
    shoot(page, "results-shared")


def test_the_inclusion_page_names_the_cercles_lacking_womens_voices(page: Page,
                                                                    voted: Served) -> None:
    sign_in(page)
    page.get_by_role("link", name="Inclusion").click()
    expect(page.get_by_role("heading", name="Qui répond ?")).to_be_visible()
    page.get_by_label("Objectif Femmes, Mopti").fill("50")
    page.get_by_label("Objectif Femmes, Koro").fill("50")
    page.get_by_label("Objectif 15-24 ans, Mopti").fill("30")
    page.get_by_role("button", name="Enregistrer les objectifs").click()
    expect(page.get_by_role("status")).to_have_text("Objectifs enregistrés.")
    lacking = page.locator("#lacking")
    expect(lacking).to_contain_text("Mopti : femmes : 3 sur 7 répondants, objectif 50 %")
    expect(lacking).to_contain_text("Koro : personne n'a encore répondu")
    expect(page.get_by_label("Objectif Femmes, Mopti")).to_have_value("50")
    shoot(page, "inclusion")


@pytest.mark.parametrize(("lang", "heading"), [("fr", "Confiance par acteur"),
                                               ("bm", "Dannaya")])
def test_a_communes_digest_prints_on_one_page(page: Page, voted: Served, lang: str,
                                              heading: str) -> None:
    with httpx.Client(base_url=voted.url) as phone_network:
        for i, (category, force) in enumerate(REPORTS):
            file_report(phone_network, voted.rt, cercle="Djenné", commune="Djenné",
                        category=category, force=force, number=f"+2237654{i + 100:04d}")
    sign_in(page, ADMIN.name)
    page.goto(f"/dashboard/digest/trust-fds?lang={lang}")
    page.get_by_label("Komini" if lang == "bm" else "Commune").select_option("djenne-djenne")
    page.locator("#since").fill("2026-11-30")
    page.locator("#until").fill("2026-12-13")
    page.locator("form.no-print button").click()
    sheet = page.locator("article.sheet")
    expect(sheet.get_by_role("heading", name=heading)).to_be_visible()
    expect(sheet).to_contain_text("Djenné")
    expect(sheet.locator(".big-s").nth(1)).to_have_text("14")  # reports received
    expect(sheet.locator("table").nth(1).locator("tr")).to_have_count(6)  # 6 categories
    shoot(page, f"digest-{lang}")
    page.emulate_media(media="print")
    expect(page.locator("header.top")).to_be_hidden()
    pdf = page.pdf(format="A4", print_background=True)
    assert pdf_pages(pdf) == 1
    page.screenshot(path=f"tests/browser/screenshots/digest-{lang}-print.png", full_page=True)
