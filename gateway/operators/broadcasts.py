"""Awareness broadcasts: preview, create, the background expansion into outbox messages,
cancel, counts, and reading them within the caller's scope. Logic and queries, no HTTP.

An operator writes a message per language and picks an audience (cercles, communes,
languages); the recipients are the contacts subscribed, not stopped, not erased (erased
contacts are deleted, so that one holds by itself) and holding a number in the vault, whose
area is one of the communes, or one of the cercles or a commune in it (no area given: the
caller's whole scope), in the listed languages (none listed: all). Each recipient gets the
text in its language; a contact with no language (or one no catalog has) counts as the
default language. A language with recipients and no text is refused.

    plan = preview(conn, who=who, rules=rules, request=request, now=now)   # counts, cost
    broadcast, created = create(conn, who=who, rules=rules, request=request,
                                idempotency_key=key, now=now)

Creating queues nothing. The worker's background job (``run_due``, wired by
``gateway.runtime.make_worker``) starts a broadcast at its ``send_at`` (scheduled →
sending) and turns it into outbox rows in chunks of ``Rules.chunk`` contacts, each chunk in
keyset order of contact id, in one short transaction: one INSERT ... SELECT queues their
messages (dedupe key ``broadcast:<id>:<contact id>``: a repeated chunk queues nothing twice)
with each number copied from the vault still sealed under the contact's own data key (the
worker opens it when it sends; nothing is opened or sealed while queueing), and the
broadcast's cursor moves on. A crash between chunks resumes at the cursor. Messages go at the
outbox's broadcast priority, after every reply, and wait out quiet hours in the queue. Once
every recipient is queued and none of its messages is waiting, it is done.

A contact who stops after being queued receives nothing: STOP cancels their queued
messages, and the outbox never hands one for a stopped contact to the provider (claim and
housekeeping). Erasing deletes their queued messages; unsubscribing cancels their queued
broadcasts.

Audit: this module does not write the audit log. The API and the dashboard record, in the
same transaction as the call (the ``conn`` they pass), ``create`` when it returns
``created=True`` and every ``cancel``, with :meth:`Broadcast.audit_details`; and an
:class:`AudienceOutOfScope` or an ``OutOfScope`` as an out-of-scope attempt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    bindparam,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    update,
)

from gateway.content.catalogs import Content
from gateway.operators.access import (
    Areas,
    Forbidden,
    NotFound,
    OutOfScope,
    Principal,
    Role,
    check_cercles,
    check_id,
    require,
    visible_areas,
)
from gateway.outbox import outbox
from gateway.outbox.outbox import OutboxPolicy
from gateway.outbox.quiet import QuietHours
from gateway.outbox.worker import Progress
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.db import Database, is_sqlite
from gateway.store.models import Broadcast as BroadcastRow
from gateway.text.encoding import outbound, sms_cost

log = logging.getLogger("gateway.operators.broadcasts")

broadcasts = queries._t(BroadcastRow)
contacts = queries.contacts
vault = queries.vault
messages_out = outbox.outbox

MAX_SEGMENTS = 6
MAX_CHARACTERS = 2_000  # far beyond 6 segments: refused before it is measured
DEFAULT_VALID_FOR = timedelta(hours=24)
CLOCK_SKEW = timedelta(minutes=1)  # a send_at this little in the past means "now"
# Contacts queued per transaction (PostgreSQL): about 12 ms at 100,000 contacts, half a
# megabyte of WAL that a USSD hop committing meanwhile waits to flush with its own. With
# 1,000 the hops' p99 while queueing was about a third higher (16-22 ms against 12-18 ms)
# and everyone was queued no sooner; with 250 it was no lower and the queueing took a
# third longer (bench/broadcast.py).
CHUNK = 500
# SQLite has one writer at a time, and a chunk runs on the event loop (see
# runtime.make_worker): a USSD hop that arrives meanwhile waits for the whole chunk, so
# chunks are small there (50: about 2.5 ms on the benchmark's two cores, 100: 4 ms).
CHUNK_SQLITE = 50
STATUSES = ("scheduled", "sending", "done", "cancelled")
LIVE = ("scheduled", "sending")
# Outbox statuses as a broadcast's counts show them: a message being handed over is
# still queued; an ambiguous one ("unknown": may have left) counts as sent.
_COUNTED_AS = {
    "queued": "queued", "sending": "queued", "sent": "sent", "unknown": "sent",
    "delivered": "delivered", "failed": "failed", "expired": "expired",
    "cancelled": "cancelled",
}
COUNTS = ("recipients", "queued", "sent", "delivered", "failed", "expired", "cancelled")


# --- errors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One field that does not validate: where (``("messages", "bm")``) and what."""

    loc: tuple[str | int, ...]
    msg: str


class Invalid(ValueError):
    """The request does not validate (422); ``problems`` name each field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))

    def detail(self, where: str = "body") -> list[dict[str, Any]]:
        """FastAPI's shape of a 422's ``detail``: ``[{"loc", "msg", "type"}]``."""
        return [{"loc": [where, *p.loc], "msg": p.msg, "type": "value_error"}
                for p in self.problems]


class AudienceOutOfScope(Forbidden):
    """The audience names a cercle or commune outside the caller's scope (403, audited)."""


class Conflict(Exception):
    """The request contradicts the broadcast's state (409): an Idempotency-Key already used
    with another body, or a cancel of a broadcast already done."""


# --- rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """What broadcasts depend on, from the settings and the content."""

    areas: Areas
    languages: tuple[str, ...]  # the catalogs' languages, French first
    default_language: str
    transliterate: bool = True
    price: Decimal = Decimal(0)  # per segment; 0: unknown
    currency: str = "XOF"
    quiet: QuietHours | None = None
    chunk: int = CHUNK

    @classmethod
    def of(cls, settings: Settings, content: Content) -> Rules:
        languages = content.languages
        default = "fr" if "fr" in languages else languages[0]
        sqlite = is_sqlite(settings.database_url)
        return cls(areas=Areas.of(content.communes), languages=languages,
                   default_language=default, transliterate=settings.transliterate,
                   price=settings.sms_price, currency=settings.currency,
                   quiet=settings.quiet, chunk=CHUNK_SQLITE if sqlite else CHUNK)

    def language_of(self, language: str | None) -> str:
        """The language a contact is written to in: its own, else the default."""
        return language if language in self.languages else self.default_language

    def over_the_air(self, text: str, language: str) -> str:
        return outbound(text, language, transliterate_text=self.transliterate)


# --- requests --------------------------------------------------------------------------


class Audience(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cercles: list[str] = Field(default_factory=list)
    communes: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)


class BroadcastRequest(BaseModel):
    """The body of a preview or a new broadcast (the operator contract's names)."""

    model_config = ConfigDict(extra="forbid")

    messages: dict[str, str]
    audience: Audience = Field(default_factory=Audience)
    title: str | None = Field(None, max_length=200)
    send_at: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None

    def digest(self) -> str:
        """SHA-256 of the request's canonical JSON: the same body, the same digest."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True,
                               separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Target:
    """An audience resolved against the caller's scope, as stored with the broadcast."""

    areas: tuple[str, ...] | None  # contact.area values; None: every contact
    cercles: tuple[str, ...]  # the cercles it reaches, for scoping
    languages: tuple[str, ...] | None  # None: every language

    def dumps(self) -> str:
        return json.dumps({"areas": self.areas, "cercles": self.cercles,
                           "languages": self.languages})

    @classmethod
    def loads(cls, text: str) -> Target:
        raw = json.loads(text)
        areas, languages = raw["areas"], raw["languages"]
        return cls(None if areas is None else tuple(areas), tuple(raw["cercles"]),
                   None if languages is None else tuple(languages))


# --- preview ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguagePreview:
    recipients: int
    written: str  # as the operator wrote it
    text: str  # as it goes over the air
    encoding: str
    segments: int
    length: int  # septets (GSM-7) or UTF-16 units (UCS-2)
    written_encoding: str  # the text as written, without transliteration
    written_segments: int

    def as_json(self) -> dict[str, Any]:
        return {"recipients": self.recipients, "text": self.text, "encoding": self.encoding,
                "segments": self.segments, "length": self.length,
                "as_written": {"encoding": self.written_encoding,
                               "segments": self.written_segments}}


@dataclass(frozen=True)
class Preview:
    recipients: int
    languages: dict[str, LanguagePreview]
    price: Decimal
    currency: str
    sends_from: datetime  # send_at, or the end of the quiet hours it falls in

    @property
    def segments(self) -> int:
        """Segments to send, all recipients together."""
        return sum(p.recipients * p.segments for p in self.languages.values())

    @property
    def written_segments(self) -> int:
        """The same without transliteration."""
        return sum(p.recipients * p.written_segments for p in self.languages.values())

    def cost(self) -> dict[str, Any] | None:
        """The estimated cost, and the same text's without transliteration (None while
        the price per segment is unknown)."""
        if not self.price:
            return None
        estimated = self.price * self.segments
        as_written = self.price * self.written_segments
        return {"currency": self.currency, "per_segment": float(self.price),
                "estimated": _money(estimated), "as_written": _money(as_written),
                "saving": _money(as_written - estimated)}

    def as_json(self) -> dict[str, Any]:
        return {"recipients": self.recipients, "segments": self.segments,
                "languages": {k: v.as_json() for k, v in self.languages.items()},
                "segments_as_written": self.written_segments, "cost": self.cost(),
                "sends_from": self.sends_from.isoformat()}


def _money(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01")))


@dataclass(frozen=True)
class _Plan:
    """A validated request: what a broadcast of it would be."""

    target: Target
    texts: dict[str, str]  # over the air
    preview: Preview
    send_at: datetime
    valid_until: datetime


def preview(conn: Connection, *, who: Principal, rules: Rules, request: BroadcastRequest,
            now: datetime) -> Preview:
    """Who would receive ``request`` and what, per language: recipients, the text as it
    goes over the air, its encoding and segments, and the cost. Raises :class:`Invalid`
    (422), :class:`AudienceOutOfScope` (403), ``Forbidden`` (403: the role)."""
    return _plan(conn, who=who, rules=rules, request=request, now=now).preview


def _plan(conn: Connection, *, who: Principal, rules: Rules, request: BroadcastRequest,
          now: datetime) -> _Plan:
    require(who, Role.operator)
    problems: list[Problem] = []
    texts = _texts(request, rules, problems)
    _check_audience(request.audience, rules, problems)
    send_at, valid_until = _times(request, now, problems)
    if problems:
        raise Invalid(problems)
    target = resolve(who, rules, request.audience)
    by_language = recipients_by_language(conn, rules=rules, target=target)
    for language, count in by_language.items():
        if count and language not in texts:
            problems.append(Problem(("messages", language), f"{count} recipient(s) read "
                                    f"'{language}' and there is no text in it"))
    if problems:
        raise Invalid(problems)
    languages = {}
    for language in sorted(texts, key=rules.languages.index):
        air, written = texts[language], unicodedata.normalize(
            "NFC", request.messages[language])
        cost, as_written = sms_cost(air), sms_cost(written)
        languages[language] = LanguagePreview(
            recipients=by_language.get(language, 0), written=written, text=air,
            encoding=cost.encoding, segments=cost.segments, length=cost.length,
            written_encoding=as_written.encoding, written_segments=as_written.segments)
    sends_from = rules.quiet.ends_after(send_at) if rules.quiet else send_at
    result = Preview(recipients=sum(p.recipients for p in languages.values()),
                     languages=languages, price=rules.price, currency=rules.currency,
                     sends_from=sends_from)
    return _Plan(target, texts, result, send_at, valid_until)


def _texts(request: BroadcastRequest, rules: Rules, problems: list[Problem]) -> dict[str, str]:
    """The texts over the air, by language; a problem for each that does not do."""
    if not request.messages:
        problems.append(Problem(("messages",), "a text in at least one language"))
    texts = {}
    for language, written in request.messages.items():
        where = ("messages", language)
        if language not in rules.languages:
            problems.append(Problem(where, f"unknown language '{language}' (known: "
                                    f"{', '.join(rules.languages)})"))
            continue
        if not written.strip():
            problems.append(Problem(where, "empty text"))
            continue
        if len(written) > MAX_CHARACTERS:
            problems.append(Problem(where, f"{len(written)} characters: at most "
                                    f"{MAX_SEGMENTS} segments"))
            continue
        air = rules.over_the_air(written.strip(), language)
        segments = sms_cost(air).segments
        if segments > MAX_SEGMENTS:
            problems.append(Problem(where, f"{segments} segments over the air "
                                    f"({sms_cost(air).encoding}): at most {MAX_SEGMENTS}"))
            continue
        texts[language] = air
    return texts


def _check_audience(audience: Audience, rules: Rules, problems: list[Problem]) -> None:
    known = rules.areas
    for i, cercle in enumerate(audience.cercles):
        if cercle not in known.communes_of:
            problems.append(Problem(("audience", "cercles", i), f"unknown cercle '{cercle}'"))
    for i, commune in enumerate(audience.communes):
        if commune not in known.cercle_of or commune in known.communes_of:
            problems.append(Problem(("audience", "communes", i),
                                    f"unknown commune '{commune}'"))
    for i, language in enumerate(audience.languages):
        if language not in rules.languages:
            problems.append(Problem(("audience", "languages", i),
                                    f"unknown language '{language}' (known: "
                                    f"{', '.join(rules.languages)})"))


def check_audience(audience: Audience, rules: Rules) -> None:
    """Raise ``Invalid`` naming each unknown cercle, commune or language of ``audience``."""
    problems: list[Problem] = []
    _check_audience(audience, rules, problems)
    if problems:
        raise Invalid(problems)


def _times(request: BroadcastRequest, now: datetime,
           problems: list[Problem]) -> tuple[datetime, datetime]:
    send_at = request.send_at.astimezone(UTC) if request.send_at else now
    if send_at < now - CLOCK_SKEW:
        problems.append(Problem(("send_at",), "in the past"))
    send_at = max(send_at, now)
    if request.valid_until is None:
        return send_at, send_at + DEFAULT_VALID_FOR
    valid_until = request.valid_until.astimezone(UTC)
    if valid_until <= send_at:
        problems.append(Problem(("valid_until",), "not after send_at"))
    return send_at, valid_until


def resolve(who: Principal, rules: Rules, audience: Audience) -> Target:
    """The contacts' areas an audience reaches, within ``who``'s scope; raises
    :class:`AudienceOutOfScope` for a cercle or commune outside it. Assumes the cercles and
    communes are known (``_check_audience``)."""
    areas = rules.areas
    languages = tuple(dict.fromkeys(audience.languages)) or None
    if audience.cercles or audience.communes:
        cercles = set(audience.cercles) | {areas.cercle_of[c] for c in audience.communes}
        try:
            check_cercles(who, cercles)
        except OutOfScope:
            raise AudienceOutOfScope("the audience reaches a cercle outside your scope") \
                from None
        reached = areas.expand(audience.cercles) | set(audience.communes)
        return Target(tuple(sorted(reached)), tuple(sorted(cercles)), languages)
    visible = visible_areas(who, areas)
    if visible is None:  # an admin's whole scope: every contact, with an area or not
        return Target(None, tuple(sorted(areas.communes_of)), languages)
    return Target(tuple(sorted(visible)), tuple(sorted(who.cercles)), languages)


def _audience(target: Target, rules: Rules) -> list[ColumnElement[bool]]:
    """WHERE clauses on ``contact`` for a target's recipients (the vault join aside)."""
    c = contacts.c
    where: list[ColumnElement[bool]] = [c.subscribed.is_(True), c.stopped.is_(False)]
    if target.areas is not None:
        where.append(c.area.in_(_listed(target.areas)) if target.areas else false())
    if target.languages is not None:
        known = [lang for lang in target.languages if lang in rules.languages]
        speaks: list[ColumnElement[bool]] = [c.language.in_(_listed(known))]
        if rules.default_language in target.languages:
            speaks.append(or_(c.language.is_(None),
                              c.language.not_in(_listed(rules.languages))))
        where.append(or_(*speaks))
    return where


def _listed(values: Sequence[str]) -> list[ColumnElement[str]]:
    """Values for an IN list, written into the statement as quoted SQL literals. Bound,
    they are an "expanding" parameter that SQLAlchemy renders into the SQL again at every
    execution (fifty communes: a third of a millisecond of each chunk's time, on the event
    loop). They are the target's commune, cercle and language ids, checked against the
    catalog; quoted all the same."""
    return [literal_column("'" + value.replace("'", "''") + "'") for value in values]


_WITH_NUMBER = contacts.join(vault, vault.c.pseudonym == contacts.c.pseudonym)


def recipients_by_language(conn: Connection, *, rules: Rules,
                           target: Target) -> dict[str, int]:
    """How many contacts a target reaches, by the language they are written to in: one
    grouped count, no rows loaded."""
    # Subscribed contacts hold a number in the vault (subscribing stores it; unsubscribing
    # and the retention job clear both), so the count needs no join to it.
    stmt = (select(contacts.c.language, func.count()).where(*_audience(target, rules))
            .group_by(contacts.c.language))
    out: dict[str, int] = {}
    for language, count in conn.execute(stmt):
        effective = rules.language_of(language)
        out[effective] = out.get(effective, 0) + int(count)
    return out


# --- broadcasts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """A broadcast's messages by where they are (each counted once: they add up to
    ``recipients``)."""

    recipients: int = 0
    queued: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0

    def as_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}


@dataclass(frozen=True)
class Broadcast:
    id: int
    title: str
    status: str
    messages: dict[str, str]  # as written
    texts: dict[str, str]  # over the air
    audience: dict[str, list[str]]  # as requested
    target: Target
    created_by: str
    send_at: datetime
    valid_until: datetime
    created_at: datetime
    updated_at: datetime
    expected: int  # recipients when it was made
    expanded: int  # messages queued so far
    expanded_at: datetime | None  # when every recipient was queued
    counts: Counts = field(default_factory=Counts)

    @property
    def cercles(self) -> tuple[str, ...]:
        return self.target.cercles

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "status": self.status,
            "messages": self.messages, "texts": self.texts, "audience": self.audience,
            "cercles": list(self.cercles), "created_by": self.created_by,
            "send_at": self.send_at.isoformat(), "valid_until": self.valid_until.isoformat(),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "expected": self.expected,
            "queueing": {"queued": self.expanded, "complete": self.expanded_at is not None},
            "counts": self.counts.as_json(),
        }

    def audit_details(self) -> dict[str, Any]:
        """What the audit log keeps of it: ids, codes and figures (no text: the title and
        the messages are the operator's prose)."""
        return {"cercles": list(self.cercles), "communes": self.audience.get("communes", []),
                "languages": sorted(self.texts), "send_at": self.send_at.isoformat(),
                "valid_until": self.valid_until.isoformat(), "expected": self.expected,
                "status": self.status}


def _from_row(row: Row[Any], counts: Counts | None = None) -> Broadcast:
    return Broadcast(
        id=int(row.id), title=row.title, status=row.status,
        messages=json.loads(row.messages), texts=json.loads(row.texts),
        audience=json.loads(row.audience), target=Target.loads(row.target),
        created_by=row.created_by, send_at=row.send_at, valid_until=row.valid_until,
        created_at=row.created_at, updated_at=row.updated_at, expected=int(row.expected),
        expanded=int(row.expanded), expanded_at=row.expanded_at, counts=counts or Counts(),
    )


def create(conn: Connection, *, who: Principal, rules: Rules, request: BroadcastRequest,
           idempotency_key: str, now: datetime) -> tuple[Broadcast, bool]:
    """Make a broadcast (status ``scheduled``; the background job sends it from
    ``send_at``). The same ``idempotency_key`` again from the same account: the same
    broadcast and False, nothing queued twice; with another body: :class:`Conflict`.
    Otherwise raises as :func:`preview` does."""
    require(who, Role.operator)
    key = idempotency_key.strip()
    if not 1 <= len(key) <= 200:
        raise Invalid([Problem(("idempotency-key",), "1 to 200 characters")])
    digest = request.digest()
    found = _by_key(conn, created_by=who.name, key=key)
    if found is not None:
        return _replayed(conn, found, digest), False
    plan = _plan(conn, who=who, rules=rules, request=request, now=now)
    audience = request.audience.model_dump()
    stmt = queries._insert(conn, broadcasts).values(
        title=request.title or "",
        messages=json.dumps({k: plan.preview.languages[k].written for k in plan.texts},
                            ensure_ascii=False),
        texts=json.dumps(plan.texts, ensure_ascii=False),
        audience=json.dumps(audience, ensure_ascii=False), target=plan.target.dumps(),
        created_by=who.name, idempotency_key=key, request_hash=digest, status="scheduled",
        send_at=plan.send_at, valid_until=plan.valid_until,
        expected=plan.preview.recipients, cursor=0, expanded=0, expanded_at=None,
        created_at=now, updated_at=now,
    ).on_conflict_do_nothing(index_elements=[broadcasts.c.created_by,
                                             broadcasts.c.idempotency_key])
    new_id = conn.execute(stmt.returning(broadcasts.c.id)).scalar()
    if new_id is None:  # the same key, committed meanwhile by a concurrent request
        found = _by_key(conn, created_by=who.name, key=key)
        assert found is not None
        return _replayed(conn, found, digest), False
    row = conn.execute(select(broadcasts).where(broadcasts.c.id == new_id)).one()
    return _from_row(row), True


def _by_key(conn: Connection, *, created_by: str, key: str) -> Row[Any] | None:
    return conn.execute(select(broadcasts).where(
        broadcasts.c.created_by == created_by, broadcasts.c.idempotency_key == key)).first()


def _replayed(conn: Connection, row: Row[Any], digest: str) -> Broadcast:
    if row.request_hash != digest:
        raise Conflict("this Idempotency-Key was used with another request")
    return _from_row(row, counts(conn, broadcast_id=int(row.id)))


def _visible(who: Principal, broadcast: Broadcast) -> bool:
    try:
        check_cercles(who, broadcast.cercles)
    except OutOfScope:
        return False
    return True


def get(conn: Connection, *, who: Principal, broadcast_id: int) -> Broadcast:
    """One broadcast with its counts. ``NotFound`` when there is none, ``OutOfScope``
    (answered the same, and audited) when it reaches a cercle outside ``who``'s scope."""
    require(who, Role.operator)
    check_id(broadcast_id)
    row = conn.execute(select(broadcasts).where(broadcasts.c.id == broadcast_id)).first()
    if row is None:
        raise NotFound("not found")
    found = _from_row(row)
    check_cercles(who, found.cercles)
    return replace(found, counts=counts(conn, broadcast_id=found.id))


def list_page(conn: Connection, *, who: Principal, before: int | None = None, limit: int = 50,
              statuses: Iterable[str] | None = None) -> tuple[list[Broadcast], int | None]:
    """The newest broadcasts ``who`` may see (ids below ``before``), with their counts,
    and the cursor of the next page (None: no more). ``statuses`` keeps only those."""
    require(who, Role.operator)
    limit = max(1, min(limit, 200))
    wanted = tuple(statuses) if statuses is not None else None
    items: list[Broadcast] = []
    cursor = before
    while len(items) < limit:
        stmt = select(broadcasts).order_by(broadcasts.c.id.desc()).limit(limit * 2)
        if cursor is not None:
            stmt = stmt.where(broadcasts.c.id < cursor)
        if wanted is not None:
            stmt = stmt.where(broadcasts.c.status.in_(wanted))
        rows = conn.execute(stmt).all()
        for row in rows:
            found = _from_row(row)
            if _visible(who, found):
                items.append(found)
                if len(items) == limit:
                    break
        if len(rows) < limit * 2 or len(items) == limit:
            break
        cursor = int(rows[-1].id)
    found_counts = counts_of(conn, broadcast_ids=[b.id for b in items])
    items = [replace(b, counts=found_counts.get(b.id, Counts())) for b in items]
    more = len(items) == limit and conn.execute(
        select(broadcasts.c.id).where(broadcasts.c.id < items[-1].id).limit(1)).first()
    return items, items[-1].id if more else None


def counts(conn: Connection, *, broadcast_id: int) -> Counts:
    """A broadcast's messages by status: one grouped count over its outbox rows (delivery
    reports move them on, so these follow)."""
    return counts_of(conn, broadcast_ids=[broadcast_id]).get(broadcast_id, Counts())


def counts_of(conn: Connection, *, broadcast_ids: Sequence[int]) -> dict[int, Counts]:
    if not broadcast_ids:
        return {}
    m = messages_out.c
    stmt = (select(m.broadcast_id, m.status, func.count())
            .where(m.broadcast_id.in_(list(broadcast_ids)))
            .group_by(m.broadcast_id, m.status))
    tallies: dict[int, dict[str, int]] = {}
    for broadcast_id, status, count in conn.execute(stmt):
        tally = tallies.setdefault(int(broadcast_id), dict.fromkeys(COUNTS, 0))
        tally["recipients"] += int(count)
        name = _COUNTED_AS.get(status)
        if name is not None:
            tally[name] += int(count)
    return {k: Counts(**v) for k, v in tallies.items()}


def cancel(conn: Connection, *, who: Principal, broadcast_id: int, now: datetime) -> Broadcast:
    """Stop a broadcast: nothing of it not yet handed to the provider goes out. Its queued
    messages are cancelled; one being handed over right now goes, and if the provider
    asks for it again later it has expired. Cancelling again changes nothing; a broadcast
    already done is a :class:`Conflict`."""
    found = get(conn, who=who, broadcast_id=broadcast_id)
    # Lock the row (PostgreSQL): a chunk being queued finishes first, or sees the cancel.
    status = conn.execute(select(broadcasts.c.status).where(broadcasts.c.id == found.id)
                          .with_for_update()).scalar_one()
    if status == "cancelled":
        return found
    if status == "done":
        raise Conflict("this broadcast is done: every message was handed over")
    conn.execute(update(broadcasts).where(broadcasts.c.id == found.id)
                 .values(status="cancelled", updated_at=now))
    m = messages_out.c
    conn.execute(update(messages_out).where(m.broadcast_id == found.id, m.status == "queued")
                 .values(status="cancelled", updated_at=now))
    conn.execute(update(messages_out).where(m.broadcast_id == found.id, m.status == "sending")
                 .values(valid_until=now, updated_at=now))
    return get(conn, who=who, broadcast_id=found.id)


# --- the background job ----------------------------------------------------------------


_WAITING = exists().where(messages_out.c.broadcast_id == broadcasts.c.id,
                          messages_out.c.status.in_(("queued", "sending")))


def run_due(db: Database, *, policy: OutboxPolicy, rules: Rules, now: datetime) -> Progress:
    """One step of the broadcasts' background work, in one short transaction: queue the
    next chunk of the oldest broadcast sending; when none is left to queue, start those
    due and mark done those whose messages have all been handed over."""
    b = broadcasts.c
    with db.transaction() as conn:
        # The oldest one sending; PostgreSQL: locked until this commits, so a cancel
        # waits for this chunk, and another worker takes the next broadcast, if any.
        row = conn.execute(_NEXT(conn)).first()
        if row is None:
            conn.execute(_FINISH, {"now_": now})
            if not conn.execute(_START, {"now_": now}).rowcount:
                return Progress()
            row = conn.execute(_NEXT(conn)).first()
            if row is None:
                return Progress(more=True)
        if now >= row.valid_until:  # too late for whoever is not queued yet
            conn.execute(update(broadcasts).where(b.id == row.id)
                         .values(expanded_at=now, updated_at=now))
            log.info("broadcast %d: past its validity before everyone was queued", row.id)
            return Progress(more=True)
        chunk = _chunk_statements(conn, policy=policy, rules=rules, row=row)
        # The next recipients by contact id. PostgreSQL: locked until this commits, so an
        # erasure, a stop or an unsubscription comes first or finds their message queued.
        taken = chunk.run(conn, now=now, valid_until=row.valid_until, cursor_=row.cursor,
                          n_=rules.chunk)
        count, queued = taken.contacts, taken.queued
        last = int(row.cursor) if taken.last is None else taken.last
        finished = count < rules.chunk
        conn.execute(_MOVE_ON, {"id_": row.id, "cursor": last, "expanded": row.expanded + queued,
                                "expanded_at": now if finished else None, "updated_at": now})
    if finished:
        log.info("broadcast %d: every recipient queued", row.id)
    if queued and not db.sqlite:
        # PostgreSQL plans each claim from the outbox's statistics: refresh them as the
        # queue grows by half (a plan made while it was small sorts the whole queue at every
        # claim; the worker refreshes them at a tenth, every few seconds).
        with db.transaction() as conn:
            queries.refresh_statistics(conn, tables=[messages_out.name], base=1000,
                                       fraction=0.5)
    return Progress(queued=queued, more=True)


@dataclass(frozen=True)
class _SpanThenQueue:
    """SQLite's chunk (it has no data-modifying CTE to do it in one statement, as
    ``outbox.chunk_to_contacts`` does on PostgreSQL): how many recipients are next and the
    last one's contact id (one row, not a thousand ids), then their messages, as the range
    of ids they span."""

    span: Select[Any]  # params cursor_, n_
    queue: outbox.ToContacts  # params cursor_, last_, n_

    def run(self, conn: Connection, *, now: datetime, valid_until: datetime, cursor_: int,
            n_: int) -> outbox.Taken:
        count, last = conn.execute(self.span, {"cursor_": cursor_, "n_": n_}).one()
        if not count:
            return outbox.Taken(contacts=0, last=None, queued=0)
        queued = self.queue.run(conn, now=now, valid_until=valid_until, cursor_=cursor_,
                                last_=int(last), n_=n_)
        return outbox.Taken(contacts=int(count), last=int(last), queued=queued)


_Chunk = outbox.ChunkToContacts | _SpanThenQueue  # run(conn, now, valid_until, cursor_, n_)
_CHUNKS: dict[tuple[Any, ...], _Chunk] = {}
_CHUNKS_KEPT = 32


def _chunk_statements(conn: Connection, *, policy: OutboxPolicy, rules: Rules,
                      row: Row[Any]) -> _Chunk:
    """A broadcast's chunk statements, built once (building them costs more than running
    them on SQLite)."""
    key = (int(row.id), row.target, row.texts, conn.dialect.name, policy.provider,
           rules.default_language, rules.languages)
    kept = _CHUNKS.get(key)
    if kept is not None:
        return kept
    c = contacts.c
    audience = _audience(Target.loads(row.target), rules)
    after = c.id > bindparam("cursor_", type_=c.id.type)
    n = bindparam("n_", type_=c.id.type)
    queueing: dict[str, Any] = {
        "policy": policy, "kind": "broadcast", "texts": json.loads(row.texts),
        "default_language": rules.default_language,
        "dedupe_prefix": f"broadcast:{int(row.id)}:", "broadcast_id": int(row.id)}
    found: _Chunk
    if conn.dialect.name == "postgresql":
        found = outbox.chunk_to_contacts(conn, where=[after, *audience], limit=n, **queueing)
    else:
        ids = (select(c.id).select_from(_WITH_NUMBER).where(after, *audience).order_by(c.id)
               .limit(n).subquery())
        span: Any = select(func.count(), func.max(ids.c.id)).select_from(ids)  # one row
        found = _SpanThenQueue(
            span,
            outbox.to_contacts(conn, where=[after, c.id <= bindparam("last_", type_=c.id.type),
                                            *audience], limit=n, **queueing))
    if len(_CHUNKS) >= _CHUNKS_KEPT:
        _CHUNKS.clear()
    _CHUNKS[key] = found
    return found


_START = update(broadcasts).where(
    broadcasts.c.status == "scheduled", broadcasts.c.send_at <= bindparam("now_"),
).values(status="sending", updated_at=bindparam("now_"))
_FINISH = update(broadcasts).where(
    broadcasts.c.status == "sending", broadcasts.c.expanded_at.is_not(None), ~_WAITING,
).values(status="done", updated_at=bindparam("now_"))
_MOVE_ON = update(broadcasts).where(broadcasts.c.id == bindparam("id_"))
_NEXT_SQLITE = select(broadcasts).where(
    broadcasts.c.status == "sending", broadcasts.c.expanded_at.is_(None),
).order_by(broadcasts.c.send_at, broadcasts.c.id).limit(1)
_NEXT_LOCKED = _NEXT_SQLITE.with_for_update(skip_locked=True)


def _NEXT(conn: Connection) -> Select[Any]:  # noqa: N802 - a statement, like its neighbours
    return _NEXT_LOCKED if conn.dialect.name == "postgresql" else _NEXT_SQLITE
