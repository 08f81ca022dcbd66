"""Africa's Talking outbound SMS, through the official SDK (``africastalking==2.0.3``).

One ``send`` is one POST to ``/version1/messaging`` for one recipient. The SDK is
blocking (``requests``), so calls run in a small thread pool of our own, never on the
event loop and never in the default executor the worker uses for the database.

What the SDK does and does not do (reference/africastalking.md §4), and how it is handled:

- No public base-URL setting: ``GATEWAY_AT_SMS_URL`` is applied to the service's private
  ``_baseUrl`` (§4.3), checked once at construction so a changed SDK fails at start.
- A non-2xx answer becomes ``AfricasTalkingException(body)`` with no status or headers
  (§4.5). The service below hooks the SDK's one POST helper to raise ``_HttpAnswer`` with
  the status and ``Retry-After`` instead; the SDK still builds the request and parses 2xx
  answers itself.
- A 2xx answer is a ``dict`` only when the content type is exactly ``application/json``,
  otherwise the raw text (§4.6): text is parsed here. A body that is not JSON raises
  ``requests``' ``JSONDecodeError`` inside the SDK when the type claims JSON.
- Transport errors are raw ``requests`` exceptions (§4.5): a refused or unresolved
  connection was never sent (retry); a timeout or a reset after the request left may have
  been sent (ambiguous).
- An invalid number raises ``ValueError`` naming the number, before anything is sent:
  numbers are checked here first, and no exception text is ever logged.
- Thread safety (§4.7): ``SMSService.send`` reads only what construction set and opens a
  new ``requests`` session per call, so one service object is shared by the pool's
  threads; it is never changed after construction. ``africastalking.initialize`` (which
  rewrites module globals) is never called.

A 2xx answer is classified per recipient by ``statusCode`` (§3.4), never by the ``status``
text. Logs carry the outbox id, the outcome and the code: never the number, the text or
the API key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from africastalking.Service import DEFAULT_TIMEOUT_S, AfricasTalkingException, Service
from africastalking.SMS import SMSService
from urllib3.exceptions import NewConnectionError

from gateway.channels.base import OutboundSms, SendOutcome, SendResult, send_slots
from gateway.settings import Settings
from gateway.store.models import utcnow

log = logging.getLogger("gateway.channels.africastalking")

NAME = "africastalking"
ENDPOINT_PATH = "/messaging"
MAX_MESSAGE_ID = 128  # what the delivery-report parser accepts
INSUFFICIENT_BALANCE_WAIT = 1800.0  # seconds: time for an operator to top up
_E164 = re.compile(r"\+\d{4,15}")
_WORD = re.compile(r"[A-Za-z]{1,40}")
_SDK_POST = "_Service__make_post_request"  # the SDK's one POST helper (name-mangled)

# Per-recipient status codes (reference §3.4).
ACCEPTED = frozenset({100, 101, 102})  # Processed, Sent, Queued
TRANSIENT = frozenset({500, 501})  # InternalServerError, GatewayError
INSUFFICIENT_BALANCE = 405
PERMANENT = frozenset({
    401,  # RiskHold: needs a person to look at the account or the content
    402,  # InvalidSenderId: configuration, resending changes nothing
    403,  # InvalidPhoneNumber
    404,  # UnsupportedNumberType
    406,  # UserInBlacklist: the resident opted out at the provider
    407,  # CouldNotRoute: typical of a country the provider does not serve
    409,  # DoNotDisturbRejection
    502,  # RejectedByGateway: permanent unless seen to be transient
})


class _HttpAnswer(Exception):
    """A non-2xx answer, with what the SDK's own exception leaves out."""

    def __init__(self, status: int, retry_after: str | None) -> None:
        super().__init__(status)
        self.status = status
        self.retry_after = retry_after


_original_post = getattr(Service, _SDK_POST, None)


class _SmsService(SMSService):  # type: ignore[misc]  # the SDK ships no type hints
    """The SDK's SMS service, with its POST helper reporting the HTTP status."""

    def _Service__make_post_request(  # noqa: N802 - overrides the SDK's mangled name
        self, url: str, headers: dict[str, str], data: Any, params: Any,
        callback: Any = None, timeout: Any = DEFAULT_TIMEOUT_S,
    ) -> requests.Response:
        assert _original_post is not None
        response: requests.Response = _original_post(url, headers, data, params, callback,
                                                     timeout)
        if not 200 <= response.status_code < 300:
            raise _HttpAnswer(response.status_code, response.headers.get("retry-after"))
        return response


def _base_url(sms_url: str) -> str:
    """``GATEWAY_AT_SMS_URL`` (the full endpoint) as the SDK's ``_baseUrl``."""
    parts = urlsplit(sms_url)
    path = parts.path.rstrip("/")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
            or parts.fragment or not path.endswith(ENDPOINT_PATH):
        raise ValueError(
            "GATEWAY_AT_SMS_URL must be the full messaging endpoint, such as "
            "https://api.sandbox.africastalking.com/version1/messaging")
    return f"{parts.scheme}://{parts.netloc}{path.removesuffix(ENDPOINT_PATH)}"


class AfricasTalkingSender:
    name = NAME

    def __init__(
        self, *, username: str, api_key: str, sender_id: str | None = None,
        sms_url: str | None = None, timeout: tuple[float, float] = DEFAULT_TIMEOUT_S,
        max_threads: int = 8,
    ) -> None:
        if not api_key:
            raise ValueError("the Africa's Talking API key is empty")
        if not username:
            raise ValueError("the Africa's Talking username is empty")
        if _original_post is None:
            raise RuntimeError("the africastalking SDK is not the expected 2.0.3: its POST "
                               "helper is missing")
        base_url = _base_url(sms_url) if sms_url else None
        self._sender_id = sender_id or None
        self._service = _SmsService(username, api_key)
        if base_url is not None:
            self._service._baseUrl = base_url
            if self._service._make_url(ENDPOINT_PATH) != base_url + ENDPOINT_PATH:
                raise RuntimeError("the africastalking SDK did not take the messaging URL")
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=max_threads,
                                        thread_name_prefix="africastalking")
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AfricasTalkingSender:
        key = settings.at_api_key.get_secret_value().strip() if settings.at_api_key else ""
        if not key:
            raise ValueError(
                "GATEWAY_PROVIDER=africastalking needs GATEWAY_AT_API_KEY (the API key of "
                "the Africa's Talking application named by GATEWAY_AT_USERNAME); it is not set")
        username = settings.at_username.strip()
        if not username:
            raise ValueError("GATEWAY_PROVIDER=africastalking needs GATEWAY_AT_USERNAME")
        # One thread per send the worker keeps in flight (``send_slots``): a request hanging
        # until its timeout holds its own thread, and no other send queues behind it.
        # Threads start only when needed, so a fast provider uses few of them.
        threads = send_slots(settings.send_rate, settings.send_timeout)
        timeout = settings.send_timeout
        return cls(username=username, api_key=key,
                   sender_id=(settings.at_from or "").strip() or None,
                   sms_url=(settings.at_sms_url or "").strip() or None, max_threads=threads,
                   timeout=(min(DEFAULT_TIMEOUT_S[0], timeout), timeout))

    @property
    def endpoint(self) -> str:
        """Where messages go (no secret in it)."""
        return str(self._service._make_url(ENDPOINT_PATH))

    async def send(self, message: OutboundSms) -> SendResult:
        if self._closed:
            return self._done(message, SendResult(SendOutcome.retry, code="closed"))
        if not _E164.fullmatch(message.to):
            return self._done(message, SendResult(SendOutcome.failed, code="invalid-number"))
        try:
            pending = self._pool.submit(self._send_blocking, message)
        except RuntimeError:  # the pool was shut down meanwhile: nothing left
            return self._done(message, SendResult(SendOutcome.retry, code="closed"))
        return self._done(message, await asyncio.wrap_future(pending))

    def _send_blocking(self, message: OutboundSms) -> SendResult:
        try:
            answer = self._service.send(message.text, [message.to],
                                        sender_id=self._sender_id,
                                        timeout=self._timeout)
        except _HttpAnswer as exc:
            return classify_http(exc.status, exc.retry_after)
        except requests.exceptions.JSONDecodeError:  # typed JSON, and it was not
            return SendResult(SendOutcome.ambiguous, code="unreadable")
        except requests.exceptions.ConnectTimeout:
            return SendResult(SendOutcome.retry, code="connect-timeout")
        except (requests.exceptions.SSLError, requests.exceptions.ProxyError):
            return SendResult(SendOutcome.retry, code="connect")
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                return SendResult(SendOutcome.retry, code="connect")
            return SendResult(SendOutcome.ambiguous, code="no-answer")
        except requests.exceptions.Timeout:
            return SendResult(SendOutcome.ambiguous, code="timeout")
        except requests.exceptions.RequestException:
            return SendResult(SendOutcome.ambiguous, code="no-answer")
        except AfricasTalkingException:  # a non-2xx the hook did not see (not expected)
            return SendResult(SendOutcome.failed, code="http")
        except ValueError:  # the SDK's number check: nothing was sent
            return SendResult(SendOutcome.failed, code="invalid-number")
        return classify_answer(answer, message.to)

    def _done(self, message: OutboundSms, result: SendResult) -> SendResult:
        level = logging.INFO if result.outcome is SendOutcome.accepted else logging.WARNING
        log.log(level, "africastalking: outbox #%d %s%s", message.outbox_id,
                result.outcome.value, f" ({result.code})" if result.code else "")
        return result

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let a send already running finish (its result is still awaited), off the loop.
        await asyncio.to_thread(self._pool.shutdown, wait=True)


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """Whether the connection failed before the request left (refused, unresolvable)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, NewConnectionError):
            return True
        todo.extend([getattr(current, "reason", None), current.__cause__, current.__context__])
        todo.extend(a for a in current.args if isinstance(a, BaseException))
    return False


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - utcnow()).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def classify_http(status: int, retry_after: str | None = None) -> SendResult:
    """A non-2xx answer: nothing was accepted."""
    code = f"http-{status}"
    if status in (408, 429) or status >= 500:
        return SendResult(SendOutcome.retry, code=code, retry_after=_retry_after(retry_after),
                          throttled=status == 429)
    return SendResult(SendOutcome.failed, code=code)  # 401 bad key, 400 bad request...


def classify_answer(answer: object, number: str) -> SendResult:
    """A 2xx answer, as the SDK returned it (a dict, or text when the type had a charset)."""
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except ValueError:
            return SendResult(SendOutcome.ambiguous, code="unreadable")
    data = answer.get("SMSMessageData") if isinstance(answer, dict) else None
    recipients = data.get("Recipients") if isinstance(data, dict) else None
    if not isinstance(recipients, list):
        return SendResult(SendOutcome.ambiguous, code="unreadable")
    assert isinstance(data, dict)
    if not recipients:  # e.g. {"Message": "InvalidSenderId", "Recipients": []}
        summary = data.get("Message")
        word = summary if isinstance(summary, str) and _WORD.fullmatch(summary) else None
        return SendResult(SendOutcome.failed, code=word or "no-recipient")
    mine = [r for r in recipients if isinstance(r, dict) and r.get("number") == number]
    if not mine and len(recipients) == 1 and isinstance(recipients[0], dict):
        mine = recipients  # the provider wrote the number its own way
    if len(mine) != 1:
        return SendResult(SendOutcome.ambiguous, code="unreadable")
    return classify_recipient(mine[0])


def classify_recipient(recipient: dict[str, Any]) -> SendResult:
    raw = recipient.get("statusCode")
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool):
        return SendResult(SendOutcome.ambiguous, code="unreadable")
    code = str(raw)
    if raw in ACCEPTED:
        message_id = recipient.get("messageId")
        usable = (isinstance(message_id, str) and message_id not in ("", "None")
                  and len(message_id) <= MAX_MESSAGE_ID)
        return SendResult(SendOutcome.accepted,
                          provider_message_id=message_id if usable else None)
    if raw in TRANSIENT:
        return SendResult(SendOutcome.retry, code=code)
    if raw == INSUFFICIENT_BALANCE:
        return SendResult(SendOutcome.retry, code=code, retry_after=INSUFFICIENT_BALANCE_WAIT)
    if raw in PERMANENT:
        return SendResult(SendOutcome.failed, code=code)
    return SendResult(SendOutcome.ambiguous, code=code)  # a code this adapter does not know
