"""Roles and cercle scopes, decided in one place (gateway.operators.access)."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select

from gateway.content.catalogs import load, locate
from gateway.operators.access import (
    Areas,
    Forbidden,
    OutOfScope,
    Principal,
    Role,
    area_filter,
    check_area,
    check_cercles,
    require,
)

AREAS = Areas.of(load(locate(None))[0].communes)
ADMIN = Principal(1, "awa", Role.admin)
MOPTI_KORO = Principal(2, "moussa", Role.operator, frozenset({"mopti", "koro"}))
DJENNE_REVIEWER = Principal(3, "fanta", Role.reviewer, frozenset({"djenne"}))
HOST = Principal(4, "radio-kaoural", Role.radio)


@pytest.mark.parametrize(("who", "roles", "allowed"), [
    (ADMIN, (Role.operator,), True),
    (MOPTI_KORO, (Role.operator,), True),
    (DJENNE_REVIEWER, (Role.operator,), False),
    (HOST, (Role.operator, Role.reviewer), False),
    (HOST, (Role.radio,), True),
])
def test_a_role_may_or_may_not(who: Principal, roles: tuple[Role, ...], allowed: bool) -> None:
    if allowed:
        require(who, *roles)
    else:
        with pytest.raises(Forbidden):
            require(who, *roles)


def test_a_commune_belongs_to_its_cercle() -> None:
    assert AREAS.cercle("mopti-konna") == "mopti"
    assert AREAS.cercle("mopti") == "mopti"
    assert AREAS.cercle("nowhere") is None
    assert "mopti-konna" in AREAS.expand(["mopti"])
    assert "djenne-djenne" not in AREAS.expand(["mopti", "koro"])


@pytest.mark.parametrize(("who", "area", "seen"), [
    (MOPTI_KORO, "mopti-konna", True),
    (MOPTI_KORO, "koro", True),
    (MOPTI_KORO, "djenne-djenne", False),
    (MOPTI_KORO, None, False),
    (ADMIN, "djenne-djenne", True),
    (ADMIN, None, True),
    (HOST, "mopti-konna", False),
])
def test_one_record_is_in_scope_or_not_found(who: Principal, area: str | None,
                                             seen: bool) -> None:
    if seen:
        check_area(who, AREAS, area)
    else:
        with pytest.raises(OutOfScope):
            check_area(who, AREAS, area)


def test_a_record_spanning_cercles_needs_all_of_them() -> None:
    check_cercles(MOPTI_KORO, ["mopti"])
    check_cercles(ADMIN, ["bankass"])
    with pytest.raises(OutOfScope):
        check_cercles(MOPTI_KORO, ["mopti", "djenne"])


def test_the_filter_keeps_only_rows_in_scope() -> None:
    meta = MetaData()
    things = Table("thing", meta, Column("id", String, primary_key=True), Column("area", String))
    engine = create_engine("sqlite://")
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(things), [{"id": "a", "area": "mopti-konna"},
                                      {"id": "b", "area": "djenne-djenne"},
                                      {"id": "c", "area": "koro"},
                                      {"id": "d", "area": None}])

        def seen(who: Principal) -> set[str]:
            rows = conn.execute(select(things.c.id).where(
                area_filter(who, AREAS, things.c.area))).scalars()
            return set(rows)

        assert seen(MOPTI_KORO) == {"a", "c"}
        assert seen(DJENNE_REVIEWER) == {"b"}
        assert seen(ADMIN) == {"a", "b", "c", "d"}
        assert seen(HOST) == set()
