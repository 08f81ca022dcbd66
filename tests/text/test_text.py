"""Text rules: transliteration, encoding and segment counts, keyword folding, and what
transliteration saves on the real catalogs.
"""

from __future__ import annotations

import pytest

from gateway.text.encoding import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    fold,
    gsm7_decode,
    gsm7_encode,
    sms_cost,
    transliterate,
)
from tests.conftest import REPO

pytestmark = pytest.mark.nodb


@pytest.mark.parametrize(("language", "written", "over_the_air"), [
    ("bm", "Ɛ bɛ mun fɛ? Ɲɔgɔn ŋaniya", "E bè mun fè? Nyògòn nganiya"),
    ("bm", "Kúnnafonì", "Kunnafoni"),  # tone marks dropped
    ("bm", "I ni cɛ", "I ni cè"),
    ("fr", "Arrêt ça «oui» N° 5 – où…", 'Arret ca "oui" No 5 - où...'),
    ("fr", "Œuvre À Ç l’été", "OEuvre A C l'été"),  # é è à ù are GSM-7: kept
    ("fr", "Données effacées", "Données effacées"),
    ("ff", "Aɗa hoolii sordaasiiɓe? Ƴettugol, ŋ ɲ", "Ada hoolii sordaasiibe? Yettugol, ng ny"),
    ("ff", "Ɓaawo, Ɗemngal, naʼi", "Baawo, Demngal, na'i"),  # capitals and the glottal stop
    ("ff", "Mi anndaa", "Mi anndaa"),  # long vowels stay doubled
])
def test_transliteration_gives_the_gsm_safe_form(
        language: str, written: str, over_the_air: str) -> None:
    assert transliterate(written, language) == over_the_air


@pytest.mark.parametrize(("text", "encoding", "length", "segments"), [
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),  # an extension character counts two septets
    ("a" * 152 + "€", "GSM-7", 154, 1),
    # 306 septets would fill two parts, but an escape pair is never split: three.
    ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),
    ("ɛ" * 70, "UCS-2", 70, 1),
    ("ɛ" * 71, "UCS-2", 71, 2),
    ("ɛ" * 134, "UCS-2", 134, 2),
    ("ɛ" * 135, "UCS-2", 135, 3),
    ("😀" * 35, "UCS-2", 70, 1),  # outside the BMP: two units each
])
def test_encoding_length_and_segments(text: str, encoding: str, length: int,
                                      segments: int) -> None:
    cost = sms_cost(text)
    assert (cost.encoding, cost.length, cost.segments) == (encoding, length, segments)


@pytest.mark.parametrize(("typed", "folded"), [
    ("ARRÊT", "arret"), ("arret", "arret"), ("Dabila", "dabila"),
    ("ɲininkali", "nyininkali"), ("gnininkali", "nyininkali"), ("Ñininkali", "nyininkali"),
    ("NYININKALI", "nyininkali"), ("Djè", "je"), ("jɛ", "je"), ("tchè", "ce"), ("tyɛ", "ce"),
    ("Soukou", "suku"), ("ŋoni", "ngoni"), ("  Stop! ", "stop"),
    ("Kabaaru", "kabaaru"), ("ƊEMNGAL", "demngal"), ("ɓaawo", "baawo"), ("ƴettu", "yettu"),
])
def test_keywords_fold_case_accents_and_spelling_variants(typed: str, folded: str) -> None:
    assert fold(typed) == folded


def test_transliteration_halves_the_segments_of_long_catalog_messages() -> None:
    from bench.text_cost import catalog_costs

    costs = catalog_costs(REPO)
    assert {c.language for c in costs} == {"fr", "bm", "ff"}  # every language measured
    assert len(costs) >= 12
    gsm7 = sum(c.gsm7_segments for c in costs)
    ucs2 = sum(c.ucs2_segments for c in costs)
    assert all(c.encoding == "GSM-7" for c in costs)
    assert gsm7 <= ucs2 / 2, f"{gsm7} segments transliterated against {ucs2} as UCS-2"


@pytest.mark.parametrize(("text", "septets"), [
    ("@£$", b"\x00\x01\x02"),
    ("Nyògòn è", b"Ny\x08g\x08n \x04"),
    ("5€ [x]", b"5\x1be \x1b<x\x1b>"),  # an extension character is ESC and its code
    ("ɛ", b"?"),  # not GSM-7
])
def test_gsm7_septets_as_an_smpp_peer_sends_them(text: str, septets: bytes) -> None:
    assert gsm7_encode(text) == septets
    if "?" not in gsm7_decode(septets) or text == "?":
        assert gsm7_decode(septets) == text


def test_every_gsm7_character_goes_and_comes_back() -> None:
    every = "".join(sorted(GSM7_BASIC | GSM7_EXTENSION))
    assert gsm7_decode(gsm7_encode(every)) == every
