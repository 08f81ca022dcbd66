"""Africa's Talking: the outbound sender through the real SDK (africastalking 2.0.3)
against a loopback server that speaks the documented API, and the inbound parsers on raw
payloads.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from gateway.app import create_app
from gateway.channels import africastalking as at
from gateway.channels.africastalking_sender import AfricasTalkingSender
from gateway.channels.base import DeliveryStatus, OutboundSms, SendOutcome, SendResult
from gateway.channels.senders import make_sender as make_configured_sender
from gateway.errors import StartupError
from gateway.outbox import outbox
from gateway.runtime import Runtime, build_runtime
from gateway.settings import ProviderName, Settings
from tests.capture import raw_log
from tests.fake_africastalking import FakeAfricasTalking
from tests.handset import Handset, drain

NUMBER = "+22370000001"  # the canary: never in a log record
KEY = "at-test-key-5Zq"
USERNAME = "dannaya-test"


@pytest.fixture
def fake() -> Iterator[FakeAfricasTalking]:
    with FakeAfricasTalking(username=USERNAME, api_key=KEY).running() as server:
        yield server


def make_sender(url: str, *, key: str = KEY, sender_id: str | None = None,
                timeout: tuple[float, float] = (2.0, 5.0)) -> AfricasTalkingSender:
    return AfricasTalkingSender(username=USERNAME, api_key=key, sender_id=sender_id,
                                sms_url=url, timeout=timeout)


def send(sender: AfricasTalkingSender, *messages: OutboundSms) -> list[SendResult]:
    async def run() -> list[SendResult]:
        try:
            return list(await asyncio.gather(*(sender.send(m) for m in messages)))
        finally:
            await sender.close()

    return asyncio.run(run())


def sms(text: str = "Merci, message reçu.", *, to: str = NUMBER, outbox_id: int = 7,
        encoding: str = "GSM-7") -> OutboundSms:
    return OutboundSms(outbox_id=outbox_id, to=to, text=text, encoding=encoding)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- what each answer becomes --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    script: dict[str, Any] = field(default_factory=dict)  # FakeAfricasTalking attributes
    outcome: SendOutcome = SendOutcome.accepted
    code: str | None = None
    retry_after: float | None = None
    reached: int = 1  # requests the fake saw
    key: str = KEY
    message_id: str | None = None  # when the answer is scripted


CASES = {
    # Per-recipient statusCode in a 201 answer (reference §3.4).
    "100 Processed": Case({"status": 100}),
    "101 Sent": Case({"status": 101}),
    "102 Queued": Case({"status": 102}),
    "401 RiskHold": Case({"status": 401}, SendOutcome.failed, "401"),
    "402 InvalidSenderId": Case({"status": 402}, SendOutcome.failed, "402"),
    "403 InvalidPhoneNumber": Case({"status": 403}, SendOutcome.failed, "403"),
    "404 UnsupportedNumberType": Case({"status": 404}, SendOutcome.failed, "404"),
    "405 InsufficientBalance": Case({"status": 405}, SendOutcome.retry, "405", 1800.0),
    "406 UserInBlacklist": Case({"status": 406}, SendOutcome.failed, "406"),
    "407 CouldNotRoute": Case({"status": 407}, SendOutcome.failed, "407"),
    "409 DoNotDisturbRejection": Case({"status": 409}, SendOutcome.failed, "409"),
    "500 InternalServerError": Case({"status": 500}, SendOutcome.retry, "500"),
    "501 GatewayError": Case({"status": 501}, SendOutcome.retry, "501"),
    "502 RejectedByGateway": Case({"status": 502}, SendOutcome.failed, "502"),
    "unknown statusCode": Case({"status": 555}, SendOutcome.ambiguous, "555"),
    # The SDK's parsing quirk (§4.6): with a charset it hands back text, parsed here.
    "json with charset": Case({"content_type": "application/json; charset=utf-8"}),
    "empty recipients": Case({"body": b'{"SMSMessageData":{"Message":"InvalidSenderId",'
                                      b'"Recipients":[]}}'},
                             SendOutcome.failed, "InvalidSenderId"),
    "number written its own way": Case({"body": b'{"SMSMessageData":{"Message":"Sent",'
                                                b'"Recipients":[{"statusCode":101,'
                                                b'"number":"22370000001","status":"Success",'
                                                b'"cost":"0","messageId":"ATXid_x1"}]}}'},
                                       message_id="ATXid_x1"),
    "not json, typed as html": Case({"body": b"<html>Bad gateway</html>",
                                     "content_type": "text/html"},
                                    SendOutcome.ambiguous, "unreadable"),
    "not json, typed as json": Case({"body": b"Sent!"}, SendOutcome.ambiguous, "unreadable"),
    # HTTP-level answers (§3.5; the SDK hides the status, the sender's hook recovers it).
    "401 bad key": Case(key="not-the-key", outcome=SendOutcome.failed, code="http-401"),
    "400": Case({"http_status": 400}, SendOutcome.failed, "http-400"),
    "429 with Retry-After": Case({"http_status": 429, "headers": {"Retry-After": "7"}},
                                 SendOutcome.retry, "http-429", 7.0),
    "503": Case({"http_status": 503}, SendOutcome.retry, "http-503"),
    "500 with Retry-After": Case({"http_status": 500, "headers": {"Retry-After": "120"}},
                                 SendOutcome.retry, "http-500", 120.0),
    # Transport: a reset after the request left, a lost answer.
    "connection closed unanswered": Case({"drop": True}, SendOutcome.ambiguous, "no-answer"),
    "answer too late": Case({"delay": 1.5}, SendOutcome.ambiguous, "timeout"),
}


@pytest.mark.nodb
@pytest.mark.parametrize("name", CASES)
def test_each_answer_is_classified(name: str, fake: FakeAfricasTalking) -> None:
    case = CASES[name]
    for attribute, value in case.script.items():
        setattr(fake, attribute, value)
    [result] = send(make_sender(fake.url, key=case.key, timeout=(2.0, 0.5)), sms())
    assert (result.outcome, result.code, result.retry_after) == (
        case.outcome, case.code, case.retry_after)
    assert len(fake.received) == case.reached
    if case.message_id is not None:
        assert result.provider_message_id == case.message_id
    elif case.outcome is SendOutcome.accepted:  # the id delivery reports will carry
        answer = fake.received[0].answer
        assert result.provider_message_id == answer["SMSMessageData"]["Recipients"][0][
            "messageId"]
        assert (result.provider_message_id or "").startswith("ATXid_")
    else:
        assert result.provider_message_id is None


@pytest.mark.nodb
def test_a_refused_connection_was_not_sent_and_is_retried() -> None:
    url = f"http://127.0.0.1:{closed_port()}/version1/messaging"
    [result] = send(make_sender(url), sms())
    assert (result.outcome, result.code) == (SendOutcome.retry, "connect")


@pytest.mark.nodb
def test_a_retry_after_date_is_read_as_seconds(fake: FakeAfricasTalking) -> None:
    fake.http_status = 503
    fake.headers = {"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"}
    [result] = send(make_sender(fake.url), sms())
    expected = (datetime(2100, 1, 1, tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    assert result.outcome is SendOutcome.retry
    assert result.retry_after is not None and abs(result.retry_after - expected) < 60


@pytest.mark.nodb
def test_a_number_the_sdk_would_refuse_is_failed_before_sending(
        fake: FakeAfricasTalking) -> None:
    [result] = send(make_sender(fake.url), sms(to=NUMBER[1:]))
    assert (result.outcome, result.code) == (SendOutcome.failed, "invalid-number")
    assert fake.received == []


@pytest.mark.nodb
def test_concurrent_sends_each_get_their_own_answer(fake: FakeAfricasTalking) -> None:
    numbers = [f"+2547110000{i:02d}" for i in range(12)]
    fake.statuses = dict.fromkeys(numbers[::3], 406)
    results = send(make_sender(fake.url),
                   *(sms(f"message {i}", to=n, outbox_id=i) for i, n in enumerate(numbers)))
    ids = {r.form["to"]: r.answer["SMSMessageData"]["Recipients"][0]["messageId"]
           for r in fake.received}
    assert sorted(ids) == sorted(numbers)
    for number, result in zip(numbers, results, strict=True):
        if number in fake.statuses:
            assert (result.outcome, result.code) == (SendOutcome.failed, "406")
        else:
            assert (result.outcome, result.provider_message_id) == (
                SendOutcome.accepted, ids[number])


# --- what goes over the wire ---------------------------------------------------------


@pytest.mark.nodb
def test_the_request_carries_key_username_number_and_text(fake: FakeAfricasTalking) -> None:
    [result] = send(make_sender(fake.url), sms("Merci, message reçu."))
    assert result.outcome is SendOutcome.accepted
    [request] = fake.received
    assert request.path == "/version1/messaging"
    assert request.headers["apikey"] == KEY
    assert request.headers["accept"] == "application/json"
    assert request.form["username"] == USERNAME
    assert request.form["to"] == NUMBER
    assert request.form["message"] == "Merci, message reçu."
    assert "from" not in request.form  # unset: Africa's Talking's default sender


@pytest.mark.nodb
def test_a_ucs2_message_arrives_intact(fake: FakeAfricasTalking) -> None:
    text = "I ni ce! Sɔgɔma, i ka kɛnɛ wa? Ɲɛ ŋ ɔ ɛ — Dannaya"
    [result] = send(make_sender(fake.url), sms(text, encoding="UCS-2"))
    assert result.outcome is SendOutcome.accepted
    assert fake.received[0].form["message"] == text


def at_settings(**values: Any) -> Settings:
    return Settings(_env_file=None, provider=ProviderName.africastalking, **values)


@pytest.mark.nodb
def test_from_settings_sends_the_configured_sender_id(fake: FakeAfricasTalking) -> None:
    sender = AfricasTalkingSender.from_settings(at_settings(
        at_username=USERNAME, at_api_key=SecretStr(KEY), at_from="DANNAYA",
        at_sms_url=fake.url))
    assert sender.endpoint == fake.url
    [result] = send(sender, sms())
    assert result.outcome is SendOutcome.accepted
    assert fake.received[0].form["from"] == "DANNAYA"


@pytest.mark.nodb
def test_from_settings_refuses_without_an_api_key() -> None:
    with pytest.raises(ValueError, match="GATEWAY_AT_API_KEY"):
        AfricasTalkingSender.from_settings(at_settings())
    with pytest.raises(ValueError, match="GATEWAY_AT_API_KEY"):
        AfricasTalkingSender.from_settings(at_settings(at_api_key=SecretStr("  ")))
    with pytest.raises(StartupError, match="GATEWAY_AT_API_KEY"):  # `gateway serve` says so
        make_configured_sender(at_settings())


@pytest.mark.nodb
@pytest.mark.parametrize("url", ["ftp://example.org/version1/messaging",
                                 "https://api.africastalking.com/version1",
                                 "https://api.africastalking.com/version1/messaging?x=1"])
def test_from_settings_refuses_a_url_that_is_not_the_endpoint(url: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_AT_SMS_URL"):
        AfricasTalkingSender.from_settings(at_settings(at_api_key=SecretStr(KEY),
                                                       at_sms_url=url))


@pytest.mark.nodb
@pytest.mark.parametrize(("username", "endpoint"), [
    ("sandbox", "https://api.sandbox.africastalking.com/version1/messaging"),
    ("dannaya", "https://api.africastalking.com/version1/messaging"),
])
def test_without_a_url_the_sdk_chooses_by_username(username: str, endpoint: str) -> None:
    sender = AfricasTalkingSender.from_settings(at_settings(
        at_username=username, at_api_key=SecretStr(KEY)))
    assert sender.endpoint == endpoint
    asyncio.run(sender.close())


@pytest.mark.nodb
def test_the_fake_answers_xml_without_accept_json_as_at_does(fake: FakeAfricasTalking) -> None:
    form = {"username": USERNAME, "to": NUMBER, "message": "x"}
    answer = httpx.post(fake.url, data=form, headers={"apiKey": KEY, "Accept": "*/*"})
    assert (answer.status_code, answer.headers["content-type"]) == (201, "application/xml")
    assert answer.text.startswith("<?xml") and "<statusCode>101</statusCode>" in answer.text
    refused = httpx.post(fake.url, data=form, headers={"Accept": "application/json"})
    assert (refused.status_code, refused.text) == (401, "The supplied authentication is invalid")


@pytest.mark.nodb
def test_a_closed_sender_sends_nothing(fake: FakeAfricasTalking) -> None:
    sender = make_sender(fake.url)
    asyncio.run(sender.close())
    asyncio.run(sender.close())  # twice is fine
    [result] = send(sender, sms())
    assert (result.outcome, result.code) == (SendOutcome.retry, "closed")
    assert fake.received == []


@pytest.mark.nodb
def test_no_number_and_no_key_in_any_log_record(fake: FakeAfricasTalking,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with raw_log() as raw:
        fake.statuses = {"+22370000002": 406}
        send(make_sender(fake.url), sms(outbox_id=41), sms(to="+22370000002", outbox_id=42),
             sms(to=NUMBER[1:], outbox_id=43))
        send(make_sender(fake.url, key="wrong-key-Yt3"), sms(outbox_id=44))
        fake.delay = 1.0
        send(make_sender(fake.url, timeout=(2.0, 0.3)), sms(outbox_id=45))
        fake.delay = 0.0
        send(make_sender(f"http://127.0.0.1:{closed_port()}/version1/messaging"),
             sms(outbox_id=46))
    logged = "\n".join(raw.lines + [f"{r.getMessage()} {r.exc_text or ''}"
                                    for r in caplog.records])
    for secret in (NUMBER, NUMBER[1:], NUMBER[4:], "%2B" + NUMBER[1:], "70000002", KEY,
                   "wrong-key-Yt3"):
        assert secret not in logged
    # The check can see: each send was logged by its outbox id, and the HTTP client too.
    for outbox_id in range(41, 47):
        assert f"outbox #{outbox_id} " in logged
    assert "/version1/messaging" in logged


# --- the whole way: a resident's keyword, the reply through AT, its delivery report ---


@pytest.fixture
def at_runtime(settings: Settings, fake: FakeAfricasTalking,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    for name, value in {"GATEWAY_PROVIDER": "africastalking", "GATEWAY_AT_USERNAME": USERNAME,
                        "GATEWAY_AT_API_KEY": KEY, "GATEWAY_AT_SMS_URL": fake.url,
                        "GATEWAY_AT_FROM": "36123"}.items():
        monkeypatch.setenv(name, value)
    configured = Settings(_env_file=None, database_url=settings.database_url,
                          key_file=settings.key_file, content_dir=settings.content_dir,
                          send_rate=settings.send_rate)
    rt = build_runtime(configured)
    assert isinstance(rt.sender, AfricasTalkingSender)
    yield rt
    asyncio.run(rt.sender.close())
    rt.db.dispose()


def outbox_row(rt: Runtime) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        [row] = conn.execute(select(outbox.outbox)).all()
    return dict(row._mapping)


def test_a_reply_goes_out_through_africastalking_and_its_report_delivers_it(
        at_runtime: Runtime, fake: FakeAfricasTalking) -> None:
    with TestClient(create_app(at_runtime.settings, runtime=at_runtime)) as client:
        Handset(client, at_runtime, NUMBER).deliver("SONDAGE")
        assert drain(at_runtime) == 1
        [request] = fake.received
        assert (request.form["to"], request.form["from"]) == (NUMBER, "36123")
        assert request.form["message"].startswith("Attention: les SMS restent dans le")
        message_id = request.answer["SMSMessageData"]["Recipients"][0]["messageId"]
        row = outbox_row(at_runtime)
        assert (row["status"], row["provider"], row["provider_message_id"]) == (
            "sent", "africastalking", message_id)

        def report(status: str) -> str:
            response = client.post("/webhooks/africastalking/delivery", data={
                "id": message_id, "status": status, "phoneNumber": NUMBER,
                "networkCode": "99999"})
            assert response.status_code == 200
            return str(response.text)

        assert report("Success") == "matched"
        assert outbox_row(at_runtime)["status"] == "delivered"
        assert report("Buffered") == "stale"  # late and out of order: never backwards
        assert outbox_row(at_runtime)["status"] == "delivered"


# --- inbound payloads, raw --------------------------------------------------------------


MO = {"from": "+254711000111", "to": "36123", "text": "SONDAGE", "id": "ATXid_mo1",
      "networkCode": "63902", "date": "2026-11-24 10:00:00"}


@pytest.mark.nodb
@pytest.mark.parametrize(("changes", "expected"), [
    ({}, ("ATXid_mo1", "+254711000111", "SONDAGE", datetime(2026, 11, 24, 10, tzinfo=UTC))),
    ({"date": "2017-05-03T06:04:45Z"},
     ("ATXid_mo1", "+254711000111", "SONDAGE", datetime(2017, 5, 3, 6, 4, 45, tzinfo=UTC))),
    ({"date": "2018-03-19T08:34:18.445Z"},
     ("ATXid_mo1", "+254711000111", "SONDAGE",
      datetime(2018, 3, 19, 8, 34, 18, 445000, tzinfo=UTC))),
    ({"date": "yesterday"}, ("ATXid_mo1", "+254711000111", "SONDAGE", None)),
    ({"text": "x" * 2000}, ("ATXid_mo1", "+254711000111", "x" * 1600,
                            datetime(2026, 11, 24, 10, tzinfo=UTC))),
    ({"id": ""}, None),
    ({"id": "A" * 129}, None),
    ({"from": " "}, None),
])
def test_incoming_sms_payloads(changes: dict[str, str], expected: tuple[Any, ...] | None,
                               ) -> None:
    message = at.parse_sms({**MO, **changes})
    if expected is None:
        assert message is None
        return
    assert message is not None
    assert (message.external_id, message.phone, message.text, message.received_at) == expected
    assert (message.provider, message.to) == ("africastalking", "36123")


@pytest.mark.nodb
@pytest.mark.parametrize(("fields", "expected"), [
    ({"status": "Sent"}, (DeliveryStatus.sent, "Sent")),
    ({"status": "Submitted"}, (DeliveryStatus.sent, "Submitted")),
    ({"status": "Buffered"}, (DeliveryStatus.sent, "Buffered")),
    ({"status": "Success"}, (DeliveryStatus.delivered, "Success")),
    ({"status": "Rejected", "failureReason": "UserInBlackList"},
     (DeliveryStatus.failed, "Rejected:UserInBlackList")),
    ({"status": "Failed", "failureReason": "DeliveryFailure"},
     (DeliveryStatus.failed, "Failed:DeliveryFailure")),
    ({"status": "AbsentSubscriber"}, (DeliveryStatus.failed, "AbsentSubscriber")),
    ({"status": "Expired"}, (DeliveryStatus.failed, "Expired")),
    ({"status": "Teleported"}, (DeliveryStatus.unknown, "Teleported")),
    ({"status": "Success", "id": ""}, None),
])
def test_delivery_report_payloads(fields: dict[str, str],
                                  expected: tuple[DeliveryStatus, str] | None) -> None:
    report = at.parse_delivery({"id": "ATXid_abc", "phoneNumber": "+254711000111",
                                "networkCode": "63902", **fields})
    if expected is None:
        assert report is None
        return
    assert report is not None
    assert (report.status, report.raw_status) == expected
    assert (report.provider, report.provider_message_id) == ("africastalking", "ATXid_abc")


@pytest.mark.nodb
@pytest.mark.parametrize(("fields", "expected"), [
    ({"senderId": "DANNAYA", "phoneNumber": "+254711000111"}, "+254711000111"),
    ({"senderId": "DANNAYA", "phoneNumber": " "}, None),
    ({"senderId": "DANNAYA"}, None),
])
def test_optout_payloads(fields: dict[str, str], expected: str | None) -> None:
    assert at.parse_optout(fields) == expected
