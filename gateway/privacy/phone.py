"""Phone numbers: normalise to E.164 with libphonenumber. Numbers are never logged."""

from __future__ import annotations

import re

import phonenumbers

MAX_RAW = 32
_SHAPE = re.compile(r"^\+?[0-9][0-9 ().-]*$")


def normalise(raw: str, default_region: str = "ML") -> str | None:
    """The E.164 form of ``raw``, or None when it is not a possible phone number.

    Accepts ``+22370000001``, ``00223…``, ``223…`` and a local ``70000001`` (read in
    ``default_region``), and a leading space where an unencoded ``+`` was form-decoded.
    """
    text = raw.strip()
    if not text or len(text) > MAX_RAW or not _SHAPE.match(text):
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    candidates = [text]
    if not text.startswith("+") and text.isdigit():
        candidates = ["+" + text, text] if len(text) > 8 else [text, "+" + text]
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, None if candidate.startswith("+")
                                        else default_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return None
