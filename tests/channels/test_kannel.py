"""Kannel, end to end and at the edges.

End to end (``@pytest.mark.kannel``): a real bearerbox, smsbox and fakesmsc (tests/kannel.py)
in front of a real ``gateway serve`` with GATEWAY_PROVIDER=kannel. A message typed at the
fake SMSC reaches the gateway through smsbox's get-url; the reply leaves through the outbox
and sendsms and is read back at the fake SMSC; Kannel's delivery reports come back to the
dlr-url and move the outbox row to delivered.

At the edges (no Kannel needed): the sender's classification of each of Kannel's answers
against a local HTTP server, the request it builds, and its refusals at start.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from gateway.channels.base import OutboundSms, SendOutcome, SendResult, UssdEnded, UssdTurn
from gateway.channels.forms import decode_form_bytes
from gateway.channels.kannel import (
    KannelConfigError,
    KannelSender,
    UssdConfig,
    UssdRequest,
    operation,
    parse_sms,
    parse_ussd,
    ussd_reply,
)
from gateway.channels.senders import make_sender
from gateway.dialogue import sms
from gateway.errors import StartupError
from gateway.logs import configure_logging
from gateway.outbox import outbox
from gateway.outbox.outbox import OutboxPolicy
from gateway.privacy import keys as keys_mod
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.db import make_engine
from gateway.store.models import utcnow
from tests import capture
from tests.capture import RawLog, serving
from tests.conftest import REPO
from tests.handset import Handset
from tests.kannel import (
    SHORT_CODE,
    Binaries,
    Kannel,
    Sms,
    free_port,
    gateway_env,
    gateway_serving,
    require_kannel,
    wait_for,
)

PHONE = "+22370000101"  # test numbers (the 7000 01xx block), never real ones
PHONE2 = "+22370000102"
NUMBER_FORMS = (PHONE, PHONE[1:], PHONE[4:], PHONE2[1:], PHONE2[4:])


# --- end to end ----------------------------------------------------------------------


@dataclass
class Stack:
    kannel: Kannel
    base: str
    engine: Engine
    log: Path
    key_file: Path

    def outbox_rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(outbox.outbox).order_by(outbox.outbox.c.id)))

    def statuses(self) -> list[str]:
        return [r.status for r in self.outbox_rows()]

    def count(self, table: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def enqueue(self, phone: str, text: str) -> None:
        """Queue a message directly, as a broadcast would; the running worker sends it."""
        keyring = keys_mod.load(self.key_file, create=False)
        key = f"test:{len(self.outbox_rows())}"
        with self.engine.begin() as conn:
            outbox.enqueue(conn, keys=keyring, policy=OutboxPolicy(provider="kannel"),
                           pseudonym=keyring.pseudonym(phone), e164=phone, text=text,
                           kind="broadcast", dedupe_key=key, now=utcnow())

    def wait_delivered(self, count: int, timeout: float = 20.0) -> list[Any]:
        try:
            wait_for(lambda: self.statuses() == ["delivered"] * count, timeout,
                     f"{count} outbox row(s) delivered", every=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; statuses {self.statuses()} (gateway log: "
                                 f"{self.log}, Kannel's in {self.kannel.dir})") from None
        return self.outbox_rows()


@pytest.fixture
def binaries() -> Binaries:
    return require_kannel()  # skips ("service missing: ...") before a database is made


@contextmanager
def stack(binaries: Binaries, settings: Settings, tmp_path: Path, *,
          token: str | None = None, mo_recode: bool = True, **env: str) -> Iterator[Stack]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    kannel = Kannel(tmp_path / "kannel", gateway_url=base, token=token, binaries=binaries,
                    mo_recode=mo_recode)
    extra = {
        "GATEWAY_PROVIDER": "kannel",
        "GATEWAY_KANNEL_SENDSMS_URL": kannel.sendsms_url,
        "GATEWAY_KANNEL_FROM": SHORT_CODE,
        "GATEWAY_PUBLIC_URL": base,
        "GATEWAY_SEND_RATE": "50",
        **env,
    }
    if token is not None:
        extra["GATEWAY_WEBHOOK_TOKEN"] = token
    log = tmp_path / "gateway.log"
    engine = make_engine(settings.database_url)
    try:
        with kannel.running(), gateway_serving(
                port, gateway_env(settings.database_url, settings.key_file, **extra), log):
            yield Stack(kannel, base, engine, log, settings.key_file)
    finally:
        engine.dispose()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, f"the gateway logged an exception: {log}"
    assert not [f for f in NUMBER_FORMS if f in text], f"a phone number in the log: {log}"


# The database matters in the first test (reports racing the worker's own record of the
# send); the others run on SQLite alone, to spare a few seconds of a small machine.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def only(messages: list[Sms], receiver: str) -> list[Sms]:
    return [m for m in messages if m.receiver == receiver]


@pytest.mark.kannel
@pytest.mark.slow
def test_a_reply_goes_out_through_kannel_and_its_delivery_report_comes_back(
        binaries: Binaries, settings: Settings, tmp_path: Path) -> None:
    with stack(binaries, settings, tmp_path) as s:
        s.kannel.inject(PHONE, "Bonjour")  # no keyword: the help message
        [help_sms] = s.kannel.wait_for_sms(1)
        [row] = s.wait_delivered(1)  # Kannel reported 8 (SMSC accepted), then 1
        assert (row.kind, row.provider, row.encoding, row.attempts, row.last_error) == (
            "help", "kannel", "GSM-7", 1, None)
        assert row.sent_at is not None  # recorded as accepted, not ambiguous
        assert help_sms == Sms(PHONE, row.text, ucs2=False, parts=1)
        assert "STOP" in help_sms.text
        assert {m.sender for m in s.kannel.messages()} == {SHORT_CODE}

        s.kannel.inject(PHONE, "SONDAGE")  # a keyword: the flow's no-trace warning
        question = s.kannel.wait_for_sms(2)[1]
        rows = s.wait_delivered(2)
        assert rows[1].kind == "reply"
        assert question == Sms(PHONE, rows[1].text, ucs2=False, parts=rows[1].segments)
        assert s.count(sms.inbound) == 2

        # A message of several SMS goes out whole: Kannel splits it as we counted, and
        # the phone joins the parts again.
        long = " ".join(f"Phrase {i} du message long, avec é, € et [crochets]."
                        for i in range(10))
        s.enqueue(PHONE, long)
        rows = s.wait_delivered(3)
        assert rows[2].segments >= 3
        assert s.kannel.wait_for_sms(3)[2] == Sms(PHONE, long, ucs2=False,
                                                  parts=rows[2].segments)
        assert s.count(outbox.pending) == 0  # every report matched its message


@pytest.mark.kannel
@pytest.mark.slow
@SQLITE_ONLY
def test_bambara_text_goes_both_ways_as_ucs2_and_arrives_intact(
        binaries: Binaries, settings: Settings, tmp_path: Path) -> None:
    with stack(binaries, settings, tmp_path) as s:
        # A phone writing Ɲ sends UCS-2; smsbox recodes it (mo-recode) so the keyword is
        # recognised: the reply is the poll's no-trace warning, not the help message.
        s.kannel.inject(PHONE, "ƝININKALI", ucs2=True)
        [warning] = s.kannel.wait_for_sms(1)
        [row] = s.wait_delivered(1)
        assert (row.kind, row.encoding) == ("reply", "GSM-7")  # transliterated: the default
        assert warning == Sms(PHONE, row.text, ucs2=False, parts=row.segments)
        assert warning.text.startswith("Aw ye a lajè:")

        # Text with letters GSM-7 lacks goes out as UCS-2: one SMS, then several.
        short = "I ni ce! Kunnafoni bɛɛ sɔrɔla."
        long = "I ni ce! " + " ".join(f"Kunnafoni {i}: ɛ ɔ ɲ ŋ bɛɛ." for i in range(6))
        s.enqueue(PHONE2, short)
        s.enqueue(PHONE2, long)
        rows = s.wait_delivered(3)
        assert [(r.encoding, r.text) for r in rows[1:]] == [("UCS-2", short), ("UCS-2", long)]
        assert rows[1].segments == 1 and rows[2].segments >= 2
        assert only(s.kannel.wait_for_sms(3), PHONE2) == [
            Sms(PHONE2, short, ucs2=True, parts=1),
            Sms(PHONE2, long, ucs2=True, parts=rows[2].segments),
        ]


@pytest.mark.kannel
@pytest.mark.slow
@SQLITE_ONLY
def test_without_mo_recode_a_stop_word_typed_with_its_accent_still_stops(
        binaries: Binaries, settings: Settings, tmp_path: Path) -> None:
    # smsbox without mo-recode hands a UCS-2 message over as its raw UTF-16BE bytes.
    with stack(binaries, settings, tmp_path, mo_recode=False) as s:
        s.kannel.inject(PHONE, "ARRÊT", ucs2=True)
        [answer] = s.kannel.wait_for_sms(1)
        [row] = s.wait_delivered(1)
        assert (row.kind, answer.text) == ("control", row.text)
        assert answer.text.startswith("Vous ne recevrez plus")
        s.kannel.inject(PHONE2, "ƝININKALI ", ucs2=True)  # the trailing space byte is lost
        warning = only(s.kannel.wait_for_sms(2), PHONE2)[0]
        assert warning.text.startswith("Aw ye a lajè: SMS bè to telefòni kònò.")


TOKEN = "s3cr+t/&=%x y"  # every character that needs escaping in a URL


@pytest.mark.kannel
@pytest.mark.slow
@SQLITE_ONLY
def test_with_a_token_kannels_urls_carry_it_and_requests_without_it_are_refused(
        binaries: Binaries, settings: Settings, tmp_path: Path) -> None:
    with stack(binaries, settings, tmp_path, token=TOKEN) as s:
        s.kannel.inject(PHONE, "Bonjour")  # get-url with the token
        [help_sms] = s.kannel.wait_for_sms(1)
        [row] = s.wait_delivered(1)  # dlr-url with the token, %d substituted
        assert help_sms.text == row.text

        inbound = {"from": PHONE2, "to": SHORT_CODE, "text": "STOP", "id": "k-1",
                   "coding": "0", "charset": "UTF-8"}
        report = {"id": "999", "status": "1"}
        for path, fields in (("sms", inbound), ("delivery", report)):
            url = f"{s.base}/webhooks/kannel/{path}"
            for params in (fields, {**fields, "token": "wrong"}, {**fields, "token": ""}):
                assert httpx.get(url, params=params).status_code == 403
                assert httpx.post(url, data=params).status_code == 403
        time.sleep(0.5)  # a wrongly accepted STOP would have queued an answer by now
        assert s.count(sms.inbound) == 1
        assert s.count(outbox.pending) == 0
        assert s.statuses() == ["delivered"]
        # The same requests with the token are taken: the refusals were the token's.
        for path, fields in (("sms", inbound), ("delivery", report)):
            response = httpx.get(f"{s.base}/webhooks/kannel/{path}",
                                 params={**fields, "token": TOKEN})
            assert response.status_code == 200
        assert s.count(sms.inbound) == 2
        assert s.count(outbox.pending) == 1  # the report for a message not (yet) known


@pytest.mark.nodb
def test_serve_refuses_to_start_without_the_sendsms_url(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite:///{tmp_path / 'gateway.db'}", tmp_path / "gateway.keys",
                      GATEWAY_PROVIDER="kannel", GATEWAY_KANNEL_FROM=SHORT_CODE)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", str(free_port())], env=env,
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "GATEWAY_KANNEL_SENDSMS_URL" in result.stderr
    assert "Traceback" not in result.stderr


# --- the sender against a local HTTP server ------------------------------------------


class Smsbox:
    """A stand-in smsbox: answers each sendsms with what the test sets, and keeps each
    request's query."""

    def __init__(self, status: int = 202, body: str = "0: Accepted for delivery",
                 headers: dict[str, str] | None = None, hang: float = 0.0,
                 cut: bool = False) -> None:
        self.queries: list[dict[str, list[str]]] = []
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                box.queries.append(parse_qs(urlsplit(self.path).query,
                                            keep_blank_values=True))
                if hang:
                    time.sleep(hang)
                if cut:
                    self.close_connection = True
                    return  # the request was read; no answer at all
                payload = body.encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(payload)))
                try:
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the sender gave up waiting: that is the case under test

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = (f"http://127.0.0.1:{self.server.server_address[1]}/cgi-bin/sendsms"
                    "?username=dannaya&password=pa%26ss")

    @contextmanager
    def running(self) -> Iterator[Smsbox]:
        with serving(self.server):
            yield self


@contextmanager
def raw_log() -> Iterator[RawLog]:
    configure_logging()  # as the gateway runs: HTTP clients' own logs (URLs) held back
    with capture.raw_log() as handler:
        yield handler


def send(url: str, message: OutboundSms, *, token: str | None = None,
         sender: str | None = SHORT_CODE, timeout: float = 5.0) -> SendResult:
    async def go() -> SendResult:
        kannel = KannelSender(sendsms_url=url, sender=sender, public_url="http://gw.test:8000/",
                              token=token, timeout=timeout)
        try:
            return await kannel.send(message)
        finally:
            await kannel.close()

    return asyncio.run(go())


GSM = OutboundSms(7, PHONE, "Merci, message reçu", "GSM-7")
UCS2 = OutboundSms(8, PHONE, "I ni ce, i ka kunnafoniw bɛɛ jɔsira", "UCS-2")

CASES = {
    "accepted": ({"status": 202, "body": "0: Accepted for delivery"}, SendOutcome.accepted, None),
    "queued": ({"status": 202, "body": "3: Queued for later delivery"},
               SendOutcome.accepted, None),
    "bad credentials": ({"status": 403, "body": "Authorization failed for sendsms"},
                        SendOutcome.failed, "kannel-403"),
    "missing parameter": ({"status": 400, "body": "Missing receiver number, rejected"},
                          SendOutcome.failed, "kannel-400"),
    "refused number": ({"status": 403, "body": f"Number(s) {PHONE} has/have been denied"},
                       SendOutcome.failed, "kannel-403"),
    "unavailable": ({"status": 503, "body": "Service Unavailable"}, SendOutcome.retry,
                    "kannel-503"),
    "server error": ({"status": 500, "body": "Internal error"}, SendOutcome.retry,
                     "kannel-500"),
    "proxy timeout": ({"status": 504, "body": "Gateway Timeout"}, SendOutcome.ambiguous,
                      "kannel-504"),
    "not kannel's answer": ({"status": 200, "body": "<html>Welcome</html>"},
                            SendOutcome.ambiguous, "kannel-200"),
    "answer cut": ({"cut": True}, SendOutcome.ambiguous, "no-answer"),
    "answer never comes": ({"hang": 3.0}, SendOutcome.ambiguous, "no-answer"),
}


@pytest.mark.nodb
@pytest.mark.parametrize("case", list(CASES))
def test_each_kannel_answer_is_classified(case: str) -> None:
    answer, outcome, code = CASES[case]
    with raw_log() as log, Smsbox(**answer).running() as box:  # type: ignore[arg-type]
        result = send(box.url, GSM, timeout=1.0)
    assert (result.outcome, result.code) == (outcome, code)
    assert result.provider_message_id is None  # reports carry our own outbox id
    assert len(box.queries) == 1  # one request, never a silent retry
    assert [line for line in log.lines if "#7" in line], "the outbox id is logged"
    leaked = [line for line in log.lines if any(f in line for f in NUMBER_FORMS)]
    assert leaked == []


@pytest.mark.nodb
def test_connection_refused_is_retried() -> None:
    url = f"http://127.0.0.1:{free_port()}/cgi-bin/sendsms?username=u&password=p"
    with raw_log() as log:
        result = send(url, GSM)
    assert (result.outcome, result.code) == (SendOutcome.retry, "connect")
    assert not [line for line in log.lines if any(f in line for f in NUMBER_FORMS)]
    assert not [line for line in log.lines if "password" in line or "sendsms" in line]


@pytest.mark.nodb
def test_retry_after_is_passed_on() -> None:
    with Smsbox(status=503, body="busy", headers={"Retry-After": "42"}).running() as box:
        result = send(box.url, GSM)
    assert (result.outcome, result.retry_after) == (SendOutcome.retry, 42.0)


@pytest.mark.nodb
def test_the_sendsms_request_carries_what_kannel_needs() -> None:
    with Smsbox().running() as box:
        assert send(box.url, UCS2, token=TOKEN).outcome is SendOutcome.accepted
        assert send(box.url, GSM, sender=None).outcome is SendOutcome.accepted
    ucs2, gsm = ({k: v[0] for k, v in q.items()} for q in box.queries)
    assert ucs2 == {
        "username": "dannaya", "password": "pa&ss",  # the URL's own credentials, kept
        "from": SHORT_CODE, "to": PHONE, "text": UCS2.text,
        "coding": "2", "charset": "UTF-8",  # Kannel recodes UTF-8 into UCS-2
        "dlr-mask": "31",
        # %d stays for Kannel; the token is escaped once more inside the dlr-url.
        "dlr-url": "http://gw.test:8000/webhooks/kannel/delivery?id=8&status=%d"
                   "&token=s3cr%2Bt%2F%26%3D%25x%20y",
    }
    assert gsm == {
        "username": "dannaya", "password": "pa&ss", "to": PHONE, "text": GSM.text,
        "charset": "UTF-8", "dlr-mask": "31",
        "dlr-url": "http://gw.test:8000/webhooks/kannel/delivery?id=7&status=%d",
    }


def kannel_settings(tmp_path: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "_env_file": None, "database_url": f"sqlite:///{tmp_path / 'gateway.db'}",
        "key_file": tmp_path / "gateway.keys", "content_dir": REPO, "provider": "kannel",
        "kannel_sendsms_url": "http://127.0.0.1:13013/cgi-bin/sendsms?username=u&password=p"}
    return Settings(**{**base, **values})


@pytest.mark.nodb
@pytest.mark.parametrize(("values", "names"), [
    pytest.param({"kannel_sendsms_url": None}, "GATEWAY_KANNEL_SENDSMS_URL", id="no url"),
    pytest.param({"kannel_sendsms_url": "  "}, "GATEWAY_KANNEL_SENDSMS_URL", id="blank url"),
    pytest.param({"kannel_sendsms_url": "127.0.0.1:13013/cgi-bin/sendsms"},
                 "GATEWAY_KANNEL_SENDSMS_URL", id="no scheme"),
    pytest.param({"public_url": "http://gw/%2Fx"}, "GATEWAY_PUBLIC_URL", id="% in public url"),
    pytest.param({"webhook_token": "jeton-sécurisé"}, "GATEWAY_WEBHOOK_TOKEN",
                 id="non-ascii token"),
])
def test_settings_that_cannot_work_are_refused_at_start(
        tmp_path: Path, values: dict[str, Any], names: str) -> None:
    settings = kannel_settings(tmp_path, **values)
    with pytest.raises(KannelConfigError, match=names):
        KannelSender.from_settings(settings)
    with pytest.raises(StartupError, match=names):
        make_sender(settings)


@pytest.mark.nodb
def test_settings_that_work_build_the_sender(tmp_path: Path) -> None:
    settings = kannel_settings(tmp_path, webhook_token="t0k", kannel_from="36123",
                               public_url="https://gw.example.org/")
    sender = make_sender(settings)
    assert isinstance(sender, KannelSender) and sender.name == "kannel"
    assert sender.dlr_url(5) == ("https://gw.example.org/webhooks/kannel/delivery"
                                 "?id=5&status=%d&token=t0k")
    asyncio.run(sender.close())


# --- inbound text in the charset Kannel names ---------------------------------------

# Raw get-url query strings as smsbox builds them (``text=%a``): a phone's UCS-2 message
# without ``mo-recode`` is its UTF-16BE bytes, escaped, with a whitespace byte written as
# ``+`` and one at either end dropped (Kannel's %a splits the text into words).
TEXTS = {
    "UTF-16BE": ("text=%00A%00R%00R%00%CA%00T&coding=2&charset=UTF-16BE", "ARRÊT"),
    "UTF-16BE, its last space byte dropped by %a":
        ("text=%00A%00R%00R%00%CA%00T%00&coding=2&charset=UTF-16BE", "ARRÊT "),
    "UTF-16BE, Bambara": ("text=%01%9D%00i%00n%00i%00n%00k%00a%00l%00i&coding=2"
                          "&charset=UTF-16BE", "Ɲininkali"),
    "UTF-16BE, a space inside": ("text=%00S%00T%00O%00P%00+%02%5B&coding=2&charset=UTF-16BE",
                                 "STOP ɛ"),
    "UCS-2 named so": ("text=%00S%00T%00O%00P&coding=2&charset=UCS-2", "STOP"),
    "UTF-16 with its byte-order mark": ("text=%FE%FF%00O%00K&coding=2&charset=UTF-16", "OK"),
    "recoded to UTF-8 (mo-recode)": ("text=ARR%C3%8AT&coding=2&charset=UTF-8", "ARRÊT"),
    "GSM text": ("text=STOP&coding=0&charset=UTF-8", "STOP"),
    "words joined by +": ("text=Route+barr%C3%A9e&coding=0&charset=UTF-8", "Route barrée"),
    "ISO-8859-1": ("text=ARR%CAT&coding=0&charset=ISO-8859-1", "ARRÊT"),
    "windows-1252, lower case name": ("text=%80+ARR%CAT&coding=0&charset=windows-1252",
                                      "€ ARRÊT"),
    "no charset, UCS-2 coding": ("text=%00A%00R%00R%00%CA%00T&coding=2", "ARRÊT"),
    "no charset, no coding": ("text=ARR%C3%8AT", "ARRÊT"),
    "unknown charset, UCS-2 coding": ("text=%00O%00K&coding=2&charset=X-NEW", "OK"),
    "broken UTF-8": ("text=ARR%C3&coding=0&charset=UTF-8", "ARR\ufffd"),
    "a NUL in UTF-8": ("text=ST%00OP&coding=0&charset=UTF-8", "STOP"),
}


@pytest.mark.nodb
@pytest.mark.parametrize("case", list(TEXTS))
def test_kannel_text_is_decoded_by_the_charset_kannel_names(case: str) -> None:
    query, text = TEXTS[case]
    raw = f"from=%2B22370000101&to=36123&id=k-1&{query}".encode()
    message = parse_sms(dict(decode_form_bytes(raw)))
    assert message is not None
    assert (message.text, message.phone, message.external_id) == (text, PHONE, "k-1")


STOPS = {
    "UTF-16BE": "text=%00A%00R%00R%00%CA%00T&coding=2&charset=UTF-16BE",
    "UTF-16BE, lower case, trailing space": "text=%00a%00r%00r%00%EA%00t%00&coding=2"
                                            "&charset=UTF-16BE",
    "UTF-8": "text=ARR%C3%8AT&coding=2&charset=UTF-8",
    "ISO-8859-1": "text=Arr%EAt&coding=0&charset=ISO-8859-1",
    "Bambara, UTF-16BE": "text=%00D%00A%00B%00I%00L%00A&coding=2&charset=UTF-16BE",
}


@pytest.mark.parametrize("case", list(STOPS))
def test_a_stop_word_is_never_missed_for_its_encoding(case: str, client: TestClient,
                                                      runtime: Runtime) -> None:
    handset = Handset(client, runtime, PHONE)
    response = client.get(f"/webhooks/kannel/sms?from=%2B22370000101&to=36123&id=k-{case}"
                          f"&{STOPS[case]}")
    assert (response.status_code, response.text) == (200, "accepted")
    [answer] = handset.inbox()
    assert answer == runtime.engine.say(
        "bm" if "Bambara" in case else "fr", "sms-stopped")
    with runtime.db.transaction() as conn:
        contact = queries.get_contact(conn, pseudonym=runtime.keys.pseudonym(PHONE))
    assert contact is not None and contact.stopped


def test_a_ucs2_keyword_starts_its_flow(client: TestClient, runtime: Runtime) -> None:
    handset = Handset(client, runtime, PHONE)
    raw = "%01%9D%00I%00N%00I%00N%00K%00A%00L%00I"  # ƝININKALI, as the phone sent it
    client.get(f"/webhooks/kannel/sms?from=%2B22370000101&to=36123&id=k-9&text={raw}"
               "&coding=2&charset=UTF-16BE")
    [warning] = handset.inbox()  # the poll's no-trace warning, in Bambara
    assert warning == runtime.sms.engine.say("bm", "sms-report-warning"), warning


# --- USSD: the get-url's operations, and the answers -----------------------------------

USSD = UssdConfig()
VENDOR = UssdConfig(smsc="", op_tlv="vendor_op", session_tlv="vendor_session",
                    session_bytes=0, begin_ops=frozenset({0}), answer_ops=frozenset({1}),
                    wait_op=3, end_op=4)
HEAD = "from=%2B22370000101&to=36123&id=k-7&smsc=ussd&coding=0&charset=UTF-8"
# %D after Kannel's own escaping, then the query's: ?smpp?ussd_service_op=%01&...
BEGIN_META = "%3Fsmpp%3Fussd_service_op%3D%2501%26its_session_info%3D%250A%2501%26"
ANSWER_META = "%3Fsmpp%3Fussd_service_op%3D%2512%26its_session_info%3D%250A%2503%26"
ABORT_META = "%3Fsmpp%3Fussd_service_op%3D%2B%26its_session_info%3D%250C%2503%26"
OPERATIONS: dict[str, tuple[UssdConfig, str, object]] = {
    "begin": (USSD, f"{HEAD}&text=%2A123%23&meta={BEGIN_META}",
              ("turn", "0a/k-7", "", "*123#", "0a", b"\x0a\x01")),
    "begin with a longer code": (USSD, f"{HEAD}&text=%2A123%2A5%23&meta={BEGIN_META}",
                                 ("turn", "0a/k-7", "", "*123*5#", "0a", b"\x0a\x01")),
    "answer": (USSD, f"{HEAD}&text=2&meta={ANSWER_META}",
               ("turn", "", "2", "", "0a", b"\x0a\x03")),
    "answer typed in UCS-2": (USSD, f"{HEAD.replace('coding=0&charset=UTF-8', 'coding=2')}"
                              f"&charset=UTF-16BE&text=%00B%02%5B%02%5B&meta={ANSWER_META}",
                              ("turn", "", "Bɛɛ", "", "0a", b"\x0a\x03")),
    "operation as decimal text": (USSD, f"{HEAD}&text=1&meta=%3Fsmpp%3Fussd_service_op%3D18"
                                  "%26its_session_info%3D%2501%2500",
                                  ("turn", "", "1", "", "01", b"\x01\x00")),
    "abort (0x20, written +)": (USSD, f"{HEAD}&text=&meta={ABORT_META}", ("ended", "0c")),
    "release (0x11)": (USSD, f"{HEAD}&meta=%3Fsmpp%3Fussd_service_op%3D%2511",
                       ("ended", "")),
    "no session parameter": (USSD, f"{HEAD}&text=3&meta=%3Fsmpp%3Fussd_service_op%3D%2512",
                             ("turn", "", "3", "", "", None)),
    "no meta-data at all": (USSD, f"{HEAD}&text=3", None),
    "a bare ?smpp?": (USSD, f"{HEAD}&text=3&meta=%3Fsmpp%3F", None),
    "from the SMS bind": (USSD, f"{HEAD.replace('smsc=ussd', 'smsc=FAKE')}&text=3"
                          f"&meta={ANSWER_META}", None),
    "no id": (USSD, f"{HEAD.replace('id=k-7', 'id=')}&meta={ANSWER_META}", None),
    "a vendor's names and codes": (VENDOR, f"{HEAD.replace('smsc=ussd', 'smsc=OTHER')}"
                                   "&text=%2A500%23&meta=%3Fsmpp%3Fvendor_op%3D%2500"
                                   "%26vendor_session%3D%2501%2502%2503%2504",
                                   ("turn", "01020304/k-7", "", "*500#", "01020304",
                                    b"\x01\x02\x03\x04")),
    "a vendor's answer code": (VENDOR, f"{HEAD}&text=4&meta=%3Fsmpp%3Fvendor_op%3D%2501"
                               "%26vendor_session%3D%2501%2502%2503%2504",
                               ("turn", "", "4", "", "01020304", b"\x01\x02\x03\x04")),
}


@pytest.mark.nodb
@pytest.mark.parametrize("case", list(OPERATIONS))
def test_each_ussd_operation_is_read(case: str) -> None:
    config, query, expected = OPERATIONS[case]
    request = parse_ussd(dict(decode_form_bytes(query.encode())), config)
    event = request.event
    if expected is None:
        assert event is None
    elif isinstance(event, UssdEnded):
        assert ("ended", event.line) == expected
        assert (event.phone, event.session_id, event.status) == (PHONE, "", "incomplete")
    else:
        assert isinstance(event, UssdTurn)
        assert ("turn", event.session_id, event.text, event.service_code, event.line,
                request.session_info) == expected
        assert (event.phone, event.hop_id, event.provider) == (PHONE, "k-7", "kannel")


REPLIES: dict[str, tuple[UssdConfig, str, bytes | None, dict[str, str]]] = {
    "a screen that waits": (USSD, "CON Langue / Kan:\n1. Francais", b"\x0a\x01", {
        "x-kannel-meta-data": "?smpp?ussd_service_op=2&its_session_info=%0A%01"}),
    "the last screen": (USSD, "END Merci, message recu.", b"\x0a\x03", {
        "x-kannel-meta-data": "?smpp?ussd_service_op=17&its_session_info=%0A%03"}),
    "every byte echoed": (USSD, "CON x", b" &=%+\xff", {
        "x-kannel-meta-data": "?smpp?ussd_service_op=2&its_session_info=%20%26%3D%25%2B%FF"}),
    "no session parameter to echo": (USSD, "CON x", None, {
        "x-kannel-meta-data": "?smpp?ussd_service_op=2"}),
    "a screen GSM-7 cannot carry": (USSD, "CON Ɓe ngal ɗemngal?", None, {
        "x-kannel-meta-data": "?smpp?ussd_service_op=2", "x-kannel-coding": "2"}),
    "a vendor's codes": (VENDOR, "END x", b"\x01\x02", {
        "x-kannel-meta-data": "?smpp?vendor_op=4&vendor_session=%01%02"}),
}


@pytest.mark.nodb
@pytest.mark.parametrize("case", list(REPLIES))
def test_each_screen_goes_back_with_its_operation_and_session(case: str) -> None:
    config, body, info, headers = REPLIES[case]
    text, sent = ussd_reply(body, UssdRequest(None, info), config)
    assert text == body[4:]
    assert {k.lower(): v for k, v in sent.items()} == headers
    assert ussd_reply("", UssdRequest(None, info), config) == ("", {})  # nothing to send


@pytest.mark.nodb
@pytest.mark.parametrize(("raw", "code"), [
    (b"\x01", 1), (b"\x12", 18), (b" ", 32), (b"18", 18), (b"2", 2), (b"", None),
    (b"\x00\x12", 18), (b"9999", None)])
def test_an_operation_code_is_read_as_kannel_passes_it(raw: bytes, code: int | None) -> None:
    assert operation(raw) == code
