"""``gateway serve`` on PostgreSQL runs USSD hops' database work in a process of its own
(``gateway.dialogue.ussd_process``). A session goes through it as through the thread; if the process
dies between two hops, the next hop starts another and the session goes on; a copy of a
dial still makes one session."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.dialogue.ussd_process import DbWorker
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from tests.phone import CON, END, Phone, Screen


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[TestClient, Runtime]]:
    """The app as ``gateway serve`` runs it (with its database process), started and,
    when the block ends, stopped."""
    if settings.database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL only: SQLite hops run in the service's own process")
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime, db_process=True)
    try:
        with TestClient(app) as client:
            yield client, runtime
    finally:
        runtime.db.dispose()


@pytest.fixture
def worker_client(settings: Settings) -> Iterator[tuple[TestClient, Runtime]]:
    with serving(settings) as served:
        yield served


def _worker(runtime: Runtime) -> DbWorker:
    assert isinstance(runtime.hop_jobs, DbWorker)
    return runtime.hop_jobs


def test_a_session_goes_through_the_database_process(
        worker_client: tuple[TestClient, Runtime]) -> None:
    client, runtime = worker_client
    phone = Phone(client, "+22370000001")
    assert phone.dial() == CON("Langue / Kan / Demngal:\n1. Francais\n2. Bamanankan\n"
                               "3. Fulfulde")
    assert phone.press("1").text.startswith("Dannaya")
    assert phone.press("2").text.startswith("Faites-vous confiance")
    for _ in range(4):
        screen = phone.press("3")
    assert screen.text.startswith("Question facultative")
    assert phone.press("3", "5", "3").text.startswith("Dans quel cercle")
    assert phone.press("1").text.startswith("Quelle commune")
    assert phone.press("1") == END("Merci, réponse recue.")
    with runtime.db.transaction() as conn:
        answers = conn.execute(text("SELECT count(*) FROM poll_answer")).scalar_one()
    assert answers == 9
    assert phone.repeat() == END("Merci, réponse recue.")


def test_a_killed_database_process_is_replaced_and_the_session_goes_on(
        worker_client: tuple[TestClient, Runtime]) -> None:
    client, runtime = worker_client
    phone = Phone(client, "+22370000001")
    phone.dial()
    phone.press("1")
    first = _worker(runtime)._process
    assert first is not None and first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    first.join(5)

    screen = phone.press("2")  # the hop finds the process gone, retries on a new one
    assert screen.text.startswith("Faites-vous confiance")
    second = _worker(runtime)._process
    assert second is not None and second.pid != first.pid
    reference = Phone(client, "+22376543210")
    reference.dial()
    assert reference.press("1", "2") == screen


def test_a_copy_of_the_dial_makes_one_session(
        worker_client: tuple[TestClient, Runtime]) -> None:
    client, runtime = worker_client
    phone = Phone(client, "+22370000001")
    dial = phone.dial()
    runtime.ussd.recent.forget(("africastalking", phone.session_id))
    assert Screen.parse(phone.post("")) == dial
    with runtime.db.transaction() as conn:
        count = conn.execute(text("SELECT count(*) FROM ussd_session WHERE session_id = :s"),
                             {"s": phone.session_id}).scalar_one()
    assert count == 1


def test_the_database_process_stops_with_the_service(settings: Settings) -> None:
    with serving(settings) as (client, runtime):
        Phone(client, "+22370000001").dial()
        process = _worker(runtime)._process
        assert process is not None and process.is_alive()
    assert process.exitcode == 0  # it finished on its own once the pipe closed
    assert runtime.hop_jobs is None
