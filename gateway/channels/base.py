"""Canonical events: what the core sees, whichever provider carried the message.

Only adapters know a provider's field names. Adapters return these, or ``None`` when a
payload cannot be read (a clear, logged refusal, never an exception to the web layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True)
class UssdTurn:
    """One USSD hop. ``text`` is the provider's whole input history for AT-style
    providers (``1*2*Awa``); the service derives the latest input from its own state.

    A per-hop provider (Kannel over SMPP) sends one input per hop and keeps no session of
    its own. Its turns carry ``hop_id``, the provider's id of this hop (a repeat of the
    hop carries it again), and ``text`` is this hop's input alone. A session's first hop
    names the session itself (``line_session_id``: its ``line`` and ``hop_id``); a later
    hop leaves ``session_id`` empty, and the service takes the latest session of the
    same phone on the same ``line`` (the operator's session reference, ``""`` when the
    operator sends none)."""

    provider: str
    session_id: str
    phone: str  # raw, as received: normalised and pseudonymised by the service
    service_code: str
    network: str
    text: str
    hop_id: str | None = None
    line: str = ""

    @property
    def on_line(self) -> bool:
        """A later hop of a per-hop provider: its session is found by its line."""
        return self.hop_id is not None and not self.session_id


def line_session_id(line: str, hop_id: str) -> str:
    """The session id of a per-hop provider's session: its line, ``/``, the id of the hop
    that began it (the store finds a line's sessions by the prefix)."""
    return f"{line}/{hop_id}"


@dataclass(frozen=True)
class UssdEnded:
    """The provider says a session ended. A per-hop provider names it by ``phone`` and
    ``line`` instead of ``session_id`` (left empty)."""

    provider: str
    session_id: str
    status: str  # success | incomplete | failed | unknown
    hops: int | None
    duration_ms: int | None
    phone: str = ""
    line: str = ""


@dataclass(frozen=True)
class InboundSms:
    provider: str
    external_id: str
    phone: str  # raw sender
    to: str
    text: str
    received_at: datetime | None


class DeliveryStatus(StrEnum):
    """Where a sent message is, as far as the provider can tell."""

    sent = "sent"  # accepted by the provider or the operator, not yet on the handset
    delivered = "delivered"
    failed = "failed"
    unknown = "unknown"


@dataclass(frozen=True)
class DeliveryReport:
    provider: str
    status: DeliveryStatus
    raw_status: str
    provider_message_id: str | None = None  # Africa's Talking's id
    outbox_id: int | None = None  # our own id, carried in Kannel's dlr-url


@dataclass(frozen=True)
class OutboundSms:
    outbox_id: int
    to: str  # E.164
    text: str  # exactly what goes over the air
    encoding: str  # GSM-7 | UCS-2


class SendOutcome(StrEnum):
    accepted = "accepted"  # the provider took it
    retry = "retry"  # not sent, and worth another try later (timeout before sending, 5xx)
    failed = "failed"  # not sent, and trying again will not help
    ambiguous = "ambiguous"  # may or may not have been sent (answer lost)


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    provider_message_id: str | None = None
    code: str | None = None  # the provider's status code, kept as last_error
    retry_after: float | None = None  # seconds, when the provider says
    # The provider refused it for the route's rate (HTTP 429): not sent, and the whole
    # route slows down, not only this message.
    throttled: bool = False


MIN_SLOTS = 4
MAX_SLOTS = 256


def send_slots(rate: float, timeout: float) -> int:
    """How many sends a worker keeps in flight: enough that requests hanging until their
    timeout each hold one slot while the rest still leave at ``rate`` (rate x timeout),
    within [MIN_SLOTS, MAX_SLOTS]. A sender needs as many connections (or threads), or a
    send would wait inside it for one."""
    return max(MIN_SLOTS, min(MAX_SLOTS, math.ceil(rate * timeout)))


class Sender(Protocol):
    """One provider's outbound side. ``send`` never raises for a provider's answer: it
    classifies it."""

    name: str

    async def send(self, message: OutboundSms) -> SendResult: ...

    async def close(self) -> None: ...
