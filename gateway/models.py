"""Tables. Nothing here holds a phone number or typed text in clear.

Contacts key on a keyed-HMAC pseudonym. The only phone numbers are in ``vault``, sealed
with a master key. Typed free text is sealed: in session state with a master key, in
reports with the contact's own data key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
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
    data_key: str | None = Field(default=None, sa_column=Column(Text))  # wrapped
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow, index=True)


class Vault(SQLModel, table=True):
    """Phone numbers, sealed with a master key; only the sending path opens them."""

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
        Index("ix_ussd_session_resume", "pseudonym", "status", "updated_at"),
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
    hops: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    end_status: str | None = Field(default=None, max_length=16)  # from the notification
    end_hops: int | None = None
    end_duration_ms: int | None = None


class UssdHop(SQLModel, table=True):
    """One answered hop: a repeated (session, text) gets the identical screen."""

    __tablename__ = "ussd_hop"
    __table_args__ = (UniqueConstraint("session_pk", "text_mac"),)

    id: int | None = Field(default=None, primary_key=True)
    session_pk: int = Field(foreign_key="ussd_session.id", ondelete="CASCADE")
    text_mac: str = Field(max_length=64)
    response: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


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
    """A report. Coded answers in clear; typed text sealed with the contact's data key."""

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


class PollAnswer(SQLModel, table=True):
    """One counted answer per person per poll question; a new answer replaces the old."""

    __tablename__ = "poll_answer"
    __table_args__ = (UniqueConstraint("poll", "pseudonym", "question"),)

    id: int | None = Field(default=None, primary_key=True)
    poll: str = Field(max_length=64)
    pseudonym: str = Field(max_length=64, index=True)
    question: str = Field(max_length=64)
    answer: str = Field(max_length=64)
    flow_version: int
    updated_at: datetime = Field(default_factory=utcnow)
