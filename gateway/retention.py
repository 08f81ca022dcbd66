"""Key rotation, retention and erasure that outlives the database: jobs an operator runs
(`gateway keys rotate`, `gateway keys shred`, `gateway purge`) and the worker repeats daily.

All are idempotent and safe to kill: they work in small batches, each its own
transaction, and a second run finds nothing left to do. Every row they rewrite is
rewritten only if it is still what they read (compare-and-set), so they run beside live
traffic.

Erasure, from SUPPRIMER to every backup:

1. the request erases the contact in the database and leaves a tombstone
   (``queries.erase_contact``);
2. the next purge copies the tombstone into the key file's erasure record, which no
   database restore reaches, and shreds (``shred``): the contact's bucket of data-wrapping
   keys and the master keys get new versions, every live row is wrapped or sealed again,
   the older versions are destroyed. From then on no copy of the database taken before,
   restored or not, has the contact's number, text or state read with the key file;
3. a purge after a restore erases again what the restore brought back of every contact
   in the record (``_reapply_erasures``), and clears what a shred left unreadable
   (``_clear_unreadable``). It rewrites the key file only when that changes something.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Select,
    Table,
    and_,
    case,
    delete,
    not_,
    or_,
    select,
    update,
)

from gateway.dialogue.sms import conversations, inbound
from gateway.dialogue.ussd import data_key, session_ref
from gateway.outbox import outbox
from gateway.privacy import keys as keys_mod
from gateway.privacy.keys import KeyGone, KeyRing, as_utc, bucket_of
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.queries import contacts, tombstones

log = logging.getLogger("gateway.retention")

BATCH = 500
SESSION_DAYS = 2  # USSD sessions and hops (sealed state) outlive any resume window
INBOUND_DAYS = 7  # provider ids of inbound SMS (providers retry for hours, not days)
LIVE = ("queued", "sending")  # outbox rows whose sealed number is still needed
_T = TypeVar("_T")


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
    restored_erasures: int = 0  # contacts a restore brought back after their erasure
    unreadable: int = 0  # rows left unreadable by a shred (from an older dump), cleared
    migrated_numbers: int = 0  # vault numbers moved from the master key to data keys

    def __str__(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in vars(self).items())


def purge(db: Database, *, retention: Retention, now: datetime,
          key_file: Path | None = None) -> PurgeReport:
    """Apply every retention rule once. With ``key_file``: erase again what a restore
    brought back of erased contacts, record new erasures in the key file and shred."""
    report = PurgeReport()
    ring: KeyRing | None = None
    if key_file is not None:
        keys_mod.ensure_buckets(key_file)  # key files made before buckets: once
        ring = keys_mod.load(key_file, create=False)
    tomb = _tombstones(db)
    erasures = dict(tomb)
    for pseudonym, when in (ring.erased.items() if ring is not None else ()):
        erasures[pseudonym] = max(when, erasures.get(pseudonym, when))
    again = _reapply_erasures(db, erasures=erasures, ring=ring)
    report.restored_erasures = again.contacts
    if ring is not None:
        report.unreadable = _clear_unreadable(db, ring, now=now)
        report.migrated_numbers = _seal_numbers_under_data_keys(db, ring, now=now)
        if ring.legacy is not None:  # data keys wrapped before buckets move into them
            _rewrap_data_keys(db, ring, buckets=set())
    _retention_rules(db, retention=retention, now=now, report=report)
    if key_file is not None and ring is not None:
        new = {p: t for p, t in tomb.items() if p not in ring.erased or ring.erased[p] < t}
        buckets = {bucket_of(p) for p in new} | again.buckets
        if new or buckets or again.master or ring.shredding is not None:
            report.shredded = shred(db, key_file=key_file, now=now, buckets=buckets,
                                    erased=new) is not None
    return report


def _retention_rules(db: Database, *, retention: Retention, now: datetime,
                     report: PurgeReport) -> None:
    # Raw numbers of contacts inactive for number_days: without them, nothing is sent.
    cutoff = now - timedelta(days=retention.number_days)
    inactive = select(contacts.c.pseudonym).where(contacts.c.last_seen_at < cutoff)
    while True:
        with db.transaction() as conn:
            batch = [r for r, in conn.execute(
                select(queries.vault.c.pseudonym)
                .where(queries.vault.c.pseudonym.in_(inactive)).limit(BATCH)).all()]
            if not batch:
                break
            conn.execute(delete(queries.vault).where(queries.vault.c.pseudonym.in_(batch)))
            conn.execute(update(contacts).where(contacts.c.pseudonym.in_(batch))
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
    done = outbox.outbox.c.status.not_in(LIVE)
    finished = select(outbox.outbox.c.id).where(done, outbox.outbox.c.updated_at < cutoff)
    report.messages += _repeat(db, lambda conn: conn.execute(
        delete(outbox.outbox).where(outbox.outbox.c.id.in_(
            finished.limit(BATCH).scalar_subquery()))).rowcount, probe=finished)
    cutoff = now - timedelta(days=INBOUND_DAYS)
    report.inbound += _repeat(db, lambda conn: conn.execute(
        delete(inbound).where(inbound.c.id.in_(
            select(inbound.c.id).where(inbound.c.received_at < cutoff)
            .limit(BATCH).scalar_subquery()))).rowcount)
    with db.transaction() as conn:
        report.conversations += conn.execute(
            delete(conversations).where(conversations.c.expires_at < now)).rowcount


def _repeat(db: Database, step: Callable[[Connection], int],
            probe: Select[Any] | None = None) -> int:
    """Run a batch statement in its own transaction until it changes nothing. With
    ``probe`` (the rows it would change), first look in a read-only transaction whether
    there is anything to do: on SQLite a read takes no write lock, so the usual answer,
    nothing, keeps no USSD hop waiting while a whole table is read."""
    if probe is not None and not _any(db, probe):
        return 0
    total = 0
    while True:
        with db.transaction() as conn:
            changed = int(step(conn))
        total += changed
        if changed == 0:
            return total


def _any(db: Database, rows: Select[Any]) -> bool:
    with db.reading() as conn:
        return conn.execute(rows.limit(1)).first() is not None


def _chunks(items: list[_T], size: int = BATCH) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _by_id(db: Database, table: Table, pk: Column[Any], where: ColumnElement[bool],
           columns: Iterable[Column[Any]], work: Callable[[Connection, Any], bool],
           wants: Callable[[Any], bool] | None = None,
           before_batch: Callable[[], None] | None = None) -> int:
    """Walk the rows of ``table`` matching ``where`` in primary-key order, calling ``work``
    on each that ``wants`` picks (every one without it); how many it changed. Each batch is
    read in a read-only transaction (on SQLite it takes no write lock: walking a hundred
    thousand contacts to find the few to change kept USSD hops waiting); the rows picked
    are read again, locked, in a write transaction of their own for ``work``.
    ``before_batch`` runs before each batch is picked from."""
    changed, last = 0, None
    columns = tuple(columns)
    while True:
        stmt = select(pk, *columns).where(where)
        if last is not None:
            stmt = stmt.where(pk > last)
        with db.reading() as conn:
            rows = conn.execute(stmt.order_by(pk).limit(BATCH)).all()
        if not rows:
            return changed
        last = rows[-1][0]
        if before_batch is not None:
            before_batch()
        picked = [row[0] for row in rows if wants is None or wants(row)]
        if not picked:
            continue
        with db.transaction() as conn:
            again = conn.execute(select(pk, *columns).where(where, pk.in_(picked))
                                 .order_by(pk).with_for_update()).all()
            for row in again:
                changed += bool(work(conn, row))


# --- erasures a restore brought back -------------------------------------------------


def _tombstones(db: Database) -> dict[str, datetime]:
    with db.transaction() as conn:
        return {p: as_utc(t) for p, t in conn.execute(
            select(tombstones.c.pseudonym, tombstones.c.erased_at))}


@dataclass
class _Again:
    contacts: int = 0
    buckets: set[str] = field(default_factory=set)  # data keys still readable: shred
    master: bool = False  # brief state still readable: shred the master keys


_LINKED = (contacts, queries.vault, queries.poll_answers, queries.reports, queries.sessions,
           outbox.outbox, conversations)


def _reapply_erasures(db: Database, *, erasures: dict[str, datetime],
                      ring: KeyRing | None) -> _Again:
    """Erase again, for every erased pseudonym, what is dated before its erasure: a
    restored backup brought it back. A contact created after the erasure is someone who
    came back, and is kept. Notes whether anything brought back is still readable with
    the key file (the restore came before the shred): then it must be shredded."""
    found = _Again()
    for chunk in _chunks(sorted(erasures)):
        with db.transaction() as conn:
            present: set[str] = set()
            for table in _LINKED:
                present.update(p for (p,) in conn.execute(
                    select(table.c.pseudonym).where(table.c.pseudonym.in_(chunk)).distinct()))
            for pseudonym in sorted(present):
                when = erasures[pseudonym]
                if ring is not None:
                    buckets, master = _readable(conn, ring, pseudonym=pseudonym, before=when)
                    if buckets:
                        found.buckets.add(bucket_of(pseudonym))
                    found.master = found.master or master
                had_contact = conn.execute(select(contacts.c.id).where(
                    contacts.c.pseudonym == pseudonym, contacts.c.created_at < when)).first()
                if queries.erase_restored(conn, pseudonym=pseudonym, erased_at=when) and \
                        had_contact is not None:
                    found.contacts += 1
                    log.warning("purge: contact %s, erased, came back with a restored "
                                "database; erased again", pseudonym[:8])
    return found


def _readable(conn: Connection, ring: KeyRing, *, pseudonym: str,
              before: datetime) -> tuple[bool, bool]:
    """Whether what is kept of ``pseudonym`` from before ``before`` can still be opened:
    (its data key, any brief state or legacy vault number under a master key)."""
    wrapped = conn.execute(select(contacts.c.data_key).where(
        contacts.c.pseudonym == pseudonym, contacts.c.created_at < before)).scalar()
    data = wrapped is not None and ring.data_key_alive(wrapped, pseudonym=pseudonym)
    sealed = [
        *conn.execute(select(queries.vault.c.number).where(
            queries.vault.c.pseudonym == pseudonym,
            queries.vault.c.updated_at < before)).scalars(),
        *conn.execute(select(outbox.outbox.c.recipient).where(
            outbox.outbox.c.pseudonym == pseudonym,
            outbox.outbox.c.created_at < before)).scalars(),
        *conn.execute(select(queries.sessions.c.state).where(
            queries.sessions.c.pseudonym == pseudonym,
            queries.sessions.c.created_at < before)).scalars(),
        *conn.execute(select(conversations.c.state).where(
            conversations.c.pseudonym == pseudonym,
            conversations.c.updated_at < before)).scalars(),
    ]
    return data, any(ring.master_alive(token) for token in sealed if token)


# --- what a shred left unreadable ------------------------------------------------------


def _not_under(column: Column[Any], prefix: str, versions: Iterable[int]) -> ColumnElement[bool]:
    """``column`` holds a ``prefix`` ciphertext (a master key's: ``m``) under none of
    ``versions``. Anything else in it (a number copied from the vault, sealed with a data
    key) is left alone."""
    return and_(column.like(f"{prefix}%"),
                not_(or_(*(column.like(f"{prefix}{v}.%") for v in versions))))


def _clear_data_key(conn: Connection, pseudonym: str) -> None:
    """A contact whose data key can no longer be unwrapped: what it sealed goes too (their
    number, so they are no longer subscribed; their reports' text)."""
    queries.update_contact(conn, pseudonym=pseudonym, data_key=None)
    conn.execute(update(queries.reports).where(queries.reports.c.pseudonym == pseudonym,
                                               queries.reports.c.text.is_not(None))
                 .values(text=None))
    if conn.execute(delete(queries.vault).where(
            queries.vault.c.pseudonym == pseudonym)).rowcount:
        queries.update_contact(conn, pseudonym=pseudonym, subscribed=False, area=None)


def _clear_unreadable(db: Database, ring: KeyRing, *, now: datetime) -> int:
    """Rows restored from a dump older than a shred hold ciphertext nobody can open any
    more: clear it, so that nothing fails on it later."""
    ring.refresh()

    def data_keys(conn: Connection, row: Any) -> bool:
        if ring.data_key_alive(row.data_key, pseudonym=row.pseudonym):
            return False
        _clear_data_key(conn, row.pseudonym)
        return True

    def dead(row: Any) -> bool:
        # Picks the rows ``data_keys`` looks at again under the lock, with the key file
        # looked at once a batch, not for each of a hundred thousand contacts (a stat each:
        # a third of the daily purge's time, on a thread beside the USSD hops).
        return not ring.data_key_alive(row.data_key, pseudonym=row.pseudonym, refresh=False)

    cleared = _by_id(db, contacts, contacts.c.id, contacts.c.data_key.is_not(None),
                     (contacts.c.pseudonym, contacts.c.data_key), data_keys,
                     wants=dead, before_batch=ring.refresh)
    masters = sorted(ring.master.aeads)
    vault = queries.vault
    # Numbers from before data keys, or with no key left (looked for without the write
    # lock first: there are none but after a restore).
    orphans = select(vault.c.pseudonym).outerjoin(
        contacts, contacts.c.pseudonym == vault.c.pseudonym).where(
        or_(and_(vault.c.number.like("m%"), _not_under(vault.c.number, "m", masters)),
            and_(vault.c.number.like("n%"), contacts.c.data_key.is_(None))))
    if _any(db, orphans):
        with db.transaction() as conn:
            gone = [p for (p,) in conn.execute(orphans)]
            for chunk in _chunks(gone):
                conn.execute(delete(vault).where(vault.c.pseudonym.in_(chunk)))
                conn.execute(update(contacts).where(contacts.c.pseudonym.in_(chunk))
                             .values(subscribed=False, area=None))
            cleared += len(gone)
    box, sessions = outbox.outbox, queries.sessions
    live_unreadable = select(box.c.id).where(_not_under(box.c.recipient, "m", masters),
                                             box.c.status.in_(LIVE))
    cleared += _repeat(db, lambda conn: conn.execute(
        update(box).where(box.c.id.in_(live_unreadable.limit(BATCH).scalar_subquery()))
        .values(recipient="", status="failed", last_error="key-gone", lease_owner=None,
                lease_until=None, updated_at=now)).rowcount, probe=live_unreadable)
    unreadable = select(box.c.id).where(_not_under(box.c.recipient, "m", masters))
    cleared += _repeat(db, lambda conn: conn.execute(
        update(box).where(box.c.id.in_(unreadable.limit(BATCH).scalar_subquery()))
        .values(recipient="")).rowcount, probe=unreadable)
    stale = select(sessions.c.id).where(_not_under(sessions.c.state, "m", masters))
    cleared += _repeat(db, lambda conn: conn.execute(
        update(sessions).where(sessions.c.id.in_(stale.limit(BATCH).scalar_subquery()))
        .values(state="", status=case((sessions.c.status == "active", "abandoned"),
                                      else_=sessions.c.status))).rowcount, probe=stale)
    with db.transaction() as conn:
        cleared += conn.execute(delete(conversations).where(
            _not_under(conversations.c.state, "m", masters))).rowcount
    if cleared:
        log.warning("purge: cleared %d row(s) a shred had left unreadable (a database "
                    "restored from before it)", cleared)
    return cleared


# --- sealing again -----------------------------------------------------------------------


def _seal_numbers_under_data_keys(db: Database, ring: KeyRing, *, now: datetime) -> int:
    """Vault numbers sealed under a master key (before this version) move under their
    contact's own data key, so that a shred reaches every copy of them."""
    vault = queries.vault

    def move(conn: Connection, row: Any) -> bool:
        if not ring.master_alive(row.number):
            return False  # _clear_unreadable's
        if queries.get_contact(conn, pseudonym=row.pseudonym) is None:
            conn.execute(delete(vault).where(vault.c.pseudonym == row.pseudonym))
            return True
        number = ring.open_text(row.number, aad=f"vault:{row.pseudonym}")
        wrapped = data_key(conn, ring, pseudonym=row.pseudonym)
        queries.upsert_vault(conn, pseudonym=row.pseudonym, now=row.updated_at,
                             number=ring.seal_number(wrapped, number, pseudonym=row.pseudonym))
        return True

    del now
    return _by_id(db, vault, vault.c.pseudonym, vault.c.number.like("m%"),
                  (vault.c.number, vault.c.updated_at), move,
                  wants=lambda row: ring.master_alive(row.number))


def _rewrap_data_keys(db: Database, ring: KeyRing, *, buckets: set[str] | None) -> int:
    """Wrap under its bucket's current version every data key of ``buckets`` (all when
    None) that is not, and every one still under the global family of older key files.
    A data key that can no longer be unwrapped is cleared."""
    def rewrap(conn: Connection, row: Any) -> bool:
        legacy = row.data_key.startswith("w")
        if not legacy and ((buckets is not None and bucket_of(row.pseudonym) not in buckets)
                           or ring.wrapped_current(row.data_key, pseudonym=row.pseudonym)):
            return False
        try:
            fresh = ring.rewrap(row.data_key, pseudonym=row.pseudonym)
        except KeyGone:
            _clear_data_key(conn, row.pseudonym)
            return True
        conn.execute(update(contacts).where(contacts.c.id == row.id,
                                            contacts.c.data_key == row.data_key)
                     .values(data_key=fresh))
        return True

    return _by_id(db, contacts, contacts.c.id, contacts.c.data_key.is_not(None),
                  (contacts.c.pseudonym, contacts.c.data_key), rewrap)


def _reseal_brief(db: Database, ring: KeyRing, *, now: datetime) -> int:
    """Seal again under the current master version every live row of brief state, and
    drop the sealed state nothing needs any more (numbers of finished messages, state of
    finished sessions): after this, no older master version is needed."""
    current = f"m{ring.master.current}.%"
    box, sessions = outbox.outbox, queries.sessions
    done = _repeat(db, lambda conn: conn.execute(
        update(box).where(box.c.id.in_(
            select(box.c.id).where(box.c.status.not_in(LIVE), box.c.recipient != "")
            .limit(BATCH).scalar_subquery())).values(recipient="")).rowcount)
    done += _repeat(db, lambda conn: conn.execute(
        update(sessions).where(sessions.c.id.in_(
            select(sessions.c.id).where(sessions.c.status != "active", sessions.c.state != "")
            .limit(BATCH).scalar_subquery())).values(state="")).rowcount)

    def reseal(table: Table, column: Column[Any], aad: Callable[[Any], str],
               dead: dict[str, Any] | None) -> Callable[[Connection, Any], bool]:
        def work(conn: Connection, row: Any) -> bool:
            token = getattr(row, column.name)
            pk = table.primary_key.columns.values()[0]
            where = and_(pk == row[0], column == token)
            try:
                fresh = ring.seal_text(ring.open_text(token, aad=aad(row)), aad=aad(row))
            except KeyGone:
                if dead is None:
                    conn.execute(delete(table).where(where))
                else:
                    conn.execute(update(table).where(where).values(**dead))
                return True
            conn.execute(update(table).where(where).values({column.name: fresh}))
            return True
        return work

    done += _by_id(db, box, box.c.id, and_(box.c.status.in_(LIVE), box.c.recipient.like("m%"),
                                           box.c.recipient.not_like(current)),
                   (box.c.dedupe_key, box.c.recipient),
                   reseal(box, box.c.recipient, lambda r: f"outbox:{r.dedupe_key}",
                          {"recipient": "", "status": "failed", "last_error": "key-gone",
                           "updated_at": now}))
    done += _by_id(db, sessions, sessions.c.id,
                   and_(sessions.c.status == "active", sessions.c.state != "",
                        sessions.c.state.not_like(current)),
                   (sessions.c.provider, sessions.c.session_id, sessions.c.state),
                   reseal(sessions, sessions.c.state,
                          lambda r: session_ref(r.provider, r.session_id),
                          {"state": "", "status": "abandoned"}))
    done += _by_id(db, conversations, conversations.c.pseudonym,
                   conversations.c.state.not_like(current), (conversations.c.state,),
                   reseal(conversations, conversations.c.state, lambda r: f"sms:{r[0]}", None))
    return done


# --- rotation and the shred --------------------------------------------------------------


@dataclass
class RotationReport:
    master_version: int
    wrap_version: int
    data_keys: int
    numbers: int


def rotate(db: Database, *, key_file: Path, now: datetime) -> RotationReport:
    """Add a master-key version and a version to every data-wrapping bucket, and wrap every
    data key under its bucket's new version (vault numbers, under data keys, follow).
    Earlier versions stay in the key file, so everything else (and every backup) stays
    readable until the next shred."""
    master, wrap = keys_mod.rotate_versions(key_file)
    ring = keys_mod.load(key_file, create=False)
    numbers = _seal_numbers_under_data_keys(db, ring, now=now)
    data_keys = _rewrap_data_keys(db, ring, buckets=None)
    return RotationReport(master, wrap, data_keys, numbers)


def shred(db: Database, *, key_file: Path, now: datetime, buckets: Iterable[str] = (),
          erased: dict[str, datetime] | None = None, force: bool = False) -> int | None:
    """Record ``erased`` in the key file, then give ``buckets`` (every bucket with
    ``force``) and the master keys new versions, wrap and seal every live row under them,
    and destroy the older versions. Returns the new master version, or None when there
    was nothing to do. Killed half-way, it is simply run again: the key file notes the
    shred under way, which the next run finishes without adding versions."""
    wanted = set(keys_mod.BUCKETS) if force else set(buckets)
    ring = keys_mod.load(key_file, create=False)
    if not wanted and not erased and ring.shredding is None and not force:
        return None
    marker = keys_mod.begin_shred(key_file, buckets=wanted, erased=erased)
    ring = keys_mod.load(key_file, create=False)
    for _sweep in range(2):  # a replica may have sealed under an old version meanwhile
        _seal_numbers_under_data_keys(db, ring, now=now)
        _rewrap_data_keys(db, ring, buckets=set(marker.buckets))
        _reseal_brief(db, ring, now=now)
    dropped = keys_mod.finish_shred(key_file)
    log.info("shred: master key %d and %d bucket(s) of data-wrapping keys renewed; %d older "
             "key(s) destroyed", marker.master, len(marker.buckets), dropped)
    return marker.master
