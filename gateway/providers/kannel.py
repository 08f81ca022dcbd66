"""Kannel: smsbox's sms-service get-url in, sendsms out, dlr-url for delivery reports.

Inbound, Kannel calls (brief, "Public contract")
``/webhooks/kannel/sms?from=%p&to=%P&text=%a&id=%I&coding=%c&charset=%C``; delivery
reports come to the dlr-url the gateway builds for each message, carrying our own outbox
id and Kannel's ``%d`` status (reference/kannel.md): 1 delivered, 2 failed, 4 buffered at
the SMSC, 8 accepted by the SMSC, 16 rejected by the SMSC.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.providers.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundSms,
    OutboundSms,
    SendResult,
)
from gateway.settings import Settings

NAME = "kannel"
MAX_ID = 128
MAX_TEXT = 1600
_DLR = {
    "1": DeliveryStatus.delivered, "2": DeliveryStatus.failed, "4": DeliveryStatus.sent,
    "8": DeliveryStatus.sent, "16": DeliveryStatus.failed,
}


def parse_sms(fields: Mapping[str, str]) -> InboundSms | None:
    """A message from the get-url's query (or form) fields; None without id or sender."""
    external_id = fields.get("id", "").strip()
    sender = fields.get("from", "")
    if not external_id or len(external_id) > MAX_ID or not sender.strip():
        return None
    return InboundSms(provider=NAME, external_id=external_id, phone=sender,
                      to=fields.get("to", "")[:32], text=fields.get("text", "")[:MAX_TEXT],
                      received_at=None)


def parse_delivery(fields: Mapping[str, str]) -> DeliveryReport | None:
    """A delivery report from our dlr-url: ``id`` is our outbox id, ``status`` Kannel's %d."""
    raw_id = fields.get("id", "").strip()
    if not raw_id.isdigit() or len(raw_id) > 18:
        return None
    raw = fields.get("status", "").strip()
    return DeliveryReport(provider=NAME, status=_DLR.get(raw, DeliveryStatus.unknown),
                          raw_status=raw[:64], outbox_id=int(raw_id))


class KannelSender:
    """Placeholder until the sendsms client lands."""

    name = NAME

    @classmethod
    def from_settings(cls, settings: Settings) -> KannelSender:
        raise NotImplementedError("KannelSender is not implemented yet")

    async def send(self, message: OutboundSms) -> SendResult:
        raise NotImplementedError

    async def close(self) -> None:
        return None
