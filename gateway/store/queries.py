"""Repository functions: every query the gateway makes, keyword-only, one connection each.

They never commit: the caller's transaction (``Database.transaction``) is the boundary.
Most are SQLAlchemy Core statements on the SQLModel tables, the frequent ones built once
per dialect with bound parameters (building a statement and computing its cache key cost
several times more than running it on SQLite).

A USSD hop's own statements (read the session, save it, create it, note the contact) and
what a finished dialogue saves (reports, poll answers, contact changes) go further: plain
SQL run on the driver connection underneath the caller's transaction (``Driver``). On
SQLite, SQLAlchemy's execution machinery around even a prepared statement costs five
times the statement itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Row,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store.models import (
    BudgetUse,
    Contact,
    Counter,
    InboundMessage,
    Outbox,
    PollAnswer,
    Report,
    SmsConversation,
    Tombstone,
    UssdEvent,
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
events = _t(UssdEvent)
reports = _t(Report)
poll_answers = _t(PollAnswer)
counters = _t(Counter)
_outbox = _t(Outbox)
_conversations = _t(SmsConversation)
_inbound = _t(InboundMessage)
budget_use = _t(BudgetUse)


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


def _touch_contact(insert: Callable[[Table], Any]) -> Executable:
    stmt = insert(contacts)
    stmt = stmt.on_conflict_do_update(
        index_elements=[contacts.c.pseudonym],
        set_={"last_seen_at": stmt.excluded.last_seen_at},
    ).returning(*contacts.c)
    return stmt  # type: ignore[no-any-return]


_TOUCH_CONTACT = _Prepared(_touch_contact)


# --- USSD sessions -------------------------------------------------------------------


class Driver:
    """Plain SQL on the driver connection under a SQLAlchemy transaction.

    Statements are written with ``?`` placeholders (sqlite3's style) and rewritten once
    to ``%s`` for psycopg. Times go to SQLite as the text SQLAlchemy writes there, so
    either kind of query reads them back alike. Errors are the driver's own:
    ``Database.driver_errors`` names them.
    """

    def __init__(self, conn: Connection) -> None:
        self.sqlite = conn.dialect.name == "sqlite"
        self.raw: Any = conn.connection.driver_connection
        self._when: tuple[datetime | None, str] = (None, "")

    def run(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.raw.execute(sql if self.sqlite else _pg_sql(sql), params)

    def run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement for many rows of parameters (executemany)."""
        cursor = self.raw.cursor()
        try:
            cursor.executemany(sql if self.sqlite else _pg_sql(sql), rows)
        finally:
            cursor.close()

    def when(self, value: datetime) -> Any:
        if not self.sqlite:
            return value
        if value is not self._when[0]:  # a hop's statements share one time
            utc = value if value.tzinfo is UTC else value.astimezone(UTC)
            self._when = (value, utc.replace(tzinfo=None).isoformat(" ", "microseconds"))
        return self._when[1]


_PG_SQL: dict[str, str] = {}


def _pg_sql(sql: str) -> str:
    found = _PG_SQL.get(sql)
    if found is None:
        found = _PG_SQL[sql] = sql.replace("?", "%s")
    return found


class SessionRow(NamedTuple):
    id: int
    pseudonym: str
    state: str
    status: str
    text_len: int
    text_mac: str
    response: str
    hops: int
    history: str
    session_id: str = ""  # the provider's (never saved by a hop: it does not change)


_GET_SESSION = (
    "SELECT id, pseudonym, state, status, text_len, text_mac, response, hops, history "
    "FROM ussd_session WHERE provider = ? AND session_id = ?"
)
_GET_SESSION_ON_LINE = (
    "SELECT id, pseudonym, state, status, text_len, text_mac, response, hops, history, "
    "session_id FROM ussd_session WHERE pseudonym = ? AND provider = ? "
    "AND session_id LIKE ? AND updated_at >= ? ORDER BY id DESC LIMIT 1"
)
_FIND_RESUMABLE = (
    "SELECT id, provider, session_id, state FROM ussd_session "
    "WHERE pseudonym = ? AND status = 'active' AND updated_at >= ? AND provider = ? "
    "ORDER BY updated_at DESC LIMIT 1"
)
_INSERT_SESSION = (
    "INSERT INTO ussd_session (provider, session_id, pseudonym, state, status, text_len, "
    "text_mac, response, history, hops, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_UPDATE_SESSION = (
    "UPDATE ussd_session SET state = ?, status = ?, text_len = ?, text_mac = ?, "
    "response = ?, history = ?, hops = ?, updated_at = ? "
    "WHERE id = ? AND hops = ? AND status = 'active'"
)
_SET_SESSION_STATUS = "UPDATE ussd_session SET status = ? WHERE id = ?"
_TOUCH_CONTACT_LANGUAGE = (
    "INSERT INTO contact (pseudonym, pseudonym_version, subscribed, stopped, created_at, "
    "last_seen_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (pseudonym) DO UPDATE SET last_seen_at = excluded.last_seen_at "
    "RETURNING language"
)


_INSERT_REPORT = (
    "INSERT INTO report (source, flow, flow_version, channel, pseudonym, answers, text, "
    "status, created_at, area, had_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
_UPSERT_POLL_ANSWERS: dict[int, str] = {}


def _upsert_poll_answers(count: int) -> str:
    """The upsert of ``count`` poll answers, one statement for them all."""
    sql = _UPSERT_POLL_ANSWERS.get(count)
    if sql is None:
        rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count)
        sql = _UPSERT_POLL_ANSWERS[count] = (
            "INSERT INTO poll_answer (poll, pseudonym, question, answer, flow_version, "  # noqa: S608 - only placeholders go in
            "updated_at, area, gender, age_band, displaced, campaign) "
            f"VALUES {rows} ON CONFLICT (poll, pseudonym, question) DO UPDATE "
            "SET answer = excluded.answer, flow_version = excluded.flow_version, "
            "updated_at = excluded.updated_at, area = excluded.area, "
            "gender = excluded.gender, age_band = excluded.age_band, "
            "displaced = excluded.displaced, campaign = excluded.campaign")
    return sql


_UPSERT_VAULT = (
    "INSERT INTO vault (pseudonym, number, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (pseudonym) DO UPDATE SET number = excluded.number, "
    "updated_at = excluded.updated_at"
)
_CONTACT_COLUMNS = frozenset(contacts.c.keys())
_UPDATE_CONTACT: dict[tuple[str, ...], str] = {}


class Resumable(NamedTuple):
    id: int
    provider: str
    session_id: str
    state: str


def get_session(db: Driver, *, provider: str, session_id: str) -> SessionRow | None:
    """A USSD session by the provider's id."""
    row = db.run(_GET_SESSION, (provider, session_id)).fetchone()
    return SessionRow._make((*row, session_id)) if row is not None else None


def get_session_on_line(db: Driver, *, provider: str, pseudonym: str, line: str,
                        since: datetime) -> SessionRow | None:
    """The latest session of ``pseudonym`` on ``line`` (a per-hop provider's session ids
    begin with the line and ``/``: ``channels.base.line_session_id``), if it was touched
    after ``since``. The pseudonym's index finds its few sessions."""
    if not all(ch.isalnum() or ch in "-." for ch in line):
        raise ValueError("a line is letters, digits, '-' and '.'")
    row = db.run(_GET_SESSION_ON_LINE,
                 (pseudonym, provider, f"{line}/%", db.when(since))).fetchone()
    return SessionRow(*row) if row is not None else None


def find_resumable(db: Driver, *, pseudonym: str, since: datetime,
                   provider: str) -> Resumable | None:
    """The latest unfinished session of ``pseudonym`` touched after ``since``."""
    row = db.run(_FIND_RESUMABLE, (pseudonym, db.when(since), provider)).fetchone()
    return Resumable(*row) if row is not None else None


def insert_session(
    db: Driver, *, provider: str, session_id: str, pseudonym: str, state: str, status: str,
    text_len: int, text_mac: str, response: str, history: str, hops: int, now: datetime,
) -> int:
    """Create a session; its id."""
    when = db.when(now)
    row = db.run(_INSERT_SESSION, (provider, session_id, pseudonym, state, status, text_len,
                                   text_mac, response, history, hops, when, when)).fetchone()
    return int(row[0])


def update_session(
    db: Driver, *, pk: int, expected_hops: int, state: str, status: str, text_len: int,
    text_mac: str, response: str, history: str, hops: int, now: datetime,
) -> bool:
    """Save a hop, unless the session moved on since it was read with ``expected_hops``
    hops (a copy of the hop, or another replica, saved first) or stopped being active
    (erased, or abandoned for a resumed one): then False. Every other write to a session
    row changes its status or leaves the dialogue columns alone, so a row read earlier
    (even one a process remembered) is saved over only if nothing else changed it."""
    cursor = db.run(_UPDATE_SESSION, (state, status, text_len, text_mac, response, history,
                                      hops, db.when(now), pk, expected_hops))
    return bool(cursor.rowcount == 1)


class SessionSave(NamedTuple):
    """One hop's save for ``save_sessions``: the row as it is to be, the hop count it
    was read with, and the time."""

    row: SessionRow
    expected_hops: int
    now: datetime


_SAVE_SESSIONS = "SELECT * FROM save_ussd_sessions(%s::json)"


def save_sessions(conn: Connection, saves: list[SessionSave]) -> list[bool]:
    """``update_session`` for many hops at once (PostgreSQL): whether each was saved. Of
    two saves of one session only the first is tried (the second would find the hop
    count moved on).

    One round trip: the rows go as one JSON parameter to the ``save_ussd_sessions``
    function (migration ``8e4b1c7d2a90``), which runs the guarded UPDATE by primary key
    for each. ``json.dumps`` writes them several times faster than psycopg adapts ten
    arrays, or a row's parameters for one statement each."""
    first: dict[int, SessionSave] = {}
    for save in saves:
        first.setdefault(save.row.id, save)
    payload = json.dumps([
        {"id": r.id, "expected": save.expected_hops, "state": r.state, "status": r.status,
         "text_len": r.text_len, "text_mac": r.text_mac, "response": r.response,
         "history": r.history, "hops": r.hops, "updated_at": save.now.isoformat()}
        for save in first.values() for r in (save.row,)
    ])
    raw: Any = conn.connection.driver_connection
    saved = {found for (found,) in raw.execute(_SAVE_SESSIONS, (payload,)).fetchall()}
    return [save.row.id in saved and first[save.row.id] is save for save in saves]


def set_session_status(db: Driver, *, pk: int, status: str) -> None:
    db.run(_SET_SESSION_STATUS, (status, pk))


def touch_contact_language(
    db: Driver, *, pseudonym: str, pseudonym_version: int, now: datetime
) -> str | None:
    """Create the contact if new, set its last-seen time; its language, if chosen."""
    when = db.when(now)
    row = db.run(_TOUCH_CONTACT_LANGUAGE,
                 (pseudonym, pseudonym_version, False, False, when, when)).fetchone()
    return row[0] if row is not None else None


_TOUCH_CONTACT_FIND_DROPPED = (  # PostgreSQL: both in one round trip
    "WITH c AS (" + _TOUCH_CONTACT_LANGUAGE + ") "  # noqa: S608 - constants only
    "SELECT c.language, r.id, r.provider, r.session_id, r.state FROM c LEFT JOIN LATERAL ("
    + _FIND_RESUMABLE + ") AS r ON true"
)


def touch_contact_find_dropped(
    db: Driver, *, pseudonym: str, pseudonym_version: int, now: datetime,
    since: datetime | None, provider: str,
) -> tuple[str | None, Resumable | None]:
    """``touch_contact_language``, and with ``since`` also ``find_resumable``: one
    statement on PostgreSQL, two on SQLite (which has no writes in a WITH clause)."""
    if db.sqlite or since is None:
        language = touch_contact_language(db, pseudonym=pseudonym,
                                          pseudonym_version=pseudonym_version, now=now)
        found = None if since is None else find_resumable(
            db, pseudonym=pseudonym, since=since, provider=provider)
        return language, found
    row = db.run(_TOUCH_CONTACT_FIND_DROPPED, (
        pseudonym, pseudonym_version, False, False, now, now,
        pseudonym, since, provider)).fetchone()
    return row[0], Resumable(*row[1:]) if row[1] is not None else None


def record_ussd_event(
    conn: Connection, *, provider: str, session_id: str, status: str,
    hops_count: int | None, duration_ms: int | None, now: datetime,
) -> None:
    """Store an end-of-session notification once, and note it on the session; a late
    duplicate changes nothing."""
    stmt = _insert(conn, events).values(
        provider=provider, session_id=session_id, status=status, hops=hops_count,
        duration_ms=duration_ms, received_at=now,
    ).on_conflict_do_nothing().returning(events.c.id)
    if conn.execute(stmt).first() is None:  # rowcount is -1 here on PostgreSQL
        return
    changes: dict[str, Any] = {
        "end_status": status, "end_hops": hops_count, "end_duration_ms": duration_ms,
    }
    where = (sessions.c.provider == provider) & (sessions.c.session_id == session_id)
    conn.execute(update(sessions).where(where).values(**changes))


# --- contacts ------------------------------------------------------------------------


def get_contact(conn: Connection, *, pseudonym: str) -> Row[Any] | None:
    return conn.execute(select(contacts).where(contacts.c.pseudonym == pseudonym)).first()


def get_data_key(conn: Connection, *, pseudonym: str) -> str | None:
    """The contact's wrapped data key, if they have one."""
    row = Driver(conn).run("SELECT data_key FROM contact WHERE pseudonym = ?",
                           (pseudonym,)).fetchone()
    return row[0] if row is not None else None


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
    names = tuple(values)
    sql = _UPDATE_CONTACT.get(names)
    if sql is None:
        if not names or not _CONTACT_COLUMNS.issuperset(names):
            raise ValueError(f"not columns of contact: {sorted(names)}")
        assignments = ", ".join(f"{name} = ?" for name in names)
        sql = _UPDATE_CONTACT[names] = \
            f"UPDATE contact SET {assignments} WHERE pseudonym = ?"  # noqa: S608 - names checked
    db = Driver(conn)
    params = [db.when(v) if isinstance(v, datetime) else v for v in values.values()]
    db.run(sql, (*params, pseudonym))


def is_tombstoned(conn: Connection, *, pseudonym: str) -> bool:
    stmt = select(tombstones.c.pseudonym).where(tombstones.c.pseudonym == pseudonym)
    return conn.execute(stmt).first() is not None


def outbox_of(pseudonym: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """Two conditions that together find a contact's outbox messages, each through its own
    index (run a statement once with each): a broadcast's messages by the contact's id, the
    others by pseudonym. The first needs the contact row: use it before deleting that."""
    o = _outbox.c
    contact_id = select(contacts.c.id).where(contacts.c.pseudonym == pseudonym)
    return (and_(o.contact_id.is_(None), o.pseudonym == pseudonym),
            and_(o.contact_id.is_not(None), o.contact_id == contact_id.scalar_subquery(),
                 o.pseudonym == pseudonym))


def erase_contact(conn: Connection, *, pseudonym: str, now: datetime) -> None:
    """Erase what is kept about a contact and leave a tombstone.

    Gone: the vault row (the number), the data key (so their number and report text are
    unreadable in every backup once the next purge has shredded), their poll answers, their
    sessions' state, their SMS conversation, the messages queued or kept for them (numbers
    sealed inside) and the contact itself. Reports stay as unlinked, coded records:
    pseudonym cleared, text gone. A message in flight at this moment is left to finish; the
    retention job clears it later. The next purge copies the tombstone into the key file,
    where a database restore cannot take it back (``retention.purge``).
    """
    for theirs in outbox_of(pseudonym):  # before the contact, whose id finds broadcasts'
        conn.execute(delete(_outbox).where(theirs, _outbox.c.status != "sending"))
    conn.execute(delete(vault).where(vault.c.pseudonym == pseudonym))
    conn.execute(delete(poll_answers).where(poll_answers.c.pseudonym == pseudonym))
    conn.execute(update(reports).where(reports.c.pseudonym == pseudonym)
                 .values(pseudonym=None, text=None))
    conn.execute(delete(contacts).where(contacts.c.pseudonym == pseudonym))
    conn.execute(delete(_conversations).where(_conversations.c.pseudonym == pseudonym))
    # Keep provider ids (a retried message must stay a duplicate), unlinked.
    conn.execute(update(_inbound).where(_inbound.c.pseudonym == pseudonym).values(pseudonym=""))
    conn.execute(
        update(sessions).where(sessions.c.pseudonym == pseudonym)
        .values(state="", status="erased")
    )
    stmt = _insert(conn, tombstones).values(pseudonym=pseudonym, erased_at=now)
    conn.execute(stmt.on_conflict_do_update(  # erased again after coming back: the latest
        index_elements=[tombstones.c.pseudonym], set_={"erased_at": stmt.excluded.erased_at}))


def erase_restored(conn: Connection, *, pseudonym: str, erased_at: datetime) -> bool:
    """Erase again what a database restore brought back of a contact erased at
    ``erased_at``: everything of theirs dated before it (a resident who came back after the
    erasure keeps what they did since). True when something was there."""
    changed = 0
    for stmt in (
        # Their messages first: a broadcast's are found by the contact's id.
        *(delete(_outbox).where(theirs, _outbox.c.status != "sending",
                                _outbox.c.created_at < erased_at)
          for theirs in outbox_of(pseudonym)),
        delete(contacts).where(contacts.c.pseudonym == pseudonym,
                               contacts.c.created_at < erased_at),
        delete(vault).where(vault.c.pseudonym == pseudonym, vault.c.updated_at < erased_at),
        delete(poll_answers).where(poll_answers.c.pseudonym == pseudonym,
                                   poll_answers.c.updated_at < erased_at),
        update(reports).where(reports.c.pseudonym == pseudonym,
                              reports.c.created_at < erased_at).values(pseudonym=None, text=None),
        delete(_conversations).where(_conversations.c.pseudonym == pseudonym,
                                     _conversations.c.updated_at < erased_at),
        update(_inbound).where(_inbound.c.pseudonym == pseudonym,
                               _inbound.c.received_at < erased_at).values(pseudonym=""),
        update(sessions).where(sessions.c.pseudonym == pseudonym,
                               sessions.c.created_at < erased_at, sessions.c.state != "")
        .values(state="", status="erased"),
    ):
        changed += conn.execute(stmt).rowcount
    return changed > 0


# --- reports and polls ---------------------------------------------------------------


def insert_report(
    conn: Connection, *, source: str, flow: str, flow_version: int, channel: str,
    pseudonym: str, answers: Mapping[str, str], text: str | None, now: datetime,
    area: str | None = None,
) -> bool:
    """Save a report once per source; False when that source was already saved. ``area``:
    the commune, else the cercle, its answers give (the reviewers' scope)."""
    db = Driver(conn)
    cursor = db.run(_INSERT_REPORT, (
        source, flow, flow_version, channel, pseudonym,
        json.dumps(dict(answers), sort_keys=True), text, "new", db.when(now), area,
        text is not None,
    ))
    return bool(cursor.rowcount)


class Respondent(NamedTuple):
    """Who answered and where, as one submission gave it (None: not asked or not given):
    saved with each of its answers, so results group without a join."""

    area: str | None = None  # the commune, else the cercle
    gender: str | None = None
    age_band: str | None = None
    displaced: str | None = None
    campaign: int | None = None


NOBODY_KNOWN = Respondent()


def upsert_poll_answers(
    conn: Connection, *, poll: str, pseudonym: str, answers: Mapping[str, str],
    flow_version: int, now: datetime, respondent: Respondent = NOBODY_KNOWN,
) -> None:
    """One answer per person per question; a new answer replaces the old one, and the
    respondent's groups with it. (Triggers keep ``poll_tally`` in step.)"""
    db = Driver(conn)
    when = db.when(now)
    params: list[Any] = []
    for question, answer in answers.items():
        params += (poll, pseudonym, question, answer, flow_version, when, *respondent)
    if params:
        db.run(_upsert_poll_answers(len(answers)), tuple(params))


class CampaignEntry(NamedTuple):
    """A radio campaign a code or keyword names: its id, its poll, the code (or keyword)
    matched, and whether it runs now (only then do answers count for it)."""

    id: int
    poll: str
    matched: str
    active: bool


_CAMPAIGN_BY: dict[tuple[str, int], str] = {}


def _campaigns_by(column: str, count: int) -> str:
    sql = _CAMPAIGN_BY.get((column, count))
    if sql is None:
        marks = ", ".join(["?"] * count)
        sql = _CAMPAIGN_BY[(column, count)] = (
            f"SELECT id, poll, {column}, CASE WHEN starts_at <= ? AND ends_at > ? "  # noqa: S608 - a column name from this module, and placeholders
            f"THEN 1 ELSE 0 END FROM campaign WHERE {column} IN ({marks})")
    return sql


def find_campaign(db: Driver, *, service_codes: Sequence[str] = (),
                  keyword: str | None = None, now: datetime) -> CampaignEntry | None:
    """The campaign one of ``service_codes`` (the longest that matches) or ``keyword``
    (folded) names: among several with that code, the one running now, else the latest
    made."""
    column, values = ("keyword_folded", [keyword]) if keyword is not None else \
        ("service_code", list(dict.fromkeys(service_codes)))
    if not values:
        return None
    when = db.when(now)
    rows = db.run(_campaigns_by(column, len(values)), (when, when, *values)).fetchall()
    if not rows:
        return None
    best = max(rows, key=lambda r: (len(r[2]), r[3], r[0]))
    return CampaignEntry(int(best[0]), str(best[1]), str(best[2]), bool(best[3]))


def upsert_vault(conn: Connection, *, pseudonym: str, number: str, now: datetime) -> None:
    db = Driver(conn)
    db.run(_UPSERT_VAULT, (pseudonym, number, db.when(now)))


def delete_vault(conn: Connection, *, pseudonym: str) -> None:
    conn.execute(delete(vault).where(vault.c.pseudonym == pseudonym))


class VaultEntry(NamedTuple):
    number: str  # sealed with the data key: KeyRing.open_number(data_key, number, ...)
    data_key: str | None


def get_vault(conn: Connection, *, pseudonym: str) -> VaultEntry | None:
    """A contact's sealed number and the wrapped data key that opens it."""
    row = conn.execute(
        select(vault.c.number, contacts.c.data_key)
        .select_from(vault.outerjoin(contacts, contacts.c.pseudonym == vault.c.pseudonym))
        .where(vault.c.pseudonym == pseudonym)).first()
    return VaultEntry(row.number, row.data_key) if row is not None else None


def replace_data_key(conn: Connection, *, pseudonym: str, wrapped: str) -> None:
    """Give a contact a new data key: what the old one sealed (report text, the vault
    number) can no longer be read and goes."""
    update_contact(conn, pseudonym=pseudonym, data_key=wrapped)
    conn.execute(update(reports).where(reports.c.pseudonym == pseudonym,
                                       reports.c.text.is_not(None)).values(text=None))
    conn.execute(delete(vault).where(vault.c.pseudonym == pseudonym))


# The tables the USSD hops, the SMS and the outbox look rows up in, one at a time.
LOOKED_UP = (sessions.name, contacts.name, vault.name, _conversations.name, _outbox.name)
_STALE = text(
    "SELECT relname FROM pg_stat_user_tables WHERE relname IN :tables "
    "AND n_mod_since_analyze > :base + :fraction * n_live_tup ORDER BY relname",
).bindparams(bindparam("tables", expanding=True))


def refresh_statistics(conn: Connection, *, tables: Sequence[str] = LOOKED_UP,
                       base: int = 50, fraction: float = 0.1) -> list[str]:
    """PostgreSQL: ANALYZE each of ``tables`` that changed by more than ``base`` rows and
    ``fraction`` of its rows since its statistics were taken (autovacuum's own rule,
    applied now instead of at its next round, a minute or more away, or never where it is
    off); the tables analyzed. Nothing on SQLite.

    Why now: a plan is kept (psycopg prepares the statements a connection runs often, a
    PL/pgSQL function keeps its plans), and one made while a table was nearly empty reads
    every row. On a fresh database the USSD hops' session saves and lookups scanned the
    whole session table, each hop slower than the one before (0.1 ms to 0.9 ms a save
    within a minute of the benchmark); an ANALYZE makes every kept plan of the table
    plan again."""
    if conn.dialect.name != "postgresql":
        return []
    stale = [str(name) for name in conn.execute(
        _STALE, {"tables": list(tables), "base": base, "fraction": fraction}).scalars()]
    for name in stale:
        conn.exec_driver_sql(f"ANALYZE {name}")
    return stale


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


def all_counters(conn: Connection) -> dict[str, int]:
    return {str(name): int(value) for name, value in
            conn.execute(select(counters.c.name, counters.c.value).order_by(counters.c.name))}


def get_counter(conn: Connection, *, name: str) -> int | None:
    value = conn.execute(select(counters.c.value).where(counters.c.name == name))
    found = value.scalar_one_or_none()
    return int(found) if found is not None else None


# --- flood limits --------------------------------------------------------------------


def budget_used(conn: Connection, *, pseudonym: str, what: str, hour: datetime,
                day: datetime) -> tuple[int, int]:
    """How many ``what`` (``reply``, ``report``) the contact used since ``hour`` and since
    ``day``."""
    recent = func.coalesce(func.sum(case((budget_use.c.at >= hour, 1), else_=0)), 0)
    row = conn.execute(select(recent, func.count()).where(
        budget_use.c.pseudonym == pseudonym, budget_use.c.what == what,
        budget_use.c.at >= day)).one()
    return int(row[0]), int(row[1])


def use_budget(conn: Connection, *, pseudonym: str, what: str, now: datetime) -> None:
    conn.execute(budget_use.insert().values(pseudonym=pseudonym, what=what, at=now))


def forget_budget_use(conn: Connection, *, before: datetime) -> int:
    """Delete what no limit counts any more (older than a day)."""
    return int(conn.execute(delete(budget_use).where(budget_use.c.at < before)).rowcount)
