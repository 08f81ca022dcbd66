"""Two `gateway serve` processes on one PostgreSQL database, sharing one key file: a USSD
session whose hops alternate between them completes and saves once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.privacy import keys as keys_mod
from gateway.store import migrate, queries
from gateway.store.db import Database, make_engine
from tests.conftest import REPO
from tests.phone import END, Phone


class Alternating:
    """An HTTP client that sends each request to the next replica in turn."""

    def __init__(self, bases: list[str]) -> None:
        self.clients = [httpx.Client(base_url=b, timeout=10) for b in bases]
        self.turn = cycle(self.clients)
        self.used: list[str] = []

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        client = next(self.turn)
        self.used.append(str(client.base_url))
        return client.post(path, **kwargs)

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def replicas(empty_postgres_url: str, tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    engine = make_engine(empty_postgres_url)
    migrate.upgrade(engine)  # `gateway migrate`, once, before the replicas start
    engine.dispose()
    key_file = tmp_path / "shared.keys"
    keys_mod.load(key_file, create=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_DATABASE_URL=empty_postgres_url, GATEWAY_KEY_FILE=str(key_file),
               GATEWAY_CONTENT_DIR=str(REPO))
    processes, bases = [], []
    for n in range(2):
        log = (tmp_path / f"replica{n}.log").open("wb")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", "0", "--no-worker"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    try:
        for n in range(2):
            bases.append(_started_at(tmp_path / f"replica{n}.log"))
        yield bases, empty_postgres_url
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def _started_at(log: Path) -> str:
    """The address uvicorn says it is running on (the port is picked by the OS)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "running on http://" in line:
                return line.split("running on ")[1].split()[0]
        time.sleep(0.05)
    raise AssertionError(f"replica did not start: {log.read_text()}")


def test_a_session_alternating_between_two_replicas_completes_and_saves_once(
        replicas: tuple[list[str], str]) -> None:
    bases, url = replicas
    client = Alternating(bases)
    phone = Phone(client, "+22370000077")
    try:
        phone.dial()
        phone.press("2", "2")  # Bambara, trust poll
        phone.press("4", "3", "2", "1", "1", "2", "2", "1")  # 4 actors, who, Mopti
        assert phone.press("5") == END("I ni ce, jaabi sòròla.")
        assert phone.repeat() == END("I ni ce, jaabi sòròla.")  # a retry to the other one
        phone.dial()
        phone.press("1")  # report, on a new session, to check the language was remembered
        phone.press("1", "1", "1", "7", "1")
        assert phone.press("Texte*libre") == END("I ni ce, cikan sòròla.")
        assert phone.repeat() == END("I ni ce, cikan sòròla.")
    finally:
        client.close()
    assert set(client.used) == set(bases)  # both replicas served hops

    db = Database(url)
    try:
        with db.transaction() as conn:
            reports = conn.execute(select(queries.reports)).all()
            answers = conn.execute(select(queries.poll_answers)).all()
    finally:
        db.dispose()
    assert len(reports) == 1
    assert json.loads(reports[0].answers)["category"] == "help"
    assert {(a.question, a.answer) for a in answers} == {
        ("army", "a_lot"), ("gendarmerie", "somewhat"), ("police", "just_a_little"),
        ("national_guard", "not_at_all"), ("gender", "woman"), ("age_band", "25-34"),
        ("displaced", "no"), ("cercle", "mopti"), ("commune", "mopti-konna"),
    }
