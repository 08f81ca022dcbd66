"""Kannel: smsbox's sms-service get-url in, sendsms out, dlr-url for delivery reports.

Inbound, Kannel calls (brief, "Public contract")
``/webhooks/kannel/sms?from=%p&to=%P&text=%a&id=%I&coding=%c&charset=%C``; delivery
reports come to the dlr-url the gateway builds for each message, carrying our own outbox
id and Kannel's ``%d`` status (reference/kannel.md): 1 delivered, 2 failed, 4 buffered at
the SMSC, 8 accepted by the SMSC, 16 rejected by the SMSC.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from itertools import pairwise
from urllib.parse import quote, urlsplit

import httpx

from gateway.channels.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundSms,
    OutboundSms,
    SendOutcome,
    SendResult,
    send_slots,
)
from gateway.logs import redact
from gateway.settings import Settings

log = logging.getLogger("gateway.channels.kannel")

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
                      to=fields.get("to", "")[:32], text=_text(fields)[:MAX_TEXT],
                      received_at=None)


_UTF16 = frozenset({"UTF-16BE", "UTF16-BE", "UTF-16", "UCS-2", "UCS2"})


def _text(fields: Mapping[str, str]) -> str:
    """The message text. smsbox passes a UCS-2 message (a phone writing ɛ, ɔ or é) as raw
    UTF-16BE bytes unless its group sets ``mo-recode = true``, which turns it into UTF-8
    (reference: tests/kannel.py's configuration). Without it only the ASCII letters
    survive the web layer's UTF-8 decoding: keep those, so STOP still works, and say so."""
    text = fields.get("text", "")
    if fields.get("charset", "").strip().upper() in _UTF16:
        log.warning("sms: Kannel passed a UCS-2 message undecoded (message %s); set "
                    "`mo-recode = true` in smsbox's group", fields.get("id", "")[:MAX_ID])
        # Each ASCII letter arrived as a NUL and itself; anything else is beyond repair.
        text = "".join(ch for prev, ch in pairwise(text) if prev == "\x00" and " " <= ch <= "~")
    return text


def parse_delivery(fields: Mapping[str, str]) -> DeliveryReport | None:
    """A delivery report from our dlr-url: ``id`` is our outbox id, ``status`` Kannel's %d."""
    raw_id = fields.get("id", "").strip()
    if not raw_id.isdigit() or len(raw_id) > 18:
        return None
    raw = fields.get("status", "").strip()
    return DeliveryReport(provider=NAME, status=_DLR.get(raw, DeliveryStatus.unknown),
                          raw_status=raw[:64], outbox_id=int(raw_id))


DLR_MASK = 31  # every report: delivered, failed, buffered, accepted and rejected by the SMSC
ACCEPTED = ("0:", "3:")  # "0: Accepted for delivery", "3: Queued for later delivery"


class KannelConfigError(ValueError):
    """The Kannel settings cannot work; the message says which setting and why."""


class KannelSender:
    """Sends through smsbox's sendsms interface (HTTP GET), asking for every delivery
    report at a dlr-url that carries our own outbox id.

    Kannel answers 202 ``0: Accepted for delivery`` or ``3: Queued for later delivery``
    (bearerbox holds it until the SMSC is back): both are accepted. A 4xx (bad
    credentials, a missing or refused parameter) will not get better by trying again:
    failed. A 5xx, or no connection at all, means nothing was sent: retry. An answer
    lost after the request left (a timeout, a cut connection, a 504 from a proxy, or a
    2xx that is not Kannel's) may hide a message that went out: ambiguous.

    The query string carries the recipient and the credentials, so no URL is ever logged:
    only the outbox id, Kannel's status code and its (redacted) answer.

    Kannel's side needs, besides the sms-service of the brief: in the ``sendsms-user``
    group, ``concatenation = true`` and ``max-messages`` at least the parts of the longest
    message (10 is ample), or Kannel cuts a longer message to one SMS and still answers
    "0: Accepted"; in the ``smsbox`` group, ``mo-recode = true`` (see ``_text``).
    tests/kannel.py writes such a configuration.
    """

    name = NAME

    def __init__(self, *, sendsms_url: str, sender: str | None, public_url: str,
                 token: str | None = None, timeout: float = 10.0, connections: int = 100,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = httpx.URL(sendsms_url)
        self.sender = sender
        self.delivery_url = public_url.rstrip("/") + "/webhooks/kannel/delivery"
        # Kannel replaces %-escapes it knows (%d, %A, %C ...) in the dlr-url and keeps the
        # others: a percent-encoded printable ASCII token only ever has %2x..%7x, which
        # it keeps as they are (checked in from_settings).
        self.token_query = f"&token={quote(token, safe='')}" if token else ""
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            # One connection per send the worker keeps in flight (``send_slots``): a hung
            # request holds its own, no other send waits behind it.
            limits=httpx.Limits(max_connections=connections,
                                max_keepalive_connections=min(connections, 20)),
            follow_redirects=False, transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings) -> KannelSender:
        url = settings.kannel_sendsms_url
        if not url or not url.strip():
            raise KannelConfigError(
                "GATEWAY_PROVIDER=kannel needs GATEWAY_KANNEL_SENDSMS_URL: smsbox's sendsms "
                "URL with its credentials, e.g. http://127.0.0.1:13013/cgi-bin/sendsms"
                "?username=USER&password=PASSWORD")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise KannelConfigError(
                "GATEWAY_KANNEL_SENDSMS_URL must be an http:// or https:// URL with a host "
                "(smsbox's sendsms URL)")
        public = settings.public_url.strip()
        if not public.startswith(("http://", "https://")) or "%" in public:
            raise KannelConfigError(
                "GATEWAY_PUBLIC_URL must be an http:// or https:// URL without '%': Kannel "
                "calls it back for delivery reports and replaces %-escapes in it")
        token = settings.token
        if token is not None and not (token.isascii() and token.isprintable()):
            raise KannelConfigError(
                "GATEWAY_WEBHOOK_TOKEN must be printable ASCII with Kannel: its dlr-url "
                "would mangle the encoded form of other characters")
        return cls(sendsms_url=url.strip(), sender=settings.kannel_from or None,
                   public_url=public, token=token, timeout=settings.send_timeout,
                   connections=send_slots(settings.send_rate, settings.send_timeout))

    def dlr_url(self, outbox_id: int) -> str:
        """Where Kannel reports on this message; Kannel fills in ``%d``, the status."""
        return f"{self.delivery_url}?id={outbox_id}&status=%d{self.token_query}"

    def params(self, message: OutboundSms) -> dict[str, str]:
        params = {"to": message.to, "text": message.text, "charset": "UTF-8",
                  "dlr-mask": str(DLR_MASK), "dlr-url": self.dlr_url(message.outbox_id)}
        if self.sender:
            params["from"] = self.sender
        if message.encoding == "UCS-2":
            params["coding"] = "2"  # Kannel converts the UTF-8 text to UCS-2
        return params

    async def send(self, message: OutboundSms) -> SendResult:
        url = self.url.copy_merge_params(self.params(message))
        try:
            response = await self._client.get(url)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            log.warning("kannel: outbox #%d not sent (%s); will retry", message.outbox_id,
                        exc.__class__.__name__)
            return SendResult(SendOutcome.retry, code="connect")
        except httpx.HTTPError as exc:  # sent, but the answer was lost
            log.warning("kannel: outbox #%d answer lost (%s)", message.outbox_id,
                        exc.__class__.__name__)
            return SendResult(SendOutcome.ambiguous, code="no-answer")
        return self.classify(message.outbox_id, response.status_code, response.text,
                             response.headers.get("retry-after"))

    def classify(self, outbox_id: int, status: int, body: str,
                 retry_after: str | None = None) -> SendResult:
        answer = redact(" ".join(body.split())[:100])
        code = f"kannel-{status}"
        if 200 <= status < 300:
            if answer.startswith(ACCEPTED):
                log.info("kannel: outbox #%d accepted (%s)", outbox_id, answer)
                return SendResult(SendOutcome.accepted)
            log.warning("kannel: outbox #%d got an unreadable %d answer: %r", outbox_id,
                        status, answer)
            return SendResult(SendOutcome.ambiguous, code=code)
        if status == 504:  # a proxy gave up waiting: smsbox may have taken it
            log.warning("kannel: outbox #%d timed out behind a proxy (504)", outbox_id)
            return SendResult(SendOutcome.ambiguous, code=code)
        if status == 429 or status >= 500:
            after = retry_after.strip() if retry_after else ""
            log.warning("kannel: outbox #%d not taken (%d: %r); will retry", outbox_id,
                        status, answer)
            return SendResult(SendOutcome.retry, code=code,
                              retry_after=float(after) if after.isdigit() else None,
                              throttled=status == 429)
        log.error("kannel: outbox #%d refused (%d: %r)", outbox_id, status, answer)
        return SendResult(SendOutcome.failed, code=code)

    async def close(self) -> None:
        await self._client.aclose()
