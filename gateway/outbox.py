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
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from gateway import store
from gateway.keys import KeyRing
from gateway.models import Outbox, PendingReport, RateBucket
from gateway.providers.base import DeliveryReport, DeliveryStatus, SendOutcome, SendResult
from gateway.text import sms_cost

outbox = store._t(Outbox)
pending = store._t(PendingReport)
buckets = store._t(RateBucket)
counters = store.counters

PRIORITY = {"control": 0, "ack": 1, "reply": 1, "help": 2, "broadcast": 5}
RETRY_WHEN_AMBIGUOUS = frozenset({"broadcast"})
RANK = {
    "queued": 0, "sending": 1, "sent": 2, "unknown": 2,
    "delivered": 3, "failed": 3, "expired": 3, "cancelled": 3,
}
FINAL = frozenset({"delivered", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class OutboxPolicy:
    provider: str
    rate: float = 10.0  # messages per second, for all workers together
    batch: int = 50  # most messages one claim takes
    lease_seconds: int = 60
    max_attempts: int = 6
    backoff_seconds: float = 30.0
    valid_for: dict[str, timedelta] = field(default_factory=lambda: {
        "control": timedelta(hours=6), "ack": timedelta(hours=2),
        "reply": timedelta(hours=2), "help": timedelta(hours=2),
        "broadcast": timedelta(hours=24),
    })

    @property
    def burst(self) -> float:
        return max(1.0, self.rate * 0.1)


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


# --- writing -------------------------------------------------------------------------


def enqueue(
    conn: Connection, *, keys: KeyRing, policy: OutboxPolicy, pseudonym: str, e164: str,
    text: str, kind: str, dedupe_key: str, now: datetime,
    valid_until: datetime | None = None, broadcast_id: int | None = None,
) -> bool:
    """Queue one SMS (``text`` exactly as it will go over the air). False when a message
    with the same ``dedupe_key`` was already queued."""
    cost = sms_cost(text)
    stmt = store._insert(conn, outbox).values(
        dedupe_key=dedupe_key, kind=kind, pseudonym=pseudonym,
        recipient=keys.seal_text(e164, aad=f"outbox:{dedupe_key}"),
        text=text, encoding=cost.encoding, segments=cost.segments,
        provider=policy.provider, priority=PRIORITY.get(kind, 5), status="queued",
        attempts=0, next_attempt_at=now,
        valid_until=valid_until or now + policy.valid_for.get(kind, timedelta(hours=2)),
        broadcast_id=broadcast_id, created_at=now, updated_at=now,
    ).on_conflict_do_nothing()
    return bool(conn.execute(stmt).rowcount)


def cancel_for(conn: Connection, *, pseudonym: str, keep_control: bool = True,
               now: datetime) -> int:
    """Cancel what is queued for a contact who stopped or erased their data."""
    where = and_(outbox.c.pseudonym == pseudonym, outbox.c.status == "queued")
    if keep_control:
        where = and_(where, outbox.c.kind != "control")
    result = conn.execute(update(outbox).where(where).values(status="cancelled",
                                                                  updated_at=now))
    return int(result.rowcount)


# --- claiming ------------------------------------------------------------------------


def _take_tokens(conn: Connection, *, policy: OutboxPolicy, now: datetime, want: int) -> int:
    row = conn.execute(
        select(buckets).where(buckets.c.provider == policy.provider).with_for_update()
        if conn.dialect.name == "postgresql"
        else select(buckets).where(buckets.c.provider == policy.provider)
    ).first()
    if row is None:  # a new bucket starts full
        conn.execute(store._insert(conn, buckets).values(
            provider=policy.provider, tokens=policy.burst, updated_at=now,
        ).on_conflict_do_nothing())
        tokens, updated = policy.burst, now
    else:
        tokens, updated = float(row.tokens), row.updated_at
    elapsed = max(0.0, (now - updated).total_seconds())
    tokens = min(policy.burst, tokens + elapsed * policy.rate)
    taken = min(want, int(tokens))
    conn.execute(update(buckets).where(buckets.c.provider == policy.provider)
                 .values(tokens=tokens - taken, updated_at=now))
    return taken


def housekeeping(conn: Connection, *, policy: OutboxPolicy, now: datetime) -> None:
    """Expire stale messages, cancel those for stopped contacts, recover dead leases."""
    mine = outbox.c.provider == policy.provider
    conn.execute(update(outbox).where(
        mine, outbox.c.status == "queued", outbox.c.valid_until < now,
    ).values(status="expired", updated_at=now))
    stopped = select(store.contacts.c.pseudonym).where(store.contacts.c.stopped.is_(True))
    conn.execute(update(outbox).where(
        mine, outbox.c.status == "queued", outbox.c.kind != "control",
        outbox.c.pseudonym.in_(stopped),
    ).values(status="cancelled", updated_at=now))
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


def claim(
    conn: Connection, *, policy: OutboxPolicy, owner: str, now: datetime, limit: int | None = None,
) -> list[Claimed]:
    """Take due messages, within the rate, and mark them ``sending`` under a lease."""
    housekeeping(conn, policy=policy, now=now)
    want = min(limit or policy.batch, policy.batch)
    due = (
        select(outbox.c.id)
        .where(outbox.c.provider == policy.provider, outbox.c.status == "queued",
               outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.priority, outbox.c.id)
    )
    # Count first so tokens are only spent on messages that exist.
    available = conn.execute(select(func.count()).select_from(due.limit(want).subquery()))
    count = int(available.scalar_one())
    if count == 0:
        return []
    taken = _take_tokens(conn, policy=policy, now=now, want=count)
    if taken == 0:
        return []
    stmt = due.limit(taken)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    ids = [int(i) for i in conn.execute(stmt).scalars()]
    if not ids:
        return []
    lease_until = now + timedelta(seconds=policy.lease_seconds)
    conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(
        status="sending", lease_owner=owner, lease_until=lease_until,
        attempts=outbox.c.attempts + 1, updated_at=now))
    rows = conn.execute(select(outbox).where(outbox.c.id.in_(ids))
                        .order_by(outbox.c.priority, outbox.c.id)).all()
    return [Claimed(r.id, r.kind, r.pseudonym, r.recipient, r.dedupe_key, r.text, r.encoding,
                    r.attempts) for r in rows]


def open_recipient(keys: KeyRing, claimed: Claimed) -> str:
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


def record(
    conn: Connection, *, policy: OutboxPolicy, owner: str,
    results: Iterable[tuple[Claimed, SendResult]], now: datetime,
) -> None:
    """Store what the provider said about each claimed message."""
    for claimed, result in results:
        stmt = select(outbox.c.status, outbox.c.lease_owner, outbox.c.last_error).where(
            outbox.c.id == claimed.id)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            continue  # erased meanwhile
        changes: dict[str, Any] = {"updated_at": now, "lease_owner": None, "lease_until": None}
        if result.code:
            changes["last_error"] = result.code[:64]
        still_mine = row.status == "sending"
        if result.outcome is SendOutcome.accepted:
            changes.update(provider_message_id=result.provider_message_id, sent_at=now)
            if still_mine:
                changes["status"] = "sent"
            conn.execute(update(outbox).where(outbox.c.id == claimed.id).values(**changes))
            if result.provider_message_id:
                _reconcile(conn, outbox_id=claimed.id, provider=policy.provider,
                           provider_message_id=result.provider_message_id, now=now)
            continue
        if not still_mine:
            continue  # a delivery report already moved it on
        if result.outcome is SendOutcome.retry and claimed.attempts < policy.max_attempts:
            changes.update(status="queued", next_attempt_at=now + _backoff(
                policy, claimed.attempts, result.retry_after))
        elif result.outcome is SendOutcome.ambiguous:
            again = claimed.kind in RETRY_WHEN_AMBIGUOUS and row.last_error != "ambiguous"
            changes.update(status="queued" if again else "unknown", last_error="ambiguous",
                           next_attempt_at=now)
        else:
            changes["status"] = "failed"
        conn.execute(update(outbox).where(outbox.c.id == claimed.id).values(**changes))


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
        conn.execute(store._insert(conn, pending).values(
            provider=report.provider, provider_message_id=key[:128], status=status,
            raw_status=report.raw_status[:64], received_at=now,
        ).on_conflict_do_nothing())
        return "parked"
    moved = _advance(conn, outbox_id=row.id, current=row.status, status=status, now=now)
    return "matched" if moved else "stale"


def _reconcile(conn: Connection, *, outbox_id: int, provider: str, provider_message_id: str,
               now: datetime) -> None:
    """Apply reports that arrived before the send was recorded."""
    rows = conn.execute(select(pending).where(
        pending.c.provider == provider, pending.c.provider_message_id == provider_message_id,
    )).all()
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
        store.bump(conn, name="delivery_reports_unmatched", by=expired, now=now)
    return expired


def queue_depth(conn: Connection) -> int:
    stmt = select(func.count()).select_from(outbox).where(
        outbox.c.status.in_(("queued", "sending")))
    return int(conn.execute(stmt).scalar_one())


def oldest_due(conn: Connection, *, now: datetime) -> datetime | None:
    stmt = select(func.min(outbox.c.next_attempt_at)).where(
        outbox.c.status == "queued", outbox.c.next_attempt_at <= now)
    value: datetime | None = conn.execute(stmt).scalar_one_or_none()
    return value
