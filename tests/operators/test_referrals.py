"""Referral of reports to partners: set by an admin; sent by e-mail to a real SMTP server
(aiosmtpd on 127.0.0.1) and by webhook to a real HTTP server on 127.0.0.1 that checks the
signature; only the coded answers and the redacted text leave; retried after a failure,
never sent again once accepted; delivered by the outbox worker's jobs hook."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway import retention
from gateway.operators import audit, referrals
from gateway.operators.access import Role
from gateway.operators.reports import Invalid, vocabulary
from gateway.runtime import Runtime, make_worker
from gateway.settings import Settings
from gateway.store.models import utcnow
from tests.conftest import REPO
from tests.operators.people import Person, cast, make
from tests.operators.reporters import Filed, erase, file_report

API = "/api/v1"
SECRET = "une-phrase-secrète-partagée"
ORIGINAL = "Le sergent Traoré a pris 5000F à Konna"
REDACTED = "Un agent a pris 5000F."


# -- a real SMTP server and a real webhook receiver, on loopback ----------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    """aiosmtpd's handler: keeps what it accepts; refuses the next ``refuse`` messages with
    a temporary error (451)."""

    messages: list[Any] = field(default_factory=list)
    refuse: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 Try again later"
        self.messages.append(envelope)
        return "250 Message accepted for delivery"

    def parsed(self) -> list[EmailMessage]:
        out = []
        for envelope in self.messages:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            out.append(message)
        return out


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@dataclass
class Hook:
    """A partner's webhook: records each POST (headers and raw body) and answers with the
    next of ``answers`` (200 once they run out)."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)

    def verified(self, secret: str = SECRET) -> list[dict[str, Any]]:
        """Each body received, after checking its signature as a partner would."""
        out = []
        for headers, body in self.received:
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["x-dannaya-signature"], expected)
            out.append(json.loads(body))
        return out


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/dannaya"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, smtp: tuple[Inbox, int]) -> Settings:
    return Settings(_env_file=None, database_url=database_url,
                    key_file=tmp_path / "gateway.keys", content_dir=REPO, send_rate=1000.0,
                    smtp_host="127.0.0.1", smtp_port=smtp[1], smtp_from="dannaya@example.org",
                    smtp_starttls=False)


@pytest.fixture
def people(runtime: Runtime) -> dict[str, Person]:
    base = cast(runtime)
    return {"admin": base[Role.admin], "mopti": make(runtime, "mariam", Role.reviewer, "mopti")}


def work(runtime: Runtime, at: datetime | None = None) -> None:
    """One step of the outbox worker's background jobs, as ``gateway worker`` runs them,
    at ``at`` (default now)."""
    when = at or utcnow()
    asyncio.run(make_worker(runtime, clock=lambda: when).run_jobs_once())


def add_partners(client: TestClient, admin: Person, hook: Hook) -> None:
    for body in ({"name": "AMDH Mopti", "email": "suivi@amdh.example"},
                 {"name": "Clinique juridique", "webhook_url": hook.url, "secret": SECRET}):
        response = client.post(f"{API}/partners", headers=admin.auth, json=body)
        assert response.status_code == 201, response.text


def reviewed_report(client: TestClient, runtime: Runtime, reviewer: Person, *,
                    redacted: str | None = REDACTED) -> int:
    return reviewed(client, runtime, reviewer, redacted=redacted).id


def reviewed(client: TestClient, runtime: Runtime, reviewer: Person, *,
             redacted: str | None = REDACTED) -> Filed:
    """A report filed with ORIGINAL as its text, reviewed, and redacted to ``redacted``."""
    filed = file_report(client, runtime, text=ORIGINAL)
    url = f"{API}/reports/{filed.id}"
    assert client.post(f"{url}/transitions", headers=reviewer.auth,
                       json={"to": "reviewed"}).status_code == 200
    if redacted is not None:
        assert client.put(f"{url}/redaction", headers=reviewer.auth,
                          json={"text": redacted}).status_code == 200
    return filed


def refer(client: TestClient, reviewer: Person, report_id: int, partner: str) -> Any:
    return client.post(f"{API}/reports/{report_id}/referrals", headers=reviewer.auth,
                       json={"partner": partner})


def referral_rows(runtime: Runtime) -> list[Any]:
    with runtime.db.transaction() as conn:
        return list(conn.execute(select(referrals.referrals).order_by(referrals.referrals.c.id))
                    .all())


EXPECTED_ANSWERS = {
    "category": {"value": "extortion", "label": "Argent exigé"},
    "force": {"value": "gendarmerie", "label": "Gendarmerie"},
    "when": {"value": "this_week", "label": "Cette semaine"},
    "cercle": {"value": "mopti", "label": "Mopti"},
    "commune": {"value": "mopti-konna", "label": "Konna"},
}


# -- partners --------------------------------------------------------------------------------


def test_partners_are_set_by_an_admin_and_their_secret_never_shown(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook) -> None:
    add_partners(client, people["admin"], hook)
    listed = client.get(f"{API}/partners", headers=people["mopti"].auth)
    assert [(p["name"], p["kind"], p["email"], p["webhook_url"]) for p in listed.json()] == [
        ("AMDH Mopti", "email", "suivi@amdh.example", None),
        ("Clinique juridique", "webhook", None, hook.url),
    ]
    assert "secret" not in listed.text and SECRET not in listed.text
    with runtime.db.transaction() as conn:
        stored = conn.execute(select(referrals.partners.c.secret)).scalars().all()
        made = audit.entries(conn, action="partner.create").items
    assert SECRET not in str(stored)
    assert [json.loads(e.details) for e in made] == [{"kind": "webhook"}, {"kind": "email"}]

    admin = people["admin"]
    for body, status, problem in [
        ({"name": "AMDH Mopti", "email": "autre@amdh.example"}, 409, "already exists"),
        ({"name": "X", "email": "a@b.example", "webhook_url": hook.url, "secret": SECRET},
         422, "either email, or webhook_url and secret"),
        ({"name": "X"}, 422, "either email, or webhook_url and secret"),
        ({"name": "X", "email": "pas une adresse"}, 422, "not an e-mail address"),
        ({"name": "X", "email": "a@b.example\r\nBcc: c@d.example"}, 422, "not an e-mail"),
        ({"name": "X", "email": "a@b.example", "secret": SECRET}, 422, "only a webhook"),
        ({"name": "X", "webhook_url": hook.url, "secret": "court"}, 422, "16 to 256"),
        ({"name": "X", "webhook_url": hook.url}, 422, "16 to 256"),
        ({"name": "X", "webhook_url": "ftp://127.0.0.1/x", "secret": SECRET}, 422, "http(s)"),
        ({"name": "X", "webhook_url": "http://u:p@127.0.0.1/x", "secret": SECRET}, 422,
         "no credentials"),
        ({"name": "", "email": "a@b.example"}, 422, "name"),
        ({"name": "76123456", "email": "a@b.example"}, 422, "name"),
        ({"name": "X", "email": "a@b.example", "kind": "email"}, 422, "kind"),
    ]:
        response = client.post(f"{API}/partners", headers=admin.auth, json=body)
        assert response.status_code == status, (body, response.text)
        assert problem in json.dumps(response.json()), (body, response.json())


def test_email_partners_need_smtp_and_webhooks_https_in_production(
        runtime: Runtime, people: dict[str, Person]) -> None:
    nowhere = referrals.Mail(None, 587, None, None, None, True)
    with runtime.db.transaction() as conn:
        with pytest.raises(Invalid, match="no SMTP server is configured"):
            referrals.create_partner(conn, who=people["admin"].principal, keys=runtime.keys,
                                     mail=nowhere, production=False, name="AMDH",
                                     email="a@b.example", webhook_url=None, secret=None,
                                     now=utcnow())
        with pytest.raises(Invalid, match="must be https in production"):
            referrals.create_partner(conn, who=people["admin"].principal, keys=runtime.keys,
                                     mail=nowhere, production=True, name="AMDH", email=None,
                                     webhook_url="http://partner.example/hook", secret=SECRET,
                                     now=utcnow())


# -- by webhook ------------------------------------------------------------------------------


def test_a_webhook_receives_the_coded_answers_and_the_redacted_text_signed(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook) -> None:
    add_partners(client, people["admin"], hook)
    mariam = people["mopti"]
    report_id = reviewed_report(client, runtime, mariam)
    made = refer(client, mariam, report_id, "Clinique juridique")
    assert made.status_code == 201, made.text
    referral = made.json()
    assert (referral["status"], referral["partner"], referral["attempts"]) == \
        ("queued", "Clinique juridique", 0)
    page = client.get(f"{API}/reports/{report_id}", headers=mariam.auth).json()
    assert page["status"] == "referred"

    work(runtime)
    [body] = hook.verified()
    headers, raw = hook.received[0]
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["x-dannaya-delivery"] == str(referral["id"])
    assert body.pop("date") == page["created_at"][:10]  # the day, never the time
    assert body.pop("sent_at").startswith(str(utcnow().year))
    assert body == {
        "referral": referral["id"], "report": report_id, "channel": "ussd", "flow": "report",
        "cercle": "mopti", "commune": "mopti-konna", "answers": EXPECTED_ANSWERS,
        "redacted_text": REDACTED,
    }
    assert "Traoré".encode() not in raw and b"sergent" not in raw  # never the original
    [row] = referral_rows(runtime)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 1, None)
    for later in (timedelta(0), timedelta(hours=1), timedelta(days=3)):
        work(runtime, utcnow() + later)
    assert len(hook.received) == 1  # accepted: never sent again

    page = client.get(f"{API}/reports/{report_id}", headers=mariam.auth).json()
    assert [(h["action"], h["actor"], h["ref"]) for h in page["history"]][-3:] == [
        ("transition", "mariam", None), ("refer", "mariam", "Clinique juridique"),
        ("referral_delivered", "worker", "Clinique juridique")]
    assert [r["status"] for r in page["referrals"]] == ["delivered"]
    with runtime.db.transaction() as conn:
        [asked] = audit.entries(conn, action="report.refer").items
        [done] = audit.entries(conn, action="referral.delivered").items
        assert audit.verify(conn) is None
    assert (asked.actor, asked.object_id, json.loads(asked.details)) == \
        ("mariam", str(report_id), {"partner": "Clinique juridique",
                                    "referral": referral["id"]})
    assert (done.actor, done.object_id) == ("worker", str(referral["id"]))


def test_a_report_never_redacted_is_referred_without_any_text(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook) -> None:
    add_partners(client, people["admin"], hook)
    report_id = reviewed_report(client, runtime, people["mopti"], redacted=None)
    assert refer(client, people["mopti"], report_id, "Clinique juridique").status_code == 201
    work(runtime)
    [body] = hook.verified()
    assert body["redacted_text"] is None
    assert b"sergent" not in hook.received[0][1]


def test_a_failed_webhook_is_retried_later_and_then_never_sent_again(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook) -> None:
    add_partners(client, people["admin"], hook)
    report_id = reviewed_report(client, runtime, people["mopti"])
    refer(client, people["mopti"], report_id, "Clinique juridique")
    hook.answers = [503]
    start = utcnow()
    work(runtime, start)
    [row] = referral_rows(runtime)
    assert (row.status, row.attempts, row.last_error) == ("queued", 1, "http_503")
    work(runtime, start + timedelta(seconds=30))  # not due yet: backoff of a minute
    assert len(hook.received) == 1
    work(runtime, start + timedelta(seconds=61))
    [row] = referral_rows(runtime)
    assert (row.status, row.attempts) == ("delivered", 2)
    work(runtime, start + timedelta(days=2))
    assert len(hook.received) == 2
    first, second = hook.verified()
    assert first["referral"] == second["referral"]
    assert {h["x-dannaya-delivery"] for h, _ in hook.received} == {str(row.id)}


def test_a_webhook_that_is_down_is_retried_until_it_answers(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook) -> None:
    admin = people["admin"]
    down = f"http://127.0.0.1:{free_port()}/dannaya"  # nothing listens there
    assert client.post(f"{API}/partners", headers=admin.auth, json={
        "name": "Ailleurs", "webhook_url": down, "secret": SECRET}).status_code == 201
    report_id = reviewed_report(client, runtime, people["mopti"])
    refer(client, people["mopti"], report_id, "Ailleurs")
    work(runtime)
    [row] = referral_rows(runtime)
    assert (row.status, row.attempts, row.last_error) == ("queued", 1, "ConnectError")


def test_after_the_last_attempt_it_fails_and_can_be_referred_again(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook) -> None:
    add_partners(client, people["admin"], hook)
    mariam = people["mopti"]
    report_id = reviewed_report(client, runtime, mariam)
    refer(client, mariam, report_id, "Clinique juridique")
    hook.answers = [500] * referrals.MAX_ATTEMPTS
    at = utcnow()
    for _ in range(referrals.MAX_ATTEMPTS):
        work(runtime, at)
        at += timedelta(days=1)
    [row] = referral_rows(runtime)
    assert (row.status, row.attempts, row.last_error) == \
        ("failed", referrals.MAX_ATTEMPTS, "http_500")
    work(runtime, at + timedelta(days=1))
    assert len(hook.received) == referrals.MAX_ATTEMPTS
    page = client.get(f"{API}/reports/{report_id}", headers=mariam.auth).json()
    assert page["history"][-1]["action"] == "referral_failed"
    with runtime.db.transaction() as conn:
        [failed] = audit.entries(conn, action="referral.failed").items
    assert json.loads(failed.details) == {"partner": "Clinique juridique",
                                          "attempts": referrals.MAX_ATTEMPTS, "error": "http_500"}

    again = refer(client, mariam, report_id, "Clinique juridique")
    assert again.status_code == 201
    assert (again.json()["status"], again.json()["attempts"]) == ("queued", 0)
    work(runtime, at + timedelta(days=2))
    assert referral_rows(runtime)[0].status == "delivered"


def test_a_worker_that_died_mid_send_leaves_it_to_be_sent_again_after_its_lease(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook) -> None:
    add_partners(client, people["admin"], hook)
    report_id = reviewed_report(client, runtime, people["mopti"])
    refer(client, people["mopti"], report_id, "Clinique juridique")
    start = utcnow()
    with runtime.db.transaction() as conn:  # claimed by a worker that then died
        [job] = referrals.claim(conn, keys=runtime.keys, vocab=vocabulary(runtime.engine.content),
                                owner="dead-worker", now=start)
    work(runtime, start + referrals.LEASE - timedelta(seconds=1))
    assert hook.received == []  # still its lease
    work(runtime, start + referrals.LEASE + timedelta(seconds=1))
    [body] = hook.verified()
    assert body["referral"] == job.referral_id
    [row] = referral_rows(runtime)
    assert (row.status, row.attempts) == ("delivered", 2)
    with runtime.db.transaction() as conn:  # the dead worker's late answer changes nothing
        assert referrals.record(conn, job=job, owner="dead-worker", error=None,
                                now=start) is None


# -- by e-mail -------------------------------------------------------------------------------


def test_an_email_to_a_real_smtp_server_carries_the_redacted_text_only(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook,
        smtp: tuple[Inbox, int]) -> None:
    inbox = smtp[0]
    add_partners(client, people["admin"], hook)
    report_id = reviewed_report(client, runtime, people["mopti"])
    referral = refer(client, people["mopti"], report_id, "AMDH Mopti").json()
    work(runtime)
    [envelope] = inbox.messages
    assert (envelope.mail_from, envelope.rcpt_tos) == \
        ("dannaya@example.org", ["suivi@amdh.example"])
    [message] = inbox.parsed()
    decoded = [part.get_content() for part in message.walk() if not part.is_multipart()]
    assert len(decoded) == 2  # the text and the JSON
    assert not any("sergent" in str(c) or "Traoré" in str(c) for c in decoded)
    assert message["Subject"] == f"Dannaya : dossier {report_id}"
    assert message["Message-ID"] == f"<referral.{referral['id']}@example.org>"
    assert message["X-Dannaya-Delivery"] == str(referral["id"])
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content().replace("\r\n", "\n")
    assert "Lieu : Mopti, Konna." in text
    assert "- category : Argent exigé (extortion)" in text
    assert f"Texte (expurgé) :\n{REDACTED}" in text
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == f"referral-{referral['id']}.json"
    data = json.loads(attachment.get_content())
    assert (data["answers"], data["redacted_text"]) == (EXPECTED_ANSWERS, REDACTED)
    assert referral_rows(runtime)[0].status == "delivered"
    work(runtime, utcnow() + timedelta(days=1))
    assert len(inbox.messages) == 1


def test_an_email_refused_for_now_is_retried_and_then_never_sent_again(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook,
        smtp: tuple[Inbox, int]) -> None:
    inbox = smtp[0]
    inbox.refuse = 1
    add_partners(client, people["admin"], hook)
    report_id = reviewed_report(client, runtime, people["mopti"])
    refer(client, people["mopti"], report_id, "AMDH Mopti")
    start = utcnow()
    work(runtime, start)
    [row] = referral_rows(runtime)
    assert (row.status, row.last_error, inbox.messages) == ("queued", "smtp_451", [])
    work(runtime, start + timedelta(seconds=61))
    assert referral_rows(runtime)[0].status == "delivered"
    work(runtime, start + timedelta(days=1))
    [message] = inbox.parsed()
    assert message["Message-ID"] == f"<referral.{row.id}@example.org>"


# -- the rules -------------------------------------------------------------------------------


def test_who_can_be_referred_where(client: TestClient, runtime: Runtime,
                                   people: dict[str, Person], hook: Hook) -> None:
    add_partners(client, people["admin"], hook)
    mariam = people["mopti"]
    fresh = file_report(client, runtime).id
    response = refer(client, mariam, fresh, "AMDH Mopti")
    assert (response.status_code, response.json()) == (409, {
        "detail": "a new report cannot move to referred; allowed moves: reviewed"})
    report_id = reviewed_report(client, runtime, mariam)
    response = refer(client, mariam, report_id, "Personne")
    assert (response.status_code, response.json()) == (
        422, {"detail": "partner: no partner named 'Personne'"})
    assert refer(client, mariam, report_id, "AMDH Mopti").status_code == 201
    response = refer(client, mariam, report_id, "AMDH Mopti")
    assert (response.status_code, response.json()) == (
        409, {"detail": "this report is already referred to AMDH Mopti (queued)"})
    assert refer(client, mariam, report_id, "Clinique juridique").status_code == 201
    page = client.get(f"{API}/reports/{report_id}", headers=mariam.auth).json()
    assert page["status"] == "referred"
    assert [r["partner"] for r in page["referrals"]] == ["AMDH Mopti", "Clinique juridique"]
    client.post(f"{API}/reports/{report_id}/transitions", headers=mariam.auth,
                json={"to": "closed"})
    closed = refer(client, people["admin"], report_id, "Clinique juridique")
    assert closed.status_code == 409


# -- erasure and shredding ---------------------------------------------------------------------


def test_a_shred_after_an_erasure_leaves_partner_secrets_and_other_reporters_text(
        client: TestClient, runtime: Runtime, people: dict[str, Person], hook: Hook) -> None:
    """Partner secrets are sealed under a key derived from the pseudonym key, which a
    shred keeps (it destroys master and data-wrapping keys): referrals still go out."""
    add_partners(client, people["admin"], hook)
    mariam = people["mopti"]
    gone_filed, kept_filed = reviewed(client, runtime, mariam), reviewed(client, runtime, mariam)
    erased, kept = gone_filed.id, kept_filed.id
    erase(client, gone_filed.number)  # SUPPRIMER, by USSD
    done = retention.purge(runtime.db, retention=retention.Retention.of(runtime.settings),
                           now=utcnow(), key_file=runtime.settings.key_file)
    assert done.shredded
    retention.shred(runtime.db, key_file=runtime.settings.key_file, now=utcnow(), force=True)

    gone = client.get(f"{API}/reports/{erased}", headers=mariam.auth).json()
    assert (gone["text"], gone["text_erased"], gone["redacted_text"]) == (None, True, REDACTED)
    still = client.get(f"{API}/reports/{kept}", headers=mariam.auth).json()
    assert (still["text"], still["text_erased"]) == (ORIGINAL, False)
    assert refer(client, mariam, erased, "Clinique juridique").status_code == 201
    work(runtime)
    [body] = hook.verified()
    assert (body["report"], body["redacted_text"]) == (erased, REDACTED)
