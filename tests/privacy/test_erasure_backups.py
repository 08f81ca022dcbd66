"""Erasure outlives the database: a resident sends SUPPRIMER, the purge runs, then the
deployer restores a backup taken before. Nothing of the resident opens with the key file,
`gateway purge` (the real command) removes what came back and exits 0, and touches the key
file only when something changed. Real backups: SQLite's online backup API, and `pg_dump`
restored with `pg_restore` into a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import insert, select, update
from sqlalchemy.engine import make_url

from gateway.channels.fake import FakeSender
from gateway.dialogue.ussd import session_ref
from gateway.outbox import outbox
from gateway.outbox.worker import PURGE_COUNTER, Worker
from gateway.privacy import keys as keys_mod
from gateway.privacy.keys import KeyRing
from gateway.runtime import Runtime, build_runtime, make_worker
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.models import utcnow
from tests.conftest import REPO, _drop_postgres_database, _fresh_postgres_database
from tests.handset import Handset
from tests.phone import END, Phone

NUMBER = "+22370000001"
CANARY = "CANARY-7Q au barrage"


# --- backups as a deployer takes and restores them ---------------------------------------


class Backups:
    """Back up and restore the test's database the way the README tells deployers to."""

    def __init__(self, url: str, tmp_path: Path, server: str | None) -> None:
        self.url, self.tmp_path, self.server = url, tmp_path, server
        self.made: list[str] = []  # PostgreSQL databases to drop

    def take(self, name: str) -> Path:
        """SQLite: the online backup API (`sqlite3 gateway.db ".backup f"`); PostgreSQL:
        `pg_dump -Fc`."""
        target = self.tmp_path / name
        if self.url.startswith("sqlite"):
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as src, \
                    sqlite3.connect(target) as dst:
                src.backup(dst)
            return target
        subprocess.run(["pg_dump", "-Fc", "--no-owner", "-f", str(target), _plain(self.url)],
                       check=True)
        return target

    def restore(self, backup: Path) -> str:
        """Into a fresh database (a new SQLite file; a new PostgreSQL database with
        `pg_restore`); its URL."""
        if self.url.startswith("sqlite"):
            target = self.tmp_path / f"restored-{len(self.made)}.db"
            self.made.append(str(target))
            with sqlite3.connect(backup) as src, sqlite3.connect(target) as dst:
                src.backup(dst)
            return f"sqlite:///{target}"
        assert self.server is not None
        url, name = _fresh_postgres_database(self.server)
        self.made.append(name)
        subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-d", _plain(url),
                        str(backup)], check=True)
        return url

    def drop(self) -> None:
        if self.server and not self.url.startswith("sqlite"):
            for name in self.made:
                _drop_postgres_database(self.server, name)


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def backups(settings: Settings, tmp_path: Path,
            postgres_server_url: str | None) -> Iterator[Backups]:
    made = Backups(settings.database_url, tmp_path, postgres_server_url)
    yield made
    made.drop()


def gateway_purge(settings: Settings, url: str | None = None,
                  **env: str) -> subprocess.CompletedProcess[str]:
    """`gateway purge`, the real command, in a process of its own."""
    environ = {"PATH": os.environ["PATH"], "HOME": str(settings.key_file.parent),
               "GATEWAY_DATABASE_URL": url or settings.database_url,
               "GATEWAY_KEY_FILE": str(settings.key_file), **env}
    return subprocess.run([sys.executable, "-m", "gateway", "purge"], env=environ,
                          cwd=settings.key_file.parent, capture_output=True, text=True,
                          timeout=120, check=False)


# --- what can be opened ------------------------------------------------------------------


def readable(ring: KeyRing, url: str, pseudonym: str) -> list[str]:
    """Everything kept about ``pseudonym`` in the database at ``url`` that ``ring`` opens:
    its vault number, report text, numbers in messages, session and conversation state."""
    opened: list[str] = []
    db = Database(url)

    def attempt(what: str, open_it: object) -> None:
        try:
            assert callable(open_it)
            open_it()
        except (keys_mod.KeyGone, InvalidTag, ValueError):
            return
        opened.append(what)

    try:
        with db.transaction() as conn:
            contact = queries.get_contact(conn, pseudonym=pseudonym)
            wrapped = contact.data_key if contact is not None else None
            for row in conn.execute(select(queries.vault)
                                    .where(queries.vault.c.pseudonym == pseudonym)):
                attempt("number in the vault", lambda row=row: ring.open_number(
                    wrapped, row.number, pseudonym=pseudonym))
            for row in conn.execute(select(queries.reports).where(
                    queries.reports.c.pseudonym == pseudonym, queries.reports.c.text.is_not(None))):
                attempt("report text", lambda row=row: ring.decrypt_for(
                    wrapped or "", row.text, pseudonym=pseudonym, aad=row.source))
            for row in conn.execute(select(outbox.outbox).where(
                    outbox.outbox.c.pseudonym == pseudonym, outbox.outbox.c.recipient != "")):
                attempt("number in a message", lambda row=row: ring.open_text(
                    row.recipient, aad=f"outbox:{row.dedupe_key}"))
            for row in conn.execute(select(queries.sessions).where(
                    queries.sessions.c.pseudonym == pseudonym, queries.sessions.c.state != "")):
                attempt("USSD state", lambda row=row: ring.open_text(
                    row.state, aad=session_ref(row.provider, row.session_id)))
            from gateway.dialogue.sms import conversations

            for row in conn.execute(select(conversations).where(
                    conversations.c.pseudonym == pseudonym)):
                attempt("SMS state", lambda row=row: ring.open_text(
                    row.state, aad=f"sms:{pseudonym}"))
    finally:
        db.dispose()
    return opened


def kept(url: str, pseudonym: str) -> dict[str, int]:
    """Rows still linked to ``pseudonym`` (only ones that would let it be found again)."""
    db = Database(url)
    try:
        with db.transaction() as conn:
            from gateway.dialogue.sms import conversations

            tables = {"contact": queries.contacts, "vault": queries.vault,
                      "poll_answer": queries.poll_answers, "report": queries.reports,
                      "sms_conversation": conversations}
            found = {name: len(conn.execute(select(t).where(t.c.pseudonym == pseudonym)).all())
                     for name, t in tables.items()}
            found["outbox"] = len(conn.execute(select(outbox.outbox).where(
                outbox.outbox.c.pseudonym == pseudonym,
                outbox.outbox.c.kind != "control")).all())
            found["ussd_session with state"] = len(conn.execute(select(queries.sessions).where(
                queries.sessions.c.pseudonym == pseudonym, queries.sessions.c.state != "")).all())
    finally:
        db.dispose()
    return {name: n for name, n in found.items() if n}


def neighbour(ring: KeyRing, pseudonym: str, *, same_bucket: bool) -> str:
    """A phone number whose pseudonym is in the bucket of ``pseudonym`` (or not)."""
    bucket = keys_mod.bucket_of(pseudonym)
    for i in range(2, 100_000):
        number = f"+2237{i:07d}"
        if (keys_mod.bucket_of(ring.pseudonym(number)) == bucket) == same_bucket:
            return number
    raise AssertionError("no such number")


def subscribe(phone: Phone) -> None:
    phone.dial()
    phone.press("1", "3", "1", "7")  # French, receive messages, Mopti, a commune


def file_report(phone: Phone, text: str) -> str:
    phone.dial()
    phone.press("1", "1", "1", "1", "1", "7", "1")
    assert phone.press(text) == END("Merci, message recu.")
    return f"ussd:africastalking:{phone.session_id}"


def key_file_state(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


# --- the scenario ----------------------------------------------------------------------


def test_a_backup_restored_after_an_erasure_gives_back_nothing_of_the_resident(
        phone: Phone, handset: Handset, runtime: Runtime, settings: Settings,
        backups: Backups) -> None:
    pseudonym = runtime.keys.pseudonym(NUMBER)
    # The resident: subscribed (the number in the vault), a report with typed text, a poll
    # by SMS (a conversation, replies whose numbers are sealed in the outbox).
    subscribe(phone)
    file_report(phone, CANARY)
    assert handset.send("SONDAGE")
    # Two neighbours: one whose pseudonym shares the resident's data-wrapping bucket, one
    # in another bucket.
    near = Phone(phone.client, neighbour(runtime.keys, pseudonym, same_bucket=True))
    far = Phone(phone.client, neighbour(runtime.keys, pseudonym, same_bucket=False))
    for other in (near, far):
        subscribe(other)
    far_report = file_report(far, "texte du voisin")

    backup = backups.take("before-erasure.backup")
    assert set(readable(runtime.keys, settings.database_url, pseudonym)) == {
        "number in the vault", "report text", "number in a message", "USSD state",
        "SMS state"}  # before the erasure, the key file opens all of it

    handset.send("SUPPRIMER")
    assert handset.send("OUI") == ["C'est fait, vos données sont effacées."]
    done = gateway_purge(settings)
    assert done.returncode == 0, done.stderr
    assert "shredded: True" in done.stdout
    ring = keys_mod.load(settings.key_file, create=False)
    assert pseudonym in ring.erased  # recorded where a database restore cannot reach

    # The deployer restores the backup taken before the erasure.
    restored = backups.restore(backup)
    raw = backup.read_bytes()
    assert NUMBER[1:].encode() not in raw and CANARY.encode() not in raw
    assert readable(ring, restored, pseudonym) == []  # nothing, with today's key file
    assert readable(ring, restored, ring.pseudonym(far.number)) == [
        "number in the vault", "report text"]  # another bucket: kept
    assert kept(restored, pseudonym)  # the rows came back, unreadable

    before = key_file_state(settings.key_file)
    first = gateway_purge(settings, restored)
    assert first.returncode == 0, first.stderr
    assert "restored erasures: 1" in first.stdout
    assert kept(restored, pseudonym) == {}
    # Nothing readable came back, so nothing needed shredding: the key file is untouched.
    assert key_file_state(settings.key_file) == before
    second = gateway_purge(settings, restored)
    assert second.returncode == 0, second.stderr
    assert "restored erasures: 0" in second.stdout and "shredded: False" in second.stdout
    assert key_file_state(settings.key_file) == before
    # The neighbour in the resident's bucket lost their number with the shred (they
    # subscribe again); the other neighbour kept theirs, and their report's text.
    assert readable(ring, restored, ring.pseudonym(near.number)) == []
    assert kept(restored, ring.pseudonym(near.number)) == {"contact": 1}
    assert readable(ring, restored, ring.pseudonym(far.number)) == [
        "number in the vault", "report text"]
    db = Database(restored)
    try:
        with db.transaction() as conn:
            report = conn.execute(select(queries.reports).where(
                queries.reports.c.source == far_report)).one()
        assert report.text is not None
    finally:
        db.dispose()


def test_a_backup_restored_before_the_shred_is_shredded_by_the_next_purge(
        phone: Phone, handset: Handset, runtime: Runtime, settings: Settings,
        backups: Backups) -> None:
    """The erasure was recorded, but the restore brought back keys still in the key file
    (the backup is younger than the last shred): the next purge erases and shreds."""
    pseudonym = runtime.keys.pseudonym(NUMBER)
    subscribe(phone)
    handset.send("SUPPRIMER")
    handset.send("OUI")
    assert gateway_purge(settings).returncode == 0  # the erasure is in the key file now
    subscribe(phone)  # ... and the resident came back, and subscribed again
    assert handset.send("SONDAGE")
    backup = backups.take("after-coming-back.backup")
    handset.send("SUPPRIMER")
    handset.send("OUI")  # erased a second time; no purge yet
    # Whoever restores the backup now would find the number: the purge must catch up.
    restored = backups.restore(backup)
    ring = keys_mod.load(settings.key_file, create=False)
    assert "number in the vault" in readable(ring, restored, pseudonym)
    # The restored database has no record of the second erasure, the live one does:
    # the purge of the live database records it and shreds.
    assert gateway_purge(settings).returncode == 0
    ring = keys_mod.load(settings.key_file, create=False)
    assert readable(ring, restored, pseudonym) == []
    done = gateway_purge(settings, restored)
    assert done.returncode == 0, done.stderr
    assert kept(restored, pseudonym) == {}


def test_purge_after_restoring_an_older_backup_exits_0_and_never_grows_the_key_file(
        phone: Phone, handset: Handset, runtime: Runtime, settings: Settings,
        backups: Backups) -> None:
    """The crash of the issue: a restored contact whose data key a shred destroyed made
    `gateway purge` fail with DataKeyShredded, adding a key version at each run."""
    subscribe(phone)
    file_report(phone, CANARY)
    other = Phone(phone.client, "+22370000099")
    subscribe(other)
    backup = backups.take("old.backup")
    assert gateway_purge(settings).returncode == 0
    other.dial()
    other.press("5", "1")  # someone else erases: their bucket is shredded
    handset.send("SUPPRIMER")
    handset.send("OUI")
    assert gateway_purge(settings).returncode == 0
    versions = json.loads(settings.key_file.read_text())
    restored = backups.restore(backup)
    for _ in range(3):
        run = gateway_purge(settings, restored)
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
    assert json.loads(settings.key_file.read_text()) == versions


def test_numbers_sealed_under_the_master_key_move_under_data_keys(
        phone: Phone, runtime: Runtime, settings: Settings) -> None:
    """A database from before this version: vault numbers sealed under the master key, data
    keys wrapped under the one global family of a key file without buckets. The first
    purge moves them; the first shred destroys what they were under."""
    subscribe(phone)
    pseudonym = runtime.keys.pseudonym(NUMBER)
    raw = json.loads(settings.key_file.read_text())
    legacy = {"current": 1, "keys": {"1": raw["buckets"]["00"]["keys"]["1"]}}
    del raw["buckets"], raw["erased"]
    raw["data"] = legacy
    settings.key_file.write_text(json.dumps(raw))
    old = keys_mod.load(settings.key_file, create=False)
    with runtime.db.transaction() as conn:  # as the previous version wrote them
        conn.execute(update(queries.contacts).values(
            data_key=old.new_data_key(pseudonym=pseudonym)))
        conn.execute(update(queries.vault).values(
            number=old.seal_text(NUMBER, aad=f"vault:{pseudonym}")))
    assert old.legacy is not None and not old.buckets

    done = gateway_purge(settings)
    assert done.returncode == 0, done.stderr
    assert "migrated numbers: 1" in done.stdout
    ring = keys_mod.load(settings.key_file, create=False)
    assert ring.legacy is not None and ring.buckets  # nothing erased yet: nothing destroyed
    with runtime.db.transaction() as conn:
        entry = queries.get_vault(conn, pseudonym=pseudonym)
    assert entry is not None and entry.number.startswith("n1.")
    assert entry.data_key is not None and entry.data_key.startswith("k")
    assert ring.open_number(entry.data_key, entry.number, pseudonym=pseudonym) == NUMBER
    # The first erasure's shred destroys the global family and the old master version.
    gone = Phone(phone.client, "+22370000077")
    gone.dial()
    gone.press("1", "5", "1")
    assert gateway_purge(settings).returncode == 0
    ring = keys_mod.load(settings.key_file, create=False)
    assert ring.legacy is None and set(ring.master.keys) == {ring.master.current}
    assert ring.open_number(entry.data_key, entry.number, pseudonym=pseudonym) == NUMBER


# --- the worker -------------------------------------------------------------------------


def test_the_worker_keeps_sending_when_its_purge_meets_a_restored_erased_contact(
        phone: Phone, handset: Handset, runtime: Runtime, settings: Settings,
        backups: Backups) -> None:
    pseudonym = runtime.keys.pseudonym(NUMBER)
    subscribe(phone)
    file_report(phone, CANARY)
    backup = backups.take("before.backup")
    handset.send("SUPPRIMER")
    handset.send("OUI")
    assert gateway_purge(settings).returncode == 0
    restored_url = backups.restore(backup)
    versions = settings.key_file.read_bytes()

    # `gateway serve` on the restored database: its worker, as the runtime builds it.
    restored = build_runtime(Settings(_env_file=None, database_url=restored_url,
                                      key_file=settings.key_file, content_dir=REPO,
                                      quiet_hours=""))  # broadcasts go whatever the hour
    try:
        with restored.db.transaction() as conn:  # the purge is due (last run long ago)
            queries.set_counter(conn, name=PURGE_COUNTER, value=0, now=utcnow())
        queue_messages(restored, 20)

        async def serve_for_a_while() -> int:
            stop = asyncio.Event()
            worker = make_worker(restored)
            task = asyncio.create_task(worker.run(stop))
            sender = restored.sender
            assert isinstance(sender, FakeSender)
            for _ in range(200):
                await asyncio.sleep(0.05)
                if len(sender.sent) >= 20 and _purged(restored):
                    break
            stop.set()
            await task
            return worker.daily_failures

        assert asyncio.run(serve_for_a_while()) == 0
        sender = restored.sender
        assert isinstance(sender, FakeSender)
        assert len(sender.sent) == 20  # sending went on while the purge ran
        assert _purged(restored)
        assert kept(restored_url, pseudonym) == {}
        assert settings.key_file.read_bytes() == versions
    finally:
        restored.db.dispose()


def _purged(rt: Runtime) -> bool:
    with rt.db.transaction() as conn:
        return bool(queries.get_counter(conn, name=PURGE_COUNTER))


def queue_messages(rt: Runtime, count: int) -> None:
    """Broadcast-like messages to other residents, due now."""
    now = utcnow()
    with rt.db.transaction() as conn:
        for i in range(count):
            number = f"+2237100{i:04d}"
            outbox.enqueue(conn, keys=rt.keys, policy=rt.outbox_policy,
                           pseudonym=rt.keys.pseudonym(number), e164=number,
                           text=f"Message {i}", kind="broadcast", dedupe_key=f"b:{i}", now=now)


def test_a_failing_purge_is_logged_without_a_number_and_never_stops_the_sending(
        runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[datetime] = []

    def failing(now: datetime) -> str:  # the daily hook the runtime hands the worker
        calls.append(now)
        raise RuntimeError(f"could not purge {NUMBER}")

    queue_messages(runtime, 10)
    worker = Worker(db=runtime.db, keys=runtime.keys, sender=runtime.sender,
                    policy=runtime.outbox_policy, wake=lambda: runtime.wake, daily=failing)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        sender = runtime.sender
        assert isinstance(sender, FakeSender)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(sender.sent) >= 10:
                break
        await asyncio.sleep(0.3)  # long enough for a retry loop to show
        stop.set()
        await task

    with caplog.at_level(logging.INFO):
        asyncio.run(run())
    sender = runtime.sender
    assert isinstance(sender, FakeSender)
    assert len(sender.sent) == 10
    assert len(calls) == 1 and worker.daily_failures == 1  # tried again later, not at once
    failures = [r for r in caplog.records if "purge failed" in r.getMessage()]
    assert len(failures) == 1 and "RuntimeError" in failures[0].getMessage()
    assert all(NUMBER[4:] not in r.getMessage() for r in caplog.records)
    with runtime.db.transaction() as conn:
        assert queries.get_counter(conn, name=PURGE_COUNTER) is None  # not marked done


def test_a_purge_that_is_killed_mid_shred_is_finished_without_new_versions(
        phone: Phone, runtime: Runtime, settings: Settings) -> None:
    subscribe(phone)
    pseudonym = runtime.keys.pseudonym(NUMBER)
    # A shred began (versions added, the erasure recorded) and the process died.
    when = datetime.now(UTC) - timedelta(minutes=1)
    marker = keys_mod.begin_shred(settings.key_file, buckets={keys_mod.bucket_of(pseudonym)},
                                  erased={"f" * 32: when})
    with runtime.db.transaction() as conn:
        conn.execute(insert(queries.tombstones).values(pseudonym="f" * 32, erased_at=when))
    grown = json.loads(settings.key_file.read_text())
    assert grown["shredding"]
    done = gateway_purge(settings)
    assert done.returncode == 0, done.stderr
    after = json.loads(settings.key_file.read_text())
    assert "shredding" not in after
    assert after["master"]["keys"].keys() == {str(marker.master)}
    assert set(after["buckets"][keys_mod.bucket_of(pseudonym)]["keys"]) == {
        str(marker.buckets[keys_mod.bucket_of(pseudonym)])}
    ring = keys_mod.load(settings.key_file, create=False)
    with runtime.db.transaction() as conn:
        entry = queries.get_vault(conn, pseudonym=pseudonym)
    assert entry is not None
    assert ring.open_number(entry.data_key, entry.number, pseudonym=pseudonym) == NUMBER
    assert gateway_purge(settings).returncode == 0
    assert json.loads(settings.key_file.read_text()) == after
