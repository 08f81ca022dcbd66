"""Repository functions: every query the gateway makes, keyword-only, one connection each.

They never commit: the caller's transaction (``Database.transaction``) is the boundary.
Core statements on the SQLModel tables keep the USSD hot path short. The statements a USSD
hop runs are built once, with bound parameters, for each dialect: building a statement
and computing its cache key cost several times more than running it on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Executable, Row, Table, bindparam, delete, select, update
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


class _Prepared:
    """A statement built once per dialect (``build`` gets that dialect's ``insert``) and
    run with its values as parameters."""

    def __init__(self, build: Callable[[Callable[[Table], Any]], Executable]) -> None:
        self._by_dialect = {"postgresql": build(postgresql.insert), "sqlite": build(sqlite.insert)}

    def __call__(self, conn: Connection) -> Executable:
        return self._by_dialect[conn.dialect.name]


_GET_SESSION = select(sessions).where(
    sessions.c.provider == bindparam("provider"), sessions.c.session_id == bindparam("session_id")
)
_GET_SESSION_LOCKED = _GET_SESSION.with_for_update()
_FIND_RESUMABLE = (
    select(sessions)
    .where(
        sessions.c.pseudonym == bindparam("pseudonym"),
        sessions.c.status == "active",
        sessions.c.updated_at >= bindparam("since"),
        sessions.c.provider == bindparam("provider"),
    )
    .order_by(sessions.c.updated_at.desc())
    .limit(1)
)
_INSERT_SESSION = sessions.insert().returning(sessions.c.id)
_UPDATE_SESSION = update(sessions).where(sessions.c.id == bindparam("pk_"))
_GET_HOP = select(hops.c.response).where(
    hops.c.session_pk == bindparam("session_pk"), hops.c.text_mac == bindparam("text_mac")
)
_INSERT_HOP = _Prepared(lambda insert: insert(hops).on_conflict_do_nothing())
_GET_CONTACT = select(contacts).where(contacts.c.pseudonym == bindparam("pseudonym"))
_UPDATE_CONTACT = update(contacts).where(contacts.c.pseudonym == bindparam("pseudonym_"))


def _touch_contact(insert: Callable[[Table], Any]) -> Executable:
    stmt = insert(contacts)
    stmt = stmt.on_conflict_do_update(
        index_elements=[contacts.c.pseudonym],
        set_={"last_seen_at": stmt.excluded.last_seen_at},
    ).returning(*contacts.c)
    return stmt  # type: ignore[no-any-return]


_TOUCH_CONTACT = _Prepared(_touch_contact)
_INSERT_REPORT = _Prepared(lambda insert: insert(reports).on_conflict_do_nothing())


def _upsert_poll_answer(insert: Callable[[Table], Any]) -> Executable:
    stmt = insert(poll_answers)
    stmt = stmt.on_conflict_do_update(
        index_elements=[poll_answers.c.poll, poll_answers.c.pseudonym, poll_answers.c.question],
        set_={"answer": stmt.excluded.answer, "flow_version": stmt.excluded.flow_version,
              "updated_at": stmt.excluded.updated_at},
    )
    return stmt  # type: ignore[no-any-return]


_UPSERT_POLL_ANSWER = _Prepared(_upsert_poll_answer)


def _upsert_vault(insert: Callable[[Table], Any]) -> Executable:
    stmt = insert(vault)
    stmt = stmt.on_conflict_do_update(
        index_elements=[vault.c.pseudonym],
        set_={"number": stmt.excluded.number, "updated_at": stmt.excluded.updated_at},
    )
    return stmt  # type: ignore[no-any-return]


_UPSERT_VAULT = _Prepared(_upsert_vault)


# --- USSD sessions -------------------------------------------------------------------


def get_session(
    conn: Connection, *, provider: str, session_id: str, lock: bool = False
) -> Row[Any] | None:
    stmt = _GET_SESSION_LOCKED if lock and conn.dialect.name == "postgresql" else _GET_SESSION
    return conn.execute(stmt, {"provider": provider, "session_id": session_id}).first()


def find_resumable(
    conn: Connection, *, pseudonym: str, since: datetime, provider: str
) -> Row[Any] | None:
    """The latest unfinished session of ``pseudonym`` touched after ``since``."""
    return conn.execute(_FIND_RESUMABLE, {"pseudonym": pseudonym, "since": since,
                                          "provider": provider}).first()


def insert_session(conn: Connection, **values: Any) -> int:
    result = conn.execute(_INSERT_SESSION, values)
    return int(result.scalar_one())


def update_session(conn: Connection, *, pk: int, **values: Any) -> None:
    conn.execute(_UPDATE_SESSION, {"pk_": pk, **values})


def set_session_status(conn: Connection, *, pk: int, status: str) -> None:
    conn.execute(_UPDATE_SESSION, {"pk_": pk, "status": status})


def get_hop(conn: Connection, *, session_pk: int, text_mac: str) -> str | None:
    params = {"session_pk": session_pk, "text_mac": text_mac}
    value = conn.execute(_GET_HOP, params).scalar_one_or_none()
    return str(value) if value is not None else None


def insert_hop(
    conn: Connection, *, session_pk: int, text_mac: str, response: str, now: datetime
) -> None:
    conn.execute(_INSERT_HOP(conn), {"session_pk": session_pk, "text_mac": text_mac,
                                     "response": response, "created_at": now})


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
    return conn.execute(_GET_CONTACT, {"pseudonym": pseudonym}).first()


def touch_contact(
    conn: Connection, *, pseudonym: str, pseudonym_version: int, now: datetime
) -> Row[Any]:
    """The contact for ``pseudonym``, created if new, its last-seen time set to ``now``."""
    row = conn.execute(_TOUCH_CONTACT(conn), {
        "pseudonym": pseudonym, "pseudonym_version": pseudonym_version, "created_at": now,
        "last_seen_at": now, "subscribed": False, "stopped": False,
    }).first()
    assert row is not None
    return row


def update_contact(conn: Connection, *, pseudonym: str, **values: Any) -> None:
    conn.execute(_UPDATE_CONTACT, {"pseudonym_": pseudonym, **values})


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
    result = conn.execute(_INSERT_REPORT(conn), {
        "source": source, "flow": flow, "flow_version": flow_version, "channel": channel,
        "pseudonym": pseudonym, "answers": json.dumps(dict(answers), sort_keys=True),
        "text": text, "status": "new", "created_at": now,
    })
    return bool(result.rowcount)


def upsert_poll_answers(
    conn: Connection, *, poll: str, pseudonym: str, answers: Mapping[str, str],
    flow_version: int, now: datetime,
) -> None:
    """One answer per person per question; a new answer replaces the old one."""
    rows = [{"poll": poll, "pseudonym": pseudonym, "question": question, "answer": answer,
             "flow_version": flow_version, "updated_at": now}
            for question, answer in answers.items()]
    if rows:
        conn.execute(_UPSERT_POLL_ANSWER(conn), rows)


def upsert_vault(conn: Connection, *, pseudonym: str, number: str, now: datetime) -> None:
    conn.execute(_UPSERT_VAULT(conn), {"pseudonym": pseudonym, "number": number,
                                       "updated_at": now})


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
