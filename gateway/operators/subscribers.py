"""Subscribers: how many residents asked for messages, per cercle of the caller's scope.

Counts only, never a pseudonym: this is what an operator's home page shows. A subscriber
is a contact who subscribed and did not stop (an erased contact no longer exists). A contact
whose area is a commune counts in that commune's cercle; one who gave only a cercle counts
there too.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from gateway.operators.access import Areas, Principal, area_filter, visible_areas
from gateway.store.queries import contacts


@dataclass(frozen=True)
class CercleCount:
    cercle: str  # cercle id (flows/lists/communes.yml)
    subscribers: int


def per_cercle(conn: Connection, *, who: Principal, areas: Areas) -> list[CercleCount]:
    """Subscribers in each cercle ``who`` may see, in the communes list's order; a cercle
    with none is listed with 0. Admins also see contacts with no known area, as cercle ""."""
    rows = conn.execute(
        select(contacts.c.area, func.count())
        .where(contacts.c.subscribed.is_(True), contacts.c.stopped.is_(False),
               area_filter(who, areas, contacts.c.area))
        .group_by(contacts.c.area)
    ).all()
    totals: dict[str, int] = {}
    for area, count in rows:
        cercle = areas.cercle(area) or ""
        totals[cercle] = totals.get(cercle, 0) + int(count)
    visible = visible_areas(who, areas)
    shown = [c for c in areas.communes_of if visible is None or c in visible]
    out = [CercleCount(c, totals.get(c, 0)) for c in shown]
    if "" in totals:
        out.append(CercleCount("", totals[""]))
    return out
