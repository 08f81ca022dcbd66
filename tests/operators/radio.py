"""Listeners of a radio show: they dial the campaign's code as Africa's Talking sends it,
or text its keyword, and answer the trust poll."""

from __future__ import annotations

import uuid
from typing import Any

from tests.phone import Phone, Screen


def dial_code(client: Any, number: str, code: str = "*123*5#") -> tuple[Phone, Screen]:
    """Dial ``*123*5#`` as Africa's Talking sends it: its own code (``*123#``), the rest
    as the text of the first request."""
    own, _, rest = code[1:-1].partition("*")
    phone = Phone(client, number, service_code=f"*{own}#")
    phone.session_id, phone.inputs = f"ATUid_{uuid.uuid4().hex}", rest.split("*")
    return phone, Screen.parse(phone.post(phone.text))


def answer_poll(phone: Phone, army: str) -> Screen:
    """The rest of the poll from the army question: the other actors "a lot", a woman of
    25-34 not displaced, in Konna (Mopti)."""
    return phone.press(army, "4", "4", "4", "1", "2", "2", "1", "5")
