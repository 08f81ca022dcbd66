"""Canary proof: drive every path with the number +22370000001 and the typed text
CANARY-7Q, then search a full dump of the database, every log record and every HTTP
response other than the resident's own screen. Neither canary may appear in clear, the
number in no format.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from gateway.runtime import Runtime
from tests.capture import RawLog, raw_log
from tests.handset import Handset, drain
from tests.phone import Phone

NUMBER = "+22370000001"
TEXT = "CANARY-7Q"
FORMS = (NUMBER, NUMBER[1:], NUMBER[4:], "%2B" + NUMBER[1:], TEXT, TEXT.lower())


def dump(url: str, tmp_path: Path) -> str:
    """The whole database as text, as a backup would hold it."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            text = "\n".join(conn.iterdump())
        raw = b"".join(p.read_bytes() for p in Path(path).parent.glob(Path(path).name + "*"))
        return text + raw.decode("latin-1")
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run(["pg_dump", "--no-owner", plain], check=True, capture_output=True,
                          text=True).stdout


def leaks(haystack: str) -> list[str]:
    return [form for form in FORMS if form in haystack]


def test_no_canary_anywhere_but_the_residents_own_screen(
        client: TestClient, runtime: Runtime, settings: object, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with raw_log() as raw:
        drive(client, runtime, caplog, raw, tmp_path)


def drive(client: TestClient, runtime: Runtime, caplog: pytest.LogCaptureFixture, raw: RawLog,
          tmp_path: Path) -> None:
    others: list[str] = []  # every response that is not the resident's own screen

    def post(path: str, data: dict[str, str]) -> None:
        response = client.post(path, data=data)
        assert response.status_code == 200
        others.append(response.text)

    # USSD: a finished report with the typed canary.
    phone = Phone(client, NUMBER)
    phone.dial()
    phone.press("1", "1", "1", "1", "1", "7", "1")
    phone.press(f"{TEXT} au barrage*2")
    # A dropped session with the canary typed where a digit was expected (so it sits in
    # the provider's cumulative text), then its end notification carrying it back.
    phone.dial()
    phone.press("1", TEXT)
    dropped = phone.session_id
    post("/webhooks/africastalking/ussd/events", {
        "sessionId": dropped, "serviceCode": "*123#", "networkCode": "99999",
        "phoneNumber": NUMBER, "status": "Incomplete", "hopsCount": "3",
        "durationInMillis": "41000", "input": f"1*{TEXT}",
        "lastAppResponse": f"CON {TEXT} {NUMBER}", "date": "2026-11-24 10:00:00",
        "cost": "XOF 0.00", "hopsMetadata": ""})
    # A new dial resumes it; the same number written differently is the same person.
    Phone(client, NUMBER[1:]).dial()
    # Another dropped session with typed text not yet submitted: input step reached.
    phone.dial()
    phone.press("2")  # restart, then leave mid-way
    phone.press("1", "1", "1", "1", "1", "7", "1")

    # SMS through Africa's Talking: a report with the canary, help, STOP, START.
    handset = Handset(client, runtime, NUMBER)
    for message in ("D1", "1", "1", "1", "1", "1", "7", "1", f"{TEXT} encore",
                    f"{TEXT} bonjour", "STOP", "START"):
        others.append(handset.deliver(message))
    handset.inbox()
    # SMS through Kannel's get-url (a GET, the number in the query string).
    response = client.get("/webhooks/kannel/sms", params={
        "from": NUMBER, "to": "36123", "text": f"{TEXT} kannel", "id": "kannel-1",
        "coding": "0", "charset": "UTF-8"})
    others.append(response.text)
    drain(runtime)
    # Delivery reports and an opt-out naming the number.
    post("/webhooks/africastalking/delivery", {
        "id": "fake-1", "status": "Success", "phoneNumber": NUMBER, "networkCode": "99999"})
    post("/webhooks/africastalking/delivery", {
        "id": "ATXid_unknown", "status": "Failed", "phoneNumber": NUMBER,
        "failureReason": "UserInBlackList"})
    post("/webhooks/africastalking/optout", {"senderId": "DANNAYA", "phoneNumber": NUMBER})
    # An unreadable number with the canary in the other fields.
    post("/webhooks/africastalking/ussd", {"sessionId": "ATUid_x", "serviceCode": "*123#",
                                           "phoneNumber": f"{NUMBER}{TEXT}", "text": TEXT})
    for path in ("/healthz", "/readyz"):
        others.append(client.get(path).text)

    found = {
        "database dump": leaks(dump(runtime.settings.database_url, tmp_path)),
        "log records": leaks("\n".join(
            f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)),
        "log calls before redaction": leaks("\n".join(raw.lines)),
        "other responses": leaks("\n".join(others)),
    }
    assert found == {"database dump": [], "log records": [], "log calls before redaction": [],
                     "other responses": []}
    # The checks can see: the canary did reach the gateway and was stored, sealed.
    assert len(caplog.records) > 0 and len(raw.lines) >= len(caplog.records) and len(others) > 15
