"""Kannel: smsbox's sms-service get-url in, sendsms out, dlr-url for delivery reports,
and USSD over SMPP through Kannel's meta-data.

Inbound, Kannel calls (brief, "Public contract")
``/webhooks/kannel/sms?from=%p&to=%P&text=%a&id=%I&coding=%c&charset=%C``; delivery
reports come to the dlr-url the gateway builds for each message, carrying our own outbox
id and Kannel's ``%d`` status (reference/kannel.md): 1 delivered, 2 failed, 4 buffered at
the SMSC, 8 accepted by the SMSC, 16 rejected by the SMSC.

USSD: the sms-service of the operator's USSD bind calls
``/webhooks/kannel/ussd?from=%p&to=%P&text=%a&id=%I&meta=%D&smsc=%i&coding=%c&charset=%C``
once per operation (``parse_ussd``), and each screen goes back in the get-url's answer
(``ussd_reply``): the text as the body, the operation and the session parameter echoed in
``X-Kannel-Meta-Data``. Kannel keeps no session: the service finds it by the phone and
the operator's session number.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, quote_from_bytes, urlencode, urlsplit, urlunsplit

from gateway.channels.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundSms,
    OutboundSms,
    SendOutcome,
    SendResult,
    UssdEnded,
    UssdTurn,
    line_session_id,
    send_slots,
)
from gateway.channels.forms import decode_form_bytes
from gateway.channels.http import AnswerLost, NotSent, ProviderClient
from gateway.logs import redact
from gateway.settings import Settings
from gateway.text.encoding import is_gsm7

log = logging.getLogger("gateway.channels.kannel")

NAME = "kannel"
MAX_ID = 128
MAX_TEXT = 1600
_DLR = {
    "1": DeliveryStatus.delivered, "2": DeliveryStatus.failed, "4": DeliveryStatus.sent,
    "8": DeliveryStatus.sent, "16": DeliveryStatus.failed,
}


def parse_sms(fields: Mapping[str, bytes]) -> InboundSms | None:
    """A message from the get-url's query (or form) fields, as bytes (``read_raw_form``);
    None without id or sender."""
    external_id = field(fields, "id").strip()
    sender = field(fields, "from")
    if not external_id or len(external_id) > MAX_ID or not sender.strip():
        return None
    return InboundSms(provider=NAME, external_id=external_id, phone=sender,
                      to=field(fields, "to")[:32], text=message_text(fields)[:MAX_TEXT],
                      received_at=None)


def field(fields: Mapping[str, bytes], name: str) -> str:
    """A field that is always ASCII or UTF-8 (ids, numbers, codes), NULs dropped."""
    value = fields.get(name, b"").decode("utf-8", "replace")
    return value.replace("\x00", "") if "\x00" in value else value


# Charsets Kannel names in %C, by their upper-cased name, and the codec for each.
_CHARSETS = {
    "UTF-8": "utf-8", "UTF8": "utf-8",
    "UTF-16BE": "utf-16-be", "UTF16-BE": "utf-16-be", "UTF-16": "utf-16",
    "UCS-2": "utf-16-be", "UCS2": "utf-16-be", "UCS-2BE": "utf-16-be",
    "ISO-8859-1": "latin-1", "ISO8859-1": "latin-1", "LATIN1": "latin-1",
    "ISO-8859-15": "iso8859-15", "WINDOWS-1252": "cp1252", "CP1252": "cp1252",
    "US-ASCII": "latin-1", "ASCII": "latin-1",
}


def message_text(fields: Mapping[str, bytes]) -> str:
    """The ``text`` field decoded by the charset Kannel names beside it (``%C``), so a
    letter is never lost for its encoding (brief: a stop word is never missed).

    A phone typing ɛ, ɔ or Ê sends UCS-2. Unless smsbox's group sets ``mo-recode = true``
    (recommended: it hands such a message over as UTF-8), Kannel passes it with
    ``coding=2`` and ``charset=UTF-16BE`` as the raw UTF-16BE bytes. Its ``%a`` also
    splits the text into words at whitespace *bytes* and drops those at either end, so a
    UTF-16BE text ending in a space arrives one byte short: the lost byte is put back as
    a space. Without a charset it names, ``coding=2`` means UTF-16BE, anything else
    UTF-8; bytes the charset cannot read become U+FFFD, never an error."""
    raw = fields.get("text", b"")
    charset = field(fields, "charset").strip().upper().replace("_", "-")
    codec = _CHARSETS.get(charset)
    if codec is None:
        if charset:
            log.warning("kannel: unknown charset %r for message %s; read as %s",
                        charset[:32], field(fields, "id")[:MAX_ID],
                        "UTF-16BE" if field(fields, "coding").strip() == "2" else "UTF-8")
        codec = "utf-16-be" if field(fields, "coding").strip() == "2" else "utf-8"
    if codec == "utf-16" and not raw.startswith((b"\xfe\xff", b"\xff\xfe")):
        codec = "utf-16-be"  # no byte-order mark: big-endian, as SMS carries it
    if codec.startswith("utf-16") and len(raw) % 2:
        raw += b" "
    text = raw.decode(codec, errors="replace")
    return text.replace("\x00", "") if "\x00" in text else text


def parse_delivery(fields: Mapping[str, bytes]) -> DeliveryReport | None:
    """A delivery report from our dlr-url: ``id`` is our outbox id, ``status`` Kannel's %d."""
    raw_id = field(fields, "id").strip()
    if not raw_id.isdigit() or len(raw_id) > 18:
        return None
    raw = field(fields, "status").strip()
    return DeliveryReport(provider=NAME, status=_DLR.get(raw, DeliveryStatus.unknown),
                          raw_status=raw[:64], outbox_id=int(raw_id))


# --- USSD over SMPP -------------------------------------------------------------------

MAX_LINE = 60  # hex digits of the operator's session reference


@dataclass(frozen=True)
class UssdConfig:
    """What differs between operators' USSD gateways: the names Kannel's ``smpp-tlv``
    groups give the operation and the session parameters, the operation codes, how much
    of the session parameter numbers the session (settings ``GATEWAY_KANNEL_USSD_*``)."""

    smsc: str = "ussd"  # empty: calls from any SMSC are answered
    op_tlv: str = "ussd_service_op"
    session_tlv: str = "its_session_info"  # empty: the operator sends none
    session_bytes: int = 1  # 0: the whole parameter
    begin_ops: frozenset[int] = frozenset({1})
    answer_ops: frozenset[int] = frozenset({18})
    wait_op: int = 2
    end_op: int = 17
    group: str = "smpp"  # the meta-data group of Kannel's SMPP parameters

    @classmethod
    def from_settings(cls, settings: Settings) -> UssdConfig:
        def ops(value: str) -> frozenset[int]:
            return frozenset(int(c) for c in value.split(",") if c.strip())

        return cls(smsc=settings.kannel_ussd_smsc.strip(),
                   op_tlv=settings.kannel_ussd_op_tlv.strip(),
                   session_tlv=settings.kannel_ussd_session_tlv.strip(),
                   session_bytes=settings.kannel_ussd_session_bytes,
                   begin_ops=ops(settings.kannel_ussd_begin_ops),
                   answer_ops=ops(settings.kannel_ussd_answer_ops),
                   wait_op=settings.kannel_ussd_wait_op, end_op=settings.kannel_ussd_end_op)


@dataclass(frozen=True)
class UssdRequest:
    """One call of the USSD get-url, read: what it means for the service (None: nothing
    to do, nothing to answer) and the session parameter to echo with the answer."""

    event: UssdTurn | UssdEnded | None
    session_info: bytes | None = None


def parse_ussd(fields: Mapping[str, bytes], config: UssdConfig) -> UssdRequest:
    """An operation from the operator's USSD gateway (reference/kannel.md, "USSD over
    SMPP"): one that begins a session (its text is the dialled string: ``*123#`` or a
    longer code), the resident's answer (the text typed), or anything else the network
    sends (abort, release, timeout), which ends the session as dropped."""
    hop_id = field(fields, "id").strip()
    phone = field(fields, "from")
    if not hop_id or len(hop_id) > MAX_ID or not phone.strip():
        log.warning("ussd: Kannel call missing its id or its from field; ignored")
        return UssdRequest(None)
    smsc = field(fields, "smsc").strip()
    if config.smsc and smsc and smsc != config.smsc:
        log.warning("ussd: Kannel call %s from SMSC %r, not the USSD bind %r: not answered "
                    "(give the USSD sms-service `accepted-smsc = %s`)", hop_id, smsc[:32],
                    config.smsc, config.smsc)
        return UssdRequest(None)
    meta = meta_data(field(fields, "meta"), config.group)
    op = operation(meta.get(config.op_tlv, b""))
    if op is None:
        log.warning("ussd: Kannel call %s has no %s in its meta-data: declare the smpp-tlv "
                    "groups for the USSD bind (README, Kannel); not answered", hop_id,
                    config.op_tlv)
        return UssdRequest(None)
    info = meta.get(config.session_tlv) if config.session_tlv else None
    line = ""
    if info is not None:
        line = (info[:config.session_bytes] if config.session_bytes else info).hex()
        line = line[:MAX_LINE]
    if op in config.begin_ops:
        dialled = message_text(fields).strip() or field(fields, "to").strip()
        return UssdRequest(UssdTurn(
            provider=NAME, session_id=line_session_id(line, hop_id), phone=phone,
            service_code=dialled[:64], network=smsc[:16], text="", hop_id=hop_id,
            line=line), info)
    if op in config.answer_ops:
        return UssdRequest(UssdTurn(
            provider=NAME, session_id="", phone=phone, service_code="", network=smsc[:16],
            text=message_text(fields)[:MAX_TEXT], hop_id=hop_id, line=line), info)
    return UssdRequest(UssdEnded(provider=NAME, session_id="", status="incomplete",
                                 hops=None, duration_ms=None, phone=phone, line=line))


def meta_data(raw: str, group: str) -> dict[str, bytes]:
    """The parameters of one group of Kannel's meta-data (``%D``):
    ``?smpp?ussd_service_op=%01&its_session_info=%0A%01&``, each value as its bytes."""
    head = f"?{group}?"
    at = raw.find(head)
    if at < 0:
        return {}
    body = raw[at + len(head):].split("?", 1)[0]  # values are escaped: a '?' opens a group
    try:
        pairs = decode_form_bytes(body.encode("latin-1", "replace"))
    except ValueError:
        return {}
    return dict(pairs)


def operation(value: bytes) -> int | None:
    """A USSD operation code. Kannel 1.4.5 passes it as the raw octet (1 is ``%01``, 0x20 a
    space) although its group says ``integer``; decimal text is read as such too."""
    if not value:
        return None
    if value.isdigit():
        return int(value) if len(value) <= 3 else None
    return int.from_bytes(value[:4], "big")


def ussd_reply(body: str, request: UssdRequest, config: UssdConfig,
               ) -> tuple[str, dict[str, str]]:
    """The get-url's answer to a ``CON ``/``END `` body: the screen as the text, and in
    ``X-Kannel-Meta-Data`` the operation (``wait_op`` or ``end_op``, as the decimal text
    Kannel wants going out) with the session parameter echoed byte for byte. A screen
    outside GSM-7 goes as UCS-2 (``X-Kannel-Coding: 2``). An empty body answers nothing
    (the sms-service's ``omit-empty``)."""
    if not body:
        return "", {}
    end = body.startswith("END ")
    text = body[4:] if body.startswith(("END ", "CON ")) else body
    op = config.end_op if end else config.wait_op
    meta = f"?{config.group}?{quote(config.op_tlv, safe='')}={op}"
    if request.session_info is not None and config.session_tlv:
        meta += (f"&{quote(config.session_tlv, safe='')}="
                 f"{quote_from_bytes(request.session_info, safe='')}")
    headers = {"X-Kannel-Meta-Data": meta}
    if not is_gsm7(text):
        headers["X-Kannel-Coding"] = "2"
    return text, headers


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
    "0: Accepted"; in the ``smsbox`` group, ``mo-recode = true`` is recommended (see
    ``message_text``).
    tests/kannel.py writes such a configuration.
    """

    name = NAME

    def __init__(self, *, sendsms_url: str, sender: str | None, public_url: str,
                 token: str | None = None, timeout: float = 10.0,
                 connections: int = 100) -> None:
        self.base = urlsplit(sendsms_url)
        # The URL's own parameters (username, password), which a message's never replace.
        self.base_query = parse_qsl(self.base.query, keep_blank_values=True)
        self.sender = sender
        self.delivery_url = public_url.rstrip("/") + "/webhooks/kannel/delivery"
        # Kannel replaces %-escapes it knows (%d, %A, %C ...) in the dlr-url and keeps the
        # others: a percent-encoded printable ASCII token only ever has %2x..%7x, which
        # it keeps as they are (checked in from_settings).
        self.token_query = f"&token={quote(token, safe='')}" if token else ""
        # One connection per send the worker keeps in flight (``send_slots``): a hung
        # request holds its own, no other send waits behind it.
        self._client = ProviderClient(timeout=timeout, connect_timeout=min(timeout, 5.0),
                                      connections=connections)

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

    def url(self, message: OutboundSms) -> str:
        """The sendsms URL for ``message``: the configured one with the message's
        parameters, every one percent-encoded (``%d`` in the dlr-url reaches Kannel as it
        is written)."""
        params = self.params(message)
        pairs = [(k, v) for k, v in self.base_query if k not in params] + list(params.items())
        query = urlencode(pairs, quote_via=quote, safe="")
        return urlunsplit(self.base._replace(query=query, fragment=""))

    async def send(self, message: OutboundSms) -> SendResult:
        try:
            answer = await self._client.get(self.url(message))
        except NotSent as exc:
            log.warning("kannel: outbox #%d not sent (%s); will retry", message.outbox_id, exc)
            return SendResult(SendOutcome.retry, code="connect")
        except AnswerLost as exc:  # sent, but the answer was lost
            log.warning("kannel: outbox #%d answer lost (%s)", message.outbox_id, exc)
            return SendResult(SendOutcome.ambiguous, code="no-answer")
        return self.classify(message.outbox_id, answer.status, answer.text,
                             answer.retry_after)

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
        await self._client.close()
