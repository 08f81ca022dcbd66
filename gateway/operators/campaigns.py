"""Radio campaigns: a station's show, its poll question, the USSD code and neutral SMS
keyword listeners use to answer, its hosts, and the on-air tally they read out.

An operator (or an admin) makes a campaign within its cercles; the dialogue layer finds it
by code or keyword (``store.queries.find_campaign``) and opens its poll, and the answers
that arrive that way while it runs carry its id (``poll_answer.campaign``). A radio host
sees only the campaigns it hosts, and only the shared view of their figures: always
suppressed under ``GATEWAY_MIN_CELL`` respondents. Another station's campaign is a 404.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, insert, or_, select

from gateway.content.catalogs import PLACEHOLDER, Content
from gateway.operators import audit
from gateway.operators.access import (
    Forbidden,
    NotFound,
    OutOfScope,
    Principal,
    Role,
    check_cercles,
    require,
)
from gateway.operators.accounts import accounts_table
from gateway.operators.results import Poll, campaign_counts, find_poll
from gateway.store.models import Campaign, CampaignHost
from gateway.text.encoding import fold

campaigns_table: Table = Campaign.__table__  # type: ignore[attr-defined]
hosts_table: Table = CampaignHost.__table__  # type: ignore[attr-defined]

SERVICE_CODE = re.compile(r"^\*[0-9]{1,8}(\*[0-9]{1,8}){0,4}#$")
MAX_KEYWORD = 32  # folded (gateway.dialogue.sms.MAX_CAMPAIGN_KEYWORD)
ON_AIR_LANGUAGES = ("fr", "bm")  # the read-out sentence's languages


class BadCampaign(ValueError):
    """A campaign that cannot be made as asked (the API's 422)."""


class CampaignConflict(Exception):
    """Another campaign answers to the same code or keyword at the same time (409)."""


@dataclass(frozen=True)
class Words:
    """What a campaign's keyword may not be: the words the SMS channel already answers
    (stop, start, erase, yes, and every flow's keywords), folded."""

    taken: frozenset[str]
    main_code: str

    @classmethod
    def of(cls, content: Content, *, main_code: str, reserved: Iterable[str]) -> Words:
        words = {fold(w) for flow in content.flows.values()
                 for listed in flow.keywords.values() for w in listed}
        words.update(fold(w) for w in reserved)
        return cls(frozenset(w for w in words if w), main_code)


@dataclass(frozen=True)
class CampaignInfo:
    id: int
    name: str
    station: str
    poll: str
    question: str
    keyword: str | None  # as announced (upper case)
    service_code: str | None
    cercles: frozenset[str]
    hosts: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    created_at: datetime

    def running(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "station": self.station, "poll": self.poll,
            "question": self.question,
            "keyword": self.keyword,
            "service_code": self.service_code, "cercles": sorted(self.cercles),
            "hosts": list(self.hosts), "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(), "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _cercles_of(value: str) -> frozenset[str]:
    return frozenset(c for c in value.split(",") if c)


def _checked_keyword(keyword: str | None, words: Words) -> tuple[str, str] | None:
    """The keyword as announced (upper case) and as matched (folded)."""
    if keyword is None or not keyword.strip():
        return None
    folded = fold(keyword)
    if not folded or " " in folded or len(keyword.strip()) > MAX_KEYWORD:
        raise BadCampaign(f"keyword: one word of at most {MAX_KEYWORD} letters and digits")
    if not any(ch.isalpha() for ch in folded):
        raise BadCampaign("keyword: needs a letter (digits alone are answers)")
    if folded in words.taken:
        raise BadCampaign(f"keyword: {keyword.strip()!r} is already a keyword or a stop, "
                          "start, erase or yes word")
    return keyword.strip().upper(), folded


def _checked_code(code: str | None, words: Words) -> str | None:
    if code is None or not code.strip():
        return None
    code = code.strip()
    if not SERVICE_CODE.match(code):
        raise BadCampaign("service_code: a USSD code such as *123*5# (digits between * "
                          "and a final #)")
    if code == words.main_code:
        raise BadCampaign("service_code: that is the main code (GATEWAY_USSD_CODE)")
    return code


def create(
    conn: Connection, *, who: Principal, content: Content, words: Words,
    known_cercles: Collection[str], name: str, station: str, poll: str, question: str,
    keyword: str | None, service_code: str | None, hosts: Sequence[str],
    starts_at: datetime, ends_at: datetime, cercles: Sequence[str] | None = None,
    now: datetime,
) -> CampaignInfo:
    """Make a campaign (operator, admin), audited. ``cercles``: the cercles it serves
    (default: the caller's; an admin's, all of them), within the caller's scope
    (:class:`Forbidden` otherwise). Raises :class:`BadCampaign` for what does not validate,
    :class:`CampaignConflict` when a campaign overlapping in time has the same code or
    keyword, :class:`NotFound` for an unknown poll."""
    require(who, Role.operator)
    name, station = name.strip(), station.strip()
    if not name or not station:
        raise BadCampaign("name and station are required")
    found = find_poll(content, poll)
    try:
        found.question(question)
    except NotFound:
        raise BadCampaign(f"poll {poll} has no question {question!r}") from None
    announced = _checked_keyword(keyword, words)
    folded = announced[1] if announced else None
    code = _checked_code(service_code, words)
    if folded is None and code is None:
        raise BadCampaign("give a keyword, a service_code, or both")
    starts_at, ends_at = _aware(starts_at), _aware(ends_at)
    if ends_at <= starts_at:
        raise BadCampaign("ends_at must come after starts_at")
    wanted = frozenset(cercles) if cercles else (
        frozenset(known_cercles) if who.everywhere else who.cercles)
    unknown = sorted(wanted - set(known_cercles))
    if unknown:
        raise BadCampaign(f"unknown cercle id(s): {', '.join(unknown)}")
    if not who.everywhere and not wanted <= who.cercles:
        raise Forbidden("a campaign outside your cercles")
    host_ids = _host_ids(conn, hosts)
    clash = [campaigns_table.c.keyword_folded == folded] if folded else []
    clash += [campaigns_table.c.service_code == code] if code else []
    if conn.execute(select(campaigns_table.c.id).where(
            or_(*clash), and_(campaigns_table.c.starts_at < ends_at,
                              campaigns_table.c.ends_at > starts_at))).first():
        raise CampaignConflict("another campaign uses this keyword or code at that time")
    campaign_id = int(conn.execute(insert(campaigns_table).values(
        name=name[:128], station=station[:128], poll=poll, question=question,
        keyword=announced[0] if announced else None, keyword_folded=folded,
        service_code=code, cercles=",".join(sorted(wanted)), starts_at=starts_at,
        ends_at=ends_at, created_by=who.name, created_at=now,
    ).returning(campaigns_table.c.id)).scalar_one())
    for account_id in host_ids:
        conn.execute(insert(hosts_table).values(campaign_id=campaign_id,
                                                account_id=account_id))
    audit.record(conn, actor=who.name, action="campaign.create", object_type="campaign",
                 object_id=campaign_id, details={
                     "poll": poll, "question": question, "cercles": sorted(wanted),
                     "hosts": sorted(host_ids), "keyword": folded, "service_code": code},
                 now=now)
    return _get(conn, campaign_id)


def _host_ids(conn: Connection, hosts: Sequence[str]) -> list[int]:
    """The accounts named in ``hosts``: each must exist, be enabled and have role radio."""
    names = list(dict.fromkeys(h.strip().lower() for h in hosts))
    rows = {r.name: r for r in conn.execute(
        select(accounts_table.c.id, accounts_table.c.name, accounts_table.c.role,
               accounts_table.c.disabled).where(accounts_table.c.name.in_(names)))} \
        if names else {}
    for host in names:
        row = rows.get(host)
        if row is None or row.disabled:
            raise BadCampaign(f"hosts: no account named {host!r}")
        if row.role != Role.radio.value:
            raise BadCampaign(f"hosts: {host!r} is not a radio account")
    return [int(rows[h].id) for h in names]


def _infos(conn: Connection, where: Any = None) -> list[CampaignInfo]:
    stmt = select(campaigns_table).order_by(campaigns_table.c.starts_at.desc(),
                                            campaigns_table.c.id.desc())
    if where is not None:
        stmt = stmt.where(where)
    rows = conn.execute(stmt).all()
    hosts: dict[int, list[str]] = {}
    if rows:
        for campaign_id, host in conn.execute(
                select(hosts_table.c.campaign_id, accounts_table.c.name)
                .select_from(hosts_table.join(accounts_table))
                .where(hosts_table.c.campaign_id.in_([r.id for r in rows]))
                .order_by(accounts_table.c.name)):
            hosts.setdefault(int(campaign_id), []).append(str(host))
    return [CampaignInfo(
        int(r.id), r.name, r.station, r.poll, r.question, r.keyword, r.service_code,
        _cercles_of(r.cercles), tuple(hosts.get(int(r.id), ())), _aware(r.starts_at),
        _aware(r.ends_at), r.created_by, _aware(r.created_at)) for r in rows]


def _get(conn: Connection, campaign_id: int) -> CampaignInfo:
    found = _infos(conn, campaigns_table.c.id == campaign_id)
    if not found:
        raise NotFound(f"no campaign {campaign_id}")
    return found[0]


def _hosted_by(who: Principal) -> Any:
    return campaigns_table.c.id.in_(select(hosts_table.c.campaign_id)
                                    .where(hosts_table.c.account_id == who.account_id))


def list_campaigns(conn: Connection, *, who: Principal) -> list[CampaignInfo]:
    """The campaigns ``who`` may see, latest first: a radio host's own; an operator's
    within its cercles; every one for an admin. A reviewer: :class:`Forbidden`."""
    require(who, Role.operator, Role.radio)
    if who.role is Role.radio:
        return _infos(conn, _hosted_by(who))
    return [c for c in _infos(conn) if who.everywhere or c.cercles <= who.cercles]


def get(conn: Connection, *, who: Principal, campaign_id: int) -> CampaignInfo:
    """One campaign: :class:`OutOfScope` (a 404, audited) for a radio host that does not
    host it or an operator outside its cercles; :class:`NotFound` if there is none."""
    require(who, Role.operator, Role.radio)
    campaign = _get(conn, campaign_id)
    if who.role is Role.radio:
        hosted = conn.execute(select(hosts_table.c.account_id).where(
            hosts_table.c.campaign_id == campaign_id,
            hosts_table.c.account_id == who.account_id)).first()
        if hosted is None:
            raise OutOfScope("not found")
    else:
        check_cercles(who, campaign.cercles)
    return campaign


# --- on air ---------------------------------------------------------------------------


def onair(conn: Connection, *, campaign: CampaignInfo, content: Content, k: int,
          now: datetime) -> dict[str, Any]:
    """The tally a studio shows: the campaign's answers to its question (those that
    arrived through its code or keyword while it ran), always in the shared view: under
    ``k`` respondents nothing but ``suppressed``. ``sentence``: what the host reads out,
    in French and Bambara (the most chosen answer's share)."""
    poll = find_poll(content, campaign.poll)
    asked = poll.question(campaign.question)
    counts = campaign_counts(conn, poll=campaign.poll, question=campaign.question,
                             campaign=campaign.id)
    n = sum(counts.values())
    suppressed = n < k
    percent: dict[str, float] | None = None
    sentence = {lang: _say(content, lang, "onair-too-few", k=str(k))
                for lang in ON_AIR_LANGUAGES}
    if not suppressed:
        shares = {v: 100 * counts.get(v, 0) / n for v in asked.value_ids}
        for value in sorted(set(counts) - set(shares)):
            shares[value] = 100 * counts[value] / n
        percent = {v: round(p, 1) for v, p in shares.items()}
        top = max(shares, key=lambda v: (shares[v], -list(shares).index(v)))
        sentence = {lang: _sentence(content, lang, poll, campaign.question, top, n,
                                    round(shares[top])) for lang in ON_AIR_LANGUAGES}
    return {
        "campaign": campaign.as_json() | {"running": campaign.running(now)},
        "question": campaign.question, "n": None if suppressed else n, "percent": percent,
        "suppressed": suppressed, "sentence": sentence,
        "announce": announce(campaign, content), "updated_at": now.isoformat(),
    }


def announce(campaign: CampaignInfo, content: Content) -> dict[str, str]:
    """What the host says to invite answers, in French and Bambara: the code to dial
    and the keyword to text."""
    out = {}
    for lang in ON_AIR_LANGUAGES:
        parts = []
        if campaign.service_code:
            parts.append(_say(content, lang, "onair-announce-code",
                              code=campaign.service_code))
        if campaign.keyword:
            parts.append(_say(content, lang, "onair-announce-keyword",
                              keyword=campaign.keyword))
        parts.append(_say(content, lang, "onair-announce-anonymous"))
        out[lang] = " ".join(parts)
    return out


def _sentence(content: Content, lang: str, poll: Poll, question: str, value: str, n: int,
              percent: int) -> str:
    """"Sur 120 auditeurs, 64 % font beaucoup confiance à l'armée": a sentence per answer
    value and an actor per question where the catalog has them; else the generic one
    quoting the answer's label."""
    catalog = content.catalogs[lang].messages
    actor, said = f"onair-actor-{question}", f"onair-{value}"
    if actor in catalog and said in catalog:
        return _say(content, lang, said, n=str(n), percent=str(percent),
                    actor=_say(content, lang, actor))
    labels: Mapping[str, str] = next(
        (dict(v.label) for q in poll.questions if q.id == question
         for v in q.values if v.value == value), {})
    return _say(content, lang, "onair-answered", n=str(n), percent=str(percent),
                label=labels.get(lang, value))


def _say(content: Content, lang: str, key: str, **params: str) -> str:
    raw = content.text(lang, key)
    return PLACEHOLDER.sub(lambda m: params.get(m.group(1), m.group(0)), raw)
