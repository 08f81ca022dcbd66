"""The audit trail: who did what to which record, and when. Append-only and hash-chained.

:func:`record` writes an entry in the caller's transaction, so the entry lands if and only if
the action it records does. Call it after the action's own writes (its ids are known then,
and the chain's lock is held for the shortest time). Entries are numbered 1, 2, 3... with no
gap; each one's ``hash`` is the SHA-256 of the previous entry's hash and of a canonical
serialisation of its own fields (:func:`chain_hash`, :func:`canonical`). The head row
(``audit_head``: the last id and hash) moves in the same transaction, so deleting the last
entries shows too. Appends are serialised: on PostgreSQL by locking the head row
(``SELECT ... FOR UPDATE``), on SQLite by the write lock every transaction takes
(``BEGIN IMMEDIATE``, ``gateway.store.db``); two writers can never fork the chain.

:func:`verify` walks the chain and names the first entry that does not verify: an altered
entry (its hash), an inserted or deleted one (the numbering, the previous hash, the head).
The chain is not keyed: someone able to write to the database can recompute every hash
after the entries they change, and the head with them. Keep the head hash that
``gateway audit verify`` prints somewhere else (a log shipped off the server, the backups)
to catch that.

Details are a flat JSON object of ids and codes. A phone number or a report's text never
belongs here; :func:`record` refuses strings that look like a phone number or run long.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, insert, select, update

from gateway.store.models import AuditEntry, AuditHead

GENESIS = "0" * 64  # the "previous hash" of entry 1
HEAD_ID = 1

log_table: Table = AuditEntry.__table__  # type: ignore[attr-defined]
head_table: Table = AuditHead.__table__  # type: ignore[attr-defined]

Scalar = str | int | bool | None
Details = Mapping[str, Scalar | Sequence[Scalar]]

MAX_TEXT = 120  # characters in one detail string: room for an id or a code, not prose
MAX_ITEMS = 200  # values in one detail list
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_WORD = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_ACTOR = re.compile(r"^([a-z][a-z0-9_.-]{0,63}|\([a-z-]{1,30}\))$")  # or "(invalid-name)"
_PHONE_LIKE = re.compile(r"\+?[\d\s().\-/]+")


class AuditBroken(RuntimeError):
    """The chain's head row is missing: nothing can be appended until an admin looks."""


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str | None
    object_id: str | None
    details: str  # the canonical JSON as stored (what the hash covers)
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """The entry as the API shows it (details parsed)."""
        return {
            "id": self.id, "at": self.at.isoformat(), "actor": self.actor,
            "action": self.action, "object_type": self.object_type,
            "object_id": self.object_id, "details": json.loads(self.details),
            "prev_hash": self.prev_hash, "hash": self.hash,
        }

    def __str__(self) -> str:
        what = " ".join(p for p in (self.object_type, self.object_id) if p) or "-"
        return (f"{self.id}  {self.at.isoformat()}  {self.actor}  {self.action}  {what}  "
                f"{self.details}")


@dataclass(frozen=True)
class Broken:
    """Where the chain first fails to verify: the entry's number and why. ``entry`` is
    the stored entry when there is one to show (not for a deleted entry)."""

    entry_id: int | None
    reason: str
    entry: Entry | None = None

    def __str__(self) -> str:
        where = f"audit entry {self.entry_id}" if self.entry_id is not None else "audit log"
        return f"{where} does not verify: {self.reason}"


@dataclass(frozen=True)
class Page:
    items: list[Entry]
    next: int | None  # the cursor for the next (older) page; None: this was the last


def _utc_text(at: datetime) -> str:
    if at.utcoffset() is None:
        raise ValueError("audit times are aware datetimes")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(*, entry_id: int, at: datetime, actor: str, action: str,
              object_type: str | None, object_id: str | None, details: str) -> str:
    """An entry's fields as one JSON array, in a fixed order, ASCII only: the text its
    hash covers. ``details`` goes in as the exact text stored."""
    return json.dumps([entry_id, _utc_text(at), actor, action, object_type, object_id, details],
                      ensure_ascii=True, separators=(",", ":"))


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode("ascii")).hexdigest()


def _looks_like_a_phone_number(value: str) -> bool:
    if _PHONE_LIKE.fullmatch(value) is None or sum(c.isdigit() for c in value) < 8:
        return False
    try:
        ipaddress.ip_address(value)  # an operator's client address may be recorded
    except ValueError:
        return True
    return False


def text_problem(value: str) -> str | None:
    """Why a string may not go into an entry (None: it may): too long to be an id or a
    code, or shaped like a phone number."""
    if len(value) > MAX_TEXT:
        return f"{len(value)} characters is text, not an id or a code"
    if _looks_like_a_phone_number(value):
        return "it looks like a phone number"
    return None


def _check_text(what: str, value: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"audit {what}: {problem}")


def details_json(details: Details | None) -> str:
    """The canonical JSON of ``details`` (sorted keys, ASCII), after checking it holds
    only ids and codes: a flat object of str, int, bool or null values, or lists of them."""
    clean: dict[str, Any] = {}
    for key, value in (details or {}).items():
        if not _KEY.match(key):
            raise ValueError(f"audit detail key {key!r} is not a plain name")
        values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) \
            else [value]
        if len(values) > MAX_ITEMS:
            raise ValueError(f"audit detail {key} has more than {MAX_ITEMS} values")
        for item in values:
            if isinstance(item, str):
                _check_text(f"detail {key}", item)
            elif item is not None and not isinstance(item, int):
                raise ValueError(f"audit detail {key} is a {type(item).__name__}")
        clean[key] = value if not isinstance(value, Sequence) or isinstance(value, str) \
            else values
    return json.dumps(clean, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def record(conn: Connection, *, actor: str, action: str, object_type: str | None,
           object_id: str | int | None, details: Details | None = None,
           now: datetime) -> Entry:
    """Append one entry in the caller's transaction (it commits or rolls back with the
    action). ``actor``: the account name (``"cli"`` for the command line); ``action``:
    a dotted code such as ``account.create``; a refused sign-in names the name tried, or
    ``"(invalid-name)"`` when it could not be an account's; ``object_type``/``object_id``: what it
    touched (``"account"``, ``12``); ``details``: ids and codes only (:func:`details_json`).
    """
    if not _ACTOR.match(actor):
        raise ValueError(f"audit actor {actor!r} is not an account name")
    if not _WORD.match(action):
        raise ValueError(f"audit action {action!r} is not a plain name")
    if object_type is not None and not _WORD.match(object_type):
        raise ValueError(f"audit object type {object_type!r} is not a plain name")
    oid = None if object_id is None else str(object_id)
    if oid is not None:
        _check_text("object id", oid)
        if len(oid) > 64:
            raise ValueError("audit object id longer than 64 characters")
    body = details_json(details)
    at = now.astimezone(UTC)
    head = conn.execute(
        select(head_table.c.last_id, head_table.c.hash)
        .where(head_table.c.id == HEAD_ID).with_for_update()
    ).one_or_none()
    if head is None:
        raise AuditBroken("the audit chain's head row is missing: run `gateway audit verify`")
    entry_id = int(head.last_id) + 1
    digest = chain_hash(head.hash, canonical(
        entry_id=entry_id, at=at, actor=actor, action=action, object_type=object_type,
        object_id=oid, details=body))
    conn.execute(insert(log_table).values(
        id=entry_id, at=at, actor=actor, action=action, object_type=object_type,
        object_id=oid, details=body, prev_hash=head.hash, hash=digest))
    conn.execute(update(head_table).where(head_table.c.id == HEAD_ID)
                 .values(last_id=entry_id, hash=digest, updated_at=at))
    return Entry(entry_id, at, actor, action, object_type, oid, body, head.hash, digest)


def _entry(row: Row[Any]) -> Entry:
    return Entry(row.id, row.at, row.actor, row.action, row.object_type, row.object_id,
                 row.details, row.prev_hash, row.hash)


def _all(conn: Connection, *, batch: int) -> Iterator[Entry]:
    after: int | None = None
    while True:
        query = select(log_table).order_by(log_table.c.id).limit(batch)
        if after is not None:
            query = query.where(log_table.c.id > after)
        rows = conn.execute(query).all()
        for row in rows:
            yield _entry(row)
        if len(rows) < batch:
            return
        after = rows[-1].id


def head(conn: Connection) -> tuple[int, str] | None:
    """The chain head: the last entry's id and hash (None: the head row is missing)."""
    row = conn.execute(select(head_table.c.last_id, head_table.c.hash)
                       .where(head_table.c.id == HEAD_ID)).one_or_none()
    return None if row is None else (int(row.last_id), str(row.hash))


def verify(conn: Connection, *, batch: int = 1000) -> Broken | None:
    """Walk the whole chain; None when it is intact, else the first entry that does not
    verify (an altered, inserted or deleted entry, the last one included)."""
    prev, expected = GENESIS, 1
    for entry in _all(conn, batch=batch):
        if entry.id < expected:
            return Broken(entry.id, "out of sequence (an inserted entry)", entry)
        if entry.id > expected:
            return Broken(expected, f"missing (deleted): the log goes from entry "
                          f"{expected - 1} to entry {entry.id}")
        if entry.prev_hash != prev:
            return Broken(entry.id, "its previous hash is not the hash of entry "
                          f"{entry.id - 1} (an entry before it was replaced or inserted)",
                          entry)
        body = canonical(entry_id=entry.id, at=entry.at, actor=entry.actor, action=entry.action,
                         object_type=entry.object_type, object_id=entry.object_id,
                         details=entry.details)
        if chain_hash(prev, body) != entry.hash:
            return Broken(entry.id, "its content does not match its hash (altered)", entry)
        prev, expected = entry.hash, expected + 1
    last = expected - 1
    at_head = head(conn)
    if at_head is None:
        return Broken(None, "the chain head (table audit_head) is missing")
    head_id, head_hash = at_head
    if head_id > last:
        return Broken(last + 1, f"missing (deleted): the chain head records {head_id} "
                      f"entries, the log ends at entry {last}")
    if head_id < last:
        return Broken(head_id + 1, f"not recorded by the chain head, which ends at entry "
                      f"{head_id} (an inserted entry)")
    if head_hash != prev:
        return Broken(last or None, "its hash is not the one the chain head records "
                      "(the last entry was replaced)")
    return None


def entries(conn: Connection, *, cursor: int | None = None, limit: int = 100,
            actor: str | None = None, action: str | None = None) -> Page:
    """Newest first, ``limit`` at a time; ``cursor`` is the ``next`` of the page before
    (entries older than it). ``actor``/``action`` filter exactly."""
    query = select(log_table).order_by(log_table.c.id.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(log_table.c.id < cursor)
    if actor is not None:
        query = query.where(log_table.c.actor == actor)
    if action is not None:
        query = query.where(log_table.c.action == action)
    rows = conn.execute(query).all()
    items = [_entry(row) for row in rows[:limit]]
    return Page(items, items[-1].id if len(rows) > limit else None)
