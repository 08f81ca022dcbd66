"""The compose page's live counter agrees with the server's text rules: the same texts go
through gateway.text.encoding and through compose.js in the browser."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from gateway.text.encoding import non_gsm7_chars, outbound, sms_cost, transliterate
from tests.browser.conftest import shoot, sign_in

SAMPLES = [
    ("", "fr"),
    ("Réunion samedi à la mairie.", "fr"),
    ("Fête de la paix: ça commence à 9h, rendez-vous « place du marché » — venez nombreux…",
     "fr"),
    ("N° vert: 80 00 11 22. Œuvre commune, entrée libre.", "fr"),
    ("I ni ce! Kɔnɔ ɲɛnɛ bɛ sɔgɔma. Ŋaaman ni Ɛntɛrinɛti.", "bm"),
    ("Àn bɛ ɲɔgɔn dɛmɛ: ń bɛ́ taa sugu la.", "bm"),
    ("Prix {5€} [promo] ~ ^ | \\ " * 6, "fr"),  # extension characters, across parts
    ("a" * 160, "fr"),
    ("a" * 161, "fr"),
    ("é" * 152 + "€", "fr"),  # an escape pair that does not fit a part's end
    ("ɛ" * 70, "bm"),
    ("ɛ" * 71, "bm"),
    ("Salut 👋🏾 tout le monde", "fr"),  # outside the BMP: two UTF-16 units each
    ("Tab\there, nbsp\u00a0and\u202fnarrow", "fr"),
    ("Nin ye kunnafoni ye.\nAn bɛ Mopti.\r\nI ni ce.", "bm"),
]


@pytest.fixture
def compose(page: Page) -> Page:
    sign_in(page)
    page.goto("/dashboard/broadcasts/new")
    return page


def test_the_counter_counts_as_the_server_does(compose: Page) -> None:
    for text, lang in SAMPLES:
        for on in (True, False):
            js = compose.evaluate("([t, l, x]) => window.DannayaText.measure(t, l, x)",
                                  [text, lang, on])
            sent = outbound(text, lang, transliterate_text=on)
            cost = sms_cost(sent)
            expected = {"text": sent, "encoding": cost.encoding, "length": cost.length,
                        "segments": cost.segments,
                        "letters": [[ch, transliterate(ch, lang)]
                                    for ch in non_gsm7_chars(outbound(text, lang,
                                                                      transliterate_text=False))]}
            assert js == expected, (text, lang, on)


def test_bambara_switches_to_ucs2_without_transliteration_and_back(compose: Page) -> None:
    bm = compose.locator("[data-message=bm]")
    bm.get_by_label("En bambara").fill("Kɔnɔ ɲɛnɛ bɛ sɔgɔma. I ni ce!")
    meter = bm.locator(".meter")
    translit = compose.get_by_label("Translittération (lettres compatibles GSM)")
    expect(translit).to_be_checked()
    expect(meter).to_have_text("30 caractères · GSM-7 · 1 SMS")
    expect(bm.locator("[data-letters]")).to_contain_text("Lettres remplacées")
    expect(bm.locator("[data-letters]")).to_contain_text("ɔ → ò")

    translit.uncheck()
    expect(meter).to_have_text("29 caractères · UCS-2 · 1 SMS")
    expect(bm.locator("[data-encoding]")).to_have_class("enc enc-ucs2")
    expect(bm.locator("[data-letters]")).to_contain_text("Ces lettres forcent l'UCS-2")
    expect(bm.locator("[data-letters]")).to_contain_text("ɲ → ny")
    expect(bm.locator("[data-preview] mark").first).to_have_text("ɔ")
    shoot(compose, "compose-bambara-ucs2")

    bm.get_by_label("En bambara").fill("Kɔnɔ ɲɛnɛ bɛ sɔgɔma. I ni ce! " * 3)
    expect(meter).to_contain_text("UCS-2 · 2 SMS")
    translit.check()
    expect(meter).to_contain_text("GSM-7 · 1 SMS")
    expect(bm.locator("[data-preview]")).to_be_hidden()
    shoot(compose, "compose-bambara-gsm")
