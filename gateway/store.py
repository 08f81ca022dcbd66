"""Repository functions: every query the gateway makes, keyword-only, one connection each.

They never commit: the caller's transaction (``Database.transaction``) is the boundary.
Core statements on the SQLModel tables keep the USSD hot path short.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.models import (
    Contact,
    Counter,
    InboundMessage,
    Outbox,
    PollAnswer,
    Report,
    SmsConversation,
    Tombstone,
    UssdEvent,
    UssdHop,
    UssdSession,
    Vault,
)


def _t(model: Any) -> Table:
    table: Table = model.__table__
    return table


contacts = _t(Contact)
vault = _t(Vault)
tombstones = _t(Tombstone)
sessions = _t(UssdSession)
hops = _t(UssdHop)
events = _t(UssdEvent)
reports = _t(Report)
poll_answers = _t(PollAnswer)
counters = _t(Counter)
_outbox = _t(Outbox)
_conversations = _t(SmsConversation)
_inbound = _t(InboundMessage)


def _insert(conn: Connection, table: Table) -> Any:
    """An INSERT that supports ON CONFLICT on both SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --- USSD sessions -------------------------------------------------------------------


def get_session(
    conn: Connection, *, provider: str, session_id: str, lock: bool = False
) -> Row[Any] | None:
    stmt = select(sessions).where(
        sessions.c.provider == provider, sessions.c.session_id == session_id
    )
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.execute(stmt).first()


def find_resumable(
    conn: Connection, *, pseudonym: str, since: datetime, provider: str
) -> Row[Any] | None:
    """The latest unfinished session of ``pseudonym`` touched after ``since``."""
    stmt = (
        select(sessions)
        .where(
            sessions.c.pseudonym == pseudonym,
            sessions.c.status == "active",
            sessions.c.updated_at >= since,
            sessions.c.provider == provider,
        )
        .order_by(sessions.c.updated_at.desc())
        .limit(1)
    )
    return conn.execute(stmt).first()


def insert_session(conn: Connection, **values: Any) -> int:
    result = conn.execute(sessions.insert().values(**values).returning(sessions.c.id))
    return int(result.scalar_one())


def update_session(conn: Connection, *, pk: int, **values: Any) -> None:
    conn.execute(update(sessions).where(sessions.c.id == pk).values(**values))


def set_session_status(conn: Connection, *, pk: int, status: str) -> None:
    conn.execute(update(sessions).where(sessions.c.id == pk).values(status=status))


def get_hop(conn: Connection, *, session_pk: int, text_mac: str) -> str | None:
    stmt = select(hops.c.response).where(
        hops.c.session_pk == session_pk, hops.c.text_mac == text_mac
    )
    value = conn.execute(stmt).scalar_one_or_none()
    return str(value) if value is not None else None


def insert_hop(
    conn: Connection, *, session_pk: int, text_mac: str, response: str, now: datetime
) -> None:
    stmt = _insert(conn, hops).values(
        session_pk=session_pk, text_mac=text_mac, response=response, created_at=now
    ).on_conflict_do_nothing()
    conn.execute(stmt)


def record_ussd_event(
    conn: Connection, *, provider: str, session_id: str, status: str,
    hops_count: int | None, duration_ms: int | None, now: datetime,
) -> None:
    """Store an end-of-session notification once, and note it on the session; a late
    duplicate changes nothing."""
    stmt = _insert(conn, events).values(
        provider=provider, session_id=session_id, status=status, hops=hops_count,
        duration_ms=duration_ms, received_at=now,
    ).on_conflict_do_nothing()
    if not conn.execute(stmt).rowcount:
        return
    changes: dict[str, Any] = {
        "end_status": status, "end_hops": hops_count, "end_duration_ms": duration_ms,
    }
    where = (sessions.c.provider == provider) & (sessions.c.session_id == session_id)
    conn.execute(update(sessions).where(where).values(**changes))


# --- contacts ------------------------------------------------------------------------


def get_contact(conn: Connection, *, pseudonym: str) -> Row[Any] | None:
    return conn.execute(select(contacts).where(contacts.c.pseudonym == pseudonym)).first()


def touch_contact(
    conn: Connection, *, pseudonym: str, pseudonym_version: int, now: datetime
) -> Row[Any]:
    """The contact for ``pseudonym``, created if new, its last-seen time set to ``now``."""
    stmt = _insert(conn, contacts).values(
        pseudonym=pseudonym, pseudonym_version=pseudonym_version, created_at=now,
        last_seen_at=now, subscribed=False, stopped=False,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[contacts.c.pseudonym], set_={"last_seen_at": now}
    ).returning(*contacts.c)
    row = conn.execute(stmt).first()
    assert row is not None
    return row


def update_contact(conn: Connection, *, pseudonym: str, **values: Any) -> None:
    conn.execute(update(contacts).where(contacts.c.pseudonym == pseudonym).values(**values))


def is_tombstoned(conn: Connection, *, pseudonym: str) -> bool:
    stmt = select(tombstones.c.pseudonym).where(tombstones.c.pseudonym == pseudonym)
    return conn.execute(stmt).first() is not None


def erase_contact(conn: Connection, *, pseudonym: str, now: datetime) -> None:
    """Erase what is kept about a contact and leave a tombstone.

    Gone: the vault row (the number), the data key (so their report text is unreadable in
    every backup), their poll answers, their sessions' state, their SMS conversation, the
    messages queued or kept for them (numbers sealed inside) and the contact itself.
    Reports stay as unlinked, coded records: pseudonym cleared, text unreadable. A message
    in flight at this moment is left to finish; the retention job clears it later.
    """
    conn.execute(delete(vault).where(vault.c.pseudonym == pseudonym))
    conn.execute(delete(poll_answers).where(poll_answers.c.pseudonym == pseudonym))
    conn.execute(update(reports).where(reports.c.pseudonym == pseudonym)
                 .values(pseudonym=None, text=None))
    conn.execute(delete(contacts).where(contacts.c.pseudonym == pseudonym))
    conn.execute(delete(_conversations).where(_conversations.c.pseudonym == pseudonym))
    # Keep provider ids (a retried message must stay a duplicate), unlinked.
    conn.execute(update(_inbound).where(_inbound.c.pseudonym == pseudonym).values(pseudonym=""))
    conn.execute(delete(_outbox).where(_outbox.c.pseudonym == pseudonym,
                                       _outbox.c.status != "sending"))
    conn.execute(
        update(sessions).where(sessions.c.pseudonym == pseudonym)
        .values(state="", status="erased")
    )
    conn.execute(
        _insert(conn, tombstones).values(pseudonym=pseudonym, erased_at=now)
        .on_conflict_do_nothing()
    )
    # Older dumps still hold the wrapped data key until the next shred (retention.shred).
    bump(conn, name=ERASURES_PENDING_SHRED, now=now)


# --- reports and polls ---------------------------------------------------------------


def insert_report(
    conn: Connection, *, source: str, flow: str, flow_version: int, channel: str,
    pseudonym: str, answers: Mapping[str, str], text: str | None, now: datetime,
) -> bool:
    """Save a report once per source; False when that source was already saved."""
    stmt = _insert(conn, reports).values(
        source=source, flow=flow, flow_version=flow_version, channel=channel,
        pseudonym=pseudonym, answers=json.dumps(dict(answers), sort_keys=True), text=text,
        status="new", created_at=now,
    ).on_conflict_do_nothing()
    return bool(conn.execute(stmt).rowcount)


def upsert_poll_answers(
    conn: Connection, *, poll: str, pseudonym: str, answers: Mapping[str, str],
    flow_version: int, now: datetime,
) -> None:
    """One answer per person per question; a new answer replaces the old one."""
    for question, answer in answers.items():
        stmt = _insert(conn, poll_answers).values(
            poll=poll, pseudonym=pseudonym, question=question, answer=answer,
            flow_version=flow_version, updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[poll_answers.c.poll, poll_answers.c.pseudonym,
                            poll_answers.c.question],
            set_={"answer": answer, "flow_version": flow_version, "updated_at": now},
        )
        conn.execute(stmt)


def upsert_vault(conn: Connection, *, pseudonym: str, number: str, now: datetime) -> None:
    stmt = _insert(conn, vault).values(pseudonym=pseudonym, number=number, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[vault.c.pseudonym], set_={"number": number, "updated_at": now}
    )
    conn.execute(stmt)


def delete_vault(conn: Connection, *, pseudonym: str) -> None:
    conn.execute(delete(vault).where(vault.c.pseudonym == pseudonym))


ERASURES_PENDING_SHRED = "erasures_pending_shred"


def bump(conn: Connection, *, name: str, by: int = 1, now: datetime) -> None:
    stmt = _insert(conn, counters).values(name=name, value=by, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[counters.c.name],
        set_={"value": counters.c.value + by, "updated_at": now},
    )
    conn.execute(stmt)


def set_counter(conn: Connection, *, name: str, value: int, now: datetime) -> None:
    stmt = _insert(conn, counters).values(name=name, value=value, updated_at=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=[counters.c.name],
                                            set_={"value": value, "updated_at": now}))


def get_counter(conn: Connection, *, name: str) -> int | None:
    value = conn.execute(select(counters.c.value).where(counters.c.name == name))
    found = value.scalar_one_or_none()
    return int(found) if found is not None else None
