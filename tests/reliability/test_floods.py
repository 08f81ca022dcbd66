"""Floods cost nothing. One phone that texts 200 messages in a minute gets at most its
reply budget back: every message is still received and handled (STOP still stops), the
excess is counted and logged without the number; erasing one's data does not reset the
budget. One phone that files report after report gets the same neutral acknowledgement
every time, and past its limit nothing more is kept for review.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.dialogue import limits
from gateway.dialogue.sms import inbound
from gateway.outbox import outbox
from gateway.runtime import Runtime
from gateway.store import queries
from gateway.store.models import utcnow
from tests.capture import raw_log
from tests.handset import Handset
from tests.phone import END, Phone

NUMBER = "+22370000001"  # the handset's and the phone's
ACK = END("Merci, message recu.")


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def tick(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(runtime: Runtime) -> Clock:
    clock = Clock()
    runtime.sms.clock = clock
    runtime.ussd.clock = clock
    return clock


def counted(runtime: Runtime, name: str) -> int:
    with runtime.db.transaction() as conn:
        return queries.get_counter(conn, name=name) or 0


def queued_for(runtime: Runtime) -> int:
    with runtime.db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox.outbox)).scalar_one())


def received(runtime: Runtime) -> int:
    with runtime.db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(inbound)).scalar_one())


# On PostgreSQL under a machine loaded by several test runs one text once met the
# database's 2 s wait (a 503, which a provider retries): rerun.
@pytest.mark.flaky(reruns=2)
def test_two_hundred_texts_in_a_minute_get_at_most_the_budget_back(
        handset: Handset, runtime: Runtime, clock: Clock, client: TestClient) -> None:
    replies: list[str] = []
    with raw_log() as logged:
        for n in range(1, 200):
            clock.tick(seconds=0.3)
            handset.deliver("SONDAGE")
            if n % 10 == 0:  # the worker sends as they come
                replies += handset.inbox()
        handset.deliver("STOP")
        replies += handset.inbox()
    assert len(replies) == 20  # GATEWAY_REPLY_BUDGET_HOUR
    assert queued_for(runtime) == 20
    assert received(runtime) == 200  # every message received and handled
    with runtime.db.transaction() as conn:
        contact = queries.get_contact(conn, pseudonym=runtime.keys.pseudonym(NUMBER))
    assert contact is not None and contact.stopped  # STOP acted, its answer was not sent
    assert counted(runtime, limits.COUNTERS[limits.REPLY]) == 180
    readyz = client.get("/readyz").json()
    assert readyz["counters"]["replies_over_budget"] == 180
    said = [line for line in logged.lines if "reply budget" in line]
    assert len(said) == 1  # once, not 180 times
    assert runtime.keys.pseudonym(NUMBER)[:8] in said[0]
    assert not [line for line in logged.lines if "70000001" in line]

    clock.tick(minutes=61)
    assert handset.send("START") == [
        "Vous recevrez de nouveau nos SMS. Pour arreter, envoyez STOP."]


# Under heavy load a stand-in's socket was once left to the garbage collector (a warning).
@pytest.mark.flaky(reruns=2)
def test_the_day_budget_holds_across_hours(handset: Handset, clock: Clock) -> None:
    per_hour = []
    for _ in range(4):
        for _ in range(25):
            clock.tick(seconds=1)
            handset.deliver("SONDAGE")
        per_hour.append(len(handset.inbox()))
        clock.tick(minutes=61)
    assert per_hour == [20, 20, 20, 0]  # GATEWAY_REPLY_BUDGET_DAY: 60


def test_erasing_again_and_again_does_not_reset_the_budget(
        handset: Handset, runtime: Runtime, clock: Clock) -> None:
    replies: list[str] = []
    for _ in range(30):
        clock.tick(seconds=1)
        replies += handset.send("SUPPRIMER")
        clock.tick(seconds=1)
        replies += handset.send("OUI")
    assert len(replies) == 20
    with runtime.db.transaction() as conn:
        pseudonym = runtime.keys.pseudonym(NUMBER)
        assert queries.get_contact(conn, pseudonym=pseudonym) is None  # erased all the same
        assert queries.is_tombstoned(conn, pseudonym=pseudonym)


def file_report(phone: Phone) -> None:
    phone.dial()
    assert phone.press("1", "1", "6", "1", "7", "2") == ACK


def reports(runtime: Runtime) -> list[dict[str, object]]:
    with runtime.db.transaction() as conn:
        return [dict(r._mapping) for r in conn.execute(select(queries.reports))]


def test_past_the_report_limit_the_same_ack_and_nothing_kept(
        phone: Phone, handset: Handset, runtime: Runtime, clock: Clock) -> None:
    phone.dial()
    phone.press("1")  # French, then the first report in the same session
    assert phone.press("1", "1", "6", "1", "7", "2") == ACK
    for _ in range(4):
        clock.tick(minutes=1)
        file_report(phone)
    assert len(reports(runtime)) == 5
    clock.tick(minutes=1)
    file_report(phone)  # the sixth this hour: acknowledged, not kept
    # A report by SMS from the same phone counts against the same limit.
    assert handset.send("D1")[0].startswith("Attention")
    for answer in ("1", "3", "6", "3", "7"):
        handset.send(answer)
    assert handset.send("2") == ["Merci, message recu."]
    assert len(reports(runtime)) == 5
    assert counted(runtime, limits.COUNTERS[limits.REPORT]) == 2

    for _ in range(3):  # 5 an hour, up to 20 in the day
        clock.tick(minutes=61)
        for _ in range(6):
            clock.tick(minutes=1)
            file_report(phone)
    assert len(reports(runtime)) == 20
    clock.tick(minutes=61)
    file_report(phone)  # the 21st of the day, first of its hour
    kept = reports(runtime)
    assert len(kept) == 20 and {r["status"] for r in kept} == {"new"}
    assert counted(runtime, "reports_over_limit") == 2 + 3 + 1
    assert all(json.loads(str(r["answers"])) for r in kept)
