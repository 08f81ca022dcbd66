"""The SMS channel: the same flows as USSD, one question per message.

Per inbound message, in one transaction with its deduplication row:
1. stop, start and erase words, before anything else (a stopped contact gets nothing but
   the direct answers to these);
2. an open conversation: its answer. The global words (help, and the keywords of the main
   menu and of the information messages: MENU, INFO...) are honoured at any point; another
   flow's keyword interrupts it too, except where the step waits for typed text. An
   expired conversation is dropped silently;
3. a keyword starts its flow;
4. anything else, and the help words, get one neutral help message, at most once an hour
   (``GATEWAY_HELP_INTERVAL_MINUTES``).

Nothing in the inbox names a force, a category or an abuse before the resident has
confirmed the no-trace warning in that conversation: a flow with ``sms_confirm`` (the
report, the poll) first warns that SMS stay in the inbox while USSD leaves no trace and
waits for a yes, whether it starts from its keyword or from the menu; the menu shows its
options' neutral ``sms_label``. A conversation remembers the confirmation (``waiting`` is
``confirmed``) until it ends; a keyword starts a new one.

Every reply is an outbox row written in the same transaction, within the contact's reply
budget (``limits``): past it the message is still handled, and nothing is sent back. The
answers to STOP, START and SUPPRIMER count like any reply: a flood of STOP must not cost
one SMS each. The stop, start or erasure itself always takes effect; only its
confirmation waits for the budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, delete, select

from gateway.channels.base import InboundSms
from gateway.content.flowdef import InputStep
from gateway.dialogue import limits as flood
from gateway.dialogue.engine import MAIN_FLOW, Engine, State, Turn
from gateway.dialogue.library import Engines
from gateway.dialogue.limits import Limits
from gateway.dialogue.ussd import apply_effects, poll_flows
from gateway.outbox import outbox
from gateway.outbox.outbox import OutboxPolicy
from gateway.privacy.keys import KeyRing
from gateway.privacy.phone import normalise
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.models import InboundMessage, SmsConversation, utcnow
from gateway.text.encoding import fold, transliterate

log = logging.getLogger("gateway.dialogue.sms")

CONFIRMED = "confirmed"  # a conversation whose no-trace warning was confirmed
MAX_CAMPAIGN_KEYWORD = 32  # characters, folded (models.Campaign.keyword)

inbound = queries._t(InboundMessage)
conversations = queries._t(SmsConversation)


def words(setting: str) -> frozenset[str]:
    """A comma-separated setting of words, folded for matching."""
    return frozenset(fold(w) for w in setting.split(",") if fold(w))


@dataclass(frozen=True)
class SmsPolicy:
    default_region: str = "ML"
    stop_words: frozenset[str] = field(default_factory=lambda: words("STOP,ARRET,DABILA"))
    start_words: frozenset[str] = field(default_factory=lambda: words("START"))
    erase_words: frozenset[str] = field(default_factory=lambda: words("SUPPRIMER"))
    yes_words: frozenset[str] = field(default_factory=lambda: words("OUI,1,OWO,AWO,EEY,YES"))
    help_words: frozenset[str] = field(default_factory=lambda: words("AIDE,HELP,DƐMƐ,BALLAL"))
    bambara_words: frozenset[str] = field(default_factory=lambda: words("DABILA,JOSI,DƐMƐ"))
    fulfulde_words: frozenset[str] = field(default_factory=lambda: words("BALLAL"))
    # Flows whose keywords are honoured even where a step waits for typed text.
    global_flows: frozenset[str] = frozenset({MAIN_FLOW, "subscribe"})
    limits: Limits = field(default_factory=Limits)
    help_interval: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class Keyword:
    flow: str
    languages: tuple[str, ...]


class SmsService:
    def __init__(
        self, *, db: Database, keys: KeyRing, engine: Engine | Engines, policy: SmsPolicy,
        outbox_policy: OutboxPolicy, clock: Callable[[], datetime] = utcnow,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.keys = keys
        # By generation (``gateway.dialogue.library``): a conversation finishes on the
        # content it began on; a bare Engine runs everything on its content.
        self.engines = engine if isinstance(engine, Engines) else Engines.fixed(engine)
        self.policy = policy
        self.outbox_policy = outbox_policy
        self.clock = clock
        self.notify = notify
        self._keywords: tuple[Engine, dict[str, Keyword]] | None = None
        self.languages = self.engine.content.languages
        self.poll_flows = poll_flows(self.engine.content)
        self.default_language = "fr" if "fr" in self.languages else self.languages[0]

    @property
    def engine(self) -> Engine:
        """The engine of the latest generation this process knows."""
        return self.engines.latest

    @property
    def keywords(self) -> dict[str, Keyword]:
        return self.keywords_of(self.engine)

    def keywords_of(self, engine: Engine) -> dict[str, Keyword]:
        """The keywords ``engine``'s flows answer to (made again when it changes)."""
        known = self._keywords
        if known is None or known[0] is not engine:
            known = self._keywords = (engine, self._keyword_index(engine))
        return known[1]

    @staticmethod
    def _keyword_index(engine: Engine) -> dict[str, Keyword]:
        index: dict[str, list[tuple[str, str]]] = {}
        for flow in engine.content.flows.values():
            for lang, words_ in flow.keywords.items():
                for word in words_:
                    index.setdefault(fold(word), []).append((flow.flow, lang))
        return {
            key: Keyword(pairs[0][0], tuple(dict.fromkeys(lang for _, lang in pairs)))
            for key, pairs in index.items()
        }

    def keyword_list(self, language: str, engine: Engine | None = None) -> str:
        """The keywords to advertise in ``language``: the first of each flow's."""
        engine = engine or self.engine
        seen: list[str] = []
        for flow in engine.content.flows.values():
            listed = flow.keywords.get(language, ())
            if listed and listed[0].upper() not in seen:
                seen.append(listed[0].upper())
        if engine.rules.transliterate:  # in capitals: Ɲ makes NY, not Ny
            seen = [transliterate(w, language).upper() for w in seen]
        return ", ".join(seen)

    # --- receiving -------------------------------------------------------------------

    def receive(self, message: InboundSms) -> str:
        """Accept one inbound SMS: ``accepted``, ``duplicate`` or ``refused``."""
        e164 = normalise(message.phone, self.policy.default_region)
        if e164 is None:
            log.warning("sms: unreadable sender on %s message %s; ignored", message.provider,
                        message.external_id)
            return "refused"
        pseudonym = self.keys.pseudonym(e164)
        with self.db.transaction() as conn:
            now = self.clock()
            stmt = queries._insert(conn, inbound).values(
                provider=message.provider, external_id=message.external_id,
                pseudonym=pseudonym, received_at=now,
            ).on_conflict_do_nothing().returning(inbound.c.id)
            # RETURNING, not rowcount: on PostgreSQL SQLAlchemy reports -1 for this insert
            # (it returns the new id), which would take every copy for a first.
            if conn.execute(stmt).first() is None:
                return "duplicate"
            contact = queries.touch_contact(conn, pseudonym=pseudonym,
                                          pseudonym_version=self.keys.pseudonym_version, now=now)
            queued = _Reply(self, conn, message, pseudonym, e164, contact, now).handle()
        if queued:
            self.notify()
        return "accepted"

    def opt_out(self, *, provider: str, phone: str) -> bool:
        """A provider says this number opted out: stop sending to it. No reply."""
        e164 = normalise(phone, self.policy.default_region)
        if e164 is None:
            return False
        pseudonym = self.keys.pseudonym(e164)
        with self.db.transaction() as conn:
            now = self.clock()
            queries.touch_contact(conn, pseudonym=pseudonym,
                                pseudonym_version=self.keys.pseudonym_version, now=now)
            queries.update_contact(conn, pseudonym=pseudonym, stopped=True)
            outbox.cancel_for(conn, pseudonym=pseudonym, keep_control=False, now=now)
            conn.execute(delete(conversations).where(conversations.c.pseudonym == pseudonym))
        log.info("sms: %s opt-out recorded for contact %s", provider, pseudonym[:8])
        return True


class _Reply:
    """Handling of one accepted message, inside its transaction."""

    def __init__(self, service: SmsService, conn: Connection, message: InboundSms,
                 pseudonym: str, e164: str, contact: Row[Any], now: datetime) -> None:
        self.s = service
        self.conn = conn
        self.message = message
        self.pseudonym = pseudonym
        self.e164 = e164
        self.contact = contact
        self.now = now
        self.folded = fold(message.text)
        self.sent = 0
        self._looked_up = False  # the campaign keyword lookup, done once
        self._opened: queries.CampaignEntry | None = None
        self.engine = service.engines.current(conn)  # what a new conversation begins on
        self.keywords = service.keywords_of(self.engine)

    @property
    def language(self) -> str:
        lang = self.contact.language
        if lang in self.s.languages:
            return str(lang)
        if self.folded in self.s.policy.bambara_words and "bm" in self.s.languages:
            return "bm"
        if self.folded in self.s.policy.fulfulde_words and "ff" in self.s.languages:
            return "ff"
        return self.s.default_language

    def handle(self) -> int:
        policy = self.s.policy
        if self.folded in policy.stop_words:
            queries.update_contact(self.conn, pseudonym=self.pseudonym, stopped=True)
            outbox.cancel_for(self.conn, pseudonym=self.pseudonym, now=self.now)
            self._drop_conversation()
            self._send("control", self._say("sms-stopped"))
            return self.sent
        if self.folded in policy.start_words:
            queries.update_contact(self.conn, pseudonym=self.pseudonym, stopped=False)
            self._send("control", self._say("sms-started"))
            return self.sent
        conversation = self._conversation()
        if conversation is not None and not self.s.keys.master_alive(conversation.state):
            self._drop_conversation()  # its state came back from an older dump: unreadable
            conversation = None
        if self.folded in policy.erase_words:
            state = State(lang=self.language, flow="", step="")
            self._keep(state, waiting="erase", minutes=60)
            self._send("control", self._say("sms-erase-confirm"))
            return self.sent
        keyword = self.keywords.get(self.folded)
        asks_help = self.folded in policy.help_words
        if conversation is not None and conversation.waiting == "erase":
            self._drop_conversation()
            if self.folded in policy.yes_words:
                outbox.cancel_for(self.conn, pseudonym=self.pseudonym, keep_control=False,
                                  now=self.now)
                language = self.language
                queries.erase_contact(self.conn, pseudonym=self.pseudonym, now=self.now)
                self._send("control", self.engine.say(language, "sms-erased"))
                return self.sent
            if not asks_help and not self._is_keyword():
                self._send("control", self._say("sms-erase-cancelled"))
                return self.sent
            conversation = None  # nothing erased; the keyword is honoured below
        if self.contact.stopped:
            return self.sent  # nothing but the answers to STOP, START and SUPPRIMER
        if conversation is not None and conversation.expires_at <= self.now:
            self._drop_conversation()  # expired: dropped silently
            conversation = None
        if conversation is not None:
            state = State.loads(self.s.keys.open_text(conversation.state, aad=self._aad))
            begun_on = self.s.engines.get(state.gen, self.conn)  # it finishes on it
            if asks_help:
                self._help(state.lang)  # the conversation waits where it was
                return self.sent
            if conversation.waiting == "confirm":
                if not self._is_keyword():
                    return self._confirm(state, begun_on)
            elif not self._is_keyword() or (
                    isinstance(begun_on.step(state), InputStep)
                    and (keyword is None or keyword.flow not in policy.global_flows)):
                self._answer(begun_on.advance(state, self.message.text), begun_on,
                             confirmed=conversation.waiting == CONFIRMED)
                return self.sent
        if keyword is not None:
            self._start(keyword)
            return self.sent
        opened = self._campaign()
        if opened is not None:
            self._open_campaign(opened)
            return self.sent
        self._help()
        return self.sent

    def _is_keyword(self) -> bool:
        return self.folded in self.keywords or self._campaign() is not None

    def _campaign(self) -> queries.CampaignEntry | None:
        """The radio campaign whose keyword this message is (a campaign keyword is one
        word with a letter in it, so answers such as "2" are not looked up)."""
        word = self.folded
        if not word or len(word) > MAX_CAMPAIGN_KEYWORD or " " in word or word.isdigit():
            return None
        if not self._looked_up:
            self._looked_up = True
            found = queries.find_campaign(queries.Driver(self.conn), keyword=word, now=self.now)
            self._opened = found if found is not None and found.poll in self.s.poll_flows \
                else None
        return self._opened

    # --- steps -----------------------------------------------------------------------

    def _start(self, keyword: Keyword) -> None:
        lang = self.contact.language
        if lang not in keyword.languages:
            lang = "fr" if "fr" in keyword.languages else keyword.languages[0]
        engine = self.engine
        self._answer(engine.begin(keyword.flow, lang), engine, confirmed=False)

    def _open_campaign(self, opened: queries.CampaignEntry) -> None:
        """A radio campaign's keyword: its poll, whose answers count for the campaign
        while it runs."""
        flow = self.s.poll_flows[opened.poll]
        engine = self.engine
        self._answer(engine.begin(flow, self.language,
                                  campaign=opened.id if opened.active else None), engine,
                     confirmed=False)

    def _confirm(self, state: State, engine: Engine) -> int:
        if self.folded in self.s.policy.yes_words:
            self._answer(Turn(engine.render(state), state), engine, confirmed=True)
        else:
            self._drop_conversation()
            self._send("reply", engine.say(state.lang, "sms-cancelled"))
        return self.sent

    def _answer(self, turn: Turn, engine: Engine, *, confirmed: bool) -> None:
        """Carry out a turn's effects and send its screen (``engine``: the content the
        conversation runs on); a flow with ``sms_confirm`` reached in a conversation that
        has not confirmed the warning gets the warning instead, and waits for a yes."""
        state = turn.state
        source = f"sms:{self.message.provider}:{self.message.external_id}"
        apply_effects(self.conn, self.s.keys, turn.effects, pseudonym=self.pseudonym,
                      e164=self.e164, language=state.lang, source=source, channel="sms",
                      now=self.now, limits=self.s.policy.limits)
        if turn.screen.end:
            self._drop_conversation()
            self._send("ack", turn.screen.text)
            return
        flow = engine.flow(state.flow)
        if flow.sms_confirm and not confirmed:
            self._keep(state, waiting="confirm", minutes=flow.expires_after_minutes)
            self._send("reply", engine.say(state.lang, flow.sms_confirm))
            return
        self._keep(state, waiting=CONFIRMED if confirmed else "flow",
                   minutes=flow.expires_after_minutes)
        self._send("reply", turn.screen.text)

    def _help(self, language: str | None = None) -> None:
        last = self.contact.help_sent_at
        if last is not None and self.now - last < self.s.policy.help_interval:
            return
        lang = language or self.language
        if self._send("help", self.engine.say(lang, "sms-help",
                                              keywords=self.s.keyword_list(lang, self.engine))):
            queries.update_contact(self.conn, pseudonym=self.pseudonym, help_sent_at=self.now)

    # --- storage -----------------------------------------------------------------------

    @property
    def _aad(self) -> str:
        return f"sms:{self.pseudonym}"

    def _conversation(self) -> Row[Any] | None:
        return self.conn.execute(select(conversations).where(
            conversations.c.pseudonym == self.pseudonym)).first()

    def _keep(self, state: State, *, waiting: str, minutes: int) -> None:
        values = {
            "state": self.s.keys.seal_text(state.dumps(), aad=self._aad),
            "waiting": waiting,
            "expires_at": self.now + timedelta(minutes=minutes),
            "updated_at": self.now,
        }
        stmt = queries._insert(self.conn, conversations).values(pseudonym=self.pseudonym, **values)
        stmt = stmt.on_conflict_do_update(index_elements=[conversations.c.pseudonym],
                                          set_=values)
        self.conn.execute(stmt)

    def _drop_conversation(self) -> None:
        self.conn.execute(delete(conversations).where(
            conversations.c.pseudonym == self.pseudonym))

    def _say(self, key: str) -> str:
        return self.engine.say(self.language, key)

    def _send(self, kind: str, text: str) -> bool:
        """Queue a reply, within the contact's reply budget; whether it was queued."""
        if not flood.fits(self.conn, limits=self.s.policy.limits, pseudonym=self.pseudonym,
                          what=flood.REPLY, now=self.now):
            return False
        key = f"{kind}:{self.message.provider}:{self.message.external_id}"
        if not outbox.enqueue(self.conn, keys=self.s.keys, policy=self.s.outbox_policy,
                              pseudonym=self.pseudonym, e164=self.e164, text=text, kind=kind,
                              dedupe_key=key, now=self.now):
            return False
        flood.spend(self.conn, pseudonym=self.pseudonym, what=flood.REPLY, now=self.now)
        self.sent += 1
        return True
