"""Canonical events: what the core sees, whichever provider carried the message.

Only adapters know a provider's field names. Adapters return these, or ``None`` when a
payload cannot be read (a clear, logged refusal, never an exception to the web layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class UssdTurn:
    """One USSD hop. ``text`` is the provider's whole input history for AT-style
    providers (``1*2*Awa``); the service derives the latest input from its own state."""

    provider: str
    session_id: str
    phone: str  # raw, as received: normalised and pseudonymised by the service
    service_code: str
    network: str
    text: str


@dataclass(frozen=True)
class UssdEnded:
    provider: str
    session_id: str
    status: str  # success | incomplete | failed | unknown
    hops: int | None
    duration_ms: int | None


@dataclass(frozen=True)
class InboundSms:
    provider: str
    external_id: str
    phone: str  # raw sender
    to: str
    text: str
    received_at: datetime | None
