"""Residents who file reports the way they do on the street: a real USSD session through
the Africa's Talking webhook, choosing options by the words on the screen (so the tests do
not depend on how menus are paginated). Other operator tests import these."""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from gateway.runtime import Runtime
from gateway.store import queries
from tests.phone import Phone, Screen

_numbers = itertools.count(1)
_OPTION = re.compile(r"^(\d+)\. (.*)$")


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def choose(phone: Phone, screen: Screen, label: str) -> Screen:
    """Press the option whose text is ``label`` (accents aside), paging with 9."""
    for _ in range(20):
        for line in screen.text.split("\n"):
            found = _OPTION.match(line)
            if found and _plain(found.group(2)) == _plain(label):
                return phone.press(found.group(1))
        assert "9. Suite" in screen.text, (label, screen.text)
        screen = phone.press("9")
    raise AssertionError(f"{label!r} not offered")


@dataclass(frozen=True)
class Filed:
    id: int
    number: str  # the reporter's phone (tests only: the gateway never shows it)


def file_report(client: Any, runtime: Runtime, *, cercle: str = "Mopti",
                commune: str | None = "Konna", category: str = "Argent exigé",
                force: str = "Gendarmerie", when: str = "Cette semaine",
                text: str | None = None, number: str | None = None,
                token: str | None = None) -> Filed:
    """A report filed by USSD in French from a new phone (or ``number``): the French
    labels of the options, ``commune`` None for "Autre / je ne sais pas", ``cercle``
    "Autre / je ne sais pas" for no place at all; ``token``: the webhook token, when the
    app has one."""
    phone = Phone(client, number or f"+2237{next(_numbers):07d}", token=token)
    screen = phone.dial()
    if "Francais" in screen.text:
        screen = phone.press("1")
    screen = choose(phone, screen, "Signaler un fait (FDS)")
    screen = choose(phone, screen, category)
    screen = choose(phone, screen, force)
    screen = choose(phone, screen, when)
    screen = choose(phone, screen, cercle)
    if "Quelle commune" in screen.text:
        screen = choose(phone, screen, commune or "Autre / je ne sais pas")
    if text is None:
        screen = phone.press("2")
    else:
        phone.press("1")
        screen = phone.press(text)
    assert screen.kind == "END", screen
    with runtime.db.transaction() as conn:
        report_id = conn.execute(select(queries.reports.c.id)
                                 .order_by(queries.reports.c.id.desc()).limit(1)).scalar_one()
    return Filed(int(report_id), phone.number)


def erase(client: Any, number: str) -> None:
    """The resident asks, from the main menu, to erase their data, and confirms."""
    phone = Phone(client, number)
    screen = phone.dial()
    if "Francais" in screen.text:
        screen = phone.press("1")
    screen = choose(phone, screen, "Effacer mes données")
    assert phone.press("1").kind == "END"
