"""Two `gateway serve` processes on one database (an SQLite file, and PostgreSQL), a
flow version published through one of them: the other shows it to the next caller within
a second or two, without a restart, while a caller mid-way on it finishes on the wording
they began with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.operators import accounts
from gateway.operators.access import Role
from gateway.privacy import keys as keys_mod
from gateway.store import migrate
from gateway.store.db import Database, make_engine
from gateway.store.models import utcnow
from tests.conftest import REPO
from tests.operators.people import CERCLES, PASSWORD
from tests.phone import Phone
from tests.store.test_replicas import _started_at

OLD_BM = "I da bè sòròdasiw (FAMa) la wa?"
NEW_BM = "I dalen bè sòròdasiw (FAMa) la wa?"
SEEN_WITHIN = 10.0  # seconds: a generous bound (GATEWAY_FLOWS_POLL_SECONDS is 1)


@pytest.fixture
def two_replicas(empty_database_url: str, tmp_path: Path) -> Iterator[list[str]]:
    url = empty_database_url
    if not url.startswith("sqlite"):
        engine = make_engine(url)
        migrate.upgrade(engine)  # `gateway migrate`, once, before the replicas start
        engine.dispose()
    key_file = tmp_path / "shared.keys"
    keys_mod.load(key_file, create=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_DATABASE_URL=url, GATEWAY_KEY_FILE=str(key_file),
               GATEWAY_CONTENT_DIR=str(REPO))
    processes, bases = [], []
    try:
        for n in range(2):  # one after the other: the first migrates an SQLite file
            log = (tmp_path / f"replica{n}.log").open("wb")
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--port", "0", "--no-worker"],
                env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT))
            log.close()
            bases.append(_started_at(tmp_path / f"replica{n}.log"))
        yield bases
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def operator_token(url: str) -> str:
    db = Database(url)
    try:
        with db.transaction() as conn:
            accounts.create(conn, name="moussa", role=Role.operator, cercles=["mopti"],
                            password=PASSWORD, known_cercles=CERCLES, actor="cli", now=utcnow())
            return accounts.new_cli_token(conn, name="moussa", label="tests", actor="cli",
                                          now=utcnow())
    finally:
        db.dispose()


def test_a_publication_through_one_replica_reaches_the_other_without_a_restart(
        two_replicas: list[str], empty_database_url: str) -> None:
    first, second = (httpx.Client(base_url=b, timeout=10) for b in two_replicas)
    auth = {"Authorization": f"Bearer {operator_token(empty_database_url)}"}
    try:
        midway = Phone(second, "+22370000201")
        midway.dial()
        assert midway.press("2", "2").text.startswith(OLD_BM)  # Bambara, the poll

        poll = first.get("/api/v1/flows/poll", headers=auth).json()
        poll["messages"]["bm"]["poll-trust-army"] = "I dalen bɛ sɔrɔdasiw (FAMa) la wa?"
        added = first.post("/api/v1/flows/poll/versions", headers=auth, json={
            "definition": poll["definition"], "messages": poll["messages"]})
        assert added.status_code == 201, added.text
        published = first.post("/api/v1/flows/poll/versions/2/publish", headers=auth)
        assert published.status_code == 200, published.text
        at = time.monotonic()

        seen = None
        n = 0
        while time.monotonic() - at < SEEN_WITHIN:
            n += 1
            caller = Phone(second, f"+2237000030{n % 10}")
            caller.dial()
            if caller.press("2", "2").text.startswith(NEW_BM):
                seen = time.monotonic() - at
                break
            time.sleep(0.1)
        assert seen is not None, "the other replica never showed the new wording"
        # (How soon is not asserted beyond SEEN_WITHIN: timing belongs to bench/.)
        # The caller who began before it finishes on the wording they began with.
        assert midway.press("0", "2").text.startswith(OLD_BM)
    finally:
        first.close()
        second.close()
