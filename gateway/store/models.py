"""Tables. Nothing here holds a phone number or typed text in clear.

Contacts key on a keyed-HMAC pseudonym. The only phone numbers kept for long are in
``vault``, sealed with the contact's own data key (itself wrapped by the key file), so
shredding it reaches every backup; queued messages hold theirs sealed with a master key.
Typed free text is sealed: in session state with a master key, in reports with the
contact's data key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint, false
from sqlalchemy import text as sql
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC: SQLModel stores it as UTC on SQLite and as timestamptz on PostgreSQL."""
    return datetime.now(UTC)


class Contact(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    pseudonym: str = Field(max_length=64, unique=True)
    pseudonym_version: int = 1
    language: str | None = Field(default=None, max_length=8)
    subscribed: bool = False
    area: str | None = Field(default=None, max_length=64)  # commune or cercle id
    stopped: bool = False  # STOP by SMS: sent nothing but direct answers
    help_sent_at: datetime | None = None  # the keyword help: at most once an hour
    data_key: str | None = Field(default=None, sa_column=Column(Text))  # wrapped
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow, index=True)


class Vault(SQLModel, table=True):
    """Phone numbers, sealed with the contact's data key (``KeyRing.open_number`` with the
    contact's ``data_key``); only the sending path opens them."""

    pseudonym: str = Field(max_length=64, primary_key=True)
    number: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class Tombstone(SQLModel, table=True):
    """An erased contact: purges them again from a restored backup."""

    pseudonym: str = Field(max_length=64, primary_key=True)
    erased_at: datetime = Field(default_factory=utcnow)


class UssdSession(SQLModel, table=True):
    __tablename__ = "ussd_session"
    __table_args__ = (
        UniqueConstraint("provider", "session_id"),
        # Only the pseudonym: a hop changes status and updated_at, and an index on those
        # would be rewritten on every hop. A pseudonym has few sessions to filter.
        Index("ix_ussd_session_pseudonym", "pseudonym"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=32)
    session_id: str = Field(max_length=128)
    pseudonym: str = Field(max_length=64)
    state: str = Field(sa_column=Column(Text, nullable=False))  # sealed JSON
    status: str = Field(default="active", max_length=16)  # active|ended|abandoned|erased
    text_len: int = 0  # length of the last cumulative text handled
    text_mac: str = Field(max_length=64)  # keyed digest of that text, never the text
    response: str = Field(sa_column=Column(Text, nullable=False))  # last CON/END body
    # The latest hops before that one, a line each: text digest, tab, JSON of the body
    # (a late copy of an earlier hop gets its own screen again).
    history: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    hops: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    end_status: str | None = Field(default=None, max_length=16)  # from the notification
    end_hops: int | None = None
    end_duration_ms: int | None = None


class UssdEvent(SQLModel, table=True):
    """End-of-session notifications: status and hop count, never input or screens."""

    __tablename__ = "ussd_event"
    __table_args__ = (UniqueConstraint("provider", "session_id"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=32)
    session_id: str = Field(max_length=128)
    status: str = Field(max_length=16)
    hops: int | None = None
    duration_ms: int | None = None
    received_at: datetime = Field(default_factory=utcnow)


class Report(SQLModel, table=True):
    """A report. Coded answers in clear; typed text sealed with the contact's data key.

    Its review (gateway/operators/reports.py): ``status`` new -> reviewed -> referred ->
    closed (or reviewed -> closed), an assignee, and the redacted text a reviewer writes
    beside the original, the only text that ever leaves (referrals, exports). Erasing the
    reporter (SUPPRIMER) or the retention job clears ``text``; ``had_text`` stays, so the
    report says its text was erased."""

    __table_args__ = (Index("ix_report_area_id", "area", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=200, unique=True)  # e.g. ussd:<provider>:<session>
    flow: str = Field(max_length=64)
    flow_version: int
    channel: str = Field(max_length=8)
    pseudonym: str | None = Field(default=None, max_length=64, index=True)
    answers: str = Field(sa_column=Column(Text, nullable=False))  # JSON, coded values
    text: str | None = Field(default=None, sa_column=Column(Text))  # sealed
    status: str = Field(default="new", max_length=16)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    # Where, from the coded answers: the commune, else the cercle (None: not given).
    area: str | None = Field(default=None, max_length=64)
    had_text: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    redacted_text: str | None = Field(default=None, sa_column=Column(Text))
    assignee_id: int | None = Field(default=None, foreign_key="account.id")
    updated_at: datetime | None = None


class ReportEvent(SQLModel, table=True):
    """A report's history, as its reviewers see it: state changes, notes, assignment,
    redaction, referrals. ``note`` is a reviewer's own words (never the report's text)."""

    __tablename__ = "report_event"

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="report.id", index=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=64)  # an account name, or "worker" for deliveries
    action: str = Field(max_length=32)  # transition | note | assign | redact | refer | ...
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str | None = Field(default=None, max_length=16)
    ref: str | None = Field(default=None, max_length=64)  # a partner or an account name
    note: str | None = Field(default=None, sa_column=Column(Text))


class Partner(SQLModel, table=True):
    """Who reports are referred to, set by an admin: an e-mail address or a webhook (its
    secret sealed, gateway/operators/referrals.py)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=16)  # email | webhook
    email: str | None = Field(default=None, max_length=254)
    webhook_url: str | None = Field(default=None, sa_column=Column(Text))
    secret: str | None = Field(default=None, sa_column=Column(Text))  # sealed
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class Referral(SQLModel, table=True):
    """A report sent to a partner, through a durable queue like the outbox: claimed under
    a lease, retried with backoff, never sent again once the partner accepted it."""

    __table_args__ = (
        UniqueConstraint("report_id", "partner_id"),
        Index("ix_referral_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="report.id")
    partner_id: int = Field(foreign_key="partner.id")
    status: str = Field(default="queued", max_length=16)  # queued|sending|delivered|failed
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = None
    last_error: str | None = Field(default=None, max_length=64)  # a code, never text
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class PollAnswer(SQLModel, table=True):
    """One counted answer per person per poll question; a new answer replaces the old.

    Each row also carries who answered and where, as given in the same submission (the
    latest): results group on these columns without a join. ``area`` is the commune
    answered, else the cercle (commune "other"), else None (cercle "other" or not asked);
    the demographic columns are None where the question was not asked.
    """

    __tablename__ = "poll_answer"
    __table_args__ = (
        UniqueConstraint("poll", "pseudonym", "question"),
        # Results over a period (since/until, by week; the rest read poll_tally): by
        # commune or cercle, from the index alone.
        Index("ix_poll_answer_time", "poll", "question", "updated_at", "area", "answer"),
    )

    id: int | None = Field(default=None, primary_key=True)
    poll: str = Field(max_length=64)
    pseudonym: str = Field(max_length=64, index=True)
    question: str = Field(max_length=64)
    answer: str = Field(max_length=64)
    flow_version: int
    updated_at: datetime = Field(default_factory=utcnow)
    area: str | None = Field(default=None, max_length=64)
    gender: str | None = Field(default=None, max_length=16)
    age_band: str | None = Field(default=None, max_length=16)
    displaced: str | None = Field(default=None, max_length=16)
    campaign: int | None = None  # the radio campaign the answer came through


class PollTally(SQLModel, table=True):
    """Respondents per poll question, answer and group: ``poll_answer`` counted ahead.

    Database triggers on ``poll_answer`` write every change (+1, -1) to
    ``poll_tally_change``; reading results folds those into this table now and then
    (``gateway.operators.results``), so tally plus changes always equal a count of
    ``poll_answer``. An absent group value is '' (campaign 0), so it can be part of the key.
    """

    __tablename__ = "poll_tally"

    poll: str = Field(max_length=64, primary_key=True)
    question: str = Field(max_length=64, primary_key=True)
    area: str = Field(max_length=64, primary_key=True)
    gender: str = Field(max_length=16, primary_key=True)
    age_band: str = Field(max_length=16, primary_key=True)
    displaced: str = Field(max_length=16, primary_key=True)
    campaign: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    answer: str = Field(max_length=64, primary_key=True)
    n: int = 0


class InclusionTarget(SQLModel, table=True):
    """Who an operator wants a poll to hear in one cercle: the share of its respondents
    (whole percent, 0-100) who are women, aged 15-24, displaced; None: no target."""

    __tablename__ = "inclusion_target"

    poll: str = Field(max_length=64, primary_key=True)
    cercle: str = Field(max_length=64, primary_key=True)
    women: int | None = None
    young: int | None = None
    displaced: int | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(max_length=64)  # an account name


class PollTallyChange(SQLModel, table=True):
    """A change to ``poll_tally`` not yet folded in, written by triggers only."""

    __tablename__ = "poll_tally_change"

    id: int | None = Field(default=None, primary_key=True)
    poll: str = Field(max_length=64)
    question: str = Field(max_length=64)
    area: str = Field(max_length=64)
    gender: str = Field(max_length=16)
    age_band: str = Field(max_length=16)
    displaced: str = Field(max_length=16)
    campaign: int
    answer: str = Field(max_length=64)
    n: int  # +1 or -1 (several netted on PostgreSQL)


class Campaign(SQLModel, table=True):
    """A radio show's campaign (gateway/operators/campaigns.py): its USSD service code and
    neutral SMS keyword open its poll directly, and the answers that arrive that way while
    it runs carry its id (``poll_answer.campaign``). ``keyword`` is as announced,
    ``keyword_folded`` as inbound text is matched (case, accents, spelling variants
    folded); ``cercles``: the cercle ids it serves, comma-separated and sorted (operators
    see the campaigns within their cercles)."""

    __table_args__ = (Index("ix_campaign_keyword_folded", "keyword_folded"),
                      Index("ix_campaign_service_code", "service_code"))

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    station: str = Field(max_length=128)
    poll: str = Field(max_length=64)
    question: str = Field(max_length=64)
    keyword: str | None = Field(default=None, max_length=32)
    keyword_folded: str | None = Field(default=None, max_length=32)
    service_code: str | None = Field(default=None, max_length=32)
    cercles: str = Field(default="", sa_column=Column(Text, nullable=False))
    starts_at: datetime
    ends_at: datetime
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class CampaignHost(SQLModel, table=True):
    """An account of role ``radio`` that hosts a campaign: it sees that campaign's on-air
    tally, and no other."""

    __tablename__ = "campaign_host"

    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)
    account_id: int = Field(foreign_key="account.id", primary_key=True, index=True)


class Outbox(SQLModel, table=True):
    """Every outbound SMS, written in the same transaction as what caused it.

    ``kind`` decides what is safe: an ``ack`` (a reporter's acknowledgement) or a
    ``reply`` whose send is ambiguous is marked ``unknown`` and never sent again; a
    ``broadcast`` may be retried once. ``control`` answers STOP, START and SUPPRIMER and
    is the only kind a stopped contact receives.
    """

    __table_args__ = (
        Index("ix_outbox_due", "status", "priority", "next_attempt_at"),
        Index("ix_outbox_provider_id", "provider", "provider_message_id"),
        # A broadcast's counts (grouped by status) and whether any of it is still queued.
        Index("ix_outbox_broadcast", "broadcast_id", "status"),
        # The messages past their validity, without reading every queued one (a broadcast
        # queues a hundred thousand).
        Index("ix_outbox_expiry", "status", "valid_until"),
        # A contact's messages, found when they stop, unsubscribe or erase. A broadcast's
        # are found by contact id, which a chunk inserts in order: an index on their
        # pseudonyms (random keys) took a write of a random page for each of a hundred
        # thousand rows, and tripled the time a chunk holds the writers' lock.
        Index("ix_outbox_pseudonym", "pseudonym",
              sqlite_where=sql("contact_id IS NULL"), postgresql_where=sql("contact_id IS NULL")),
        Index("ix_outbox_contact", "contact_id",
              sqlite_where=sql("contact_id IS NOT NULL"),
              postgresql_where=sql("contact_id IS NOT NULL")),
        # Ids go into Kannel's dlr-url: never reuse one, even after rows are deleted.
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=16)  # ack | reply | help | control | broadcast
    pseudonym: str = Field(max_length=64)
    contact_id: int | None = None  # a broadcast's message: its contact (see the indexes)
    recipient: str = Field(sa_column=Column(Text, nullable=False))  # sealed E.164
    text: str = Field(sa_column=Column(Text, nullable=False))  # as sent over the air
    encoding: str = Field(max_length=8)
    segments: int
    provider: str = Field(max_length=32)
    priority: int = 0  # lower first: replies before broadcasts
    status: str = Field(default="queued", max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = None
    valid_until: datetime
    provider_message_id: str | None = Field(default=None, max_length=128)
    last_error: str | None = Field(default=None, max_length=64)  # a code, never text
    broadcast_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Broadcast(SQLModel, table=True):
    """An awareness broadcast (gateway/operators/broadcasts.py). Its messages are outbox
    rows with its ``broadcast_id``, made in the background from ``cursor`` on (the last
    contact id queued); its counts are those rows' statuses.

    ``messages`` holds the texts as the operator wrote them and ``texts`` as they go over
    the air (JSON, language -> text); ``audience`` the request's cercles, communes and
    languages; ``target`` what they resolved to when it was made (area values or null for
    every contact, cercles for scoping, languages or null for all).
    """

    __table_args__ = (
        # One Idempotency-Key per account.
        UniqueConstraint("created_by", "idempotency_key"),
        Index("ix_broadcast_status", "status", "send_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(default="", max_length=200)
    messages: str = Field(sa_column=Column(Text, nullable=False))  # JSON
    texts: str = Field(sa_column=Column(Text, nullable=False))  # JSON, over the air
    audience: str = Field(sa_column=Column(Text, nullable=False))  # JSON, as requested
    target: str = Field(sa_column=Column(Text, nullable=False))  # JSON, resolved
    created_by: str = Field(max_length=64)  # the account's name
    idempotency_key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)  # SHA-256 of the canonical request
    status: str = Field(default="scheduled", max_length=16)  # scheduled|sending|done|cancelled
    send_at: datetime
    valid_until: datetime
    expected: int = 0  # recipients counted when it was made
    cursor: int = 0  # the last contact id queued
    expanded: int = 0  # contacts queued so far
    expanded_at: datetime | None = None  # every recipient queued (or too late to)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PendingReport(SQLModel, table=True):
    """A delivery report that arrived before its send was recorded (or for an unknown
    id): kept, reconciled when the send is recorded, expired and counted otherwise."""

    __tablename__ = "pending_report"
    __table_args__ = (UniqueConstraint("provider", "provider_message_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=32)
    provider_message_id: str = Field(max_length=128)
    status: str = Field(max_length=16)
    raw_status: str = Field(max_length=64)
    received_at: datetime = Field(default_factory=utcnow)


class InboundMessage(SQLModel, table=True):
    """An accepted inbound SMS: its provider id (for deduplication) and nothing of its
    text or sender beyond the pseudonym."""

    __tablename__ = "inbound_message"
    __table_args__ = (UniqueConstraint("provider", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=32)
    external_id: str = Field(max_length=128)
    pseudonym: str = Field(max_length=64, index=True)
    received_at: datetime = Field(default_factory=utcnow)


class SmsConversation(SQLModel, table=True):
    """A resident's SMS dialogue: one question per message, sealed state, an expiry."""

    __tablename__ = "sms_conversation"

    pseudonym: str = Field(max_length=64, primary_key=True)
    state: str = Field(sa_column=Column(Text, nullable=False))  # sealed JSON
    waiting: str = Field(default="flow", max_length=16)  # flow | confirm | erase
    expires_at: datetime
    updated_at: datetime = Field(default_factory=utcnow)


class Counter(SQLModel, table=True):
    """Named counters the operators read (e.g. delivery reports that never matched)."""

    name: str = Field(max_length=64, primary_key=True)
    value: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class RateBucket(SQLModel, table=True):
    """A token bucket per provider, shared by every worker process: the send rate holds
    however many workers run. When the provider throttles (HTTP 429), the route as a whole
    pauses until ``paused_until`` (its ``Retry-After``), then refills at ``rate``, lowered at
    ``throttled_at`` and climbing back to the configured rate."""

    __tablename__ = "rate_bucket"

    provider: str = Field(max_length=32, primary_key=True)
    tokens: float = 0.0
    updated_at: datetime = Field(default_factory=utcnow)
    rate: float | None = None  # messages per second after the last 429; None: as configured
    throttled_at: datetime | None = None
    paused_until: datetime | None = None


# Operators: accounts, their credentials, and the audit trail (gateway/operators/).


class Account(SQLModel, table=True):
    """An operator's sign-in, made on the command line. Never deleted (the audit log names
    it): disabled instead, which refuses its tokens and sessions at once."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)  # admin | operator | reviewer | radio
    # Cercle ids, comma-separated and sorted (flows/lists/communes.yml); empty for admins.
    cercles: str = Field(default="", sa_column=Column(Text, nullable=False))
    password_hash: str = Field(max_length=255)  # argon2id, in its PHC string form
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A bearer token: only the SHA-256 of the token is kept. ``login`` tokens come from
    ``POST /api/v1/auth/token`` and expire; ``cli`` ones from ``gateway users token``."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    kind: str = Field(max_length=8)  # login | cli
    label: str = Field(default="", max_length=100)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None  # None: until revoked
    revoked_at: datetime | None = None


class OperatorSession(SQLModel, table=True):
    """A dashboard sign-in: the cookie holds a random id, this row only its SHA-256."""

    __tablename__ = "operator_session"

    id: int | None = Field(default=None, primary_key=True)
    session_hash: str = Field(max_length=64, unique=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


class SignInFailure(SQLModel, table=True):
    """A refused sign-in, for throttling by account name and by client address. Rows older
    than the throttling window are deleted as new ones arrive."""

    __tablename__ = "sign_in_failure"
    __table_args__ = (
        Index("ix_sign_in_failure_name_at", "name", "at"),
        Index("ix_sign_in_failure_client_at", "client", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)  # the name tried (an account's or not), folded
    client: str = Field(max_length=64)  # the client address
    at: datetime = Field(default_factory=utcnow)


class AuditEntry(SQLModel, table=True):
    """The audit trail, append-only (gateway/operators/audit.py). Ids run 1, 2, 3... with
    no gap; each entry's hash covers the previous entry's hash and its own fields. Details
    hold ids and codes, never a phone number or typed text."""

    __tablename__ = "audit_log"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime
    actor: str = Field(max_length=64)  # an account name, "cli", or the name tried
    action: str = Field(max_length=64)
    object_type: str | None = Field(default=None, max_length=32)
    object_id: str | None = Field(default=None, max_length=64)
    details: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """One row (id 1): the last entry's id and hash, updated in the same transaction as
    each append. Deleting the last entries without updating it shows; locking it orders
    concurrent appends on PostgreSQL."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    last_id: int = 0
    hash: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow)


class BudgetUse(SQLModel, table=True):
    """What a contact used of its flood limits: one row per reply sent (``reply``) or
    report kept (``report``), for a day. The limits count these rows, so erasing one's
    data does not reset them; pseudonym and time only, deleted after a day."""

    __tablename__ = "budget_use"
    __table_args__ = (Index("ix_budget_use_pseudonym", "pseudonym", "what", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    pseudonym: str = Field(max_length=64)
    what: str = Field(max_length=8)  # reply | report
    at: datetime = Field(index=True)


class FlowVersion(SQLModel, table=True):
    """One numbered version of a flow: its definition (YAML text, as written) and its own
    catalog entries (JSON, ``{language: {key: text}}``). Versions are never changed once
    stored; ``source`` says where one came from: ``files`` (the content location, read at
    start) or ``api`` (an operator). ``digest`` names the content, so a file that did not
    change is not stored again."""

    __tablename__ = "flow_version"
    __table_args__ = (UniqueConstraint("flow", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    flow: str = Field(max_length=64)
    version: int
    definition: str = Field(sa_column=Column(Text, nullable=False))
    messages: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON
    digest: str = Field(max_length=64)
    source: str = Field(max_length=8)  # files | api
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class FlowPublication(SQLModel, table=True):
    """Each publication of a flow version, numbered by the generation it made. The
    content of generation G is, for each flow, the version of its latest publication at
    or before G; a session keeps the generation it began on."""

    __tablename__ = "flow_publication"
    __table_args__ = (Index("ix_flow_publication_flow", "flow", "generation"),)

    generation: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    flow: str = Field(max_length=64)
    version: int
    published_by: str | None = Field(default=None, max_length=64)
    published_at: datetime = Field(default_factory=utcnow)


class FlowGeneration(SQLModel, table=True):
    """One row (id 1): the latest generation. Every process reads it at most once a
    second (a primary-key read) to learn of a publication; publishing increments it with
    the row locked, so generations commit in order."""

    __tablename__ = "flow_generation"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    generation: int = 0
