"""Trust as the result pages and the digest show it: the share of respondents answering
"somewhat" or "a lot" (:data:`TRUSTING`), with its 95 % Wilson interval, per security actor,
per commune or per week, for everyone or for one group of respondents (women, 15-24, the
displaced: a :class:`Only`).

Every figure comes from :func:`gateway.operators.results.results`, so scope, one counted
answer per person and suppression are results' own. Keeping to one group is a second
dimension there (``by=[commune, gender]`` and the rows of ``woman``): the group's cells are
marked small, or hidden in the shared view, as in that two-way table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from gateway.operators.access import Areas, Principal
from gateway.operators.results import AGE_BANDS, DISPLACED, GENDERS, Poll, results, wilson

TRUSTING = ("somewhat", "a_lot")
FILTERS: dict[str, tuple[str, ...]] = {"gender": GENDERS, "age_band": AGE_BANDS,
                                       "displaced": DISPLACED}


@dataclass(frozen=True)
class Only:
    """Respondents whose ``dimension`` (gender, age_band, displaced) is ``value``."""

    dimension: str
    value: str

    @classmethod
    def parse(cls, text: str | None) -> Only | None:
        """``gender:woman`` and the like; None for nothing, or a pair results do not know."""
        if not text or ":" not in text:
            return None
        dimension, value = text.split(":", 1)
        if value not in FILTERS.get(dimension, ()):
            return None
        return cls(dimension, value)

    def __str__(self) -> str:
        return f"{self.dimension}:{self.value}"


@dataclass(frozen=True)
class Share:
    """One group's trust: None where the shared view hides it or nobody answered."""

    key: str | int | None  # the actor's question, the commune, the week
    n: int | None
    value: float | None = None
    low: float | None = None
    high: float | None = None
    small: bool = False
    suppressed: bool = False
    counts: Mapping[str, int] | None = None
    percent: Mapping[str, Mapping[str, float]] | None = None


def share(key: str | int | None, row: Mapping[str, Any] | None, *, k: int) -> Share:
    """Trust in a row (or the total) of results; ``row`` None: nobody answered."""
    if row is None or row.get("n") == 0:
        return Share(key, 0)
    if row.get("suppressed") or row.get("n") is None:
        return Share(key, None, suppressed=True)
    n, counts = int(row["n"]), row["counts"]
    x = sum(counts.get(v, 0) for v in TRUSTING)
    low, high = wilson(x, n)
    return Share(key, n, round(100 * x / n, 1), round(100 * low, 1), round(100 * high, 1),
                 small=bool(row.get("small", n < k)), counts=counts,
                 percent=row.get("percent"))


def _rows(conn: Connection, *, who: Principal, areas: Areas, poll: Poll, question: str,
          by: Sequence[str], only: Only | None, since: datetime | None,
          until: datetime | None, suppress: bool, k: int) -> tuple[dict[str, Any], list[Any]]:
    dims = [*by, *([only.dimension] if only else [])]
    figures = results(conn, who=who, areas=areas, poll=poll.id, question=question,
                      values=poll.question(question).value_ids, by=dims, since=since,
                      until=until, suppress=suppress, k=k)
    rows = [r for r in figures["rows"]
            if only is None or r["group"][only.dimension] == only.value]
    return figures, rows


def per_actor(conn: Connection, *, who: Principal, areas: Areas, poll: Poll,
              actors: Sequence[str], only: Only | None = None,
              since: datetime | None = None, until: datetime | None = None,
              suppress: bool = False, k: int = 5) -> list[Share]:
    """Trust in each actor (a question), among everyone or the ``only`` group."""
    out = []
    for question in actors:
        figures, rows = _rows(conn, who=who, areas=areas, poll=poll, question=question,
                              by=(), only=only, since=since, until=until,
                              suppress=suppress, k=k)
        if only is None:
            total = figures["total"]
            hidden = total["n"] is None
            row: dict[str, Any] | None = {
                "n": total["n"], "counts": total["counts"], "percent": total["percent"],
                "suppressed": hidden, "small": bool(total["n"]) and total["n"] < k}
            out.append(share(question, row, k=k))
        else:
            out.append(share(question, rows[0] if rows else None, k=k))
    return out


def per_group(conn: Connection, *, who: Principal, areas: Areas, poll: Poll, question: str,
              by: str, only: Only | None = None, since: datetime | None = None,
              until: datetime | None = None, suppress: bool = False,
              k: int = 5) -> list[Share]:
    """Trust in one actor per commune, cercle or week (``by``), among everyone or the
    ``only`` group, in results' order (the communes list, weeks ascending)."""
    _, rows = _rows(conn, who=who, areas=areas, poll=poll, question=question, by=[by],
                    only=only, since=since, until=until, suppress=suppress, k=k)
    return [share(r["group"][by], r, k=k) for r in rows]
