"""Poll results: a known set of votes cast through the USSD webhook comes back exactly.

Twelve residents vote in three communes, one of them twice (his latest vote counts), over
two weeks (tests/operators/voters.py). Every breakdown below is counted by hand from
``VOTES``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.operators.access import Forbidden, Principal, Role
from gateway.operators.results import (
    BadQuery,
    Group,
    complementary,
    percent,
    polls,
    results,
    wilson,
)
from gateway.runtime import Runtime
from gateway.store.models import PollTallyChange
from tests.operators.voters import (
    AREAS,
    CONTENT,
    SCALE,
    WEEK_49,
    WEEK_50,
    Clock,
    cast_votes,
    vote,
)
from tests.phone import END, Phone

ADMIN = Principal(1, "awa", Role.admin)
MOPTI = Principal(2, "moussa", Role.operator, frozenset({"mopti"}))
DJENNE = Principal(3, "oumou", Role.operator, frozenset({"djenne"}))
REVIEWER = Principal(4, "fanta", Role.reviewer, frozenset({"mopti"}))
HOST = Principal(5, "radio-kaoural", Role.radio)


@pytest.fixture
def voted(client: TestClient, runtime: Runtime) -> Runtime:
    cast_votes(client, runtime)
    return runtime


def army(runtime: Runtime, who: Principal = ADMIN, **query: Any) -> dict[str, Any]:
    with runtime.db.transaction() as conn:
        return results(conn, who=who, areas=AREAS, poll="trust-fds", question="army",
                       values=SCALE, **query)


def counts(**found: int) -> dict[str, int]:
    """A counts object: every answer value, zeros included, in the poll's order."""
    return {value: found.get(value, 0) for value in SCALE}


def table(found: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rows as (group values..., n, counts, suppressed): what a reader sees."""
    return [(*row["group"].values(), row["n"], row["counts"], row["suppressed"])
            for row in found["rows"]]


# --- exact figures ---------------------------------------------------------------------


def test_the_total_counts_each_person_once_with_their_latest_answer(voted: Runtime) -> None:
    found = army(voted)
    assert found["poll"] == "trust-fds" and found["question"] == "army" and found["k"] == 5
    assert found["total"]["n"] == 12  # 13 dials, 12 people
    assert found["total"]["counts"] == counts(a_lot=5, somewhat=2, not_at_all=2, dont_know=1,
                                              just_a_little=1, refused=1)
    assert found["rows"] == []


def test_by_commune(voted: Runtime) -> None:
    found = army(voted, by=["commune"])
    assert table(found) == [  # the communes list's order: Mopti's cercle, then Djenné's
        ("mopti-fatoma", 2, counts(a_lot=1, somewhat=1), False),
        ("mopti-konna", 5, counts(a_lot=2, somewhat=1, not_at_all=1, dont_know=1), False),
        ("djenne-djenne", 5, counts(a_lot=2, just_a_little=1, not_at_all=1, refused=1), False),
    ]
    assert [row["small"] for row in found["rows"]] == [True, False, False]
    konna = found["rows"][1]["percent"]
    assert konna["a_lot"] == {"value": 40.0, "low": 11.8, "high": 76.9}
    assert konna["just_a_little"] == {"value": 0.0, "low": 0.0, "high": 43.4}


def test_by_cercle(voted: Runtime) -> None:
    assert table(army(voted, by=["cercle"])) == [
        ("mopti", 7, counts(a_lot=3, somewhat=2, not_at_all=1, dont_know=1), False),
        ("djenne", 5, counts(a_lot=2, just_a_little=1, not_at_all=1, refused=1), False),
    ]


def test_by_gender(voted: Runtime) -> None:
    assert table(army(voted, by=["gender"])) == [
        ("woman", 6, counts(a_lot=3, not_at_all=1, refused=1, somewhat=1), False),
        ("man", 5, counts(somewhat=1, not_at_all=1, a_lot=2, just_a_little=1), False),
        ("refused", 1, counts(dont_know=1), False),
    ]


def test_by_age_band_and_displacement(voted: Runtime) -> None:
    assert [(r["group"]["age_band"], r["n"]) for r in army(voted, by=["age_band"])["rows"]] == [
        ("15-24", 4), ("25-34", 3), ("35-49", 2), ("50+", 2), ("refused", 1)]
    assert [(r["group"]["displaced"], r["n"])
            for r in army(voted, by=["displaced"])["rows"]] == [
        ("yes", 4), ("no", 7), ("refused", 1)]
    # No campaign yet (radio campaigns come later): every answer came by the plain code.
    assert [(r["group"], r["n"]) for r in army(voted, by=["campaign"])["rows"]] == [
        ({"campaign": None}, 12)]


def test_by_commune_and_gender(voted: Runtime) -> None:
    found = army(voted, by=["commune", "gender"])
    assert [(*r["group"].values(), r["n"]) for r in found["rows"]] == [
        ("mopti-fatoma", "woman", 1), ("mopti-fatoma", "man", 1),
        ("mopti-konna", "woman", 2), ("mopti-konna", "man", 2), ("mopti-konna", "refused", 1),
        ("djenne-djenne", "woman", 3), ("djenne-djenne", "man", 2),
    ]
    konna_women = found["rows"][2]
    assert konna_women["counts"] == counts(a_lot=2)
    assert konna_women["small"] is True


def test_a_demographic_question_is_a_question_too(voted: Runtime) -> None:
    with voted.db.transaction() as conn:
        found = results(conn, who=ADMIN, areas=AREAS, poll="trust-fds", question="gender",
                        values=("woman", "man", "refused"), by=["cercle"])
    assert table(found) == [("mopti", 7, {"woman": 3, "man": 3, "refused": 1}, False),
                            ("djenne", 5, {"woman": 3, "man": 2, "refused": 0}, False)]


def test_by_week_since_and_until(voted: Runtime) -> None:
    assert [(r["group"]["week"], r["n"]) for r in army(voted, by=["week"])["rows"]] == [
        ("2026-W49", 6), ("2026-W50", 6)]  # 101's latest vote moved him to week 50
    later = army(voted, by=["commune"], since=WEEK_50)
    assert [(r["group"]["commune"], r["n"]) for r in later["rows"]] == [
        ("mopti-fatoma", 2), ("mopti-konna", 1), ("djenne-djenne", 3)]
    assert later["total"]["counts"] == counts(a_lot=3, somewhat=1, not_at_all=1, refused=1)
    earlier = army(voted, by=["commune"], until=WEEK_50)
    assert [(r["group"]["commune"], r["n"]) for r in earlier["rows"]] == [
        ("mopti-konna", 4), ("djenne-djenne", 2)]
    naive = army(voted, by=["commune"], until=WEEK_50.replace(tzinfo=None))  # taken as UTC
    assert naive == earlier


def test_the_tally_and_the_answers_agree(voted: Runtime) -> None:
    """Without a period results read the tally the triggers keep; with one, the answers."""
    for by in ([], ["commune"], ["gender"], ["commune", "gender"], ["displaced", "cercle"]):
        from_tally = army(voted, by=by)
        assert army(voted, by=by, since=WEEK_49 - timedelta(days=1)) == from_tally
    with voted.db.transaction() as conn:  # every change was folded in by the reads above
        assert conn.execute(select(func.count()).select_from(PollTallyChange)).scalar() == 0


def test_an_erased_resident_is_no_longer_counted(voted: Runtime, client: TestClient) -> None:
    phone = Phone(client, "+22370000302")
    phone.dial()
    assert phone.press("5", "1") == END("C'est fait, vos données sont effacées.")
    found = army(voted, by=["commune"])
    assert found["total"]["n"] == 11
    assert [(r["group"]["commune"], r["n"]) for r in found["rows"]] == [
        ("mopti-fatoma", 1), ("mopti-konna", 5), ("djenne-djenne", 5)]
    assert army(voted, by=["commune"], since=WEEK_49)["rows"] == found["rows"]


def test_an_answer_without_a_place_is_seen_by_admins_only(
        voted: Runtime, client: TestClient) -> None:
    clock = Clock()
    voted.ussd.clock = clock
    vote(client, clock, "401", "a_lot", "woman", "15-24", "no", "nowhere", WEEK_50)
    everywhere = army(voted, by=["cercle"])
    assert [(r["group"]["cercle"], r["n"]) for r in everywhere["rows"]] == [
        ("mopti", 7), ("djenne", 5), (None, 1)]
    assert army(voted, MOPTI)["total"]["n"] == 7


# --- scope and roles -------------------------------------------------------------------


def test_an_operator_sees_only_their_cercles(voted: Runtime) -> None:
    mopti = army(voted, MOPTI, by=["commune"])
    assert [(r["group"]["commune"], r["n"]) for r in mopti["rows"]] == [
        ("mopti-fatoma", 2), ("mopti-konna", 5)]
    assert mopti["total"]["n"] == 7
    assert army(voted, MOPTI, by=["gender"])["total"]["n"] == 7
    djenne = army(voted, DJENNE, by=["commune"], since=WEEK_49)
    assert [(r["group"]["commune"], r["n"]) for r in djenne["rows"]] == [("djenne-djenne", 5)]
    assert army(voted, ADMIN)["total"]["n"] == 12


@pytest.mark.parametrize("who", [REVIEWER, HOST])
def test_only_operators_and_admins_read_results(voted: Runtime, who: Principal) -> None:
    with pytest.raises(Forbidden):
        army(voted, who)


@pytest.mark.parametrize(("by", "problem"), [
    (["village"], "unknown dimension 'village'"),
    (["commune", "commune"], "given twice"),
    (["commune", "gender", "week"], "at most 2"),
])
def test_a_request_that_makes_no_sense_is_refused(runtime: Runtime, by: list[str],
                                                  problem: str) -> None:
    with pytest.raises(BadQuery, match=problem):
        army(runtime, by=by)


# --- the shared view -------------------------------------------------------------------


def test_a_small_commune_cannot_be_worked_out_from_the_total(voted: Runtime) -> None:
    shared = army(voted, by=["commune"], suppress=True)
    assert table(shared) == [
        ("mopti-fatoma", None, None, True),  # 2 respondents
        ("mopti-konna", 5, counts(a_lot=2, somewhat=1, not_at_all=1, dont_know=1), False),
        ("djenne-djenne", None, None, True),  # hidden with it: total - Konna = 7 = 2 + 5
    ]
    assert all("small" not in row and row["percent"] is None
               for row in shared["rows"] if row["suppressed"])
    assert shared["total"]["n"] == 12
    mopti = army(voted, MOPTI, by=["commune"], suppress=True)  # Mopti's operator: 2 + 5
    assert table(mopti) == [("mopti-fatoma", None, None, True),
                            ("mopti-konna", None, None, True)]
    assert mopti["total"]["n"] == 7


def test_a_total_under_k_is_hidden_in_the_shared_view(voted: Runtime) -> None:
    fatoma_only = army(voted, MOPTI, by=["gender"], suppress=True, k=8)
    assert fatoma_only["total"] == {"n": None, "counts": None, "percent": None}
    assert all(row["suppressed"] for row in fatoma_only["rows"])
    assert army(voted, MOPTI, by=["gender"], k=8)["total"]["n"] == 7  # operators: exact


def test_two_dimensions_protect_every_row_and_column(voted: Runtime) -> None:
    shared = army(voted, by=["commune", "gender"], suppress=True, k=2)
    hidden = {tuple(r["group"].values()) for r in shared["rows"] if r["suppressed"]}
    assert hidden == {
        ("mopti-fatoma", "woman"), ("mopti-fatoma", "man"),  # 1 and 1: together 2
        ("mopti-konna", "refused"),  # 1, so in Konna's row ...
        ("mopti-konna", "man"),  # ... the smallest other; Fatoma's woman alone in her
        ("mopti-konna", "woman"),  # column takes Konna's women along
    }
    # "refused" has a single voter: that column has no other cell to hide with it
    shown = {tuple(r["group"].values()): r["n"] for r in shared["rows"] if not r["suppressed"]}
    assert shown == {("djenne-djenne", "woman"): 3, ("djenne-djenne", "man"): 2}


# --- the rules, as tables --------------------------------------------------------------


@pytest.mark.parametrize(("x", "n", "low", "high"), [
    (6, 12, 0.2538, 0.7462),
    (0, 10, 0.0, 0.2775),
    (1, 10, 0.0179, 0.4042),
    (5, 5, 0.5655, 1.0),
    (2, 5, 0.1176, 0.7693),
    (50, 100, 0.4038, 0.5962),
])
def test_wilson_intervals(x: int, n: int, low: float, high: float) -> None:
    found = wilson(x, n)
    assert found == pytest.approx((low, high), abs=5e-5)


def test_percentages_carry_their_interval() -> None:
    assert percent({"a_lot": 3, "dont_know": 0}, 3) == {
        "a_lot": {"value": 100.0, "low": 43.9, "high": 100.0},
        "dont_know": {"value": 0.0, "low": 0.0, "high": 56.1},
    }


@pytest.mark.parametrize(("cells", "hidden"), [
    ({("a",): 30, ("b",): 40}, set()),
    ({("a",): 2, ("b",): 30, ("c",): 40}, {("a",), ("b",)}),  # the next smallest too
    ({("a",): 2, ("b",): 3, ("c",): 40}, {("a",), ("b",)}),  # two small ones: enough
    ({("a",): 1, ("b",): 1, ("c",): 40, ("d",): 50}, {("a",), ("b",), ("c",)}),  # 1 + 1 < 5
    ({("a",): 2}, {("a",)}),  # nothing to hide it with: the total says it anyway
])
def test_complementary_suppression_in_one_dimension(
        cells: dict[Group, int], hidden: set[Group]) -> None:
    assert complementary(cells, 1, 5) == hidden


def test_complementary_suppression_in_two_dimensions() -> None:
    #            woman  man
    #   konna       2    20
    #   sio        30    40
    #   soye       25    35
    cells: dict[Group, int] = {
        ("konna", "woman"): 2, ("konna", "man"): 20, ("sio", "woman"): 30,
        ("sio", "man"): 40, ("soye", "woman"): 25, ("soye", "man"): 35}
    assert complementary(cells, 2, 5) == {  # a rectangle: no row or column with one alone
        ("konna", "woman"), ("konna", "man"), ("soye", "woman"), ("soye", "man")}


def test_a_missing_cell_is_not_a_free_complement() -> None:
    #            woman  man
    #   konna       3     -   nobody: a known zero, which hides nothing
    #   sio        30    40
    #   soye       25    35
    # Konna's women need a second hidden woman's cell, whose row then needs its men's
    # cell, whose column needs the other men's cell, whose row ...: all of it.
    cells: dict[Group, int] = {
        ("konna", "woman"): 3, ("sio", "woman"): 30, ("sio", "man"): 40,
        ("soye", "woman"): 25, ("soye", "man"): 35}
    assert complementary(cells, 2, 5) == set(cells)
    assert complementary({("konna",): 3, ("sio",): 30}, 1, 5) == {("konna",), ("sio",)}


# --- the polls -------------------------------------------------------------------------


def test_polls_list_their_questions_and_answer_values() -> None:
    [poll] = polls(CONTENT)
    assert poll.id == "trust-fds" and poll.flows == ("poll",)
    assert [q.id for q in poll.questions] == [
        "army", "gendarmerie", "police", "national_guard", "gender", "age_band", "displaced",
        "cercle", "commune"]
    assert SCALE == ("not_at_all", "just_a_little", "somewhat", "a_lot", "dont_know",
                     "refused")
    assert poll.question("gender").value_ids == ("woman", "man", "refused")
    assert poll.question("age_band").value_ids == ("15-24", "25-34", "35-49", "50+", "refused")
    assert poll.question("displaced").value_ids == ("yes", "no", "refused")
    cercles = poll.question("cercle").value_ids
    assert cercles[:2] == ("mopti", "youwarou") and cercles[-1] == "other"
    shown = poll.as_json()
    assert shown["questions"][0]["prompt"]["fr"] == "Faites-vous confiance à l'armée (FAMa)?"
    assert shown["questions"][0]["values"][3] == {
        "value": "a_lot", "label": {"fr": "Beaucoup", "bm": "Kosɛbɛ", "ff": "Sanne"}}
