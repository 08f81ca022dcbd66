"""PostgreSQL hops run in batches (``gateway.store.batches``) and a process remembers the
sessions it saved. A remembered session changed elsewhere is never saved over, one bad
job fails only itself, and two copies of a save in one batch save once."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import Connection, text

from gateway.channels.base import UssdTurn
from gateway.dialogue.ussd import RecentSessions
from gateway.runtime import Runtime
from gateway.store import queries
from gateway.store.batches import Batches
from gateway.store.db import Database
from gateway.store.models import utcnow
from tests.phone import CON, END, Phone, Screen

APOLOGY = END("Service momentanément indisponible. Merci de réessayer plus tard.")


def session(runtime: Runtime, phone: Phone) -> queries.SessionRow:
    with runtime.db.transaction() as conn:
        row = queries.get_session(queries.Driver(conn), provider="africastalking",
                                session_id=phone.session_id)
    assert row is not None
    return row


def test_a_session_erased_by_another_replica_stays_erased(
        phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1")  # French: the main menu
    assert phone.press("2").text.startswith("Faites-vous confiance")
    if not runtime.db.sqlite:  # the process remembers the session it saved
        assert runtime.batches is not None
        assert len(runtime.ussd.recent) == 1
    pseudonym = session(runtime, phone).pseudonym
    with runtime.db.transaction() as conn:  # as an SMS "erase" on another replica does
        queries.erase_contact(conn, pseudonym=pseudonym, now=utcnow())

    assert phone.press("1") == APOLOGY
    row = session(runtime, phone)
    assert (row.status, row.state) == ("erased", "")


def test_a_session_continued_on_another_replica_goes_on_from_there(
        phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1")
    assert phone.press("2").text.startswith("Faites-vous confiance")
    before = session(runtime, phone)
    # Another replica takes the next hop ("1": an actor) and saves it; this process
    # still remembers the session as it left it.
    other = type(runtime.ussd)(db=runtime.db, keys=runtime.keys, engine=runtime.ussd.engine,
                               policy=runtime.ussd.policy)
    phone.inputs.append("1")
    elsewhere = other.handle(_turn(phone))
    assert session(runtime, phone).hops == before.hops + 1

    # The hop after that reaches this process: it goes on from the saved session, as
    # a session whose every hop reached one process does.
    screen = phone.press("1")
    assert session(runtime, phone).hops == before.hops + 2
    reference = Phone(client=phone.client, number="+22376543210")
    reference.dial()
    assert reference.press("1", "2", "1") == CON(elsewhere.removeprefix("CON "))
    assert reference.press("1") == screen
    assert phone.repeat() == screen


def _turn(phone: Phone) -> UssdTurn:
    return UssdTurn(provider="africastalking", session_id=phone.session_id,
                    phone=phone.number, service_code="*123#", network="99999", text=phone.text)


def test_one_failing_job_fails_alone(database_url: str) -> None:
    db = Database(database_url)

    def insert(value: int) -> Any:
        def job(conn: Connection) -> int:
            conn.execute(text("INSERT INTO counter (name, value, updated_at) "
                              "VALUES (:name, :value, :now)"),
                         {"name": f"batch-{value}", "value": value, "now": utcnow()})
            if value == 2:
                raise ValueError("job 2 fails")
            return value
        return job

    async def run() -> list[Any]:
        batches = Batches(db, asyncio.get_running_loop())
        held = threading.Event()
        try:
            first = asyncio.ensure_future(batches.run(lambda conn: held.wait(5)))
            await asyncio.sleep(0.05)  # the thread is in the first batch: the rest wait
            jobs = [asyncio.ensure_future(batches.run(insert(n))) for n in (1, 2, 3)]
            await asyncio.sleep(0.05)
            held.set()
            await first
            return list(await asyncio.gather(*jobs, return_exceptions=True))
        finally:
            await asyncio.to_thread(batches.close)

    try:
        results = asyncio.run(run())
        assert results[0] == 1 and results[2] == 3
        assert isinstance(results[1], ValueError)
        with db.transaction() as conn:
            names = conn.execute(text(
                "SELECT name FROM counter WHERE name LIKE 'batch-%' ORDER BY name")).all()
        assert [n for (n,) in names] == ["batch-1", "batch-3"]
    finally:
        db.dispose()


def test_two_saves_of_one_session_in_a_batch_save_once(
        phone: Phone, runtime: Runtime) -> None:
    if runtime.db.sqlite:
        pytest.skip("PostgreSQL only: SQLite hops save one at a time")
    phone.dial()
    phone.press("1")
    row = session(runtime, phone)
    one = queries.SessionSave(row._replace(response="CON one", hops=row.hops + 1),
                            row.hops, utcnow())
    two = queries.SessionSave(row._replace(response="CON two", hops=row.hops + 1),
                            row.hops, utcnow())
    with runtime.db.transaction() as conn:
        assert queries.save_sessions(conn, [one, two]) == [True, False]
        assert queries.save_sessions(conn, [two]) == [False]  # the count moved on
    after = session(runtime, phone)
    assert (after.response, after.hops) == ("CON one", row.hops + 1)


def test_a_copy_of_the_dial_on_a_process_that_did_not_see_it_gets_the_same_screen(
        phone: Phone, runtime: Runtime) -> None:
    dial = phone.dial()
    runtime.ussd.recent = RecentSessions()  # as if another replica had taken the dial
    assert Screen.parse(phone.post("")) == dial
    with runtime.db.transaction() as conn:
        count = conn.execute(text("SELECT count(*) FROM ussd_session WHERE session_id = :s"),
                             {"s": phone.session_id}).scalar_one()
    assert count == 1
    assert phone.press("1").text.startswith("Dannaya")


def test_saves_keep_to_the_index_as_the_session_table_grows(
        phone: Phone, runtime: Runtime) -> None:
    """A plan made while the table was small (a hash join over a scan of every row)
    must not outlive it: the saves of a long-running process stay index lookups."""
    if runtime.db.sqlite:
        pytest.skip("PostgreSQL only: SQLite hops save one at a time")
    phone.dial()
    phone.press("1")
    row = session(runtime, phone)
    with runtime.db.engine.connect() as conn:
        for n in range(12):  # often enough for the driver to prepare the statement
            with conn.begin():
                save = queries.SessionSave(row._replace(hops=row.hops + n + 1),
                                         row.hops + n, utcnow())
                assert queries.save_sessions(conn, [save]) == [True]
        with conn.begin():
            conn.execute(text(
                "INSERT INTO ussd_session (provider, session_id, pseudonym, state, status, "
                "text_len, text_mac, response, history, hops, created_at, updated_at) "
                "SELECT 'bulk', 'bulk-' || g, 'p', '', 'ended', 0, '', '', '', 1, now(), "
                "now() FROM generate_series(1, 20000) AS g"))
        with conn.begin():
            for n in range(12, 17):
                save = queries.SessionSave(row._replace(hops=row.hops + n + 1),
                                         row.hops + n, utcnow())
                assert queries.save_sessions(conn, [save]) == [True]
            scans = conn.execute(text(
                "SELECT seq_scan FROM pg_stat_xact_user_tables "
                "WHERE relname = 'ussd_session'")).scalar_one()
    assert scans == 0
