"""Residents who vote in the trust poll through the USSD webhook, at chosen times: the
known distribution the results tests count by hand.

Thirteen dials from twelve people in three communes (Fatoma and Konna in Mopti's cercle,
Djenné in Djenné's) over two weeks; 101 votes twice, and only his latest vote counts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from gateway.content.catalogs import load, locate
from gateway.operators.access import Areas
from gateway.operators.results import find_poll
from gateway.runtime import Runtime
from tests.phone import END, Phone

CONTENT = load(locate(None))[0]
AREAS = Areas.of(CONTENT.communes)
SCALE = find_poll(CONTENT, "trust-fds").question("army").value_ids

WEEK_49 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # a Monday
WEEK_50 = WEEK_49 + timedelta(days=7)

# number suffix: (army, gender, age band, displaced, commune, when)
VOTES: dict[str, tuple[str, str, str, str, str, datetime]] = {
    "101": ("not_at_all", "man", "50+", "no", "mopti-fatoma", WEEK_49),  # changes his mind:
    "102": ("a_lot", "woman", "25-34", "no", "mopti-konna", WEEK_49),
    "103": ("somewhat", "man", "35-49", "no", "mopti-konna", WEEK_49),
    "104": ("not_at_all", "man", "15-24", "yes", "mopti-konna", WEEK_49),
    "105": ("dont_know", "refused", "50+", "refused", "mopti-konna", WEEK_49),
    "201": ("a_lot", "man", "25-34", "no", "djenne-djenne", WEEK_49),
    "202": ("just_a_little", "man", "50+", "no", "djenne-djenne", WEEK_49),
    "203": ("not_at_all", "woman", "35-49", "yes", "djenne-djenne", WEEK_50),
    "204": ("refused", "woman", "refused", "no", "djenne-djenne", WEEK_50),
    "205": ("a_lot", "woman", "15-24", "no", "djenne-djenne", WEEK_50),
    "301": ("a_lot", "man", "25-34", "yes", "mopti-fatoma", WEEK_50),
    "302": ("somewhat", "woman", "15-24", "no", "mopti-fatoma", WEEK_50),
}
AGAIN = {"101": ("a_lot", "woman", "15-24", "yes", "mopti-konna", WEEK_50)}  # the latest

DIGITS = {
    "scale": {value: str(i) for i, value in enumerate(SCALE, 1)},
    "gender": {"woman": "1", "man": "2", "refused": "3"},
    "age_band": {"15-24": "1", "25-34": "2", "35-49": "3", "50+": "4", "refused": "5"},
    "displaced": {"yes": "1", "no": "2", "refused": "3"},
}
PLACE = {"mopti-fatoma": ("1", "4"), "mopti-konna": ("1", "5"), "djenne-djenne": ("3", "1"),
         "nowhere": ("7",)}  # cercle, then commune; "7": cercle "other / don't know"


class Clock:
    def __init__(self) -> None:
        self.now = WEEK_49

    def __call__(self) -> datetime:
        return self.now


def vote(client: TestClient, clock: Clock, number: str, army: str, gender: str, age: str,
         displaced: str, commune: str, when: datetime, *, prefix: str = "+22370000") -> None:
    """A resident dials the poll and answers every screen; the other actors get "a lot"."""
    clock.now = when
    phone = Phone(client, f"{prefix}{number}")
    keys = ["1"] if phone.dial().text.startswith("Langue") else []  # a new phone: French
    keys += ["2", DIGITS["scale"][army], "4", "4", "4", DIGITS["gender"][gender],
             DIGITS["age_band"][age], DIGITS["displaced"][displaced], *PLACE[commune]]
    assert phone.press(*keys) == END("Merci, réponse recue.")


def cast_votes(client: TestClient, runtime: Runtime, *, prefix: str = "+22370000") -> None:
    """Every vote of ``VOTES`` then ``AGAIN``, each at its time, from numbers ``prefix``
    followed by the keys of ``VOTES``."""
    clock = Clock()
    runtime.ussd.clock = clock
    for number, ballot in [*VOTES.items(), *AGAIN.items()]:
        vote(client, clock, number, *ballot, prefix=prefix)
