"""The dashboard's seams over the domain modules. Thin translations only: the rules and
the scope checks are the domain modules'; the audit entries are written in the same
transaction as the action, as the API does.

- accounts: ``gateway/operators/accounts.py`` (sign-in with throttling, audited; server-side
  sessions whose CSRF token the forms carry);
- broadcasts: ``gateway/operators/broadcasts.py`` (preview, create with an idempotency key,
  list, get, cancel).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from gateway.operators import accounts, audit
from gateway.operators import broadcasts as domain
from gateway.operators.access import Principal, Role, require
from gateway.operators.dashboard import seams
from gateway.runtime import Runtime
from gateway.store.models import utcnow


class Accounts:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def sign_in(self, *, username: str, password: str,
                client: str) -> seams.SignedIn | seams.Throttled | None:
        try:
            who = accounts.sign_in(self.rt.db, name=username, password=password,
                                   client=client, via="dashboard", now=utcnow())
        except accounts.Throttled as exc:
            return seams.Throttled(exc.retry_after)
        except accounts.BadCredentials:
            return None
        with self.rt.db.transaction() as conn:
            made = accounts.create_session(conn, account_id=who.account_id,
                                           hours=self.rt.settings.session_hours, now=utcnow())
        return seams.SignedIn(made.cookie)

    def session(self, *, session_id: str) -> seams.Session | None:
        with self.rt.db.transaction() as conn:
            found = accounts.resolve_session(conn, cookie=session_id, now=utcnow())
        return None if found is None else seams.Session(found.principal, found.csrf_token)

    def sign_out(self, *, session_id: str) -> None:
        with self.rt.db.transaction() as conn:
            accounts.end_session(conn, cookie=session_id, now=utcnow())


def _invalid(exc: domain.Invalid) -> seams.Invalid:
    """The first problem, named as the form names fields; a missing text in a language
    that has readers gets the page's own words."""
    first = exc.problems[0]
    where = ".".join(str(part) for part in first.loc[:2])
    if first.loc[0] == "messages" and len(first.loc) > 1 and "no text" in first.msg:
        return seams.Invalid(where, f"field.missing_text.{first.loc[1]}")
    return seams.Invalid(where, first.msg)


def _audience(audience: seams.Audience) -> domain.Audience:
    return domain.Audience(cercles=list(audience.cercles), communes=list(audience.communes),
                           languages=list(audience.languages))


def _request(draft: seams.Draft) -> domain.BroadcastRequest:
    return domain.BroadcastRequest(messages=dict(draft.messages),
                                   audience=_audience(draft.audience),
                                   title=draft.title or None, send_at=draft.send_at,
                                   valid_until=draft.valid_until)


def _view(b: domain.Broadcast) -> seams.Broadcast:
    a = b.audience
    return seams.Broadcast(
        id=b.id, status=b.status, counts=b.counts.as_json(), created_at=b.created_at,
        title=b.title, created_by=b.created_by, send_at=b.send_at, valid_until=b.valid_until,
        audience=seams.Audience(tuple(a.get("cercles", ())), tuple(a.get("communes", ())),
                                tuple(a.get("languages", ()))),
        messages=dict(b.messages))


def _audited(b: domain.Broadcast) -> dict[str, Any]:
    """What the audit log keeps of a broadcast (as the API's entries), and where from."""
    details: dict[str, Any] = {**b.audit_details(), "via": "dashboard"}
    return details


T = TypeVar("T")


class Broadcasts:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.rules = domain.Rules.of(rt.settings, rt.engine.content)

    def _scoped(self, who: Principal, work: Callable[[], T]) -> T:
        """``work``; an audience outside ``who``'s cercles is audited (after its
        transaction rolled back, as the API does) and raised on (403)."""
        try:
            return work()
        except domain.AudienceOutOfScope:
            with self.rt.db.transaction() as conn:
                audit.record(conn, actor=who.name, action="broadcast.audience_out_of_scope",
                             object_type="broadcast", object_id=None,
                             details={"via": "dashboard"}, now=utcnow())
            raise

    def tariff(self) -> seams.Tariff:
        r = self.rules
        return seams.Tariff(r.price, r.currency, r.default_language, r.transliterate,
                            tuple(r.languages))

    def recipients(self, who: Principal, audience: seams.Audience) -> Mapping[str, int]:
        require(who, Role.operator)
        wanted = _audience(audience)
        try:
            domain.check_audience(wanted, self.rules)
        except domain.Invalid as exc:
            raise _invalid(exc) from None
        target = self._scoped(who, lambda: domain.resolve(who, self.rules, wanted))
        with self.rt.db.transaction() as conn:
            counts: Mapping[str, int] = domain.recipients_by_language(
                conn, rules=self.rules, target=target)
        return counts

    def preview(self, who: Principal, draft: seams.Draft) -> seams.Preview:

        def work() -> Any:
            with self.rt.db.transaction() as conn:
                return domain.preview(conn, who=who, rules=self.rules,
                                      request=_request(draft), now=utcnow())

        try:
            p = self._scoped(who, work)
        except domain.Invalid as exc:
            raise _invalid(exc) from None
        priced = p.price > 0
        return seams.Preview(
            recipients=p.recipients, segments=p.segments,
            languages={k: seams.LanguagePreview(v.recipients, v.text, v.encoding, v.segments)
                       for k, v in p.languages.items()},
            cost=p.price * p.segments if priced else None,
            cost_without_transliteration=p.price * p.written_segments if priced else None,
            currency=p.currency, sends_from=p.sends_from)

    def create(self, who: Principal, draft: seams.Draft, *,
               idempotency_key: str) -> seams.Broadcast:
        now = utcnow()

        def work() -> Any:
            with self.rt.db.transaction() as conn:
                made, new = domain.create(conn, who=who, rules=self.rules,
                                          request=_request(draft),
                                          idempotency_key=idempotency_key, now=now)
                if new:
                    audit.record(conn, actor=who.name, action="broadcast.create",
                                 object_type="broadcast", object_id=made.id,
                                 details=_audited(made), now=now)
            return made

        try:
            made = self._scoped(who, work)
        except domain.Invalid as exc:
            raise _invalid(exc) from None
        except domain.Conflict:
            raise seams.Conflict from None
        self.rt.notify()  # the worker's job queues it
        return _view(made)

    def list(self, who: Principal) -> Sequence[seams.Broadcast]:
        with self.rt.db.transaction() as conn:
            items, _ = domain.list_page(conn, who=who)
        return [_view(b) for b in items]

    def get(self, who: Principal, broadcast_id: int) -> seams.Broadcast:
        with self.rt.db.transaction() as conn:
            return _view(domain.get(conn, who=who, broadcast_id=broadcast_id))

    def cancel(self, who: Principal, broadcast_id: int) -> seams.Broadcast:
        now = utcnow()
        try:
            with self.rt.db.transaction() as conn:
                before = domain.get(conn, who=who, broadcast_id=broadcast_id)
                done = domain.cancel(conn, who=who, broadcast_id=broadcast_id, now=now)
                if before.status != "cancelled":
                    audit.record(conn, actor=who.name, action="broadcast.cancel",
                                 object_type="broadcast", object_id=done.id,
                                 details={**_audited(done), "counts_sent": done.counts.sent,
                                          "counts_cancelled": done.counts.cancelled},
                                 now=now)
        except domain.Conflict:  # already done: nothing left to cancel
            return self.get(who, broadcast_id)
        return _view(done)


def default_seams(rt: Runtime) -> seams.Seams:
    """What a gateway serves the dashboard with."""
    return seams.Seams(accounts=Accounts(rt), broadcasts=Broadcasts(rt))
