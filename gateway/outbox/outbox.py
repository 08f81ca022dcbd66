"""The outbox: every outbound SMS is a row, written in the transaction that caused it.

A worker claims due rows under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the
``BEGIN IMMEDIATE`` write lock on SQLite), taking tokens from a per-provider bucket kept
in the database so the rate holds across every worker. Claimed rows are marked
``sending`` before they leave: if the worker dies, a ``sending`` row whose lease ran out
is ambiguous. What happens then depends on its kind (reference/security-and-reliability
.md §3.3 rule 2): a broadcast may go out once more; an acknowledgement or a reply is
marked ``unknown`` and never resent, because a duplicate on a shared phone is a harm.

Statuses only move forward: queued → sending → sent → delivered | failed, with the
side exits expired (past ``valid_until``), cancelled (stopped or erased contact) and
unknown (ambiguous, not resent).

When the provider answers 429, the route slows down for every worker, not only the
refused message (``throttle``): the shared bucket pauses until the provider's
``Retry-After``, its rate drops by 30 %, then climbs back towards the configured rate by a
hundredth of it every second (additive increase, multiplicative decrease: the rate settles
just under what the provider really takes, instead of sending half the requests into
refusals). A 429 is not an attempt: the message goes back to the queue untouched.

Claims take due messages by priority, then in the order they fell due (``next_attempt_at``;
messages queued at the same instant in index order, which is id order on SQLite and about
that on PostgreSQL), the order of the ``ix_outbox_due`` index: a claim reads a batch's worth
of index entries however long the queue. A claim never hands out a message past its
validity or one for a stopped contact, so a worker may tidy the queue (``housekeeping``:
mark those, recover dead leases) every few seconds rather than at every claim, which would
scan every queued row. During quiet hours (``OutboxPolicy.quiet``) a claim takes only
messages of a higher priority than broadcasts: the index range stops before them, and they
wait in the queue until the quiet period ends. On PostgreSQL that plan needs the table's
statistics to be current: a broadcast of many thousand rows makes them stale at once, so
they are refreshed as it grows (``queries.refresh_statistics``) when autovacuum has not.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    true,
    update,
)

from gateway.channels.base import (
    DeliveryReport,
    DeliveryStatus,
    SendOutcome,
    SendResult,
    send_slots,
)
from gateway.outbox.quiet import QuietHours
from gateway.privacy.keys import KeyRing
from gateway.store import queries
from gateway.store.models import Outbox, PendingReport, RateBucket
from gateway.text.encoding import sms_cost

outbox = queries._t(Outbox)
pending = queries._t(PendingReport)
buckets = queries._t(RateBucket)
counters = queries.counters

PRIORITY = {"control": 0, "ack": 1, "reply": 1, "help": 2, "broadcast": 5}
ANY_PRIORITY = 1_000  # above every priority: nothing is held back
RETRY_WHEN_AMBIGUOUS = frozenset({"broadcast"})
RANK = {
    "queued": 0, "sending": 1, "sent": 2, "unknown": 2,
    "delivered": 3, "failed": 3, "expired": 3, "cancelled": 3,
}
FINAL = frozenset({"delivered", "failed", "expired", "cancelled"})

# The route's answer to a 429 (``throttle``).
THROTTLE_DECREASE = 0.7  # the rate is multiplied by this ...
THROTTLE_FLOOR = 0.05  # ... down to this share of the configured rate at least
THROTTLE_RECOVERY = 0.01  # then climbs by this share of the configured rate each second
THROTTLE_PAUSE = 1.0  # seconds the route waits after a 429 without Retry-After
THROTTLE_MAX_PAUSE = 300.0  # the longest pause a Retry-After imposes on the whole route
THROTTLED = "provider_throttled"  # counter: 429 answers


def _burst(rate: float) -> float:
    return max(1.0, rate * 0.1)


@dataclass(frozen=True)
class OutboxPolicy:
    provider: str
    rate: float = 10.0  # messages per second, for all workers together
    batch: int = 50  # most messages one claim takes
    lease_seconds: int = 60
    send_timeout: float = 10.0  # seconds one send waits for the provider's answer
    max_in_flight: int | None = None  # sends a worker keeps in flight; None: ``send_slots``
    max_attempts: int = 6
    backoff_seconds: float = 30.0
    valid_for: dict[str, timedelta] = field(default_factory=lambda: {
        "control": timedelta(hours=6), "ack": timedelta(hours=2),
        "reply": timedelta(hours=2), "help": timedelta(hours=2),
        "broadcast": timedelta(hours=24),
    })
    quiet: QuietHours | None = None  # broadcasts wait while it holds

    @property
    def burst(self) -> float:
        return _burst(self.rate)

    @property
    def slots(self) -> int:
        """How many sends one worker keeps in flight."""
        if self.max_in_flight is not None:
            return max(1, self.max_in_flight)
        return send_slots(self.rate, self.send_timeout)

    def below(self, now: datetime) -> int:
        """Claims take messages of a priority below this: during quiet hours, everything
        but broadcasts."""
        if self.quiet is not None and self.quiet.holds(now):
            return PRIORITY["broadcast"]
        return ANY_PRIORITY


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    pseudonym: str
    recipient: str  # sealed
    dedupe_key: str
    text: str
    encoding: str
    attempts: int
    # The contact's wrapped data key, for a recipient copied from the vault
    # (``to_contacts``); None for one sealed for the outbox.
    data_key: str | None = None


# --- writing -------------------------------------------------------------------------


# RETURNING tells a first from a copy on both databases (PostgreSQL's rowcount is -1 here).
_ENQUEUE = queries._Prepared(
    lambda insert: insert(outbox).on_conflict_do_nothing().returning(outbox.c.id))


def enqueue(
    conn: Connection, *, keys: KeyRing, policy: OutboxPolicy, pseudonym: str, e164: str,
    text: str, kind: str, dedupe_key: str, now: datetime,
    valid_until: datetime | None = None, broadcast_id: int | None = None,
) -> bool:
    """Queue one SMS (``text`` exactly as it will go over the air). False when a message
    with the same ``dedupe_key`` was already queued."""
    cost = sms_cost(text)
    result = conn.execute(_ENQUEUE(conn), {
        "dedupe_key": dedupe_key, "kind": kind, "pseudonym": pseudonym,
        "recipient": keys.seal_text(e164, aad=f"outbox:{dedupe_key}"),
        "text": text, "encoding": cost.encoding, "segments": cost.segments,
        "provider": policy.provider, "priority": PRIORITY.get(kind, 5), "status": "queued",
        "attempts": 0, "next_attempt_at": now,
        "valid_until": valid_until or now + policy.valid_for.get(kind, timedelta(hours=2)),
        "broadcast_id": broadcast_id, "created_at": now, "updated_at": now,
    })
    return result.first() is not None


def copied_from_vault(recipient: str) -> bool:
    """Whether an outbox recipient is a vault entry copied as it is (sealed with the
    contact's own data key: ``to_contacts``) rather than sealed for the outbox."""
    return recipient.startswith("n")


@dataclass(frozen=True)
class ToContacts:
    """An INSERT ... SELECT that queues a message to each contact a WHERE selects (see
    ``to_contacts``): built once, run many times with the time and the WHERE's parameters."""

    statement: Executable
    returning: bool  # count what RETURNING gives back (psycopg's rowcount is -1 here)

    def run(self, conn: Connection, *, now: datetime, valid_until: datetime,
            **params: Any) -> int:
        """Queue them; how many were queued (a contact already queued is skipped)."""
        values = {"now_": now, "valid_until_": valid_until, **params}
        result = conn.execute(self.statement, values)
        return len(result.all()) if self.returning else int(result.rowcount)


@dataclass(frozen=True)
class Taken:
    """What one run of ``ChunkToContacts`` did."""

    contacts: int  # how many contacts it took (queued or skipped)
    last: int | None  # the last one's id (None: none was left)
    queued: int  # the messages it queued


@dataclass(frozen=True)
class ChunkToContacts:
    """PostgreSQL: one statement that takes the next contacts a WHERE selects, in id order,
    and queues their messages (see ``chunk_to_contacts``)."""

    statement: Executable

    def run(self, conn: Connection, *, now: datetime, valid_until: datetime,
            **params: Any) -> Taken:
        values = {"now_": now, "valid_until_": valid_until, **params}
        contacts, last, queued = conn.execute(self.statement, values).one()
        return Taken(int(contacts), None if last is None else int(last), int(queued))


@dataclass(frozen=True)
class _People:
    """The contacts a queueing statement reads, and the columns it reads of them."""

    source: Any
    id: ColumnElement[int]
    pseudonym: ColumnElement[str]
    language: ColumnElement[str | None]
    stopped: ColumnElement[bool]
    number: ColumnElement[str]


def to_contacts(
    conn: Connection, *, policy: OutboxPolicy, kind: str, where: Sequence[ColumnElement[bool]],
    texts: Mapping[str, str], default_language: str, dedupe_prefix: str,
    broadcast_id: int | None = None, limit: ColumnElement[int] | None = None,
) -> ToContacts:
    """Queue one message to each contact ``where`` selects (clauses on ``contact``) who has
    a number in the vault and has not stopped: the text of the contact's language in
    ``texts`` (exactly as it goes over the air), else that of ``default_language``; a
    contact with neither is skipped. The number is copied from the vault as it is, still
    sealed with the contact's own data key, so queueing opens and seals nothing, and an
    erasure (which shreds that key) leaves the queued copy unreadable too; the worker opens
    it when it sends. Each message names its contact's id (``contact_id``) and its dedupe
    key is ``dedupe_prefix`` + that id, so running it twice queues nothing twice, and rows
    queued in contact order land in order in every index they touch. ``limit``: at most
    that many contacts, in id order (SQLite's chunk; PostgreSQL's is
    ``chunk_to_contacts``)."""
    c, v = queries.contacts.c, queries.vault.c
    people = _People(queries.contacts.join(queries.vault, v.pseudonym == c.pseudonym),
                     c.id, c.pseudonym, c.language, c.stopped, v.number)
    rows = _messages(people, policy=policy, kind=kind, texts=texts,
                     default_language=default_language, dedupe_prefix=dedupe_prefix,
                     broadcast_id=broadcast_id).where(*where)
    if limit is not None:
        rows = rows.order_by(c.id).limit(limit)
    stmt = queries._insert(conn, outbox).from_select(_names(rows), rows) \
        .on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":  # its rowcount counts the rows inserted
        return ToContacts(stmt, returning=False)
    return ToContacts(stmt.returning(outbox.c.id), returning=True)


def chunk_to_contacts(
    conn: Connection, *, policy: OutboxPolicy, kind: str, where: Sequence[ColumnElement[bool]],
    texts: Mapping[str, str], default_language: str, dedupe_prefix: str,
    broadcast_id: int | None = None, limit: ColumnElement[int],
) -> ChunkToContacts:
    """PostgreSQL: ``to_contacts`` for the next ``limit`` contacts ``where`` selects (with a
    number in the vault), in id order, in one statement: it takes them, locked FOR SHARE
    until the transaction ends (an erasure, a stop or an unsubscription then comes first
    or finds their message queued), queues the messages of those who may have one, and
    answers how many it took, the last one's id and how many it queued. The contacts are
    read once, with their numbers, in one round trip (a count of the range, then the
    insert reading it again, was two reads and two round trips of a chunk's five)."""
    if conn.dialect.name != "postgresql":
        raise ValueError("chunk_to_contacts is PostgreSQL's; SQLite uses to_contacts")
    probe = _numbered_by_probe()
    taken = (select(probe.id.label("id"), probe.pseudonym.label("pseudonym"),
                    probe.language.label("language"), probe.stopped.label("stopped"),
                    probe.number.label("number"))
             .select_from(probe.source).where(*where).order_by(probe.id).limit(limit)
             .with_for_update(read=True, of=queries.contacts).cte("taken"))
    t = taken.c
    rows = _messages(_People(taken, t.id, t.pseudonym, t.language, t.stopped, t.number),
                     policy=policy, kind=kind, texts=texts,
                     default_language=default_language, dedupe_prefix=dedupe_prefix,
                     broadcast_id=broadcast_id)
    queued = (queries._insert(conn, outbox).from_select(_names(rows), rows)
              .on_conflict_do_nothing().returning(outbox.c.id).cte("queued"))
    stmt = select(select(func.count()).select_from(taken).scalar_subquery(),
                  select(func.max(t.id)).scalar_subquery(),
                  select(func.count()).select_from(queued).scalar_subquery())
    return ChunkToContacts(stmt)


def _names(rows: Select[Any]) -> list[str]:
    return list(rows.selected_columns.keys())


def _numbered_by_probe() -> _People:
    """Contacts with each one's sealed number by one probe of the vault's index (a
    PostgreSQL chunk). Joined plainly, PostgreSQL chose to hash the whole vault for every chunk
    (100,000 rows read for 1,000 wanted: 19 ms of a 34 ms chunk); a lateral subquery it may
    not flatten (OFFSET 0) can only be a probe per contact (5 ms)."""
    c, v = queries.contacts.c, queries.vault.c
    sealed = (select(v.number.label("number")).where(v.pseudonym == c.pseudonym)
              .offset(0).lateral("sealed"))
    return _People(queries.contacts.join(sealed, true()), c.id, c.pseudonym, c.language,
                   c.stopped, sealed.c.number)


def _messages(people: _People, *, policy: OutboxPolicy, kind: str, texts: Mapping[str, str],
              default_language: str, dedupe_prefix: str,
              broadcast_id: int | None) -> Select[Any]:
    """The outbox rows (labelled as its columns) for ``people``: those who have not stopped,
    whose number is a vault entry, and who have a text in their language or the default
    one."""
    languages = sorted(texts)
    costs = {lang: sms_cost(texts[lang]) for lang in languages}
    fallback = texts.get(default_language)

    def by_language(values: Mapping[str, Any], otherwise: Any) -> Any:
        return case(*((people.language == lang, literal(values[lang])) for lang in languages),
                    else_=literal(otherwise))

    text_of = by_language(texts, fallback)
    chosen = default_language if fallback is not None else None
    now = bindparam("now_", type_=outbox.c.created_at.type)
    columns = {
        "dedupe_key": literal(dedupe_prefix) + cast(people.id, String),
        "kind": literal(kind),
        "pseudonym": people.pseudonym,
        "contact_id": people.id,
        "recipient": people.number,
        "text": text_of,
        "encoding": by_language({k: x.encoding for k, x in costs.items()},
                                costs[chosen].encoding if chosen else None),
        "segments": by_language({k: x.segments for k, x in costs.items()},
                                costs[chosen].segments if chosen else None),
        "provider": literal(policy.provider),
        "priority": literal(PRIORITY.get(kind, 5)),
        "status": literal("queued"),
        "attempts": literal(0),
        "next_attempt_at": now,
        "valid_until": bindparam("valid_until_", type_=outbox.c.valid_until.type),
        "broadcast_id": literal(broadcast_id, outbox.c.broadcast_id.type),
        "created_at": now,
        "updated_at": now,
    }
    return (select(*(expr.label(name) for name, expr in columns.items()))
            .select_from(people.source)
            .where(people.stopped.is_(False), people.number.like("n%"), text_of.is_not(None)))


def cancel_for(conn: Connection, *, pseudonym: str, keep_control: bool = True,
               now: datetime, kinds: Sequence[str] | None = None) -> int:
    """Cancel what is queued for a contact who stopped or erased their data (with
    ``kinds``, only messages of those kinds: broadcasts, for one who unsubscribed)."""
    where = [outbox.c.status == "queued"]
    if keep_control:
        where.append(outbox.c.kind != "control")
    if kinds is not None:
        where.append(outbox.c.kind.in_(list(kinds)))
    return sum(int(conn.execute(update(outbox).where(theirs, *where).values(
        status="cancelled", updated_at=now)).rowcount) for theirs in queries.outbox_of(pseudonym))


# --- claiming ------------------------------------------------------------------------


_BUCKET = select(buckets).where(buckets.c.provider == bindparam("provider"))
_BUCKET_LOCKED = _BUCKET.with_for_update()
_NEW_BUCKET = queries._Prepared(lambda insert: insert(buckets).on_conflict_do_nothing())
_SET_BUCKET = update(buckets).where(buckets.c.provider == bindparam("provider_")).values(
    tokens=bindparam("tokens_"), updated_at=bindparam("now_"))


def _rate(policy: OutboxPolicy, row: Any, now: datetime) -> float:
    """The route's rate at ``now``: the configured one, or after a 429 the lowered rate,
    climbing back from the end of the pause."""
    if row is None or row.rate is None or row.throttled_at is None:
        return policy.rate
    start: datetime = max(row.throttled_at, row.paused_until or row.throttled_at)
    climbed = max(0.0, (now - start).total_seconds()) * policy.rate * THROTTLE_RECOVERY
    return min(policy.rate, float(row.rate) + climbed)


def _paused(row: Any, now: datetime) -> float:
    """Seconds the route still waits out a provider's Retry-After (0: none)."""
    if row is None or row.paused_until is None:
        return 0.0
    until: datetime = row.paused_until
    return max(0.0, (until - now).total_seconds())


def _tokens(policy: OutboxPolicy, row: Any, now: datetime) -> float:
    """The bucket's tokens at ``now`` (a new bucket starts full; a paused one is empty)."""
    if row is None:
        return policy.burst
    if _paused(row, now):
        return 0.0
    rate = _rate(policy, row, now)
    elapsed = max(0.0, float((now - row.updated_at).total_seconds()))
    return min(_burst(rate), float(row.tokens) + elapsed * rate)


def _take_tokens(conn: Connection, *, policy: OutboxPolicy, now: datetime, want: int) -> int:
    stmt = _BUCKET_LOCKED if conn.dialect.name == "postgresql" else _BUCKET
    row = conn.execute(stmt, {"provider": policy.provider}).first()
    if row is None:  # a new bucket starts full
        conn.execute(_NEW_BUCKET(conn), {"provider": policy.provider, "tokens": policy.burst,
                                         "updated_at": now})
    elif _paused(row, now):
        return 0  # the provider asked the route to wait
    tokens = _tokens(policy, row, now)
    taken = min(want, int(tokens))
    conn.execute(_SET_BUCKET, {"provider_": policy.provider, "tokens_": tokens - taken,
                               "now_": now})
    return taken


_THROTTLE = update(buckets).where(buckets.c.provider == bindparam("provider_")).values(
    tokens=0.0, updated_at=bindparam("until_"), paused_until=bindparam("until_"),
    rate=bindparam("rate_"), throttled_at=bindparam("throttled_at_"))


def throttle(conn: Connection, *, policy: OutboxPolicy, now: datetime, sent_at: datetime,
             retry_after: float | None, count: int = 1) -> float:
    """The provider refused sends for the route's rate (``count`` 429 answers, the latest
    of them sent at ``sent_at``): every worker pauses until ``Retry-After`` (at most
    THROTTLE_MAX_PAUSE), and the rate is lowered, once for sends that left after the last
    lowering (answers to sends that left before it say nothing new about the lower rate).
    Returns the route's rate after the pause."""
    stmt = _BUCKET_LOCKED if conn.dialect.name == "postgresql" else _BUCKET
    row = conn.execute(stmt, {"provider": policy.provider}).first()
    if row is None:
        conn.execute(_NEW_BUCKET(conn), {"provider": policy.provider, "tokens": 0.0,
                                         "updated_at": now})
    wait = THROTTLE_PAUSE if retry_after is None else retry_after
    until = now + timedelta(seconds=min(THROTTLE_MAX_PAUSE, max(0.0, wait)))
    if row is not None and row.paused_until is not None and row.paused_until > until:
        until = row.paused_until
    rate, throttled_at = _rate(policy, row, now), now
    if row is None or row.throttled_at is None or row.rate is None \
            or sent_at >= row.throttled_at:
        rate = max(policy.rate * THROTTLE_FLOOR, rate * THROTTLE_DECREASE)
    else:  # already lowered for this: keep the climb where it was
        rate, throttled_at = float(row.rate), row.throttled_at
    conn.execute(_THROTTLE, {"provider_": policy.provider, "until_": until, "rate_": rate,
                             "throttled_at_": throttled_at})
    queries.bump(conn, name=THROTTLED, by=count, now=now)
    return rate


def route(conn: Connection, *, policy: OutboxPolicy, now: datetime) -> tuple[float, float]:
    """The route's state: (its rate now, seconds it still waits out a Retry-After)."""
    row = conn.execute(_BUCKET, {"provider": policy.provider}).first()
    return _rate(policy, row, now), _paused(row, now)


def housekeeping(conn: Connection, *, policy: OutboxPolicy, now: datetime,
                 stopped: bool = True) -> None:
    """Expire stale messages, recover dead leases, and (``stopped``) cancel those for
    stopped contacts. The last reads every queued message (a broadcast's hundred thousand):
    the worker does it every few minutes, not every few seconds, since a claim never hands
    one out anyway."""
    mine = outbox.c.provider == policy.provider
    conn.execute(update(outbox).where(
        outbox.c.status == "queued", outbox.c.valid_until < now, mine,
    ).values(status="expired", updated_at=now))
    if stopped:
        cancel_stopped(conn, policy=policy, now=now)
    # A "sending" row whose lease ran out: its worker died mid-send. Ambiguous.
    dead = and_(mine, outbox.c.status == "sending", outbox.c.lease_until < now)
    conn.execute(update(outbox).where(
        dead, outbox.c.kind.in_(RETRY_WHEN_AMBIGUOUS),
        or_(outbox.c.last_error.is_(None), outbox.c.last_error != "ambiguous"),
    ).values(status="queued", last_error="ambiguous", lease_owner=None, lease_until=None,
             next_attempt_at=now, updated_at=now))
    conn.execute(update(outbox).where(dead).values(
        status="unknown", last_error="ambiguous", lease_owner=None, lease_until=None,
        updated_at=now))


def _for_stopped(policy: OutboxPolicy) -> tuple[ColumnElement[bool], ...]:
    """Queued messages for stopped contacts but their control answers, as two conditions
    (a broadcast's messages by contact id, the others by pseudonym)."""
    c = queries.contacts.c
    common = and_(outbox.c.provider == policy.provider, outbox.c.status == "queued",
                  outbox.c.kind != "control")
    return (
        and_(common, outbox.c.contact_id.is_(None),
             outbox.c.pseudonym.in_(select(c.pseudonym).where(c.stopped.is_(True)))),
        and_(common, outbox.c.contact_id.is_not(None),
             outbox.c.contact_id.in_(select(c.id).where(c.stopped.is_(True)))),
    )


def any_for_stopped(conn: Connection, *, policy: OutboxPolicy) -> bool:
    """Whether ``cancel_stopped`` has anything to cancel (it reads every queued message:
    ask in a read-only transaction first, and take the write lock only when it has)."""
    return any(conn.execute(select(outbox.c.id).where(theirs).limit(1)).first() is not None
               for theirs in _for_stopped(policy))


def cancel_stopped(conn: Connection, *, policy: OutboxPolicy, now: datetime) -> int:
    """Cancel what is queued for stopped contacts but their control answers (STOP cancels
    their queue at once; this catches whatever was queued in a race with it)."""
    return sum(int(conn.execute(update(outbox).where(theirs).values(
        status="cancelled", updated_at=now)).rowcount) for theirs in _for_stopped(policy))


def _due(*, fenced: bool) -> Select[Any]:
    """Due messages in claim order. A message for a contact who sent STOP is not due: only
    its control answers still go. PostgreSQL (``fenced``): the OFFSET 0 keeps that test a
    probe of the contact's unique index for each message read; unfenced, the planner made it
    a join that read every stopped contact, scanning the whole contact table at every
    claim (100,000 contacts: 10-20 ms each)."""
    c = queries.contacts.c
    stopped = select(literal(1)).where(c.pseudonym == outbox.c.pseudonym, c.stopped.is_(True),
                                       outbox.c.kind != "control")
    if fenced:
        stopped = stopped.offset(0)
    return (
        select(outbox.c.id)
        .where(outbox.c.provider == bindparam("provider"), outbox.c.status == "queued",
               outbox.c.priority < bindparam("below"),
               outbox.c.next_attempt_at <= bindparam("now"),
               outbox.c.valid_until >= bindparam("now"),
               ~stopped.exists())
        # The index's own order: no sort, and no reading every message of a broadcast
        # queued at one instant to order them by id.
        .order_by(outbox.c.priority, outbox.c.next_attempt_at)
        .limit(bindparam("n"))
    )


_CLAIM_ORDER = (outbox.c.priority, outbox.c.next_attempt_at, outbox.c.id)
_DUE = {"sqlite": _due(fenced=False), "postgresql": _due(fenced=True)}
# Count first so tokens are only spent on messages that exist.
_DUE_COUNT = {name: select(func.count()).select_from(stmt.subquery())
              for name, stmt in _DUE.items()}
_DUE_LOCKED = _DUE["postgresql"].with_for_update(skip_locked=True)
_MARK = update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True))).values(
    status="sending", lease_owner=bindparam("owner_"), lease_until=bindparam("lease_"),
    attempts=outbox.c.attempts + 1, updated_at=bindparam("now_"))
_CLAIMED = select(outbox, queries.contacts.c.data_key).select_from(
    outbox.outerjoin(queries.contacts, queries.contacts.c.pseudonym == outbox.c.pseudonym),
).where(outbox.c.id.in_(bindparam("ids", expanding=True))).order_by(*_CLAIM_ORDER)


def claim(
    conn: Connection, *, policy: OutboxPolicy, owner: str, now: datetime, limit: int | None = None,
    tidy: bool = True,
) -> list[Claimed]:
    """Take due messages, within the rate, and mark them ``sending`` under a lease.

    With ``tidy`` (the default) the queue is tidied first (``housekeeping``); a worker that
    tidies on its own schedule passes False. Either way nothing expired, and nothing for a
    stopped contact but a control message, is claimed; during quiet hours, no broadcast.
    """
    if tidy:
        housekeeping(conn, policy=policy, now=now)
    want = min(limit or policy.batch, policy.batch)
    due = {"provider": policy.provider, "now": now, "below": policy.below(now)}
    count = int(conn.execute(_DUE_COUNT[conn.dialect.name], {**due, "n": want}).scalar_one())
    if count == 0:
        return []
    taken = _take_tokens(conn, policy=policy, now=now, want=count)
    if taken == 0:
        return []
    stmt = _DUE_LOCKED if conn.dialect.name == "postgresql" else _DUE["sqlite"]
    ids = [int(i) for i in conn.execute(stmt, {**due, "n": taken}).scalars()]
    if not ids:
        return []
    lease_until = now + timedelta(seconds=policy.lease_seconds)
    conn.execute(_MARK, {"ids": ids, "owner_": owner, "lease_": lease_until, "now_": now})
    rows = conn.execute(_CLAIMED, {"ids": ids}).all()
    return [Claimed(r.id, r.kind, r.pseudonym, r.recipient, r.dedupe_key, r.text, r.encoding,
                    r.attempts, r.data_key) for r in rows]


def renew(conn: Connection, *, ids: Sequence[int], owner: str, until: datetime) -> None:
    """Extend the lease of sends still waiting for the provider's answer."""
    if ids:
        conn.execute(update(outbox).where(
            outbox.c.id.in_(list(ids)), outbox.c.status == "sending",
            outbox.c.lease_owner == owner,
        ).values(lease_until=until))


def open_recipient(keys: KeyRing, claimed: Claimed) -> str:
    """The number a claimed message goes to. Raises ``KeyGone`` when it cannot be read:
    for a copy of the vault, its contact was erased (``DataKeyShredded``)."""
    if copied_from_vault(claimed.recipient):
        return keys.open_number(claimed.data_key, claimed.recipient,
                                pseudonym=claimed.pseudonym)
    return keys.open_text(claimed.recipient, aad=f"outbox:{claimed.dedupe_key}")


def release(conn: Connection, *, ids: Sequence[int], owner: str, now: datetime) -> None:
    """Give back claimed rows that were never handed to the provider."""
    if ids:
        conn.execute(update(outbox).where(
            outbox.c.id.in_(list(ids)), outbox.c.status == "sending",
            outbox.c.lease_owner == owner,
        ).values(status="queued", lease_owner=None, lease_until=None,
                 attempts=outbox.c.attempts - 1, updated_at=now))


# --- results -------------------------------------------------------------------------


def _backoff(policy: OutboxPolicy, attempts: int, retry_after: float | None) -> timedelta:
    if retry_after is not None:
        return timedelta(seconds=max(1.0, min(retry_after, 3600.0)))
    base = policy.backoff_seconds * (2 ** max(0, attempts - 1))
    return timedelta(seconds=min(base, 3600.0) + random.uniform(0, policy.backoff_seconds))


_RECORDED = select(outbox.c.id, outbox.c.status, outbox.c.lease_owner, outbox.c.last_error) \
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)))
_RECORDED_LOCKED = _RECORDED.with_for_update()
_UPDATE_ONE = update(outbox).where(outbox.c.id == bindparam("id_"))
_PARKED = select(pending).where(
    pending.c.provider == bindparam("provider"),
    pending.c.provider_message_id.in_(bindparam("ids", expanding=True)),
)


def record(
    conn: Connection, *, policy: OutboxPolicy, owner: str,
    results: Iterable[tuple[Claimed, SendResult]], now: datetime,
) -> None:
    """Store what the provider said about each claimed message (a batch: its rows are
    read, and locked on PostgreSQL, in one statement; updates with the same columns go
    in one executemany)."""
    results = list(results)
    if not results:
        return
    stmt = _RECORDED_LOCKED if conn.dialect.name == "postgresql" else _RECORDED
    found = {int(r.id): r for r in conn.execute(stmt, {"ids": [c.id for c, _ in results]})}
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    accepted: list[tuple[int, str]] = []
    for claimed, result in results:
        changes = _recorded(policy, claimed, result, found.get(claimed.id), now)
        if changes is None:
            continue
        updates.setdefault(tuple(sorted(changes)), []).append({"id_": claimed.id, **changes})
        if result.outcome is SendOutcome.accepted and result.provider_message_id:
            accepted.append((claimed.id, result.provider_message_id))
    for rows in updates.values():
        conn.execute(_UPDATE_ONE, rows)
    if accepted:
        parked: dict[str, list[Any]] = {}
        for row in conn.execute(_PARKED, {"provider": policy.provider,
                                          "ids": [pmid for _, pmid in accepted]}):
            parked.setdefault(str(row.provider_message_id), []).append(row)
        for outbox_id, pmid in accepted:
            if pmid in parked:
                _reconcile(conn, outbox_id=outbox_id, rows=parked.pop(pmid), now=now)


def _recorded(policy: OutboxPolicy, claimed: Claimed, result: SendResult, row: Any,
              now: datetime) -> dict[str, Any] | None:
    """The changes a send result makes to its row, or None for none."""
    if row is None:
        return None  # erased meanwhile
    changes: dict[str, Any] = {"updated_at": now, "lease_owner": None, "lease_until": None}
    if result.code:
        changes["last_error"] = result.code[:64]
    still_mine = row.status == "sending"
    if result.outcome is SendOutcome.accepted:
        changes.update(provider_message_id=result.provider_message_id, sent_at=now)
        if still_mine:
            changes["status"] = "sent"
        return changes
    if not still_mine:
        return None  # a delivery report already moved it on
    if result.outcome is SendOutcome.retry and result.throttled:
        # Refused for the route's rate: not sent, and not the message's fault. It waits
        # with the route (``throttle``) and keeps its attempts.
        wait = THROTTLE_PAUSE if result.retry_after is None else result.retry_after
        changes.update(status="queued", attempts=max(0, claimed.attempts - 1),
                       next_attempt_at=now + timedelta(
                           seconds=min(THROTTLE_MAX_PAUSE, max(0.0, wait))))
    elif result.outcome is SendOutcome.retry and claimed.attempts < policy.max_attempts:
        changes.update(status="queued", next_attempt_at=now + _backoff(
            policy, claimed.attempts, result.retry_after))
    elif result.outcome is SendOutcome.ambiguous:
        again = claimed.kind in RETRY_WHEN_AMBIGUOUS and row.last_error != "ambiguous"
        changes.update(status="queued" if again else "unknown", last_error="ambiguous",
                       next_attempt_at=now)
    else:
        changes["status"] = "failed"
    return changes


# --- delivery reports ----------------------------------------------------------------


_FROM_REPORT = {
    DeliveryStatus.sent: "sent", DeliveryStatus.delivered: "delivered",
    DeliveryStatus.failed: "failed",
}


def _advance(conn: Connection, *, outbox_id: int, current: str, status: str,
             now: datetime) -> bool:
    if RANK.get(status, 0) <= RANK.get(current, 0) or current in FINAL:
        return False
    conn.execute(update(outbox).where(outbox.c.id == outbox_id, outbox.c.status == current)
                 .values(status=status, updated_at=now))
    return True


def apply_delivery(conn: Connection, *, report: DeliveryReport, now: datetime) -> str:
    """Match a delivery report to its message: ``matched``, ``stale`` (duplicate or out
    of order, ignored), ``parked`` (no such message yet) or ``ignored``."""
    status = _FROM_REPORT.get(report.status)
    if status is None:
        return "ignored"
    if report.outbox_id is not None:
        where = outbox.c.id == report.outbox_id
    elif report.provider_message_id:
        where = and_(outbox.c.provider == report.provider,
                     outbox.c.provider_message_id == report.provider_message_id)
    else:
        return "ignored"
    stmt = select(outbox.c.id, outbox.c.status).where(where)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        key = report.provider_message_id or f"outbox:{report.outbox_id}"
        conn.execute(queries._insert(conn, pending).values(
            provider=report.provider, provider_message_id=key[:128], status=status,
            raw_status=report.raw_status[:64], received_at=now,
        ).on_conflict_do_nothing())
        return "parked"
    moved = _advance(conn, outbox_id=row.id, current=row.status, status=status, now=now)
    return "matched" if moved else "stale"


def _reconcile(conn: Connection, *, outbox_id: int, rows: Sequence[Any], now: datetime) -> None:
    """Apply reports (``rows`` of pending_report) that arrived before the send was
    recorded."""
    for row in sorted(rows, key=lambda r: RANK.get(r.status, 0)):
        current = conn.execute(select(outbox.c.status).where(outbox.c.id == outbox_id))
        _advance(conn, outbox_id=outbox_id, current=str(current.scalar_one()),
                 status=row.status, now=now)
    if rows:
        conn.execute(pending.delete().where(pending.c.id.in_([r.id for r in rows])))


def expire_pending(conn: Connection, *, older_than: datetime, now: datetime) -> int:
    """Drop reports that never matched a message; count them."""
    result = conn.execute(pending.delete().where(pending.c.received_at < older_than))
    expired = int(result.rowcount)
    if expired:
        queries.bump(conn, name="delivery_reports_unmatched", by=expired, now=now)
    return expired


def queue_depth(conn: Connection) -> int:
    stmt = select(func.count()).select_from(outbox).where(
        outbox.c.status.in_(("queued", "sending")))
    return int(conn.execute(stmt).scalar_one())


def any_due(conn: Connection, *, policy: OutboxPolicy, now: datetime) -> bool:
    """Whether a message ``claim`` would take is waiting (one index probe)."""
    due = conn.execute(_DUE[conn.dialect.name], {"provider": policy.provider, "now": now, "n": 1,
                              "below": policy.below(now)}).first()
    return due is not None


def seconds_to_tokens(conn: Connection, *, policy: OutboxPolicy, now: datetime,
                      want: float = 1.0) -> float:
    """How long until the provider's bucket holds ``want`` tokens (at most a full bucket);
    0 when it does now."""
    row = conn.execute(_BUCKET, {"provider": policy.provider}).first()
    paused = _paused(row, now)
    if paused:
        then = now + timedelta(seconds=paused)
        rate = _rate(policy, row, then)
        return paused + min(max(1.0, want), _burst(rate)) / rate
    rate = _rate(policy, row, now)
    want = min(max(1.0, want), _burst(rate))
    return max(0.0, (want - _tokens(policy, row, now)) / rate)
