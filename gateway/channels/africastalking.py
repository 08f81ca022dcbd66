"""Africa's Talking: form payloads in, ``CON ``/``END `` text out.

Fields and quirks from reference/africastalking.md §1-2: USSD posts ``sessionId``,
``serviceCode``, ``phoneNumber``, ``networkCode`` and the cumulative ``text``; the
end-of-session notification adds ``status``, ``hopsCount``, ``durationInMillis`` (and
``input``/``lastAppResponse``, which are never read here).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from gateway.channels.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundSms,
    UssdEnded,
    UssdTurn,
)

NAME = "africastalking"
MAX_SESSION_ID = 128
_END_STATUSES = {"success": "success", "incomplete": "incomplete", "failed": "failed"}


def parse_ussd(form: Mapping[str, str]) -> UssdTurn | None:
    """A USSD turn, or None when a required field is missing or absurd."""
    session_id = form.get("sessionId", "").strip()
    phone = form.get("phoneNumber", "")
    if not session_id or len(session_id) > MAX_SESSION_ID or not phone.strip():
        return None
    return UssdTurn(
        provider=NAME,
        session_id=session_id,
        phone=phone,
        service_code=form.get("serviceCode", "")[:64],
        network=form.get("networkCode", "")[:16],
        text=form.get("text", ""),
    )


def parse_ussd_end(form: Mapping[str, str]) -> UssdEnded | None:
    session_id = form.get("sessionId", "").strip()
    if not session_id or len(session_id) > MAX_SESSION_ID:
        return None
    status = _END_STATUSES.get(form.get("status", "").strip().lower(), "unknown")
    return UssdEnded(
        provider=NAME,
        session_id=session_id,
        status=status,
        hops=_int(form.get("hopsCount")),
        duration_ms=_int(form.get("durationInMillis")),
    )


# Delivery report statuses (reference §2.2): only Success is delivered; Sent, Submitted
# and Buffered are on their way; the rest failed.
_DELIVERY = {
    "sent": DeliveryStatus.sent, "submitted": DeliveryStatus.sent,
    "buffered": DeliveryStatus.sent, "success": DeliveryStatus.delivered,
    "rejected": DeliveryStatus.failed, "failed": DeliveryStatus.failed,
    "absentsubscriber": DeliveryStatus.failed, "expired": DeliveryStatus.failed,
}
_DATE_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S")
MAX_ID = 128
MAX_TEXT = 1600


def parse_date(value: str) -> datetime | None:
    """AT's dates come in three shapes (reference §2.1); anything else is None."""
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(value.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def parse_sms(form: Mapping[str, str]) -> InboundSms | None:
    """An incoming message, or None without its id or sender."""
    external_id = form.get("id", "").strip()
    sender = form.get("from", "")
    if not external_id or len(external_id) > MAX_ID or not sender.strip():
        return None
    return InboundSms(
        provider=NAME, external_id=external_id, phone=sender, to=form.get("to", "")[:32],
        text=form.get("text", "")[:MAX_TEXT], received_at=parse_date(form.get("date", "")),
    )


def parse_delivery(form: Mapping[str, str]) -> DeliveryReport | None:
    message_id = form.get("id", "").strip()
    if not message_id or len(message_id) > MAX_ID:
        return None
    raw = form.get("status", "").strip()
    status = _DELIVERY.get(raw.lower(), DeliveryStatus.unknown)
    reason = form.get("failureReason", "").strip()
    return DeliveryReport(provider=NAME, status=status,
                          raw_status=f"{raw}:{reason}" if reason else raw,
                          provider_message_id=message_id)


def parse_optout(form: Mapping[str, str]) -> str | None:
    """The phone number that opted out of bulk messages, or None."""
    phone = form.get("phoneNumber", "")
    return phone if phone.strip() else None


def render_ussd(text: str, *, end: bool) -> str:
    return ("END " if end else "CON ") + text


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 12:
        return None
    return int(value)
