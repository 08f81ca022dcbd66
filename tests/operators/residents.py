"""Residents seeded straight into the store (contact, sealed number), as the subscription
flows would leave them: for tests of what operators see and send."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dialogue.ussd import data_key
from gateway.runtime import Runtime
from gateway.store import queries
from gateway.store.models import utcnow


@dataclass(frozen=True)
class Resident:
    phone: str
    area: str | None
    language: str = "fr"
    subscribed: bool = True
    stopped: bool = False


def seed(rt: Runtime, residents: list[Resident]) -> None:
    now = utcnow()
    with rt.db.transaction() as conn:
        for r in residents:
            pseudonym = rt.keys.pseudonym(r.phone)
            queries.touch_contact(conn, pseudonym=pseudonym, pseudonym_version=1, now=now)
            queries.update_contact(conn, pseudonym=pseudonym, area=r.area, language=r.language,
                                   subscribed=r.subscribed, stopped=r.stopped)
            wrapped = data_key(conn, rt.keys, pseudonym=pseudonym)
            queries.upsert_vault(conn, pseudonym=pseudonym, now=now, number=rt.keys.seal_number(
                wrapped, r.phone, pseudonym=pseudonym))


# A small population across the cercles, with the cases an audience must leave out.
RESIDENTS = [
    Resident("+22370000101", "mopti-konna", "bm"),
    Resident("+22370000102", "mopti-konna", "fr"),
    Resident("+22370000103", "mopti-sio", "fr"),
    Resident("+22370000104", "koro", "bm"),  # gave only the cercle
    Resident("+22370000105", "koro-dinangourou", "ff"),
    Resident("+22370000106", "djenne-djenne", "fr"),
    Resident("+22370000107", "mopti-konna", "fr", stopped=True),
    Resident("+22370000108", "mopti-konna", "fr", subscribed=False),
    Resident("+22370000109", None, "fr"),
]
