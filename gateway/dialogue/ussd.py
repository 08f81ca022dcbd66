"""The USSD service: one provider hop in, one screen out, state kept in the database.

Per hop: find the session by the provider's session id, work out the latest input from
the cumulative ``text`` (without ever storing that text: only its length and a keyed
digest), run the engine, then save the new state (sealed) with the answer, so a repeated
hop gets the identical screen, and carry out the engine's effects. Saving is conditional on
the session not having changed since it was read; a hop that loses that race (a copy of
it, or another replica, saved first) is run again and answers as a repeat. On SQLite the
whole hop is one transaction (``handle``). On PostgreSQL (``handle_batched``) reading and
saving are jobs run in batches with other hops' jobs, one transaction per batch (in the
database process of ``gateway.dialogue.ussd_process``, or by ``Batches`` on a thread),
and the row a hop saved is remembered so the session's next hop skips the read; without the
batches (an app run without its lifespan) they are one autocommit round trip each, and a
save with effects is one transaction (``Database.hop``).

Nothing here does network I/O. Any failure answers ``END`` with a short apology.

Every hop of a session carries the same ``phoneNumber``. Reading it with libphonenumber
costs more than the rest of a hop's bookkeeping, so the service remembers, for the numbers
it saw recently, a keyed digest of the raw field and the pseudonym it led to: never the
number itself. The E.164 form is worked out again only on a hop that needs it (one with
effects, such as a subscription storing the number in the vault).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from gateway.channels.base import UssdEnded, UssdTurn
from gateway.content.catalogs import Content
from gateway.content.flowdef import Action
from gateway.dialogue import limits as flood
from gateway.dialogue.engine import LANGUAGE_FLOW, MAIN_FLOW, OTHER, Effect, Engine, State, Turn
from gateway.dialogue.limits import Limits
from gateway.outbox import outbox
from gateway.privacy.keys import KeyGone, KeyRing
from gateway.privacy.phone import normalise
from gateway.store import queries
from gateway.store.batches import Batches
from gateway.store.db import Database, DatabaseBusy
from gateway.store.models import utcnow

log = logging.getLogger("gateway.dialogue.ussd")

MAX_DEEP_DIAL = 8  # inputs accepted on a session's first request (*code*1*2#)
DEFAULT_LANGUAGE = "fr"
KNOWN_NUMBERS = 4096  # digests of recent raw phone numbers -> pseudonyms kept in memory
HOP_ATTEMPTS = 3  # a hop whose session changed after it was read is run again
HISTORY_HOPS = 4  # earlier hops of a session whose screens a late repeat gets again
RECENT_SESSIONS = 4096  # rows of active sessions a process remembers (handle_batched)
RECENT_SECONDS = 600.0  # ... and for how long


@dataclass(frozen=True)
class UssdPolicy:
    default_region: str = "ML"
    resume_minutes: int = 5
    # Per-hop providers: a session untouched this long was ended by the operator, and a
    # later answer on its line is not for it.
    line_timeout_seconds: int = 180
    limits: Limits = field(default_factory=Limits)  # reports per contact
    code: str = "*123#"  # the main code: dialling it opens no radio campaign


class UssdService:
    def __init__(
        self, *, db: Database, keys: KeyRing, engine: Engine, policy: UssdPolicy,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.keys = keys
        self.engine = engine
        self.policy = policy
        self.clock = clock
        languages = engine.content.languages
        self.default_language = DEFAULT_LANGUAGE if DEFAULT_LANGUAGE in languages else languages[0]
        self._apologies = {lang: "END " + engine.say(lang, "apology") for lang in languages}
        self._pseudonyms: OrderedDict[str, str] = OrderedDict()
        self._pseudonyms_lock = threading.Lock()  # PostgreSQL hops run on a thread pool
        self.recent = RecentSessions()
        self.poll_flows = poll_flows(engine.content)

    def apology(self, lang: str | None = None) -> str:
        return self._apologies.get(lang or self.default_language,
                                   self._apologies[self.default_language])

    # --- hops ------------------------------------------------------------------------

    def handle(self, turn: UssdTurn) -> str:
        """The response body (``CON …`` or ``END …``) for one hop. Never raises, but
        ``DatabaseBusy`` when the context asked not to wait for SQLite's lock."""
        try:
            pseudonym = self._pseudonym(turn.phone)
            if pseudonym is None:
                return self._unreadable(turn)
            for attempt in range(1, HOP_ATTEMPTS + 1):
                try:
                    with self.db.hop() as conn:
                        body = self._hop(conn, turn, pseudonym)
                    if body is not None:
                        return body
                    # Another copy of this hop (or another replica) saved the session
                    # after this one read it: read it again, and answer as a repeat.
                except Exception as exc:
                    if not self._try_again(exc, attempt):
                        raise
            return self._kept_changing(turn)
        except DatabaseBusy:
            raise  # the caller chose not to wait for the lock here: it waits elsewhere
        except Exception as exc:
            return self._failed(turn, exc)

    async def handle_batched(self, turn: UssdTurn, batches: HopJobs) -> str:
        """``handle`` for PostgreSQL, with the database work done in ``batches`` (the
        jobs of many hops in one transaction, their saves in one round trip), and the
        session rows this process saved remembered, so that the next hop of a session
        needs one job: the save. The save is conditional on the row being unchanged, so
        a remembered row that another replica (or an erasure) made stale is never saved
        over: the hop reads the session again. Never raises."""
        try:
            pseudonym = self._pseudonym(turn.phone)
            if pseudonym is None:
                return self._unreadable(turn)
            # A later hop of a per-hop provider is always read: another replica may have
            # begun a newer session on its line.
            key = None if turn.on_line else (turn.provider, turn.session_id)
            for attempt in range(1, HOP_ATTEMPTS + 1):
                try:
                    body = await self._hop_batched(turn, pseudonym, key, batches,
                                                   retry=attempt > 1)
                    if body is not None:
                        return body
                except Exception as exc:
                    if key is not None:
                        self.recent.forget(key)
                    if not self._try_again(exc, attempt):
                        raise
            return self._kept_changing(turn)
        except Exception as exc:
            return self._failed(turn, exc)

    async def _hop_batched(self, turn: UssdTurn, pseudonym: str,
                           key: tuple[str, str] | None, batches: HopJobs, *,
                           retry: bool) -> str | None:
        row = self.recent.get(key) if key is not None else None
        if row is None:
            found = await batches.read_or_begin(self, turn=turn, pseudonym=pseudonym,
                                                read=retry)
            if found is None:
                return self._lost(turn)
            if not isinstance(found, queries.SessionRow):  # a first hop, done in that job
                body, row, effects = found
                if key is not None:
                    self.recent.put(key, row, keep=row.status == "active" and not effects)
                return body
            row = found
        turn = self._bound(turn, row)
        plan = self._plan(turn, pseudonym, row)
        if isinstance(plan, str):
            return plan
        # The save goes in one round trip with the batch's others; its effects, if any,
        # follow in the same transaction once it is known to have landed.
        saved = await batches.save(self, queries.SessionSave(plan.row, row.hops, plan.now),
                                   turn=turn, pseudonym=pseudonym,
                                   plan=plan if plan.result.effects else None)
        if key is None:
            return plan.body if saved else None
        if not saved:
            self.recent.forget(key)
            return None
        erased = any(e.action is Action.erase for e in plan.result.effects)
        self.recent.put(key, plan.row, keep=plan.row.status == "active" and not erased)
        return plan.body

    def _apply_if_saved(self, conn: Connection, saved: bool, *, turn: UssdTurn,
                        pseudonym: str, plan: Save) -> bool:
        if saved:
            self._apply(conn, turn, pseudonym, plan.result, plan.now)
        return saved

    def _read_or_begin(
        self, conn: Connection, *, turn: UssdTurn, pseudonym: str, read: bool,
    ) -> queries.SessionRow | Begun | None:
        """A job: the session's row, or, for a new session, its first hop done (None: a
        later hop of a per-hop provider with no live session on its line). Unless
        ``read``, a dial (empty text: always a session's first hop, or a copy of it) skips
        the read; a copy then fails to create the session again, and its next attempt
        reads."""
        if read or turn.text or turn.on_line:
            row = self._find(queries.Driver(conn), turn, pseudonym)
            if row is not None or turn.on_line:
                return row
        return self._first_hop(conn, turn, pseudonym)

    def _find(self, db: queries.Driver, turn: UssdTurn,
              pseudonym: str) -> queries.SessionRow | None:
        """The hop's session: by the provider's session id, or for a later hop of a
        per-hop provider, the phone's latest session on the line, unless the operator
        has ended it by now."""
        if not turn.on_line:
            return queries.get_session(db, provider=turn.provider, session_id=turn.session_id)
        since = self.clock() - timedelta(seconds=self.policy.line_timeout_seconds)
        return queries.get_session_on_line(db, provider=turn.provider, pseudonym=pseudonym,
                                           line=turn.line, since=since)

    @staticmethod
    def _bound(turn: UssdTurn, row: queries.SessionRow) -> UssdTurn:
        """A per-hop provider's later hop, with the id of the session its line led to."""
        return replace(turn, session_id=row.session_id) if turn.on_line else turn

    def _try_again(self, exc: Exception, attempt: int) -> bool:
        """Whether a hop that raised ``exc`` on this attempt is run again."""
        if attempt == HOP_ATTEMPTS:
            return False
        if isinstance(exc, KeyGone):
            # A shred sealed the session again under a new master key and destroyed the
            # one this hop's copy of the row (remembered, or read just before) needs: the
            # next attempt reads the row as it is now.
            return True
        if isinstance(exc, (IntegrityError, self.db.driver_errors.IntegrityError)):
            # Two copies of a session's first hop raced; the next attempt finds the
            # session the first one created and answers as a repeat.
            return True
        # PostgreSQL restarted under a kept connection (Database dropped the others): try
        # again on a fresh one. A save that did land before the connection broke is found
        # and answered as a repeat. On SQLite this is a lock timeout, already ten seconds
        # long: no retry.
        return isinstance(exc, (OperationalError, self.db.driver_errors.OperationalError)) \
            and not self.db.sqlite

    def _unreadable(self, turn: UssdTurn) -> str:
        log.warning("ussd: caller unreadable; session %s refused", turn.session_id)
        return self.apology()

    def _lost(self, turn: UssdTurn) -> str:
        log.warning("ussd: %s answer %s on no live session; apology", turn.provider,
                    turn.hop_id)
        return self.apology()

    def _kept_changing(self, turn: UssdTurn) -> str:
        log.warning("ussd: session %s kept changing under its hop; apology", turn.session_id)
        return self.apology()

    def _failed(self, turn: UssdTurn, exc: Exception) -> str:
        if isinstance(exc, (OperationalError, self.db.driver_errors.OperationalError)):
            log.error("ussd: database unavailable (%s); session %s got an apology",
                      exc.__class__.__name__, turn.session_id)
        else:
            log.error("ussd: %s while handling session %s\n%s", exc.__class__.__name__,
                      turn.session_id, frames(exc))
        return self.apology()

    def _pseudonym(self, phone: str) -> str | None:
        """The pseudonym of a hop's phone number (raw), or None when it is unreadable."""
        digest = self.keys.mac("ussd-phone", phone)
        with self._pseudonyms_lock:
            known = self._pseudonyms.get(digest)
            if known is not None:
                self._pseudonyms.move_to_end(digest)
                return known
        e164 = normalise(phone, self.policy.default_region)
        if e164 is None:
            return None
        pseudonym = self.keys.pseudonym(e164)
        with self._pseudonyms_lock:
            self._pseudonyms[digest] = pseudonym
            if len(self._pseudonyms) > KNOWN_NUMBERS:
                self._pseudonyms.popitem(last=False)
        return pseudonym

    def _e164(self, turn: UssdTurn) -> str | None:
        return normalise(turn.phone, self.policy.default_region)

    def _hop(self, conn: Connection, turn: UssdTurn, pseudonym: str) -> str | None:
        """The hop's answer, or None when the session changed after it was read."""
        row = self._find(queries.Driver(conn), turn, pseudonym)
        if row is None:
            if turn.on_line:
                return self._lost(turn)
            return self._first_hop(conn, turn, pseudonym)[0]
        turn = self._bound(turn, row)
        plan = self._plan(turn, pseudonym, row)
        if isinstance(plan, str):
            return plan
        return plan.body if self._save(conn, turn, pseudonym, row.hops, plan) else None

    def _plan(self, turn: UssdTurn, pseudonym: str, row: queries.SessionRow) -> str | Save:
        """What a hop on a session read as ``row`` does: answer without saving anything
        (a repeat, a refusal), or advance the dialogue and save (``Save``). Pure: no
        database work, so a ``row`` remembered from an earlier hop serves as well."""
        if row.pseudonym != pseudonym:
            log.warning("ussd: session %s continued from another number; refused",
                        turn.session_id)
            return self.apology()
        text_mac = self._hop_mac(turn)
        if row.text_mac == text_mac:
            return row.response  # the same hop again: the same screen
        if turn.hop_id is not None:  # a per-hop provider: the hop's own input
            earlier = earlier_screen(row.history, text_mac)
            if earlier is not None:
                return earlier
            latest: str | None = turn.text
        else:
            latest = self._latest_input(turn, row)
        if latest is None:
            earlier = earlier_screen(row.history, text_mac)
            if earlier is not None:
                return earlier
            latest = turn.text.rsplit("*", 1)[-1]  # history diverged: best effort
        if row.status != "active":
            return row.response if row.status == "ended" else self.apology()
        state = State.loads(self.keys.open_text(row.state, aad=self._aad(turn)))
        result = self.engine.advance(state, latest)
        body = self._body(result)
        saved = row._replace(
            state=self._seal(turn, result), status=self._status(result),
            text_len=len(turn.text), text_mac=text_mac, response=body,
            history=remember(row.history, row.text_mac, row.response), hops=row.hops + 1)
        return Save(body, saved, result, self.clock())

    def _save(self, conn: Connection, turn: UssdTurn, pseudonym: str, expected_hops: int,
              plan: Save) -> bool:
        """Save a planned hop and carry out its effects, all or nothing; False (nothing
        done) when the session changed since it was read with ``expected_hops``."""
        row = plan.row
        with self.db.together(conn, needed=bool(plan.result.effects)):
            saved = queries.update_session(
                queries.Driver(conn), pk=row.id, expected_hops=expected_hops, state=row.state,
                status=row.status, text_len=row.text_len, text_mac=row.text_mac,
                response=row.response, history=row.history, hops=row.hops, now=plan.now,
            )
            if saved:
                self._apply(conn, turn, pseudonym, plan.result, plan.now)
        return saved

    def _first_hop(
        self, conn: Connection, turn: UssdTurn, pseudonym: str,
    ) -> Begun:
        """The first hop of a session: its answer, the session row it created, and
        whether the dialogue asked for effects."""
        now = self.clock()
        db = queries.Driver(conn)
        text_mac = self._hop_mac(turn)
        look = turn.text == "" and self.policy.resume_minutes > 0
        language, old = queries.touch_contact_find_dropped(
            db, pseudonym=pseudonym, pseudonym_version=self.keys.pseudonym_version, now=now,
            since=now - timedelta(minutes=self.policy.resume_minutes) if look else None,
            provider=turn.provider)
        lang = language or self.default_language
        dropped = self._dropped(old)
        opened, deep = self._campaign(db, turn, now)
        entry = campaign = None
        if opened is not None:
            entry = self.poll_flows[opened.poll]
            campaign = opened.id if opened.active else None
        if dropped is not None:
            result = self.engine.begin("", lang, suspended=dropped[1], entry=entry,
                                       campaign=campaign)
        elif entry is not None and language:
            result = self.engine.begin(entry, lang, campaign=campaign)
        elif entry is not None:  # a new phone chooses its language, then the poll
            result = self.engine.begin(LANGUAGE_FLOW, lang, entry=entry, campaign=campaign)
        else:
            result = self.engine.begin(MAIN_FLOW if language else LANGUAGE_FLOW, lang)
        effects: list[Effect] = []
        if deep:  # a deep dial (*code*1*2#) or a session first seen mid-way
            for part in deep.split("*")[:MAX_DEEP_DIAL]:
                effects.extend(result.effects)
                if result.state.ended:
                    break
                result = self.engine.advance(result.state, part)
        result = Turn(result.screen, result.state, (*effects, *result.effects))
        body = self._body(result)
        with self.db.together(conn, needed=bool(result.effects) or dropped is not None):
            if dropped is not None:  # it is offered here, and never again
                queries.set_session_status(db, pk=dropped[0], status="abandoned")
            row = queries.SessionRow(
                id=0, pseudonym=pseudonym, state=self._seal(turn, result),
                status=self._status(result), text_len=len(turn.text), text_mac=text_mac,
                response=body, hops=1, history="")
            pk = queries.insert_session(
                db, provider=turn.provider, session_id=turn.session_id, pseudonym=pseudonym,
                state=row.state, status=row.status, text_len=row.text_len,
                text_mac=text_mac, response=body, history="", hops=1, now=now,
            )
            self._apply(conn, turn, pseudonym, result, now)
        return body, row._replace(id=pk), bool(result.effects)

    def _campaign(self, db: queries.Driver, turn: UssdTurn,
                  now: datetime) -> tuple[queries.CampaignEntry | None, str]:
        """The radio campaign the dialled code names (None: none, or its poll is not in
        the flows), and the inputs dialled after its code (a deep dial)."""
        if turn.text == "" and turn.service_code == self.policy.code:
            return None, turn.text  # the main code: no query
        codes = dialled_codes(turn.service_code, turn.text)
        found = queries.find_campaign(db, service_codes=[c for c, _ in codes], now=now) \
            if codes else None
        if found is None or found.poll not in self.poll_flows:
            return None, turn.text
        return found, dict(codes)[found.matched]

    def _dropped(self, old: queries.Resumable | None) -> tuple[int, State] | None:
        """The session this phone dropped within the window (``queries.find_resumable``)
        and its unfinished dialogue, if it has one."""
        if old is None or not old.state or not self.keys.master_alive(old.state):
            return None  # nothing to offer (or state a shred left unreadable)
        old_state = State.loads(self.keys.open_text(
            old.state, aad=session_ref(old.provider, old.session_id)))
        if old_state.suspended is not None:  # the offer itself was dropped: offer again
            old_state = old_state.suspended
        if old_state.ended:
            return None
        return old.id, old_state

    @staticmethod
    def _body(result: Turn) -> str:
        return ("END " if result.screen.end else "CON ") + result.screen.text

    @staticmethod
    def _status(result: Turn) -> str:
        return "ended" if result.screen.end else "active"

    def _seal(self, turn: UssdTurn, result: Turn) -> str:
        return self.keys.seal_text(result.state.dumps(), aad=self._aad(turn))

    def _apply(
        self, conn: Connection, turn: UssdTurn, pseudonym: str, result: Turn, now: datetime,
    ) -> None:
        if not result.effects:
            return

        def e164() -> str:
            number = self._e164(turn)
            assert number is not None  # it was readable when the pseudonym was made
            return number

        apply_effects(conn, self.keys, result.effects, pseudonym=pseudonym, e164=e164,
                      language=result.state.lang, source=self._aad(turn), channel="ussd",
                      now=now, limits=self.policy.limits)

    def _latest_input(self, turn: UssdTurn, row: queries.SessionRow) -> str | None:
        """The input this hop adds to the last one handled, or None if it adds none.

        The text is the previous text plus ``*`` plus the new input, so the new input is
        everything after that prefix, a ``*`` the resident typed included. The first
        answer after the dial (previous text empty) is the whole text.
        """
        text, prev_len = turn.text, row.text_len
        if prev_len == 0:  # the dial's text was empty, this text differs from it
            return text
        if len(text) > prev_len and text[prev_len] == "*" and \
                self._text_mac(turn, text[:prev_len]) == row.text_mac:
            return text[prev_len + 1:]
        return None

    def _text_mac(self, turn: UssdTurn, text: str) -> str:
        return self.keys.mac("ussd", turn.provider, turn.session_id, text)

    def _hop_mac(self, turn: UssdTurn) -> str:
        """What names a hop, so a repeat of it is known: the cumulative text, or a
        per-hop provider's id of the hop."""
        if turn.hop_id is None:
            return self._text_mac(turn, turn.text)
        return self.keys.mac("ussd-hop", turn.provider, turn.session_id, turn.hop_id)

    @staticmethod
    def _aad(turn: UssdTurn) -> str:
        return session_ref(turn.provider, turn.session_id)

    # --- end-of-session notifications -------------------------------------------------

    def ended(self, event: UssdEnded) -> None:
        """Note the end of a session. Its dialogue is left as it was: an unfinished one
        is offered again to the same phone dialling within the resume window."""
        with self.db.transaction() as conn:
            session_id = event.session_id
            if not session_id:  # a per-hop provider names the phone and the line
                pseudonym = self._pseudonym(event.phone)
                # An end may come after the operator's timeout: it is still that end.
                window = max(self.policy.line_timeout_seconds, self.policy.resume_minutes * 60)
                row = None if pseudonym is None else queries.get_session_on_line(
                    queries.Driver(conn), provider=event.provider, pseudonym=pseudonym,
                    line=event.line, since=self.clock() - timedelta(seconds=window))
                if row is None:
                    return
                session_id = row.session_id
            queries.record_ussd_event(
                conn, provider=event.provider, session_id=session_id,
                status=event.status, hops_count=event.hops, duration_ms=event.duration_ms,
                now=self.clock(),
            )


Begun = tuple[str, queries.SessionRow, bool]  # a first hop's answer, its row, whether effects


class HopJobs(Protocol):
    """Where ``handle_batched`` sends a hop's database work: ``InThread`` (a thread of
    this process) or ``gateway.dialogue.ussd_process.DbWorker`` (a process of its own)."""

    async def read_or_begin(self, service: UssdService, *, turn: UssdTurn, pseudonym: str,
                            read: bool) -> queries.SessionRow | Begun | None: ...

    async def save(self, service: UssdService, save: queries.SessionSave, *, turn: UssdTurn,
                   pseudonym: str, plan: Save | None) -> bool: ...


class InThread:
    """A hop's jobs run by ``Batches``: the read (or first hop) as a job, the save as an
    item of the batch's one save, its effects (``plan``, when it has some) after it."""

    def __init__(self, batches: Batches) -> None:
        self.batches = batches

    async def read_or_begin(self, service: UssdService, *, turn: UssdTurn, pseudonym: str,
                            read: bool) -> queries.SessionRow | Begun | None:
        found: queries.SessionRow | Begun | None = await self.batches.run(functools.partial(
            service._read_or_begin, turn=turn, pseudonym=pseudonym, read=read))
        return found

    async def save(self, service: UssdService, save: queries.SessionSave, *, turn: UssdTurn,
                   pseudonym: str, plan: Save | None) -> bool:
        then = None if plan is None else functools.partial(
            service._apply_if_saved, turn=turn, pseudonym=pseudonym, plan=plan)
        saved: bool = await self.batches.run_in(queries.save_sessions, save, then)
        return saved


class Save(NamedTuple):
    """A hop that advances the dialogue: its answer, the session row to save, the
    engine's turn (its effects) and the time it was worked out."""

    body: str
    row: queries.SessionRow
    result: Turn
    now: datetime


class RecentSessions:
    """The rows of the USSD sessions this process saved lately, while still active.

    Only a hop's ``handle_batched`` uses them, on the event loop's thread. A row is a
    guess: the save after it is conditional, and a failed one forgets it. Rows older than
    ``seconds`` are not used (an operator ends a session within a few minutes).
    """

    def __init__(self, size: int = RECENT_SESSIONS, seconds: float = RECENT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.seconds, self.clock = size, seconds, clock
        self._rows: OrderedDict[tuple[str, str], tuple[float, queries.SessionRow]] = \
            OrderedDict()

    def get(self, key: tuple[str, str]) -> queries.SessionRow | None:
        found = self._rows.get(key)
        if found is None:
            return None
        if self.clock() - found[0] > self.seconds:
            del self._rows[key]
            return None
        return found[1]

    def put(self, key: tuple[str, str], row: queries.SessionRow, *, keep: bool = True) -> None:
        """Remember ``row`` (or, unless ``keep``, forget the session)."""
        if not keep:
            self.forget(key)
            return
        self._rows[key] = (self.clock(), row)
        self._rows.move_to_end(key)
        if len(self._rows) > self.size:
            self._rows.popitem(last=False)

    def forget(self, key: tuple[str, str]) -> None:
        self._rows.pop(key, None)

    def __len__(self) -> int:
        return len(self._rows)


def frames(exc: BaseException) -> str:
    """A traceback's frames without the exception's message, which may quote data."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()


def session_ref(provider: str, session_id: str) -> str:
    """A USSD session's name: the associated data its sealed state is bound to, and the
    ``source`` of the report it saves."""
    return f"ussd:{provider}:{session_id}"


def remember(history: str, text_mac: str, response: str) -> str:
    """``history`` with one more answered hop, the oldest dropped past ``HISTORY_HOPS``."""
    if not text_mac:
        return history
    line = f"{text_mac}\t{json.dumps(response)}"
    lines = history.split("\n") if history else []
    lines.append(line)
    return "\n".join(lines[-HISTORY_HOPS:])


def earlier_screen(history: str, text_mac: str) -> str | None:
    """The screen an earlier hop with this text got, if it is still remembered."""
    for line in history.split("\n") if history else ():
        mac, _, body = line.partition("\t")
        if mac == text_mac:
            found: str = json.loads(body)
            return found
    return None


def poll_flows(content: Content) -> dict[str, str]:
    """Each poll and the flow that asks it (of several, the first by name): what a radio
    campaign's code or keyword opens."""
    found: dict[str, str] = {}
    for name in sorted(content.flows):
        poll = content.flows[name].poll
        if poll:
            found.setdefault(poll, name)
    return found


def dialled_codes(service_code: str, text: str) -> list[tuple[str, str]]:
    """The codes a first hop may have dialled, longest first, each with the inputs dialled
    after it: Africa's Talking sends ``*123#`` and ``5*1`` for ``*123*5*1#`` (its code and
    the rest), Kannel the whole string. Nothing for what is not a ``*…#`` code."""
    code = service_code.strip()
    if len(code) < 3 or not code.startswith("*") or not code.endswith("#"):
        return []
    parts = code[1:-1].split("*") + (text.split("*")[:MAX_DEEP_DIAL] if text else [])
    return [("*" + "*".join(parts[:i]) + "#", "*".join(parts[i:]))
            for i in range(len(parts), 0, -1)]


def area_of(coded: Mapping[str, str]) -> str | None:
    """The place a dialogue's answers give: the commune, else the cercle (the commune was
    "other / don't know"), else None."""
    commune, cercle = coded.get("commune"), coded.get("cercle")
    if commune not in (None, OTHER):
        return commune
    return cercle if cercle != OTHER else None


def data_key(conn: Connection, keys: KeyRing, *, pseudonym: str) -> str:
    """The contact's wrapped data key, made now if they have none (or only one that a
    shred left unreadable: it came back from an older dump)."""
    wrapped = queries.get_data_key(conn, pseudonym=pseudonym)
    if wrapped is not None and keys.data_key_alive(wrapped, pseudonym=pseudonym):
        return wrapped
    fresh = keys.new_data_key(pseudonym=pseudonym)
    if wrapped is None:
        queries.update_contact(conn, pseudonym=pseudonym, data_key=fresh)
    else:
        queries.replace_data_key(conn, pseudonym=pseudonym, wrapped=fresh)
    return fresh


def apply_effects(
    conn: Connection, keys: KeyRing, effects: Iterable[Effect], *, pseudonym: str,
    e164: str | Callable[[], str], language: str, source: str, channel: str, now: datetime,
    limits: Limits | None = None,
) -> None:
    """Carry out what a dialogue asked for, in the caller's transaction. ``e164`` may be
    given as a function, called only by an effect that needs the number. With ``limits``,
    a report past the contact's limit is not kept (the dialogue's acknowledgement is the
    same), only counted."""
    for effect in effects:
        coded = {k: v for k, v in effect.results.items() if k not in effect.sensitive}
        if effect.action is Action.set_language:
            queries.update_contact(conn, pseudonym=pseudonym, language=language)
        elif effect.action is Action.save_report:
            if limits is not None and not flood.fits(conn, limits=limits, pseudonym=pseudonym,
                                                     what=flood.REPORT, now=now):
                continue  # not kept for review: counted, and acknowledged all the same
            typed = {k: v for k, v in effect.results.items() if k in effect.sensitive}
            sealed = None
            if typed:
                wrapped = data_key(conn, keys, pseudonym=pseudonym)
                sealed = keys.encrypt_for(wrapped, json.dumps(typed, ensure_ascii=False),
                                          pseudonym=pseudonym, aad=source)
            kept = queries.insert_report(conn, source=source, flow=effect.flow,
                                         flow_version=effect.version, channel=channel,
                                         pseudonym=pseudonym, answers=coded, text=sealed,
                                         now=now, area=area_of(coded))
            if kept and limits is not None:
                flood.spend(conn, pseudonym=pseudonym, what=flood.REPORT, now=now)
        elif effect.action is Action.save_poll:
            assert effect.poll is not None
            respondent = queries.Respondent(
                area=area_of(coded), gender=coded.get("gender"),
                age_band=coded.get("age_band"), displaced=coded.get("displaced"),
                campaign=effect.campaign)
            queries.upsert_poll_answers(conn, poll=effect.poll, pseudonym=pseudonym,
                                      answers=coded, flow_version=effect.version, now=now,
                                      respondent=respondent)
        elif effect.action is Action.subscribe:
            queries.update_contact(conn, pseudonym=pseudonym, subscribed=True,
                                 area=area_of(coded))
            number = e164() if callable(e164) else e164
            wrapped = data_key(conn, keys, pseudonym=pseudonym)
            queries.upsert_vault(conn, pseudonym=pseudonym, now=now,
                                 number=keys.seal_number(wrapped, number, pseudonym=pseudonym))
        elif effect.action is Action.unsubscribe:
            queries.update_contact(conn, pseudonym=pseudonym, subscribed=False, area=None)
            queries.delete_vault(conn, pseudonym=pseudonym)
            # Broadcasts already queued for them go no further.
            outbox.cancel_for(conn, pseudonym=pseudonym, now=now, kinds=("broadcast",))
        elif effect.action is Action.erase:
            queries.erase_contact(conn, pseudonym=pseudonym, now=now)
