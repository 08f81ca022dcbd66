"""Poll results: the polls with their questions, and who answered what, by group.

One counted answer per person: ``poll_answer`` keeps one row per (poll, pseudonym,
question), the latest, so counting rows counts respondents. Each row carries who answered
and where, from the same submission (``area``: the commune, else the cercle; gender, age
band, displacement; campaign), and every breakdown is one grouped query:

- without a period, on ``poll_tally`` plus the changes the triggers appended since the last
  fold (``fold``): a few thousand rows per question however many answered;
- with ``since``/``until`` or by ``week``, on ``poll_answer`` itself, through its index on
  (poll, question, updated_at, area, answer): by place from the index alone, but still a
  read of every answer in the period (seconds for a million on SQLite; see the README).

Scope: an answer belongs to its own area (the place given with it), seen through
``access.area_filter``; an answer with no place is seen by admins only. Small groups (fewer
than ``k`` respondents) are marked ``small`` for operators; the shared view
(``suppress=True``: radio, on-air pages, exports) hides them and, with them, whatever
groups would let a reader work them out from the total and the other groups.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    Select,
    Table,
    cast,
    func,
    select,
    text,
    union_all,
)

from gateway.content.catalogs import Content
from gateway.content.flowdef import MenuStep
from gateway.dialogue.engine import OTHER
from gateway.operators.access import Areas, NotFound, Principal, Role, area_filter, require
from gateway.store.db import Database
from gateway.store.models import PollAnswer, PollTally, PollTallyChange

DIMENSIONS = ("cercle", "commune", "gender", "age_band", "displaced", "week", "campaign")
MAX_DIMENSIONS = 2
GENDERS = ("woman", "man", "refused")
AGE_BANDS = ("15-24", "25-34", "35-49", "50+", "refused")
DISPLACED = ("yes", "no", "refused")
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile

Group = tuple[str | int | None, ...]


class BadQuery(ValueError):
    """A results request that cannot be answered as asked (the API's 422)."""


# --- the polls ------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    value: str
    label: Mapping[str, str]  # language -> text


@dataclass(frozen=True)
class Question:
    id: str
    prompt: Mapping[str, str]
    values: tuple[Value, ...]

    @property
    def value_ids(self) -> tuple[str, ...]:
        return tuple(v.value for v in self.values)


@dataclass(frozen=True)
class Poll:
    id: str
    title: Mapping[str, str]
    flows: tuple[str, ...]
    questions: tuple[Question, ...]

    def question(self, question: str) -> Question:
        """The question ``question``; :class:`NotFound` if the poll does not ask it."""
        for found in self.questions:
            if found.id == question:
                return found
        raise NotFound(f"poll {self.id} has no question {question}")

    def as_json(self) -> dict[str, Any]:
        return {
            "poll": self.id, "title": dict(self.title), "flows": list(self.flows),
            "questions": [
                {"question": q.id, "prompt": dict(q.prompt),
                 "values": [{"value": v.value, "label": dict(v.label)} for v in q.values]}
                for q in self.questions
            ],
        }


def polls(content: Content) -> list[Poll]:
    """Every poll the flows save (``poll:``), with the questions its menus ask in flow
    order and each question's answer values; a poll several flows save is one poll."""
    found: dict[str, tuple[dict[str, str], list[str], dict[str, Question]]] = {}
    for name in sorted(content.flows):
        flow = content.flows[name]
        if not flow.poll:
            continue
        _, flows, questions = found.setdefault(
            flow.poll, (_texts(content, flow.title) if flow.title else {}, [], {}))
        flows.append(name)
        for step in flow.steps.values():
            if isinstance(step, MenuStep) and step.save_as and step.save_as not in questions:
                questions[step.save_as] = Question(
                    step.save_as, _texts(content, step.prompt), _values(content, step))
    return [Poll(poll, title, tuple(flows), tuple(questions.values()))
            for poll, (title, flows, questions) in sorted(found.items())]


def find_poll(content: Content, poll: str) -> Poll:
    """The poll ``poll``; :class:`NotFound` when no flow saves it."""
    for found in polls(content):
        if found.id == poll:
            return found
    raise NotFound(f"no poll {poll}")


def _texts(content: Content, key: str) -> dict[str, str]:
    return {lang: content.text(lang, key) for lang in content.languages
            if key in content.catalogs[lang].messages}


def _values(content: Content, step: MenuStep) -> tuple[Value, ...]:
    if step.options_from:  # proper nouns: the same in every language
        places = [(c.id, c.name) for c in content.communes.cercles]
        if step.options_from == "communes":
            places = [(m.id, m.name) for c in content.communes.cercles for m in c.communes]
        other = Value(OTHER, _texts(content, "list-other"))
        return (*(Value(pid, dict.fromkeys(content.languages, name))
                  for pid, name in places), other)
    return tuple(Value(o.value, _texts(content, o.label)) for o in step.options if o.value)


# --- counting -------------------------------------------------------------------------

_answers: Table = PollAnswer.__table__  # type: ignore[attr-defined]
_tally: Table = PollTally.__table__  # type: ignore[attr-defined]
_changes: Table = PollTallyChange.__table__  # type: ignore[attr-defined]
_KEY = "poll, question, area, gender, age_band, displaced, campaign, answer"
_FOLD_LOCK = 0x7011_7A11  # PostgreSQL advisory lock: one fold at a time

# The column each dimension groups on (cercle and commune: the area, mapped afterwards).
_COLUMN = {"cercle": "area", "commune": "area", "gender": "gender", "age_band": "age_band",
           "displaced": "displaced", "week": "day", "campaign": "campaign"}


def fold(conn: Connection) -> None:
    """Add the tally changes the triggers appended to ``poll_tally`` and delete them, in
    the caller's transaction. Reads are right without it (they add pending changes);
    folding keeps them fast. On PostgreSQL a fold already running makes this one a no-op."""
    if conn.dialect.name == "postgresql":
        if not conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"),
                            {"key": _FOLD_LOCK}).scalar_one():
            return
        conn.execute(text(
            f"WITH moved AS (DELETE FROM poll_tally_change RETURNING {_KEY}, n) "  # noqa: S608 - constants only
            f"INSERT INTO poll_tally AS t ({_KEY}, n) SELECT {_KEY}, sum(n) FROM moved "
            f"GROUP BY {_KEY} ON CONFLICT ({_KEY}) DO UPDATE SET n = t.n + excluded.n"))
        return
    top = conn.execute(select(func.max(_changes.c.id))).scalar_one()
    if top is None:
        return
    conn.execute(text(
        f"INSERT INTO poll_tally ({_KEY}, n) SELECT {_KEY}, sum(n) FROM poll_tally_change "  # noqa: S608 - constants only
        f"WHERE id <= :top GROUP BY {_KEY} "
        f"ON CONFLICT ({_KEY}) DO UPDATE SET n = poll_tally.n + excluded.n"), {"top": top})
    conn.execute(_changes.delete().where(_changes.c.id <= top))


def fold_pending(db: Database) -> None:
    """Fold the pending tally changes in a short write transaction of its own (only when
    there are some), so that the results read after it can run in a read-only one
    (``Database.reading``) and never hold SQLite's write lock for its whole length."""
    with db.reading() as conn:
        if conn.execute(select(_changes.c.id).limit(1)).first() is None:
            return
    with db.transaction() as conn:
        fold(conn)


def _day(conn: Connection) -> ColumnElement[Any]:
    """The UTC day of an answer's time (Mali keeps UTC all year): a date on PostgreSQL,
    YYYY-MM-DD text on SQLite, which stores times as UTC text."""
    column = _answers.c.updated_at
    if conn.dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.substr(column, 1, 10)


def _columns_of(dims: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(_COLUMN[d] for d in dims))


def _count_tally(who: Principal, areas: Areas, poll: str, question: str,
                 columns: Sequence[str]) -> Select[Any]:
    def part(table: Table) -> Select[Any]:
        return (select(*(table.c[c] for c in columns), table.c.answer, table.c.n)
                .where(table.c.poll == poll, table.c.question == question,
                       area_filter(who, areas, table.c.area)))

    both = union_all(part(_tally), part(_changes)).subquery()
    keys = [*(both.c[c] for c in columns), both.c.answer]
    return (select(*keys, func.sum(both.c.n)).group_by(*keys)
            .having(func.sum(both.c.n) != 0))


def _count_answers(conn: Connection, who: Principal, areas: Areas, poll: str, question: str,
                   columns: Sequence[str], since: datetime | None,
                   until: datetime | None) -> Select[Any]:
    t = _answers
    keys: list[ColumnElement[Any]] = [_day(conn) if c == "day" else t.c[c] for c in columns]
    keys.append(t.c.answer)
    stmt = (select(*keys, func.count()).where(
        t.c.poll == poll, t.c.question == question, area_filter(who, areas, t.c.area))
        .group_by(*keys))
    if since is not None:
        stmt = stmt.where(t.c.updated_at >= since)
    if until is not None:
        stmt = stmt.where(t.c.updated_at < until)
    return stmt


def campaign_counts(conn: Connection, *, poll: str, question: str,
                    campaign: int) -> Counter[str]:
    """Respondents per answer among those whose latest answer to ``question`` came
    through radio campaign ``campaign`` (tally plus pending changes; no scope: a
    campaign's figures are shared suppressed, whatever cercle its listeners are in)."""
    def part(table: Table) -> Select[Any]:
        return select(table.c.answer, table.c.n).where(
            table.c.poll == poll, table.c.question == question, table.c.campaign == campaign)

    both = union_all(part(_tally), part(_changes)).subquery()
    found: Counter[str] = Counter()
    for answer, n in conn.execute(select(both.c.answer, func.sum(both.c.n))
                                  .group_by(both.c.answer)):
        if int(n) > 0:
            found[str(answer)] = int(n)
    return found


def _group_value(dim: str, raw: Any, areas: Areas) -> str | int | None:
    """A database value as the contract shows it in ``group`` (None: not asked)."""
    if raw in ("", None, 0):
        return None
    if dim == "cercle":
        return areas.cercle(raw)
    if dim == "commune":  # a cercle id: the commune answered was "other / don't know"
        return OTHER if raw in areas.communes_of else str(raw)
    if dim == "week":
        day = raw if isinstance(raw, date) else date.fromisoformat(raw)
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if dim == "campaign":
        return int(raw)
    return str(raw)


# --- the figures ----------------------------------------------------------------------


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``x`` successes in ``n`` (fractions, 0-1)."""
    if n <= 0:
        raise ValueError("no observations")
    p = x / n
    spread = z * z / n
    centre = (p + spread / 2) / (1 + spread)
    half = z * math.sqrt(p * (1 - p) / n + spread / (4 * n)) / (1 + spread)
    return max(0.0, centre - half), min(1.0, centre + half)


def percent(counts: Mapping[str, int], n: int) -> dict[str, dict[str, float]]:
    """Each answer's share of ``n`` respondents in percent, with its 95 % Wilson interval,
    rounded to one decimal."""
    out = {}
    for value, x in counts.items():
        low, high = wilson(x, n)
        out[value] = {"value": round(100 * x / n, 1), "low": round(100 * low, 1),
                      "high": round(100 * high, 1)}
    return out


def complementary(cells: Mapping[Group, int], dims: int, k: int) -> set[Group]:
    """The groups to hide: each with fewer than ``k`` respondents, and enough others that
    none of them can be worked out from the margins (the total, and for two dimensions
    each row's and column's total, which other requests publish).

    In every line (the groups sharing a row or a column value; with one dimension, all
    groups) that hides anything, at least two groups are hidden and together they hold at
    least ``k`` respondents; otherwise the line's smallest other group is hidden too
    (preferring, with two dimensions, one whose other line already hides something, so
    one complement serves both), until nothing changes. Groups with nobody are not rows
    at all, so they never count as hidden: a reader knows they are zero.
    """
    hidden = {g for g, n in cells.items() if n < k}
    if not hidden:
        return hidden
    ordered = sorted(cells, key=_sortable)
    axes = (0, 1) if dims > 1 else ()
    by_line: dict[tuple[int, Any], list[Group]] = defaultdict(list)
    for axis in axes:
        for group in ordered:
            by_line[(axis, group[axis])].append(group)
    lines = list(by_line.values()) if axes else [ordered]

    def crossing_hides_nothing(group: Group, line: list[Group]) -> bool:
        """With two dimensions: whether the other line through ``group`` hides nothing
        yet (hiding ``group`` would then need one more complement there)."""
        for axis in axes:
            other = by_line[(axis, group[axis])]
            if other is not line:
                return not any(g in hidden for g in other)
        return False

    changed = True
    while changed:
        changed = False
        for line in lines:
            while any(g in hidden for g in line):
                inside = [g for g in line if g in hidden]
                if len(inside) >= 2 and sum(cells[g] for g in inside) >= k:
                    break
                rest = [g for g in line if g not in hidden]
                if not rest:
                    break
                hidden.add(min(rest, key=lambda g, line=line: (  # type: ignore[misc]
                    crossing_hides_nothing(g, line), cells[g], _sortable(g))))
                changed = True
    return hidden


def _sortable(group: Group) -> tuple[tuple[int, str], ...]:
    return tuple((v is None, str(v)) for v in group)


def _order(dim: str, areas: Areas) -> dict[Any, int]:
    if dim == "cercle":
        return {c: i for i, c in enumerate(areas.communes_of)}
    if dim == "commune":
        communes = [m for ms in areas.communes_of.values() for m in ms]
        return {m: i for i, m in enumerate([*communes, OTHER])}
    fixed = {"gender": GENDERS, "age_band": AGE_BANDS, "displaced": DISPLACED}.get(dim, ())
    return {v: i for i, v in enumerate(fixed)}


def _group_key(dims: Sequence[str], orders: Sequence[Mapping[Any, int]],
               group: Group) -> tuple[Any, ...]:
    """Groups in a reader's order: the communes list, the contract's value order, weeks and
    campaigns ascending; a value not listed after the listed ones; None last."""
    key: list[Any] = []
    for value, order in zip(group, orders, strict=True):
        key.append((value is None, order.get(value, len(order)),
                    value if isinstance(value, int) else str(value)))
    return tuple(key)


def results(
    conn: Connection, *, who: Principal, areas: Areas, poll: str, question: str,
    values: Sequence[str] = (), by: Sequence[str] = (), since: datetime | None = None,
    until: datetime | None = None, suppress: bool = False, k: int = 5,
    fold_changes: bool = True,
) -> dict[str, Any]:
    """The answers to ``question`` of ``poll`` within ``who``'s scope, in total and per
    group of the dimensions ``by`` (at most two of ``DIMENSIONS``), answered in
    ``since <= time < until`` (the time of each person's latest answer).

    ``counts`` are keyed by ``values`` (the question's answer values, zeros included) and
    any other value found. ``suppress``: the shared view (groups under ``k`` hidden, with
    their complements; a total under ``k`` hidden too); otherwise exact figures with
    ``small`` marking the groups the shared view would hide. Raises :class:`BadQuery` for
    an unknown or repeated dimension, more than two, or ``k`` < 1; ``Forbidden`` for a
    role other than operator or admin. ``fold_changes``: fold the pending tally changes
    first, in ``conn`` (False for a read-only transaction: see :func:`fold_pending`).
    """
    require(who, Role.operator)
    dims = check_dimensions(by, k)
    since, until = _utc(since), _utc(until)
    columns = _columns_of(dims)
    if since is not None or until is not None or "week" in dims:
        stmt = _count_answers(conn, who, areas, poll, question, columns, since, until)
    else:
        if fold_changes:
            fold(conn)
        stmt = _count_tally(who, areas, poll, question, columns)

    groups: dict[Group, Counter[str]] = defaultdict(Counter)
    for record in conn.execute(stmt):
        found = dict(zip(columns, record[:len(columns)], strict=True))
        group = tuple(_group_value(d, found[_COLUMN[d]], areas) for d in dims)
        groups[group][record[-2]] += int(record[-1])

    observed = {answer for counts in groups.values() for answer in counts}
    keys = [*values, *sorted(observed - set(values))]
    total: Counter[str] = Counter()
    for counts in groups.values():
        total.update(counts)
    sizes = {g: sum(c.values()) for g, c in groups.items()}
    hidden = complementary(sizes, len(dims), k) if suppress else set()
    orders = [_order(d, areas) for d in dims]

    rows = []
    for group in sorted(groups, key=lambda g: _group_key(dims, orders, g)) if dims else ():
        n = sizes[group]
        row: dict[str, Any] = {"group": dict(zip(dims, group, strict=True))}
        if group in hidden:
            row |= {"n": None, "counts": None, "percent": None, "suppressed": True}
        else:
            shown = {key: groups[group][key] for key in keys}
            row |= {"n": n, "counts": shown, "percent": percent(shown, n),
                    "suppressed": False}
        if not suppress:
            row["small"] = n < k
        rows.append(row)

    n_total = sum(total.values())
    total_counts = {key: total[key] for key in keys}
    shown_total: dict[str, Any] = {"n": n_total, "counts": total_counts, "percent": None}
    if suppress and 0 < n_total < k:
        shown_total = {"n": None, "counts": None, "percent": None}
    elif n_total:
        shown_total["percent"] = percent(total_counts, n_total)
    return {"poll": poll, "question": question, "k": k, "total": shown_total, "rows": rows}


def check_dimensions(by: Iterable[str], k: int) -> list[str]:
    dims = list(by)
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown:
        raise BadQuery(f"unknown dimension {unknown[0]!r}: use one of {', '.join(DIMENSIONS)}")
    if len(set(dims)) != len(dims):
        raise BadQuery("a dimension is given twice")
    if len(dims) > MAX_DIMENSIONS:
        raise BadQuery(f"at most {MAX_DIMENSIONS} dimensions at once")
    if k < 1:
        raise BadQuery("the minimum cell size must be at least 1")
    return dims


def _utc(value: datetime | None) -> datetime | None:
    """Aware and in UTC; a time without an offset is taken as UTC (Mali's own time)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
