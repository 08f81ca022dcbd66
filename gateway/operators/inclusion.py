"""The inclusion monitor: whose voices a poll hears in each cercle, against the targets an
operator set, so the team knows where to send the next radio show or awareness message.

A target is the share of a cercle's respondents (whole percent) who are women, aged 15-24,
displaced (:data:`MEASURES`); ``inclusion_target`` keeps them per poll and cercle. What is
reached is counted from the poll's answers the way results are (``results.results``): one
counted answer per person, the respondents of the poll's first question (every respondent
answers it; ``question`` may name another), their gender, age band and displacement as
given with their latest answer. A share is of all respondents, those who preferred not to
say or were not asked included: a target is met only by voices that were heard.

Operators see exact figures in their cercles, small cercles (fewer than ``k``
respondents) marked; the shared view (``suppress=True``) takes its figures from results'
shared view, so a cercle or a count hidden there is hidden here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from gateway.operators import audit
from gateway.operators.access import (
    Areas,
    NotFound,
    OutOfScope,
    Principal,
    Role,
    require,
)
from gateway.operators.results import Poll, results, wilson
from gateway.store.models import InclusionTarget

# measure -> (the dimension it is read from, the value it counts)
MEASURES: dict[str, tuple[str, str]] = {
    "women": ("gender", "woman"),
    "young": ("age_band", "15-24"),
    "displaced": ("displaced", "yes"),
}

_targets: Table = InclusionTarget.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Targets:
    """Whole percentages of respondents; None: no target."""

    women: int | None = None
    young: int | None = None
    displaced: int | None = None

    def of(self, measure: str) -> int | None:
        value: int | None = getattr(self, measure)
        return value


def _check_cercle(who: Principal, areas: Areas, cercle: str) -> None:
    if cercle not in areas.communes_of:
        raise NotFound(f"no cercle {cercle}")
    if not who.everywhere and cercle not in who.cercles:
        raise OutOfScope("not found")


def set_targets(conn: Connection, *, who: Principal, areas: Areas, poll: str, cercle: str,
                targets: Targets, now: datetime) -> Targets:
    """Replace ``poll``'s targets in ``cercle`` (one of ``who``'s), audited."""
    require(who, Role.operator)
    _check_cercle(who, areas, cercle)
    for measure in MEASURES:
        value = targets.of(measure)
        if value is not None and not 0 <= value <= 100:
            raise ValueError(f"{measure}: a target is a percentage, 0 to 100")
    values = {"poll": poll, "cercle": cercle, **asdict(targets), "updated_at": now,
              "updated_by": who.name}
    changed = {k: values[k] for k in (*MEASURES, "updated_at", "updated_by")}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(_targets).values(values)
                 .on_conflict_do_update(index_elements=["poll", "cercle"], set_=changed))
    audit.record(conn, actor=who.name, action="inclusion.targets", object_type="poll",
                 object_id=poll, details={"cercle": cercle, **asdict(targets)}, now=now)
    return targets


def targets_of(conn: Connection, *, poll: str) -> dict[str, Targets]:
    """Each cercle's targets for ``poll``."""
    rows = conn.execute(select(_targets).where(_targets.c.poll == poll))
    return {r.cercle: Targets(r.women, r.young, r.displaced) for r in rows}


def needed(count: int, n: int, target: int) -> int | None:
    """How many more respondents of the kind would bring ``count`` of ``n`` to ``target``
    percent, the others unchanged (0 when it is reached; None for 100 % not reached,
    which no number of new respondents reaches)."""
    if 100 * count >= target * n:
        return 0
    if target >= 100:
        return None
    return math.ceil((target * n - 100 * count) / (100 - target))


def _measure(count: int | None, n: int | None, target: int | None) -> dict[str, Any]:
    shown: dict[str, Any] = {"target": target, "count": count, "percent": None,
                             "met": None, "needed": None}
    if count is None or not n:
        return shown
    low, high = wilson(count, n)
    shown["percent"] = {"value": round(100 * count / n, 1), "low": round(100 * low, 1),
                        "high": round(100 * high, 1)}
    if target is not None:
        shown["needed"] = needed(count, n, target)
        shown["met"] = 100 * count >= target * n
    return shown


def inclusion(conn: Connection, *, who: Principal, areas: Areas, poll: Poll,
              question: str | None = None, suppress: bool = False,
              k: int = 5) -> dict[str, Any]:
    """Per cercle in ``who``'s scope (every one, those nobody answered in too): its
    respondents, and for each measure the count, the share with its 95 % interval, the
    target, whether it is met and how many more such respondents would meet it."""
    require(who, Role.operator)
    asked = poll.question(question or poll.questions[0].id).id
    common: dict[str, Any] = {"who": who, "areas": areas, "poll": poll.id,
                              "question": asked, "suppress": suppress, "k": k}
    sizes: dict[str, dict[str, Any]] = {}
    for size_row in results(conn, by=["cercle"], **common)["rows"]:
        if size_row["group"]["cercle"] is not None:
            sizes[str(size_row["group"]["cercle"])] = size_row
    found: dict[tuple[str, str], int | None] = {}
    for measure, (dim, value) in MEASURES.items():
        for cell in results(conn, by=["cercle", dim], **common)["rows"]:
            cercle, got = cell["group"]["cercle"], cell["group"][dim]
            if cercle is not None and got == value:
                found[(str(cercle), measure)] = cell["n"]
    chosen = targets_of(conn, poll=poll.id)
    cercles = [c for c in areas.communes_of if who.everywhere or c in who.cercles]
    rows = []
    for cercle in cercles:
        size = sizes.get(cercle)
        n = 0 if size is None else size["n"]
        hidden = size is not None and size["suppressed"]
        goal = chosen.get(cercle, Targets())
        measures = {}
        for measure in MEASURES:
            count: int | None = 0 if n else None
            if (cercle, measure) in found:
                count = found[(cercle, measure)]
            elif hidden:
                count = None
            measures[measure] = _measure(count, n, goal.of(measure))
        row: dict[str, Any] = {"cercle": cercle, "n": n, "suppressed": hidden,
                               "measures": measures}
        if not suppress:
            row["small"] = bool(n) and n < k
        rows.append(row)
    return {"poll": poll.id, "question": asked, "k": k, "cercles": rows}


def lacking(figures: Mapping[str, Any], measure: str = "women") -> list[str]:
    """The cercles whose ``measure`` misses its target (or that nobody answered in while
    a target is set)."""
    out = []
    for row in figures["cercles"]:
        shown = row["measures"][measure]
        if shown["target"] is not None and (shown["met"] is False or row["n"] == 0):
            out.append(row["cercle"])
    return out
