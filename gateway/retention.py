"""Key rotation and retention: jobs an operator runs (`gateway keys rotate`,
`gateway purge`) and the worker repeats daily.

Both are idempotent and safe to kill: they work in small batches, each its own
transaction, and a second run finds nothing left to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, and_, delete, select, update

from gateway.outbox import outbox
from gateway.privacy import keys as keys_mod
from gateway.privacy.keys import KeyRing
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.queries import contacts, tombstones

log = logging.getLogger("gateway.retention")

BATCH = 500
SESSION_DAYS = 2  # USSD sessions and hops (sealed state) outlive any resume window
INBOUND_DAYS = 7  # provider ids of inbound SMS (providers retry for hours, not days)


@dataclass(frozen=True)
class Retention:
    number_days: int  # raw numbers of contacts inactive this long are deleted
    text_days: int  # report text older than this is deleted
    outbox_days: int  # finished outbound messages (sealed numbers) older than this go

    @classmethod
    def of(cls, settings: Settings) -> Retention:
        return cls(number_days=settings.retention_number_days,
                   text_days=settings.retention_text_days,
                   outbox_days=settings.retention_outbox_days)


@dataclass
class PurgeReport:
    shredded: bool = False
    numbers: int = 0
    texts: int = 0
    sessions: int = 0
    messages: int = 0
    inbound: int = 0
    conversations: int = 0
    restored_erasures: int = 0

    def __str__(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in vars(self).items())


def purge(db: Database, *, retention: Retention, now: datetime,
          key_file: Path | None = None) -> PurgeReport:
    """Apply every retention rule once; with ``key_file``, shred data-wrapping keys after
    erasures so older dumps lose the erased text too."""
    report = PurgeReport()
    report.restored_erasures = _reapply_erasures(db, now=now)
    # Raw numbers of contacts inactive for number_days: without them, nothing is sent.
    cutoff = now - timedelta(days=retention.number_days)
    inactive = select(queries.contacts.c.pseudonym).where(queries.contacts.c.last_seen_at < cutoff)
    while True:
        with db.transaction() as conn:
            batch = [r for r, in conn.execute(
                select(queries.vault.c.pseudonym)
                .where(queries.vault.c.pseudonym.in_(inactive)).limit(BATCH)).all()]
            if not batch:
                break
            conn.execute(delete(queries.vault).where(queries.vault.c.pseudonym.in_(batch)))
            conn.execute(update(queries.contacts).where(queries.contacts.c.pseudonym.in_(batch))
                         .values(subscribed=False, area=None))
            report.numbers += len(batch)
    # Report text older than text_days.
    cutoff = now - timedelta(days=retention.text_days)
    report.texts += _repeat(db, lambda conn: conn.execute(
        update(queries.reports).where(queries.reports.c.id.in_(
            select(queries.reports.c.id).where(queries.reports.c.text.is_not(None),
                                             queries.reports.c.created_at < cutoff)
            .limit(BATCH).scalar_subquery())).values(text=None)).rowcount)
    # USSD sessions (their sealed state, hops and screens) once no resume can need them.
    cutoff = now - timedelta(days=SESSION_DAYS)
    report.sessions += _repeat(db, lambda conn: conn.execute(
        delete(queries.sessions).where(queries.sessions.c.id.in_(
            select(queries.sessions.c.id).where(queries.sessions.c.updated_at < cutoff)
            .limit(BATCH).scalar_subquery()))).rowcount)
    # Finished outbound messages: their sealed numbers go with them.
    cutoff = now - timedelta(days=retention.outbox_days)
    done = outbox.outbox.c.status.in_(
        ("sent", "delivered", "failed", "expired", "cancelled", "unknown"))
    report.messages += _repeat(db, lambda conn: conn.execute(
        delete(outbox.outbox).where(outbox.outbox.c.id.in_(
            select(outbox.outbox.c.id).where(done, outbox.outbox.c.updated_at < cutoff)
            .limit(BATCH).scalar_subquery()))).rowcount)
    from gateway.dialogue.sms import conversations, inbound

    cutoff = now - timedelta(days=INBOUND_DAYS)
    report.inbound += _repeat(db, lambda conn: conn.execute(
        delete(inbound).where(inbound.c.id.in_(
            select(inbound.c.id).where(inbound.c.received_at < cutoff)
            .limit(BATCH).scalar_subquery()))).rowcount)
    with db.transaction() as conn:
        report.conversations += conn.execute(
            delete(conversations).where(conversations.c.expires_at < now)).rowcount
    if key_file is not None:
        report.shredded = shred(db, key_file=key_file, now=now) is not None
    return report


def _repeat(db: Database, step: Callable[[Connection], int]) -> int:
    """Run a batch statement in its own transaction until it changes nothing."""
    total = 0
    while True:
        with db.transaction() as conn:
            changed = int(step(conn))
        total += changed
        if changed == 0:
            return total


def _reapply_erasures(db: Database, *, now: datetime) -> int:
    """A restored backup may bring back an erased contact: erase them again. A contact
    created after the erasure is someone who came back, and is kept."""
    with db.transaction() as conn:
        rows = conn.execute(
            select(contacts.c.pseudonym)
            .join(tombstones, tombstones.c.pseudonym == contacts.c.pseudonym)
            .where(contacts.c.created_at < tombstones.c.erased_at)
        ).all()
        for (pseudonym,) in rows:
            queries.erase_contact(conn, pseudonym=pseudonym, now=now)
        # Rows whose contact row was not in the backup but whose data was.
        orphans = conn.execute(
            select(queries.vault.c.pseudonym).join(
                queries.tombstones, queries.tombstones.c.pseudonym == queries.vault.c.pseudonym)
            .where(and_(queries.vault.c.updated_at < queries.tombstones.c.erased_at))
        ).all()
        for (pseudonym,) in orphans:
            queries.erase_contact(conn, pseudonym=pseudonym, now=now)
    return len(rows) + len(orphans)


@dataclass
class RotationReport:
    master_version: int
    wrap_version: int
    data_keys: int
    numbers: int


def _rewrap_data_keys(db: Database, ring: KeyRing, version: int) -> int:
    """Wrap every contact's data key under data-wrapping ``version``."""
    done, last = 0, 0
    while True:
        with db.transaction() as conn:
            rows = conn.execute(
                select(contacts.c.id, contacts.c.pseudonym, contacts.c.data_key)
                .where(contacts.c.id > last, contacts.c.data_key.is_not(None))
                .order_by(contacts.c.id).limit(BATCH)).all()
            if not rows:
                return done
            for row in rows:
                if keys_mod.version_of(row.data_key) != version:
                    conn.execute(update(queries.contacts).where(queries.contacts.c.id == row.id)
                                 .values(data_key=ring.rewrap(row.data_key,
                                                              pseudonym=row.pseudonym)))
                    done += 1
            last = rows[-1].id


def rotate(db: Database, *, key_file: Path) -> RotationReport:
    """Add a master-key version (and a data-wrapping one) and re-wrap under them what lives
    long: contacts' data keys and the vault. Earlier master versions stay in the key file,
    so everything else (and every backup) stays readable."""
    master = keys_mod.add_master_version(key_file)
    wrap = keys_mod.add_wrap_version(key_file)
    ring: KeyRing = keys_mod.load(key_file, create=False)
    data_keys = _rewrap_data_keys(db, ring, wrap)
    numbers = 0
    last_pseudonym = ""
    while True:
        with db.transaction() as conn:
            rows = conn.execute(
                select(queries.vault).where(queries.vault.c.pseudonym > last_pseudonym)
                .order_by(queries.vault.c.pseudonym).limit(BATCH)).all()
            if not rows:
                break
            for row in rows:
                if keys_mod.version_of(row.number) != master:
                    aad = f"vault:{row.pseudonym}"
                    number = ring.seal_text(ring.open_text(row.number, aad=aad), aad=aad)
                    conn.execute(update(queries.vault).where(
                        queries.vault.c.pseudonym == row.pseudonym).values(number=number))
                    numbers += 1
            last_pseudonym = rows[-1].pseudonym
    return RotationReport(master, wrap, data_keys, numbers)


def shred(db: Database, *, key_file: Path, now: datetime, force: bool = False) -> int | None:
    """After erasures (or with ``force``): wrap every live data key under a new
    data-wrapping key, then destroy the older ones. Returns the new version, or None when
    there was nothing to do. Killed half-way, it is simply run again."""
    with db.transaction() as conn:
        pending = queries.get_counter(conn, name=queries.ERASURES_PENDING_SHRED) or 0
    if not pending and not force:
        return None
    version = keys_mod.add_wrap_version(key_file)
    ring = keys_mod.load(key_file, create=False)
    _rewrap_data_keys(db, ring, version)
    # A replica may have wrapped a new key under the old version meanwhile: sweep again.
    _rewrap_data_keys(db, ring, version)
    dropped = keys_mod.drop_wrap_versions(key_file, keep=version)
    with db.transaction() as conn:
        queries.bump(conn, name=queries.ERASURES_PENDING_SHRED, by=-pending, now=now)
    log.info("shred: data-wrapping key %d is current; destroyed versions %s", version, dropped)
    return version
