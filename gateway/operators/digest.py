"""The commune digest: one commune's figures for its local security committee and the
restitution workshops, all suppressed as an export is.

- **Period**: ``since <= time < until``; by default the 30 days up to now. The previous
  period is the one of equal length just before (``since - (until - since)`` to
  ``since``); a person counts in a period when their latest answer falls in it.
- **Trust per actor**: each question of the poll asked on the first question's scale (the
  security actors), this period and the previous: respondents, each answer's share with
  its 95 % interval, and ``trust``, the share answering "somewhat" or "a lot"
  (:data:`TRUSTING`), with its change in points when both periods are shown.
- **How many answered**: respondents to the poll's first question, both periods.
- **Reports received**: reports placed in the commune created in the period, counted by
  coded category and by force (counts only, never text).

Suppression: trust figures come from results' shared view by commune within the commune's
cercle (``results.results(suppress=True)``), so a commune hidden there (fewer than ``k``
respondents, or its complement) is hidden here, whoever asks; report counts under ``k``
are hidden with their complements (``results.complementary``) in each of the two lists,
and the total when under ``k``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from gateway.content.catalogs import Content
from gateway.operators.access import Areas, NotFound, Principal, Role, check_area, require
from gateway.operators.reports import Vocabulary, iso_time
from gateway.operators.results import BadQuery, Group, Poll, complementary, results, wilson
from gateway.operators.trust import TRUSTING
from gateway.store import queries

PERIOD = timedelta(days=30)
REPORT_QUESTIONS = ("category", "force")


def actor_questions(poll: Poll) -> list[str]:
    """The questions asked on the first question's scale: the security actors."""
    scale = poll.questions[0].value_ids
    return [q.id for q in poll.questions if q.value_ids == scale]


def period(*, since: datetime | None, until: datetime | None,
           now: datetime) -> tuple[datetime, datetime]:
    """The period asked, by default the :data:`PERIOD` up to ``now``."""
    until = _utc(until or now)
    since = _utc(since) if since else until - PERIOD
    if since >= until:
        raise BadQuery("since must be before until")
    return since, until


def _utc(value: datetime) -> datetime:
    """Aware and in UTC; a time without an offset is taken as UTC (Mali's own time)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def report_labels(content: Content, question: str) -> dict[str, dict[str, str]]:
    """value -> language -> label of a report question, in every catalog's language."""
    out: dict[str, dict[str, str]] = {}
    for language in content.languages:
        vocab = Vocabulary.of(content, language)
        for meaning in vocab.labels.values():
            for value, label in meaning.get(question, {}).items():
                out.setdefault(value, {})[language] = label
    return out


def _shown(row: Mapping[str, Any] | None) -> dict[str, Any]:
    """A commune's row of results as the digest shows it, with ``trust``."""
    if row is None:  # nobody answered in this period
        return {"n": 0, "suppressed": False, "percent": None, "trust": None}
    if row["suppressed"]:
        return {"n": None, "suppressed": True, "percent": None, "trust": None}
    n, counts = row["n"], row["counts"]
    x = sum(counts.get(v, 0) for v in TRUSTING)
    low, high = wilson(x, n)
    return {"n": n, "suppressed": False, "percent": row["percent"],
            "trust": {"value": round(100 * x / n, 1), "low": round(100 * low, 1),
                      "high": round(100 * high, 1)}}


def _suppressed_counts(found: Counter[str], order: Sequence[str], k: int,
                       labels: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    cells: dict[Group, int] = {(value,): n for value, n in found.items()}
    hidden = complementary(cells, 1, k)
    keys = [*(v for v in order if v in found), *sorted(v for v in found if v not in order)]
    return [{"value": v, "label": dict(labels.get(v, {})),
             "n": None if (v,) in hidden else found[v], "suppressed": (v,) in hidden}
            for v in keys]


def digest(conn: Connection, *, who: Principal, areas: Areas, content: Content, poll: Poll,
           commune: str, since: datetime | None = None, until: datetime | None = None,
           k: int = 5, now: datetime) -> dict[str, Any]:
    """The digest of ``commune`` (one of ``who``'s) for ``poll``. Raises
    :class:`NotFound` for an unknown commune, ``OutOfScope`` for another region's,
    :class:`BadQuery` for a period that ends before it starts."""
    require(who, Role.operator)
    cercle = areas.cercle(commune)
    if cercle is None or cercle == commune:
        raise NotFound(f"no commune {commune}")
    check_area(who, areas, commune)
    since, until = period(since=since, until=until, now=now)
    before = since - (until - since)
    # The commune's cercle, whoever asks: the same suppression for every reader.
    within = Principal(who.account_id, who.name, Role.operator, frozenset({cercle}))

    def row_of(question: str, start: datetime, end: datetime) -> dict[str, Any]:
        figures = results(conn, who=within, areas=areas, poll=poll.id, question=question,
                          values=poll.question(question).value_ids, by=["commune"],
                          since=start, until=end, suppress=True, k=k)
        found = [r for r in figures["rows"] if r["group"]["commune"] == commune]
        return _shown(found[0] if found else None)

    labels = {q: report_labels(content, q) for q in REPORT_QUESTIONS}
    forces = labels["force"]
    actors: list[dict[str, Any]] = []
    for question in actor_questions(poll):
        current, previous = row_of(question, since, until), row_of(question, before, since)
        change = None
        if current["trust"] and previous["trust"]:
            change = round(current["trust"]["value"] - previous["trust"]["value"], 1)
        actors.append({"question": question,
                       "label": forces.get(question) or dict(poll.question(question).prompt),
                       "current": current, "previous": previous, "trust_change": change})
    # The first question is an actor's (its own scale): its respondents answered the poll.
    answered = {"current": actors[0]["current"]["n"], "previous": actors[0]["previous"]["n"]}

    t = queries.reports
    found: dict[str, Counter[str]] = {q: Counter() for q in REPORT_QUESTIONS}
    total = 0
    for (answers,) in conn.execute(select(t.c.answers).where(
            t.c.area == commune, t.c.created_at >= since, t.c.created_at < until)):
        total += 1
        coded = json.loads(answers)
        for question in REPORT_QUESTIONS:
            found[question][str(coded.get(question, "unknown"))] += 1
    reports = {
        "n": total if total == 0 or total >= k else None,
        **{f"by_{q}": _suppressed_counts(found[q], tuple(labels[q]), k, labels[q])
           for q in REPORT_QUESTIONS},
    }
    names = {c.id: c.name for c in content.communes.cercles}
    name = next(m.name for c in content.communes.cercles for m in c.communes
                if m.id == commune)
    return {
        "poll": poll.id, "k": k,
        "commune": {"id": commune, "name": name, "cercle": cercle,
                    "cercle_name": names[cercle]},
        "period": {"since": iso_time(since), "until": iso_time(until)},
        "previous": {"since": iso_time(before), "until": iso_time(since)},
        "respondents": answered, "actors": actors, "reports": reports,
    }
