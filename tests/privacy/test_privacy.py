"""Privacy at rest: pseudonyms, keys that fail closed, rotation, erasure that reaches
older dumps, and retention.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import make_url

from gateway import retention
from gateway.cli import main
from gateway.errors import StartupError
from gateway.privacy import keys as keys_mod
from gateway.privacy.keys import KeyRing
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.db import Database
from gateway.store.models import utcnow
from tests.conftest import REPO, _drop_postgres_database, _fresh_postgres_database
from tests.phone import END, Phone

NUMBER = "+22370000001"


def report_text(keys: KeyRing | Runtime, db: Database, source: str) -> str:
    """Decrypt a report's typed text from ``db`` with the given keys."""
    ring = keys.keys if isinstance(keys, Runtime) else keys
    with db.transaction() as conn:
        reports = queries.reports
        report = conn.execute(select(reports).where(reports.c.source == source)).one()
        contact = queries.get_contact(conn, pseudonym=report.pseudonym)
    assert contact is not None
    typed = ring.decrypt_for(contact.data_key, report.text, pseudonym=report.pseudonym,
                                aad=source)
    return str(json.loads(typed)["text"])


def file_report(phone: Phone, text: str) -> str:
    """A French report with typed text; returns its source key."""
    phone.dial()
    phone.press("1", "1", "1", "1", "1", "7", "1")
    assert phone.press(text) == END("Merci, message recu.")
    return f"ussd:africastalking:{phone.session_id}"


# --- pseudonyms and keys -------------------------------------------------------------


def test_pseudonyms_are_keyed_not_plain_hashes(runtime: Runtime, tmp_path: Path) -> None:
    pseudonym = runtime.keys.pseudonym(NUMBER)
    assert pseudonym == runtime.keys.pseudonym(NUMBER)
    assert pseudonym not in hashlib.sha256(NUMBER.encode()).hexdigest()
    other = keys_mod.load(tmp_path / "other.keys", create=True)
    assert other.pseudonym(NUMBER) != pseudonym
    # Without the key, trying candidate Mali numbers finds nothing.
    candidates = {hashlib.sha256(f"+2237000{i:04d}".encode()).hexdigest()[:32]
                  for i in range(10_000)}
    assert pseudonym not in candidates


def test_production_refuses_to_start_without_its_keys(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, env="production", webhook_token="t0ken",
                        database_url=f"sqlite:///{tmp_path / 'g.db'}",
                        key_file=tmp_path / "missing.keys", content_dir=REPO)
    with pytest.raises(StartupError, match="refuses to start without its keys"):
        build_runtime(settings)
    assert not (tmp_path / "missing.keys").exists()
    assert not (tmp_path / "g.db").exists()  # nothing written before the refusal


def test_production_refuses_to_start_without_a_webhook_token(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, env="production", content_dir=REPO,
                        key_file=tmp_path / "k", database_url=f"sqlite:///{tmp_path / 'g.db'}")
    with pytest.raises(StartupError, match="GATEWAY_WEBHOOK_TOKEN is required"):
        build_runtime(settings)


def test_a_malformed_key_file_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bad.keys"
    path.write_text('{"format": "dannaya-keys", "pseudonym": {}}')
    with pytest.raises(keys_mod.KeyFileError, match="malformed key file"):
        keys_mod.load(path, create=True)


def test_development_creates_a_key_file_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "new.keys"
    keys_mod.load(path, create=True)
    assert path.stat().st_mode & 0o777 == 0o600
    assert "created a new key file" in caplog.text


def test_keys_init_creates_a_key_file_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "prod.keys"
    monkeypatch.setenv("GATEWAY_KEY_FILE", str(path))
    assert main(["keys", "init"]) == 0
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_bytes()
    keys_mod.load(path, create=False)  # a valid key file
    assert main(["keys", "init"]) == 1  # never overwritten
    assert path.read_bytes() == first
    assert "already exists" in capsys.readouterr().err


# --- rotation ------------------------------------------------------------------------


def test_rotation_keeps_old_data_readable_and_writes_with_the_new_version(
        phone: Phone, runtime: Runtime, settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    source = file_report(phone, "avant rotation")
    phone.dial()
    phone.press("3", "1", "7")  # subscribe: a sealed number in the vault
    before = keys_mod.load(settings.key_file, create=False)

    monkeypatch.setenv("GATEWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("GATEWAY_KEY_FILE", str(settings.key_file))
    assert main(["keys", "rotate"]) == 0

    after = keys_mod.load(settings.key_file, create=False)
    assert after.master_current == before.master_current + 1
    assert set(before.master.keys) < set(after.master.keys)  # old versions kept
    assert report_text(runtime, runtime.db, source) == "avant rotation"
    with runtime.db.transaction() as conn:
        contact = queries.get_contact(conn, pseudonym=runtime.keys.pseudonym(NUMBER))
        vault = conn.execute(select(queries.vault)).one()
    bucket = after.buckets[keys_mod.bucket_of(vault.pseudonym)]
    assert bucket.current == before.buckets[keys_mod.bucket_of(vault.pseudonym)].current + 1
    assert contact is not None and contact.data_key.startswith(f"k{bucket.current}.")
    assert vault.number.startswith("n1.")  # under the contact's own data key
    assert runtime.keys.open_number(contact.data_key, vault.number,
                                    pseudonym=vault.pseudonym) == NUMBER
    # A running gateway picks up the new versions and keeps working.
    phone.dial()
    phone.press("2", "1", "1", "1", "1", "3", "5", "3")
    assert phone.press("7") == END("Merci, réponse recue.")


def backup_and_restore(url: str, tmp_path: Path, server: str | None) -> str:
    """Back the database up as an operator would (a file copy of SQLite, `pg_dump` of
    PostgreSQL) and restore it next to it; returns the restored database's URL."""
    if url.startswith("sqlite"):
        source = url.removeprefix("sqlite:///")
        copy = tmp_path / "older-dump.db"
        with sqlite3.connect(source) as conn:
            conn.execute("VACUUM INTO ?", (str(copy),))
        return f"sqlite:///{copy}"
    assert server is not None
    dump = tmp_path / "older.sql"
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(["pg_dump", "--no-owner", "-f", str(dump), plain], check=True)
    restored, _name = _fresh_postgres_database(server)
    target = make_url(restored).set(drivername="postgresql")
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump),
                    target.render_as_string(hide_password=False)], check=True,
                   stdout=subprocess.DEVNULL)
    return restored


# --- erasure -------------------------------------------------------------------------


def test_erasure_makes_text_unreadable_even_from_an_older_dump(
        phone: Phone, runtime: Runtime, settings: Settings, tmp_path: Path,
        postgres_server_url: str | None) -> None:
    mine = file_report(phone, "CANARY-7Q au barrage")
    neighbour = Phone(phone.client, "+22370000002")
    theirs = file_report(neighbour, "texte du voisin")

    old = Database(backup_and_restore(settings.database_url, tmp_path, postgres_server_url))
    try:
        assert report_text(runtime, old, mine) == "CANARY-7Q au barrage"  # readable before

        phone.dial()
        phone.press("5")
        assert phone.press("1") == END("C'est fait, vos données sont effacées.")
        done = retention.purge(runtime.db, retention=retention.Retention.of(settings),
                               now=utcnow(), key_file=settings.key_file)
        assert done.shredded

        # Whoever holds the older dump and today's key file cannot read the text.
        seized = keys_mod.load(settings.key_file, create=False)
        with pytest.raises(keys_mod.DataKeyShredded):
            report_text(seized, old, mine)
        with pytest.raises(keys_mod.DataKeyShredded):
            report_text(runtime.keys, old, mine)  # nor the running gateway
        assert report_text(seized, runtime.db, theirs) == "texte du voisin"  # others intact
        with runtime.db.transaction() as conn:
            erased = conn.execute(select(queries.reports)
                                  .where(queries.reports.c.source == mine)).one()
        assert erased.pseudonym is None and erased.text is None
    finally:
        old.dispose()
        if postgres_server_url and not settings.database_url.startswith("sqlite"):
            _drop_postgres_database(postgres_server_url, make_url(old.url).database or "")


def test_a_restored_backup_is_purged_of_erased_contacts_again(
        phone: Phone, runtime: Runtime, settings: Settings) -> None:
    phone.dial()
    phone.press("1", "2", "1", "1", "1", "1", "3", "5", "3", "7")
    pseudonym = runtime.keys.pseudonym(NUMBER)
    with runtime.db.transaction() as conn:
        contact = dict(queries.get_contact(conn, pseudonym=pseudonym)._mapping)  # type: ignore[union-attr]
        answers = [dict(r._mapping) for r in conn.execute(select(queries.poll_answers))]
    phone.dial()
    phone.press("5", "1")
    # The restore: the contact and their answers come back from an older backup.
    with runtime.db.transaction() as conn:
        conn.execute(insert(queries.contacts).values(**contact))
        conn.execute(insert(queries.poll_answers), answers)
    purged = retention.purge(runtime.db, retention=retention.Retention.of(settings),
                             now=utcnow())
    assert purged.restored_erasures == 1
    with runtime.db.transaction() as conn:
        assert queries.get_contact(conn, pseudonym=pseudonym) is None
        assert conn.execute(select(queries.poll_answers)).all() == []
    # Someone dialling again after the erasure is a new contact and is kept.
    phone.dial()
    phone.press("1", "4", "1")
    assert retention.purge(runtime.db, retention=retention.Retention.of(settings),
                           now=utcnow()).restored_erasures == 0


# --- retention -----------------------------------------------------------------------


def test_retention_removes_old_numbers_and_old_text_and_is_idempotent(
        phone: Phone, runtime: Runtime, settings: Settings) -> None:
    source = file_report(phone, "un vieux message")
    phone.dial()
    phone.press("3", "1", "7")  # subscribed: number in the vault
    rules = retention.Retention(number_days=30, text_days=60, outbox_days=7)

    now = utcnow()
    assert retention.purge(runtime.db, retention=rules, now=now).numbers == 0
    later = now + timedelta(days=31)
    first = retention.purge(runtime.db, retention=rules, now=later)
    assert (first.numbers, first.texts) == (1, 0)
    with runtime.db.transaction() as conn:
        assert conn.execute(select(queries.vault)).all() == []
        contact = queries.get_contact(conn, pseudonym=runtime.keys.pseudonym(NUMBER))
    assert contact is not None and not contact.subscribed
    assert report_text(runtime, runtime.db, source) == "un vieux message"
    much_later = now + timedelta(days=61)
    assert retention.purge(runtime.db, retention=rules, now=much_later).texts == 1
    again = retention.purge(runtime.db, retention=rules, now=much_later)
    assert (again.numbers, again.texts, again.sessions) == (0, 0, 0)
    with runtime.db.transaction() as conn:
        report = conn.execute(select(queries.reports)).one()
    assert report.text is None and json.loads(report.answers)["category"] == "help"


def test_purge_killed_half_way_is_simply_run_again(settings: Settings, runtime: Runtime,
                                                  tmp_path: Path) -> None:
    old = utcnow() - timedelta(days=400)
    with runtime.db.transaction() as conn:
        conn.execute(insert(queries.reports), [
            {"source": f"sms:x:{i}", "flow": "report", "flow_version": 1, "channel": "sms",
             "pseudonym": None, "answers": "{}", "text": "d1.sealed", "status": "new",
             "created_at": old} for i in range(20_000)])
    env = {"GATEWAY_DATABASE_URL": settings.database_url,
           "GATEWAY_KEY_FILE": str(settings.key_file), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "purge"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def remaining() -> int:
        with runtime.db.transaction() as conn:
            return int(conn.execute(select(func.count()).select_from(queries.reports)
                                    .where(queries.reports.c.text.is_not(None))).scalar_one())

    deadline = time.monotonic() + 60
    while remaining() == 20_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = remaining()
    assert left < 20_000
    assert left % retention.BATCH == 0  # whole batches only: each is one transaction
    assert subprocess.run([sys.executable, "-m", "gateway", "purge"], env=env,
                          capture_output=True, check=False).returncode == 0
    assert remaining() == 0
    with runtime.db.transaction() as conn:
        conn.execute(update(queries.reports).values(text=None))
    assert shutil.which("true") is not None
