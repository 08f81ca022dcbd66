"""When the database's disk is full, answer at once and say so (issue 17, item 5): a real
full disk, a small tmpfs holding the SQLite file, filled up (mounting it needs root; the
test is skipped otherwise). SMS webhooks answer 503 with Retry-After at once, nothing
half-stored (the provider's retry is then a first, never lost, never doubled); a USSD hop
gets the neutral try-again screen; `/readyz` answers 503 within a second, before and after
a restart; when space comes back, so does everything, by itself.
"""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from gateway.store import queries
from gateway.store.db import MIN_FREE_BYTES, Database, DiskFull
from gateway.store.migrate import upgrade
from gateway.store.models import utcnow
from tests.reliability.test_database_stalls import (
    APOLOGY,
    SMS,
    USSD,
    sms_form,
    stored,
    timed,
    ussd_form,
)
from tests.reliability.test_process_hygiene import serving

pytestmark = pytest.mark.nodb
WAIT = 1.0  # GATEWAY_DB_WAIT_SECONDS in these tests
KANNEL_SMS = "/webhooks/kannel/sms"


@contextmanager
def small_disk(path: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path``, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root here (mount -t tmpfs)")
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(path)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, name: str = "filler") -> Path:
    """Write a file until the disk has no byte left."""
    filler = disk / name
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    assert os.statvfs(disk).f_bavail == 0
    return filler


def checkpoint(path: Path, mode: str) -> None:
    """Fold SQLite's write-ahead log into the file (another connection, as an operator's
    backup would): TRUNCATE empties the log, RESTART leaves its space to be written over."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        for _ in range(50):
            busy, _, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            if not busy:
                return
            time.sleep(0.1)
        raise AssertionError("the checkpoint stayed busy")
    finally:
        conn.close()


def closed_cleanly(path: Path) -> None:
    """The last connection closes as SQLite does after a clean stop: the write-ahead log
    and its shared-memory file are removed."""
    conn = sqlite3.connect(path)
    conn.execute("SELECT count(*) FROM contact").fetchone()
    conn.close()
    assert not path.with_name(path.name + "-wal").exists()
    assert not path.with_name(path.name + "-shm").exists()


def kannel_form(message_id: str) -> dict[str, str]:
    return {"from": "+22370000003", "to": "36123", "text": "SONDAGE", "id": message_id,
            "coding": "0", "charset": "UTF-8"}


def answers_at_once_and_says_so(client: httpx.Client, rounds: int) -> None:
    """Every webhook answers promptly, nothing is accepted, and readiness is false."""
    for i in range(rounds):
        text, took = timed(functools.partial(client.post, SMS, data=sms_form(f"m{i}")))
        assert text.status_code == 503 and text.headers["retry-after"], text.text
        assert took < WAIT + 0.5
        kannel, took = timed(functools.partial(client.post, KANNEL_SMS,
                                               data=kannel_form(f"k{i}")))
        assert kannel.status_code == 503 and took < WAIT + 0.5
        hop, took = timed(functools.partial(
            client.post, USSD, data=ussd_form(f"s{i}", f"+2237000{i:04d}")))
        assert (hop.status_code, hop.text) == (200, APOLOGY) and took < WAIT + 0.5
        ready, took = timed(lambda: client.get("/readyz"))
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert took < 1.0
        assert client.get("/healthz").status_code == 200
        time.sleep(0.4)  # past the moment the database is left alone after a failure


@pytest.mark.slow
def test_a_full_disk_gets_prompt_answers_and_a_false_readiness_before_and_after_a_restart(
        tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    with small_disk(disk):
        path = disk / "gateway.db"
        url = f"sqlite:///{path}"
        with serving(tmp_path, GATEWAY_DATABASE_URL=url,
                     GATEWAY_DB_WAIT_SECONDS=str(WAIT)) as served:
            client = httpx.Client(base_url=served.base, timeout=30)
            assert client.post(SMS, data=sms_form("warm")).text == "accepted"
            assert client.post(USSD, data=ussd_form("warm")).text.startswith("CON ")
            checkpoint(path, "TRUNCATE")
            filler = fill(disk)
            answers_at_once_and_says_so(client, rounds=5)
            client.close()
            assert served.stop() == 0
        closed_cleanly(path)
        more = fill(disk, "filler-2")  # what SQLite's files held

        # Restarted with the disk still full (SQLite cannot even make its shared-memory
        # file): it starts, and answers the same way.
        with serving(tmp_path, ready=False, GATEWAY_DATABASE_URL=url,
                     GATEWAY_DB_WAIT_SECONDS=str(WAIT)) as served:
            client = httpx.Client(base_url=served.base, timeout=30)
            answers_at_once_and_says_so(client, rounds=3)

            filler.unlink()  # space again: the service comes back by itself
            more.unlink()
            deadline = time.monotonic() + 10
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            # Nothing of the refused messages was half-stored: each retry is a first.
            assert client.post(SMS, data=sms_form("m0")).text == "accepted"
            assert client.post(SMS, data=sms_form("m0")).text == "duplicate"
            assert client.post(KANNEL_SMS, data=kannel_form("k0")).text == "accepted"
            assert client.post(USSD, data=ussd_form("after")).text.startswith("CON ")
            client.close()
            assert served.stop() == 0
        assert stored(url) == 3  # warm, m0, k0
    output = served.output()
    assert "Traceback" not in output
    assert "cannot take a write at start" in output
    assert "70000" not in output.replace("[number]", "")  # no number in any log line


def test_readiness_is_false_on_a_full_disk_even_while_a_small_write_still_fits(
        tmp_path: Path) -> None:
    """SQLite writes over its write-ahead log's old space after a checkpoint: with the
    disk full, a small write can still succeed. Readiness does not count on it."""
    with small_disk(tmp_path / "disk") as disk:
        path = disk / "gateway.db"
        db = Database(f"sqlite:///{path}")
        try:
            upgrade(db.engine)
            for n in range(300):  # some log to write over
                with db.transaction() as conn:
                    queries.set_counter(conn, name=f"filler-{n}", value=n, now=utcnow())
            assert db.probe() == 0
            checkpoint(path, "RESTART")
            fill(disk)
            assert db.free_bytes() == 0 < MIN_FREE_BYTES
            with db.transaction() as conn:  # this one still fits in the log
                queries.set_counter(conn, name="still", value=1, now=utcnow())
            with pytest.raises(DiskFull):
                db.probe()
        finally:
            db.dispose()
