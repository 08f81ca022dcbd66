"""Text rules: GSM-7 / UCS-2, septet and segment counts, transliteration, keyword folding.

Every part of the gateway that measures or rewrites text (the validator, the dialogue
engine, the SMS sender and the broadcaster) goes through this module, so a screen the
validator accepts is a screen the engine can send.

Facts from 3GPP TS 23.038 as summarised in reference/mali-bambara-sms.md §1.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

# The GSM 03.38 default alphabet, in table order (0x00..0x7F), without ESC (0x1B).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Reached through ESC: each costs two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
# The same tables in order, for the septets themselves (an SMPP peer sends one septet per
# octet, unpacked): the basic table with ESC at 0x1B, and each extension's code after ESC.
_ESC = 0x1B
_GSM7_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_CODES = {ch: i for i, ch in enumerate(_GSM7_TABLE) if i != _ESC}
_GSM7_EXTENSION_CODES = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F,
                         "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}
_GSM7_EXTENSION_CHARS = {code: ch for ch, code in _GSM7_EXTENSION_CODES.items()}

Encoding = Literal["GSM-7", "UCS-2"]
Language = str

GSM7_SINGLE = 160
GSM7_PART = 153
UCS2_SINGLE = 70
UCS2_PART = 67

# French and common typography that is not GSM-7 (reference §1.6, "French outbound mapping").
# é è à ù ì ò É are GSM-7 and kept.
_COMMON_MAP = {
    "â": "a", "ê": "e", "î": "i", "ô": "o", "û": "u", "ë": "e", "ï": "i", "ÿ": "y",
    "ç": "c", "œ": "oe", "æ": "ae",
    "À": "A", "Â": "A", "È": "E", "Ê": "E", "Ë": "E", "Î": "I", "Ï": "I", "Ô": "O",
    "Ù": "U", "Û": "U", "Ç": "C", "Œ": "OE", "Ì": "I", "Ò": "O", "Ÿ": "Y",
    "á": "a", "í": "i", "ó": "o", "ú": "u", "Á": "A", "Í": "I", "Ó": "O", "Ú": "U",
    "«": '"', "»": '"', "“": '"', "”": '"', "„": '"',
    "’": "'", "‘": "'", "ʼ": "'", "`": "'",
    "…": "...", "–": "-", "—": "-", "‑": "-",
    "\u00a0": " ", "\u202f": " ", "\u2009": " ", "\t": " ",
    "°": "o",
}
# Bambara's letters in the 1967 orthography, which lower case happens to keep GSM-7
# (reference §1.6): ɛ→è, ɔ→ò, ɲ→ny, ŋ→ng; capitals È and Ò are not GSM-7, so Ɛ→E, Ɔ→O.
_BAMBARA_MAP = {
    "ɛ": "è", "Ɛ": "E", "ɔ": "ò", "Ɔ": "O", "ɲ": "ny", "Ɲ": "Ny", "ŋ": "ng", "Ŋ": "Ng",
}
# Fulfulde's letters in Mali's orthography (reference, "Fulfulde on the phone"): none is
# GSM-7. The forms in use in Mali, Niger and Nigeria: ɓ→b, ɗ→d, ƴ→y, ŋ→ng, ɲ→ny, ʼ→'.
# Which Maasina readers prefer (ɲ→ñ, as in Senegal, is GSM-7 too) is not verified: change
# it here, with readers' tests.
_FULFULDE_MAP = {
    "ɓ": "b", "Ɓ": "B", "ɗ": "d", "Ɗ": "D", "ƴ": "y", "Ƴ": "Y", "ŋ": "ng", "Ŋ": "Ng",
    "ɲ": "ny", "Ɲ": "Ny", "ʼ": "'",
}
# Each language's own letters, applied before the common table.
_LANGUAGE_MAPS = {"bm": _BAMBARA_MAP, "ff": _FULFULDE_MAP}
_TONE_MARKS = {"\u0300", "\u0301", "\u0302", "\u030c", "\u0304"}
_NUMERO = re.compile(r"N°\s*")


def _translate(text: str, table: dict[str, str]) -> str:
    return "".join(table.get(ch, ch) for ch in text)


def transliterate(text: str, language: Language) -> str:
    """The GSM-safe form of ``text`` written in ``language``.

    Bambara drops tone marks and writes ɛ ɔ ɲ ŋ as è ò ny ng; Fulfulde writes ɓ ɗ ƴ ŋ ɲ ʼ
    as b d y ng ny '; French drops the accents that GSM-7 lacks; all replace typographic
    punctuation. Letters GSM-7 has are kept.
    """
    text = unicodedata.normalize("NFC", text)
    if language == "bm":
        decomposed = unicodedata.normalize("NFD", text)
        # Tone marks sit on vowels (and on ɛ ɔ); drop them, keep everything else.
        text = unicodedata.normalize(
            "NFC", "".join(ch for ch in decomposed if ch not in _TONE_MARKS)
        )
    table = _LANGUAGE_MAPS.get(language)
    if table is not None:
        text = _translate(text, table)
    text = _NUMERO.sub("No ", text)
    return _translate(text, _COMMON_MAP)


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def non_gsm7_chars(text: str) -> list[str]:
    """Characters of ``text`` that GSM-7 cannot carry, in order, without repeats."""
    seen: list[str] = []
    for ch in text:
        if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION and ch not in seen:
            seen.append(ch)
    return seen


def septets(text: str) -> int:
    """GSM-7 length of ``text``: extension characters count two. Assumes ``is_gsm7``."""
    return sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)


def gsm7_encode(text: str) -> bytes:
    """``text`` as unpacked GSM-7 septets, one per octet (an extension character is ESC
    and its code); ``?`` for a character GSM-7 lacks."""
    out = bytearray()
    for ch in text:
        code = _GSM7_CODES.get(ch)
        if code is not None:
            out.append(code)
        elif ch in _GSM7_EXTENSION_CODES:
            out += bytes([_ESC, _GSM7_EXTENSION_CODES[ch]])
        else:
            out.append(_GSM7_CODES["?"])
    return bytes(out)


def gsm7_decode(data: bytes) -> str:
    """Unpacked GSM-7 septets, one per octet, as text (``gsm7_encode`` reversed)."""
    out: list[str] = []
    escaped = False
    for octet in data:
        code = octet & 0x7F
        if escaped:
            out.append(_GSM7_EXTENSION_CHARS.get(code, " "))
            escaped = False
        elif code == _ESC:
            escaped = True
        else:
            out.append(_GSM7_TABLE[code])
    return "".join(out)


def ucs2_units(text: str) -> int:
    """UTF-16 code units: characters outside the BMP (emoji) take two."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def encoding_of(text: str) -> Encoding:
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def length_in(text: str, encoding: Encoding) -> int:
    return septets(text) if encoding == "GSM-7" else ucs2_units(text)


def screen_length(text: str) -> int:
    """Length against a USSD screen budget counted in GSM-7 septets.

    A screen that is not GSM-7 would go out as UCS-2, where a 182-septet page holds 80
    characters; such a screen is charged at double weight so it can never pass as short.
    """
    if is_gsm7(text):
        return septets(text)
    return 2 * ucs2_units(text)


@dataclass(frozen=True)
class SmsCost:
    encoding: Encoding
    length: int
    segments: int


def _gsm7_segments(text: str) -> int:
    total = septets(text)
    if total <= GSM7_SINGLE:
        return 1
    # An ESC pair must not be split across parts, so fill each part greedily.
    parts, used = 1, 0
    for ch in text:
        width = 2 if ch in GSM7_EXTENSION else 1
        if used + width > GSM7_PART:
            parts += 1
            used = 0
        used += width
    return parts


def sms_cost(text: str) -> SmsCost:
    """Encoding, length and segment count of an SMS with exactly this text."""
    if is_gsm7(text):
        return SmsCost("GSM-7", septets(text), _gsm7_segments(text))
    units = ucs2_units(text)
    segments = 1 if units <= UCS2_SINGLE else math.ceil(units / UCS2_PART)
    return SmsCost("UCS-2", units, segments)


def outbound(text: str, language: Language, *, transliterate_text: bool = True) -> str:
    """What goes over the air for a message written in ``language``."""
    text = unicodedata.normalize("NFC", text)
    return transliterate(text, language) if transliterate_text else text


def client_rules() -> dict[str, object]:
    """The rules above as plain data (JSON-ready), for a counter that runs in the operator's
    browser: the GSM-7 tables, the segment sizes and the transliteration tables. The
    dashboard renders them into the compose page, so its counter cannot drift from here."""
    return {
        "basic": "".join(sorted(GSM7_BASIC)),
        "extension": "".join(sorted(GSM7_EXTENSION)),
        "single": {"GSM-7": GSM7_SINGLE, "UCS-2": UCS2_SINGLE},
        "part": {"GSM-7": GSM7_PART, "UCS-2": UCS2_PART},
        "common": dict(_COMMON_MAP),
        "languages": {"bm": {"map": dict(_BAMBARA_MAP), "drop": sorted(_TONE_MARKS)}},
        "numero": {"pattern": _NUMERO.pattern, "replacement": "No "},
    }


# --- inbound keyword folding ---------------------------------------------------------

_FOLD_LETTERS = {"ɛ": "e", "ɔ": "o", "ɲ": "ny", "ñ": "ny", "ŋ": "ng", "œ": "oe", "æ": "ae",
                 "ɓ": "b", "ɗ": "d", "ƴ": "y"}
# Spelling variants of reference §1.6, folded to one key. Longest first.
_FOLD_CLUSTERS = (("tch", "c"), ("ty", "c"), ("dj", "j"), ("gn", "ny"), ("ou", "u"))
_NON_WORD = re.compile(r"[^a-z0-9 ]+")
_SPACES = re.compile(r"\s+")


def fold(text: str) -> str:
    """Fold text for keyword matching: case, accents, tone marks and the Bambara spelling
    variants ɛ/è/e, ɔ/ò/o, ɲ/ny/gn/ñ, ŋ/ng, u/ou, j/dj, c/ty/tch all collapse to one form,
    and so do Fulfulde's ɓ/b, ɗ/d and ƴ/y."""
    text = unicodedata.normalize("NFC", text).casefold()
    text = _translate(text, _FOLD_LETTERS)
    decomposed = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    for cluster, replacement in _FOLD_CLUSTERS:
        text = text.replace(cluster, replacement)
    text = _NON_WORD.sub(" ", text)
    return _SPACES.sub(" ", text).strip()
