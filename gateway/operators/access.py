"""Who is asking, and what they may see: the one place roles and cercle scopes are decided.

Every query of scoped data goes through :func:`area_filter` (rows carrying an area: a
commune or a cercle id) or :func:`check_area` (one record), so a new endpoint cannot forget
the scope. A record outside the caller's scope raises :class:`OutOfScope`, which the web
layer answers exactly like a missing record (404) and audits; an action the role lacks
raises :class:`Forbidden` (403).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, false, true
from sqlalchemy.sql.elements import ColumnClause

from gateway.content.catalogs import CommuneList


class Role(StrEnum):
    admin = "admin"
    operator = "operator"
    reviewer = "reviewer"
    radio = "radio"


class Forbidden(Exception):
    """The caller's role may not do this (403)."""


class NotFound(LookupError):
    """No such record (404)."""


class OutOfScope(NotFound):
    """The record exists in another region: answered as :class:`NotFound`, and audited."""


MAX_ID = 2**31 - 1  # record ids are 32-bit integers in the database


def check_id(record_id: int) -> None:
    """Raise :class:`NotFound` for an id no record can have (beyond the database's
    integers: PostgreSQL and SQLite would refuse to compare with it, a 500)."""
    if not 0 < record_id <= MAX_ID:
        raise NotFound("not found")


@dataclass(frozen=True)
class Principal:
    """A signed-in account: its id and name (for the audit log), role and cercles."""

    account_id: int
    name: str
    role: Role
    cercles: frozenset[str] = frozenset()

    @property
    def everywhere(self) -> bool:
        """Admins see every cercle; every other role sees its own."""
        return self.role is Role.admin


def require(who: Principal, *roles: Role) -> None:
    """Raise :class:`Forbidden` unless ``who`` has one of ``roles`` (admin always may)."""
    if who.role is not Role.admin and who.role not in roles:
        raise Forbidden(f"the {who.role} role may not do this")


@dataclass(frozen=True)
class Areas:
    """The cercles and communes of ``flows/lists/communes.yml``, as lookups."""

    cercle_of: dict[str, str]  # commune id -> cercle id (a cercle id maps to itself)
    communes_of: dict[str, tuple[str, ...]]  # cercle id -> its commune ids

    @classmethod
    def of(cls, communes: CommuneList) -> Areas:
        cercle_of: dict[str, str] = {}
        communes_of: dict[str, tuple[str, ...]] = {}
        for cercle in communes.cercles:
            cercle_of[cercle.id] = cercle.id
            communes_of[cercle.id] = tuple(c.id for c in cercle.communes)
            for commune in cercle.communes:
                cercle_of[commune.id] = cercle.id
        return cls(cercle_of, communes_of)

    def cercle(self, area: str | None) -> str | None:
        """The cercle of a commune or cercle id; None for an unknown or missing area."""
        return None if area is None else self.cercle_of.get(area)

    def expand(self, cercles: Iterable[str]) -> frozenset[str]:
        """The given cercle ids and every commune in them: the area values they cover."""
        out: set[str] = set()
        for cercle in cercles:
            if cercle in self.communes_of:
                out.add(cercle)
                out.update(self.communes_of[cercle])
        return frozenset(out)


def visible_areas(who: Principal, areas: Areas) -> frozenset[str] | None:
    """The area values ``who`` may see (cercles and their communes); None: all of them."""
    return None if who.everywhere else areas.expand(who.cercles)


def area_filter(who: Principal, areas: Areas, column: ColumnClause[str] | ColumnElement[str],
                ) -> ColumnElement[bool]:
    """A WHERE clause keeping the rows whose area ``who`` may see. A row with no area (a
    contact who never gave a place) is seen by admins only."""
    visible = visible_areas(who, areas)
    if visible is None:
        return true()
    if not visible:
        return false()
    return column.in_(sorted(visible))


def in_scope(who: Principal, areas: Areas, area: str | None) -> bool:
    visible = visible_areas(who, areas)
    return visible is None or (area is not None and area in visible)


def check_area(who: Principal, areas: Areas, area: str | None) -> None:
    """Raise :class:`OutOfScope` when one record's area is outside ``who``'s scope."""
    if not in_scope(who, areas, area):
        raise OutOfScope("not found")


def check_cercles(who: Principal, cercles: Iterable[str]) -> None:
    """Raise :class:`OutOfScope` when a record spans a cercle outside ``who``'s scope (a
    broadcast, a campaign: records that name their cercles)."""
    if not who.everywhere and not set(cercles) <= who.cercles:
        raise OutOfScope("not found")
