"""The reviewers' reports: the queue, one report's page, its states, notes, assignee and
redaction. Logic and queries only; the HTTP is in ``api/reports.py``.

Scope: a report's place is its ``area`` column (the commune, else the cercle, from its coded
answers); every query goes through :func:`access.area_filter` and every single report
through :func:`access.check_area`, so a report of another region is a 404 exactly like a
missing one (and the attempt is audited by the API layer).

The typed text is opened only for one report's own view (:func:`open_report`), and each
opening is an audit entry (``report.text_view``). Only the redacted text a reviewer writes
ever leaves (referrals, exports); the original goes when the reporter is erased (SUPPRIMER)
or by retention, and the report then says ``text_erased``.

States: new -> reviewed -> referred -> closed, and reviewed -> closed (:data:`MOVES`);
any other move raises :class:`BadMove` (409) naming the moves allowed from where it is.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Table, and_, func, insert, select, update

from gateway.content.catalogs import Content
from gateway.content.flowdef import Action, InputStep, MenuStep
from gateway.dialogue import limits
from gateway.operators import audit
from gateway.operators.access import (
    Areas,
    NotFound,
    Principal,
    Role,
    area_filter,
    check_area,
    check_id,
    visible_areas,
)
from gateway.privacy.keys import KeyRing
from gateway.store import queries
from gateway.store.models import Account, Partner, Referral, ReportEvent

log = logging.getLogger("gateway.operators.reports")

reports: Table = queries.reports
events: Table = ReportEvent.__table__  # type: ignore[attr-defined]
accounts_table: Table = Account.__table__  # type: ignore[attr-defined]
referral: Table = Referral.__table__  # type: ignore[attr-defined]
partner: Table = Partner.__table__  # type: ignore[attr-defined]

STATES = ("new", "reviewed", "referred", "closed")
MOVES: dict[str, tuple[str, ...]] = {
    "new": ("reviewed",),
    "reviewed": ("referred", "closed"),
    "referred": ("closed",),
    "closed": (),
}
REVIEWERS = (Role.reviewer,)  # and admins (access.require lets them through)
OTHER = "other"  # the "other / don't know" item of a list menu (dialogue.engine.OTHER)
LABEL_LANGUAGE = "fr"
PAGE = 50
WEEK = timedelta(days=7)  # "this week" of a reporter's count: the seven days up to now
MAX_PAGE = 200
MAX_NOTE = 2000
MAX_REDACTED = 1000
# A phone number typed into free text: 8 digits or more, spaces, dots, dashes or slashes
# between them allowed (Mali's numbers have 8, +223 in front).
_PHONE_IN_TEXT = re.compile(r"\+?\d(?:[\s.\-/()]*\d){7,}")


class Invalid(ValueError):
    """A request the report rules refuse (422): a bad filter, an empty note, ..."""


class Conflict(Exception):
    """The report is not in a state where this can be done (409)."""


class BadMove(Conflict):
    """A state change the report's current state does not allow."""

    def __init__(self, current: str, wanted: str) -> None:
        self.current, self.wanted = current, wanted
        self.allowed = MOVES.get(current, ())
        allowed = ", ".join(self.allowed) if self.allowed else f"none ({current} is final)"
        super().__init__(f"a {current} report cannot move to {wanted}; allowed moves: "
                         f"{allowed}")


def phone_problem(text: str) -> str | None:
    """Why ``text`` may not be kept as a reviewer's words: it holds a phone number."""
    if _PHONE_IN_TEXT.search(text):
        return "it holds what looks like a phone number: remove it"
    return None


# -- what the coded answers mean --------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """What reports' coded answers mean, in French: for each flow that saves reports, its
    questions in order and each answer value's label; and the cercles and communes."""

    areas: Areas
    questions: Mapping[str, tuple[str, ...]]  # flow -> question names, in step order
    labels: Mapping[str, Mapping[str, Mapping[str, str]]]  # flow -> question -> value -> label
    place_names: Mapping[str, str] = field(default_factory=dict)  # cercle/commune id -> name

    @classmethod
    def of(cls, content: Content, language: str = LABEL_LANGUAGE) -> Vocabulary:
        catalog = content.catalogs.get(language) or next(iter(content.catalogs.values()))
        messages = catalog.messages
        other = messages.get("list-other", OTHER)
        names: dict[str, str] = {}
        communes: dict[str, str] = {}
        for cercle in content.communes.cercles:
            names[cercle.id] = cercle.name
            for commune in cercle.communes:
                names[commune.id] = communes[commune.id] = commune.name
        cercles = {c.id: c.name for c in content.communes.cercles}
        questions: dict[str, tuple[str, ...]] = {}
        labels: dict[str, dict[str, dict[str, str]]] = {}
        for name, flow in content.flows.items():
            if not any(getattr(step, "action", None) is Action.save_report
                       for step in flow.steps.values()):
                continue
            order: list[str] = []
            meaning: dict[str, dict[str, str]] = {}
            for step in flow.steps.values():
                if isinstance(step, MenuStep) and step.save_as:
                    if step.options_from == "cercles":
                        values = {**cercles, OTHER: other}
                    elif step.options_from == "communes":
                        values = {**communes, OTHER: other}
                    else:
                        values = {o.value: messages.get(o.label, o.value)
                                  for o in step.options if o.value is not None}
                    order.append(step.save_as)
                    meaning[step.save_as] = values
                elif isinstance(step, InputStep) and not step.sensitive:
                    order.append(step.save_as)
                    meaning[step.save_as] = {}
            questions[name], labels[name] = tuple(order), meaning
        return cls(Areas.of(content.communes), questions, labels, names)

    def answers(self, flow: str, coded: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
        """The coded answers, each with its label (None: a value no catalog names), in the
        flow's question order."""
        order = self.questions.get(flow, ())
        meaning = self.labels.get(flow, {})
        keys = [q for q in order if q in coded] + sorted(k for k in coded if k not in order)
        return {k: {"value": coded[k], "label": meaning.get(k, {}).get(coded[k])}
                for k in keys}

    def all_questions(self) -> tuple[str, ...]:
        """Every report flow's questions, in order, each once (the export's columns)."""
        seen: dict[str, None] = {}
        for order in self.questions.values():
            seen.update(dict.fromkeys(order))
        return tuple(seen)

    def place(self, area: str | None) -> tuple[str | None, str | None]:
        """(cercle id, commune id) of an area value."""
        if area is None:
            return None, None
        cercle = self.areas.cercle(area)
        return cercle, (area if area != cercle else None)


_last: tuple[Content, Vocabulary] | None = None


def vocabulary(content: Content) -> Vocabulary:
    """The :class:`Vocabulary` of ``content``, made again only when the content changes
    (one slot: the content the runtime runs now)."""
    global _last
    last = _last
    if last is not None and last[0] is content:
        return last[1]
    made = Vocabulary.of(content)
    _last = (content, made)
    return made


# -- filters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    cercle: str | None = None
    commune: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before

    def details(self) -> dict[str, str | None]:
        """The filters as audit details (ids and times)."""
        return {"status": self.status, "cercle": self.cercle, "commune": self.commune,
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None}


def _instant(name: str, value: str, *, end: bool) -> datetime:
    """An ISO 8601 time with an offset, or a date (the start of that day in UTC; for
    ``until``, the start of the next, so the day is included)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            at = datetime.combine(day, time(0), tzinfo=UTC)
            return at + timedelta(days=1) if end else at
        parsed = datetime.fromisoformat(value)
        if parsed.utcoffset() is None:
            raise Invalid(f"{name}: give the time with its offset (e.g. 2026-12-01T08:00:00Z)")
        return parsed.astimezone(UTC)
    except Invalid:
        raise
    except ValueError:
        raise Invalid(f"{name}: {value!r} is not an ISO 8601 date or time") from None
    except OverflowError:
        raise Invalid(f"{name}: {value!r} is out of range") from None


def filters(vocab: Vocabulary, *, status: str | None = None, cercle: str | None = None,
            commune: str | None = None, since: str | None = None,
            until: str | None = None) -> Filters:
    """Checked filters (raises :class:`Invalid` naming the bad one)."""
    if status is not None and status not in STATES:
        raise Invalid(f"status: {status!r} is not one of {', '.join(STATES)}")
    known = vocab.areas.communes_of
    if cercle is not None and cercle not in known:
        raise Invalid(f"cercle: {cercle!r} is not a cercle id of flows/lists/communes.yml")
    if commune is not None and (commune in known or vocab.areas.cercle(commune) is None):
        raise Invalid(f"commune: {commune!r} is not a commune id of flows/lists/communes.yml")
    return Filters(status, cercle, commune,
                   _instant("since", since, end=False) if since else None,
                   _instant("until", until, end=True) if until else None)


def where(who: Principal, vocab: Vocabulary, chosen: Filters) -> ColumnElement[bool]:
    """The WHERE clause of a list or an export: the caller's scope and the filters. A
    cercle or commune outside the scope simply finds nothing (nothing says whether
    another region has reports)."""
    clauses = [area_filter(who, vocab.areas, reports.c.area)]
    if chosen.status is not None:
        clauses.append(reports.c.status == chosen.status)
    if chosen.cercle is not None:
        clauses.append(reports.c.area.in_(sorted(vocab.areas.expand([chosen.cercle]))))
    if chosen.commune is not None:
        clauses.append(reports.c.area == chosen.commune)
    if chosen.since is not None:
        clauses.append(reports.c.created_at >= chosen.since)
    if chosen.until is not None:
        clauses.append(reports.c.created_at < chosen.until)
    return and_(*clauses)


# -- the queue -------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next: int | None  # pass as ``cursor`` for the next (older) page


def iso_time(at: datetime | None) -> str | None:
    """An aware or naive-UTC time (SQLite gives naive ones) as ISO 8601 in UTC."""
    if at is None:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


_LISTED = select(
    reports.c.id, reports.c.created_at, reports.c.channel, reports.c.flow, reports.c.answers,
    reports.c.status, reports.c.area, reports.c.text.is_not(None).label("has_text"),
    reports.c.had_text, (reports.c.redacted_text.is_not(None)).label("redacted"),
    accounts_table.c.name.label("assignee"),
    reports.c.pseudonym,  # to count the reporter's week; never itself in an answer
).select_from(reports.outerjoin(accounts_table, accounts_table.c.id == reports.c.assignee_id))


def _item(row: Row[Any], vocab: Vocabulary, week: Mapping[str, int]) -> dict[str, Any]:
    has_text = bool(row.has_text)
    return {
        "id": row.id, "created_at": iso_time(row.created_at), "channel": row.channel,
        "flow": row.flow, "answers": vocab.answers(row.flow, json.loads(row.answers)),
        "status": row.status, "assignee": row.assignee, "has_text": has_text,
        "text_erased": bool(row.had_text) and not has_text, "redacted": bool(row.redacted),
        "reporter_week_count": None if row.pseudonym is None else week.get(row.pseudonym, 0),
    }


def week_counts(conn: Connection, *, who: Principal, vocab: Vocabulary,
                pseudonyms: Iterable[str | None], now: datetime) -> dict[str, int]:
    """How many reports each of these reporters filed in the seven days up to ``now``,
    counting only the reports ``who`` may see (a reviewer cannot learn from a count that
    the same person reported in another region). Keyed by pseudonym for the caller to
    look up; never passed on: the queue shows the count, not who."""
    wanted = sorted({p for p in pseudonyms if p is not None})
    if not wanted:
        return {}
    rows = conn.execute(
        select(reports.c.pseudonym, func.count()).where(
            reports.c.pseudonym.in_(wanted), reports.c.created_at >= now - WEEK,
            area_filter(who, vocab.areas, reports.c.area))
        .group_by(reports.c.pseudonym)).all()
    return {str(p): int(n) for p, n in rows}


def queue(conn: Connection, *, who: Principal, vocab: Vocabulary, chosen: Filters,
          now: datetime, cursor: int | None = None, limit: int = PAGE) -> Page:
    """The reports ``who`` may review, newest first, ``limit`` at a time, each with its
    reporter's count of reports this week (:func:`week_counts`)."""
    query = _LISTED.where(where(who, vocab, chosen)).order_by(reports.c.id.desc()) \
        .limit(min(limit, MAX_PAGE) + 1)
    if cursor is not None:
        query = query.where(reports.c.id < cursor)
    rows = conn.execute(query).all()
    kept = rows[:limit]
    week = week_counts(conn, who=who, vocab=vocab, pseudonyms=[r.pseudonym for r in kept],
                       now=now)
    return Page([_item(r, vocab, week) for r in kept],
                kept[-1].id if len(rows) > limit else None)


def limited(conn: Connection) -> int:
    """Reports refused by the per-reporter limit since the gateway began (every cercle:
    a refused report is not kept, so its place is unknown)."""
    return queries.get_counter(conn, name=limits.COUNTERS[limits.REPORT]) or 0


# -- one report ------------------------------------------------------------------------


def _get(conn: Connection, *, who: Principal, areas: Areas, report_id: int,
         lock: bool = False) -> Row[Any]:
    """The report row, if ``who`` may see it: NotFound when missing, OutOfScope (the
    same 404, audited) when it is another region's."""
    check_id(report_id)
    query = select(reports).where(reports.c.id == report_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFound("not found")
    check_area(who, areas, row.area)
    return row


def _unseal(conn: Connection, keys: KeyRing, row: Row[Any]) -> str | None:
    """The typed text, opened with the reporter's data key; None when it cannot be (the
    reporter was erased, or the key is gone)."""
    if row.text is None or row.pseudonym is None:
        return None
    wrapped = queries.get_data_key(conn, pseudonym=row.pseudonym)
    if wrapped is None:
        return None
    try:
        typed = json.loads(keys.decrypt_for(wrapped, row.text, pseudonym=row.pseudonym,
                                            aad=row.source))
    except Exception as exc:  # a shredded or replaced key: the text is gone, not an error
        log.warning("report %d: its text cannot be opened (%s)", row.id,
                    exc.__class__.__name__)
        return None
    if isinstance(typed, dict):
        values = [str(v) for v in typed.values()]
        return values[0] if len(values) == 1 else "\n".join(
            f"{k}: {v}" for k, v in typed.items())
    return str(typed)


def _events(conn: Connection, report_id: int) -> Sequence[Row[Any]]:
    return conn.execute(select(events).where(events.c.report_id == report_id)
                        .order_by(events.c.id)).all()


def _referrals(conn: Connection, report_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(referral, partner.c.name.label("partner"))
        .join(partner, partner.c.id == referral.c.partner_id)
        .where(referral.c.report_id == report_id).order_by(referral.c.id)).all()
    return [{"id": r.id, "report": r.report_id, "partner": r.partner, "status": r.status,
             "attempts": r.attempts,
             "created_at": iso_time(r.created_at), "created_by": r.created_by,
             "delivered_at": iso_time(r.delivered_at), "last_error": r.last_error} for r in rows]


def open_report(conn: Connection, *, who: Principal, vocab: Vocabulary, keys: KeyRing,
                report_id: int, now: datetime, with_text: bool = True) -> dict[str, Any]:
    """One report for its own page: the queue's fields, the typed text opened for this
    view (audited as ``report.text_view``; ``report.view`` when there is none to open, or
    ``with_text`` is False: a page that does not show it), the redacted text, notes,
    history and referrals."""
    row = _get(conn, who=who, areas=vocab.areas, report_id=report_id)
    listed = conn.execute(_LISTED.where(reports.c.id == report_id)).one()
    text = _unseal(conn, keys, row) if with_text else None
    opened = text is not None
    audit.record(conn, actor=who.name, action="report.text_view" if opened else "report.view",
                 object_type="report", object_id=report_id, now=now)
    week = week_counts(conn, who=who, vocab=vocab, pseudonyms=[row.pseudonym], now=now)
    out = _item(listed, vocab, week)
    history = _events(conn, report_id)
    cercle, commune = vocab.place(row.area)
    out.update({
        "text": text,
        "has_text": opened if with_text else bool(listed.has_text),
        "text_erased": bool(row.had_text) and not (opened if with_text
                                                   else listed.has_text),
        "redacted_text": row.redacted_text,
        "cercle": cercle, "commune": commune,
        "moves": list(MOVES.get(row.status, ())),
        "notes": [{"id": e.id, "at": iso_time(e.at), "author": e.actor, "text": e.note}
                  for e in history if e.action == "note"],
        "history": [{"at": iso_time(e.at), "actor": e.actor, "action": e.action,
                     "from": e.from_status, "to": e.to_status, "ref": e.ref, "note": e.note}
                    for e in history],
        "referrals": _referrals(conn, report_id),
    })
    return out


def _event(conn: Connection, *, report_id: int, actor: str, action: str, now: datetime,
           from_status: str | None = None, to_status: str | None = None,
           ref: str | None = None, note: str | None = None) -> int:
    return int(conn.execute(insert(events).values(
        report_id=report_id, at=now, actor=actor, action=action, from_status=from_status,
        to_status=to_status, ref=ref, note=note).returning(events.c.id)).scalar_one())


def _words(name: str, text: str | None, limit: int) -> str | None:
    """A reviewer's note, checked: not blank, not too long, no phone number."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if len(text) > limit:
        raise Invalid(f"{name}: {len(text)} characters; at most {limit}")
    problem = phone_problem(text)
    if problem:
        raise Invalid(f"{name}: {problem}")
    return text


def set_status(conn: Connection, *, who: Principal, row: Row[Any], to: str, now: datetime,
               note: str | None = None) -> None:
    """Move a report (already read and locked, in scope) to ``to``; raises BadMove."""
    if to not in MOVES.get(row.status, ()):
        raise BadMove(row.status, to)
    changed = conn.execute(update(reports).where(reports.c.id == row.id,
                                                 reports.c.status == row.status)
                           .values(status=to, updated_at=now)).rowcount
    if not changed:  # moved meanwhile (SQLite's write lock makes this PostgreSQL only)
        current = conn.execute(select(reports.c.status).where(reports.c.id == row.id)
                               ).scalar_one()
        raise BadMove(current, to)
    _event(conn, report_id=row.id, actor=who.name, action="transition",
           from_status=row.status, to_status=to, note=note, now=now)
    audit.record(conn, actor=who.name, action="report.transition", object_type="report",
                 object_id=row.id, details={"from": row.status, "to": to}, now=now)


def move(conn: Connection, *, who: Principal, areas: Areas, report_id: int, to: str,
         note: str | None, now: datetime) -> str:
    """Change a report's state (with an optional note); the state it is in now."""
    if to not in STATES:
        raise Invalid(f"to: {to!r} is not one of {', '.join(STATES)}")
    checked = _words("note", note, MAX_NOTE)
    row = _get(conn, who=who, areas=areas, report_id=report_id, lock=True)
    set_status(conn, who=who, row=row, to=to, note=checked, now=now)
    return to


def add_note(conn: Connection, *, who: Principal, areas: Areas, report_id: int, text: str,
             now: datetime) -> dict[str, Any]:
    """A reviewer's note on the report (the audit entry names the note, not its words)."""
    checked = _words("text", text, MAX_NOTE)
    if checked is None:
        raise Invalid("text: a note needs some words")
    _get(conn, who=who, areas=areas, report_id=report_id)
    note_id = _event(conn, report_id=report_id, actor=who.name, action="note", note=checked,
                     now=now)
    audit.record(conn, actor=who.name, action="report.note", object_type="report",
                 object_id=report_id, details={"note": note_id}, now=now)
    return {"id": note_id, "at": iso_time(now), "author": who.name, "text": checked}


def redact(conn: Connection, *, who: Principal, areas: Areas, report_id: int, text: str,
           now: datetime) -> str:
    """Set the redacted text: what referrals and exports carry instead of the original.
    An empty text is kept as such (nothing of the text leaves)."""
    text = text.strip()
    if len(text) > MAX_REDACTED:
        raise Invalid(f"text: {len(text)} characters; at most {MAX_REDACTED}")
    problem = phone_problem(text)
    if problem:
        raise Invalid(f"text: {problem}")
    _get(conn, who=who, areas=areas, report_id=report_id, lock=True)
    conn.execute(update(reports).where(reports.c.id == report_id)
                 .values(redacted_text=text, updated_at=now))
    _event(conn, report_id=report_id, actor=who.name, action="redact", now=now)
    audit.record(conn, actor=who.name, action="report.redact", object_type="report",
                 object_id=report_id, details={"chars": len(text)}, now=now)
    return text


def assign(conn: Connection, *, who: Principal, areas: Areas, report_id: int,
           assignee: str | None, now: datetime) -> str | None:
    """Give the report to a reviewer (or an admin) who may see it; None takes it back."""
    row = _get(conn, who=who, areas=areas, report_id=report_id, lock=True)
    account_id = None
    if assignee is not None:
        found = conn.execute(select(accounts_table).where(accounts_table.c.name == assignee)
                             ).one_or_none()
        if found is None or found.disabled:
            raise Invalid(f"assignee: no active account named {assignee!r}")
        them = Principal(found.id, found.name, Role(found.role),
                         frozenset(c for c in found.cercles.split(",") if c))
        if them.role not in (Role.reviewer, Role.admin):
            raise Invalid(f"assignee: {assignee} is not a reviewer")
        seen = visible_areas(them, areas)
        if seen is not None and row.area not in seen:
            raise Invalid(f"assignee: {assignee} does not review this report's cercle")
        account_id = found.id
    conn.execute(update(reports).where(reports.c.id == report_id)
                 .values(assignee_id=account_id, updated_at=now))
    _event(conn, report_id=report_id, actor=who.name, action="assign", ref=assignee, now=now)
    audit.record(conn, actor=who.name, action="report.assign", object_type="report",
                 object_id=report_id, details={"assignee": assignee}, now=now)
    return assignee


def get_for_update(conn: Connection, *, who: Principal, areas: Areas,
                   report_id: int) -> Row[Any]:
    """The report row, locked, if ``who`` may see it (for referrals)."""
    return _get(conn, who=who, areas=areas, report_id=report_id, lock=True)


def event(conn: Connection, *, report_id: int, actor: str, action: str, now: datetime,
          ref: str | None = None) -> int:
    """Add to a report's history (referrals record theirs here)."""
    return _event(conn, report_id=report_id, actor=actor, action=action, ref=ref, now=now)


def rows_for_export(conn: Connection, *, who: Principal, vocab: Vocabulary, chosen: Filters,
                    after: int | None, limit: int) -> Sequence[Row[Any]]:
    """A batch of the reports an export holds, oldest first, from id ``after``: coded
    answers and redacted text, never the original."""
    columns = [reports.c[name] for name in ("id", "created_at", "channel", "flow", "status",
                                            "area", "answers", "redacted_text")]
    query = select(*columns).where(where(who, vocab, chosen)).order_by(reports.c.id) \
        .limit(limit)
    if after is not None:
        query = query.where(reports.c.id > after)
    return conn.execute(query).all()


def day_of(at: datetime) -> str:
    """The UTC day of a time: what leaves the gateway of a report's time (a referral, an
    export). The exact time could be matched against an operator's call records."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).date().isoformat()
