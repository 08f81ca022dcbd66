"""Trust shares (somewhat or a lot) per actor, per commune and per week, for everyone or one
group of respondents, from votes cast through the USSD webhook."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.operators import trust
from gateway.operators.access import Principal, Role
from gateway.operators.digest import actor_questions
from gateway.operators.results import find_poll
from gateway.operators.trust import Only
from gateway.runtime import Runtime
from tests.operators.people import cast
from tests.operators.voters import AREAS, CONTENT, cast_votes

POLL = find_poll(CONTENT, "trust-fds")


@pytest.fixture
def voted(client: TestClient, runtime: Runtime) -> Runtime:
    cast(runtime)
    cast_votes(client, runtime)
    return runtime


def test_trust_per_actor_for_everyone_and_for_women(voted: Runtime) -> None:
    admin = cast_admin()
    with voted.db.transaction() as conn:
        everyone = trust.per_actor(conn, who=admin, areas=AREAS, poll=POLL,
                                   actors=actor_questions(POLL))
        women = trust.per_actor(conn, who=admin, areas=AREAS, poll=POLL, actors=["army"],
                                only=Only("gender", "woman"))
        shared = trust.per_actor(conn, who=admin, areas=AREAS, poll=POLL, actors=["army"],
                                 only=Only("displaced", "yes"), suppress=True)
    assert [(s.key, s.n, s.value) for s in everyone] == [
        ("army", 12, 58.3), ("gendarmerie", 12, 100.0), ("police", 12, 100.0),
        ("national_guard", 12, 100.0)]
    assert (everyone[0].low, everyone[0].high, everyone[0].small) == (32.0, 80.7, False)
    # 101 (now), 102, 203, 204, 205, 302: a lot, a lot, not at all, refused, a lot, somewhat
    assert [(s.n, s.value, s.small) for s in women] == [(6, 66.7, False)]
    assert [(s.n, s.suppressed) for s in shared] == [(None, True)]  # 3 displaced, 8 not


def test_trust_per_commune_and_per_week(voted: Runtime) -> None:
    admin = cast_admin()
    with voted.db.transaction() as conn:
        communes = trust.per_group(conn, who=admin, areas=AREAS, poll=POLL, question="army",
                                   by="commune")
        weeks = trust.per_group(conn, who=admin, areas=AREAS, poll=POLL, question="army",
                                by="week", only=Only("gender", "man"))
    assert [(s.key, s.n, s.value, s.small) for s in communes] == [
        ("mopti-fatoma", 2, 100.0, True), ("mopti-konna", 5, 60.0, False),
        ("djenne-djenne", 5, 40.0, False)]
    # Men: week 49 103, 104, 201, 202 (101 moved to week 50 as a woman); week 50 301.
    assert [(s.key, s.n, s.value) for s in weeks] == [("2026-W49", 4, 50.0),
                                                     ("2026-W50", 1, 100.0)]


@pytest.mark.nodb
@pytest.mark.parametrize(("text", "found"), [
    ("gender:woman", Only("gender", "woman")), ("age_band:15-24", Only("age_band", "15-24")),
    ("displaced:yes", Only("displaced", "yes")), ("gender:child", None), ("commune:x", None),
    ("", None), (None, None), ("woman", None),
])
def test_a_filter_is_a_group_results_know(text: str | None, found: Only | None) -> None:
    assert Only.parse(text) == found


def cast_admin() -> Principal:
    return Principal(1, "awa", Role.admin)
