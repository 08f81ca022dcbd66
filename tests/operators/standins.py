"""A stand-in for the broadcasts module, which another branch is writing.

TEMPORARY: the dashboard's broadcasts seam (gateway/operators/dashboard/seams.py) is served
with this in tests until gateway/operators/broadcasts.py lands; then the tests use the real
module through wiring.py and this file goes. Thin on purpose: broadcasts in memory over the
real contacts and the real outbox (so the worker, the fake provider and delivery reports
move the counts).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select

from gateway.operators.access import (
    Areas,
    Forbidden,
    NotFound,
    OutOfScope,
    Principal,
    check_cercles,
)
from gateway.operators.dashboard.seams import (
    Audience,
    Broadcast,
    Conflict,
    Draft,
    Invalid,
    LanguagePreview,
    Preview,
    Tariff,
)
from gateway.outbox import outbox
from gateway.runtime import Runtime
from gateway.store import queries
from gateway.store.queries import _outbox, contacts, vault
from gateway.text.encoding import outbound, sms_cost

LANGUAGES = ("fr", "bm", "ff")  # the catalogs'


@dataclass
class StandInBroadcasts:
    rt: Runtime
    areas: Areas
    price: Decimal = Decimal(25)
    made: dict[int, Broadcast] = field(default_factory=dict)
    keys: dict[str, tuple[int, Draft]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tariff(self) -> Tariff:
        return Tariff(self.price, "XOF", languages=LANGUAGES)

    def _cercles(self, who: Principal, audience: Audience) -> set[str]:
        cercles = {self.areas.cercle(a) for a in (*audience.cercles, *audience.communes)}
        if None in cercles:
            raise Invalid("audience.communes", "unknown commune or cercle")
        chosen = {c for c in cercles if c} or set(who.cercles)
        try:
            check_cercles(who, chosen)
        except OutOfScope:
            raise Forbidden("the audience reaches a cercle outside your scope") from None
        return chosen

    def _areas(self, who: Principal, audience: Audience) -> set[str]:
        self._cercles(who, audience)
        if audience.cercles or audience.communes:
            return set(self.areas.expand(audience.cercles)) | set(audience.communes)
        return set(self.areas.expand(who.cercles)) if not who.everywhere else \
            set(self.areas.cercle_of)

    def _who(self, who: Principal, audience: Audience) -> list[tuple[str, str]]:
        wanted = self._areas(who, audience)
        query = select(contacts.c.pseudonym, contacts.c.language).where(
            contacts.c.subscribed.is_(True), contacts.c.stopped.is_(False),
            contacts.c.area.in_(sorted(wanted)))
        if audience.languages:
            query = query.where(contacts.c.language.in_(audience.languages))
        with self.rt.db.transaction() as conn:
            return [(r.pseudonym, self._language(r.language)) for r in conn.execute(query)]

    def recipients(self, who: Principal, audience: Audience) -> Mapping[str, int]:
        counts: dict[str, int] = {}
        for _, lang in self._who(who, audience):
            counts[lang] = counts.get(lang, 0) + 1
        return counts

    @staticmethod
    def _language(language: str | None) -> str:
        return language if language in LANGUAGES else "fr"

    def preview(self, who: Principal, draft: Draft) -> Preview:
        by_language = self.recipients(who, draft.audience)
        languages: dict[str, LanguagePreview] = {}
        segments = plain = 0
        for lang, n in sorted(by_language.items()):
            text_lang = lang
            if text_lang not in draft.messages:
                raise Invalid(f"messages.{lang}", f"field.missing_text.{lang}")
            text = outbound(draft.messages[text_lang], text_lang)
            cost = sms_cost(text)
            languages[lang] = LanguagePreview(n, text, cost.encoding, cost.segments)
            segments += n * cost.segments
            plain += n * sms_cost(draft.messages[text_lang]).segments
        return Preview(sum(by_language.values()), segments, languages,
                       self.price * segments, self.price * plain, "XOF", draft.send_at)

    def create(self, who: Principal, draft: Draft, *, idempotency_key: str) -> Broadcast:
        with self.lock:
            if idempotency_key in self.keys:
                bid, earlier = self.keys[idempotency_key]
                if earlier != draft:
                    raise Conflict
                return self.get(who, bid)
            preview = self.preview(who, draft)
            bid = next(self.ids)
            now = datetime.now(UTC)
            scheduled = draft.send_at is not None and draft.send_at > now
            made = Broadcast(bid, "scheduled" if scheduled else "sending",
                             {"recipients": preview.recipients}, now, draft.title, who.name,
                             draft.send_at, draft.valid_until, draft.audience,
                             dict(draft.messages))
            self.made[bid] = made
            self.keys[idempotency_key] = (bid, draft)
        if not scheduled:
            self._queue(who, made, preview)
        return self.get(who, bid)

    def _queue(self, who: Principal, made: Broadcast, preview: Preview) -> None:
        now = datetime.now(UTC)
        audience = self._who(who, made.audience)
        with self.rt.db.transaction() as conn:
            for pseudonym, lang in audience:
                row = conn.execute(select(vault.c.number)
                                   .where(vault.c.pseudonym == pseudonym)).first()
                if row is None:
                    continue
                wrapped = queries.get_data_key(conn, pseudonym=pseudonym)
                e164 = self.rt.keys.open_number(wrapped, row.number, pseudonym=pseudonym)
                outbox.enqueue(conn, keys=self.rt.keys, policy=self.rt.outbox_policy,
                               pseudonym=pseudonym, e164=e164,
                               text=preview.languages[lang].text, kind="broadcast",
                               dedupe_key=f"broadcast:{made.id}:{pseudonym}", now=now,
                               valid_until=made.valid_until, broadcast_id=made.id)
        self.rt.notify()

    def list(self, who: Principal) -> Sequence[Broadcast]:
        return [self.get(who, b) for b in sorted(self.made)]

    def get(self, who: Principal, broadcast_id: int) -> Broadcast:
        made = self.made.get(broadcast_id)
        if made is None:
            raise NotFound("not found")
        if not self._visible(who, made):
            raise OutOfScope("not found")
        with self.rt.db.transaction() as conn:
            rows = conn.execute(select(_outbox.c.status, func.count())
                                .where(_outbox.c.broadcast_id == broadcast_id)
                                .group_by(_outbox.c.status)).all()
        counts = {"recipients": made.counts["recipients"], "queued": 0, "sent": 0,
                  "delivered": 0, "failed": 0, "expired": 0, "cancelled": 0}
        for status, n in rows:
            key = {"sending": "queued", "unknown": "sent"}.get(status, status)
            counts[key] = counts.get(key, 0) + int(n)
        status = made.status
        if status == "sending" and not counts["queued"]:
            status = "done"
        return replace(made, status=status, counts=counts)

    def _visible(self, who: Principal, made: Broadcast) -> bool:
        try:
            self._cercles(who, made.audience)
        except Forbidden:
            return False
        return True

    def cancel(self, who: Principal, broadcast_id: int) -> Broadcast:
        made = self.get(who, broadcast_id)
        if made.status in ("scheduled", "sending"):
            with self.rt.db.transaction() as conn:
                conn.execute(_outbox.update().where(_outbox.c.broadcast_id == broadcast_id,
                                                    _outbox.c.status == "queued")
                             .values(status="cancelled"))
            self.made[broadcast_id] = replace(self.made[broadcast_id], status="cancelled")
        return self.get(who, broadcast_id)
