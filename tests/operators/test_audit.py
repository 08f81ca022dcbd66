"""The audit trail: entries chained by hashes, written in the action's transaction;
``gateway audit verify`` finds an altered, an inserted or a deleted entry (the last one
too); concurrent writers never fork the chain; nothing like a phone number gets in."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import delete, insert, select, update

from gateway.cli import main
from gateway.operators import audit
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store.models import utcnow

LOG, HEAD = audit.log_table, audit.head_table


def write(rt: Runtime, n: int, *, actor: str = "awa") -> None:
    now = utcnow()
    for i in range(n):
        with rt.db.transaction() as conn:
            audit.record(conn, actor=actor, action="report.view", object_type="report",
                         object_id=100 + i, details={"cercle": "mopti", "n": i},
                         now=now + timedelta(seconds=i))


def verify(rt: Runtime) -> audit.Broken | None:
    with rt.db.transaction() as conn:
        return audit.verify(conn)


def cli_verify(settings: Settings) -> subprocess.CompletedProcess[str]:
    """`gateway audit verify`, run as an operator would."""
    env = {"GATEWAY_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "gateway", "audit", "verify"], env=env,
                          capture_output=True, text=True, check=False, timeout=60)


def main_verify(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """The same command in this process (quicker, for the long table)."""
    monkeypatch.setenv("GATEWAY_DATABASE_URL", settings.database_url)
    code = main(["audit", "verify"])
    return code, capsys.readouterr().out.splitlines()


def test_entries_chain_and_verify(runtime: Runtime, settings: Settings) -> None:
    assert verify(runtime) is None  # empty: intact
    write(runtime, 5)
    assert verify(runtime) is None
    with runtime.db.transaction() as conn:
        rows = conn.execute(select(LOG).order_by(LOG.c.id)).all()
        assert audit.head(conn) == (5, rows[-1].hash)
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert json.loads(rows[2].details) == {"cercle": "mopti", "n": 2}
    done = cli_verify(settings)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ok: the audit chain is intact (5 entries; head {rows[-1].hash})\n"


def test_an_entry_rolls_back_with_its_action(runtime: Runtime) -> None:
    class Failed(Exception):
        pass

    with pytest.raises(Failed), runtime.db.transaction() as conn:
        audit.record(conn, actor="awa", action="broadcast.send", object_type="broadcast",
                     object_id=1, now=utcnow())
        raise Failed
    with runtime.db.transaction() as conn:
        assert conn.execute(select(LOG)).all() == []
        assert audit.head(conn) == (0, audit.GENESIS)


def tamper_alter(rt: Runtime) -> None:
    with rt.db.transaction() as conn:
        conn.execute(update(LOG).where(LOG.c.id == 3).values(actor="someone"))


def tamper_alter_details(rt: Runtime) -> None:
    with rt.db.transaction() as conn:
        conn.execute(update(LOG).where(LOG.c.id == 3).values(details='{"cercle":"koro","n":2}'))


def tamper_delete_middle(rt: Runtime) -> None:
    with rt.db.transaction() as conn:
        conn.execute(delete(LOG).where(LOG.c.id == 3))


def tamper_delete_last(rt: Runtime) -> None:
    with rt.db.transaction() as conn:
        conn.execute(delete(LOG).where(LOG.c.id == 5))


def _forged(conn: object, entry_id: int, prev_hash: str) -> dict[str, object]:
    at = utcnow()
    body = audit.canonical(entry_id=entry_id, at=at, actor="ghost", action="report.view",
                           object_type="report", object_id="7", details="{}")
    return {"id": entry_id, "at": at, "actor": "ghost", "action": "report.view",
            "object_type": "report", "object_id": "7", "details": "{}",
            "prev_hash": prev_hash, "hash": audit.chain_hash(prev_hash, body)}


def tamper_insert_last(rt: Runtime) -> None:
    """A well-formed entry 6 chained to entry 5, the head left alone."""
    with rt.db.transaction() as conn:
        last = conn.execute(select(LOG.c.hash).where(LOG.c.id == 5)).scalar_one()
        conn.execute(insert(LOG).values(**_forged(conn, 6, last)))


def tamper_insert_middle(rt: Runtime) -> None:
    """Entries 4 and 5 moved up to 5 and 6, a well-formed entry 4 chained to entry 3."""
    with rt.db.transaction() as conn:
        for entry_id in (5, 4):
            conn.execute(update(LOG).where(LOG.c.id == entry_id).values(id=entry_id + 1))
        third = conn.execute(select(LOG.c.hash).where(LOG.c.id == 3)).scalar_one()
        conn.execute(insert(LOG).values(**_forged(conn, 4, third)))


def tamper_insert_before_first(rt: Runtime) -> None:
    with rt.db.transaction() as conn:
        conn.execute(insert(LOG).values(**_forged(conn, 0, audit.GENESIS)))


def tamper_replace_last(rt: Runtime) -> None:
    """Entry 5 replaced by a well-formed one chained to entry 4: only the head knows."""
    with rt.db.transaction() as conn:
        fourth = conn.execute(select(LOG.c.hash).where(LOG.c.id == 4)).scalar_one()
        conn.execute(delete(LOG).where(LOG.c.id == 5))
        conn.execute(insert(LOG).values(**_forged(conn, 5, fourth)))


def tamper_head_deleted(rt: Runtime) -> None:
    with rt.db.transaction() as conn:
        conn.execute(delete(HEAD))


@pytest.mark.parametrize(("tamper", "entry", "reason"), [
    (tamper_alter, 3, "its content does not match its hash (altered)"),
    (tamper_alter_details, 3, "its content does not match its hash (altered)"),
    (tamper_delete_middle, 3, "missing (deleted): the log goes from entry 2 to entry 4"),
    (tamper_delete_last, 5, "missing (deleted): the chain head records 5 entries, the log "
                            "ends at entry 4"),
    (tamper_insert_last, 6, "not recorded by the chain head, which ends at entry 5 (an "
                            "inserted entry)"),
    (tamper_insert_middle, 5, "its previous hash is not the hash of entry 4 (an entry before "
                              "it was replaced or inserted)"),
    (tamper_insert_before_first, 0, "out of sequence (an inserted entry)"),
    (tamper_replace_last, 5, "its hash is not the one the chain head records (the last entry "
                             "was replaced)"),
    (tamper_head_deleted, None, "the chain head (table audit_head) is missing"),
])
def test_verify_names_the_first_entry_that_does_not_verify(
        runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tamper: object, entry: int | None,
        reason: str) -> None:
    write(runtime, 5)
    assert callable(tamper)
    tamper(runtime)
    broken = verify(runtime)
    assert broken is not None
    assert (broken.entry_id, broken.reason) == (entry, reason)
    code, lines = main_verify(settings, monkeypatch, capsys)
    assert code == 1
    where = f"audit entry {entry}" if entry is not None else "audit log"
    assert lines[0] == f"{where} does not verify: {reason}"
    if broken.entry is not None:  # the entry itself, as stored, on the next line
        assert lines[1].startswith(f"{broken.entry.id}  ")
        assert broken.entry.actor in lines[1] and broken.entry.action in lines[1]


@pytest.mark.parametrize(("tamper", "first_line"), [
    (tamper_alter, "audit entry 3 does not verify: its content does not match its hash "
                   "(altered)"),
    (tamper_insert_last, "audit entry 6 does not verify: not recorded by the chain head, "
                         "which ends at entry 5 (an inserted entry)"),
    (tamper_delete_last, "audit entry 5 does not verify: missing (deleted): the chain head "
                         "records 5 entries, the log ends at entry 4"),
])
def test_gateway_audit_verify_exits_1_naming_the_entry(
        runtime: Runtime, settings: Settings, tamper: object, first_line: str) -> None:
    write(runtime, 5)
    assert callable(tamper)
    tamper(runtime)
    done = cli_verify(settings)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0] == first_line


def test_nothing_is_appended_once_the_head_is_gone(runtime: Runtime) -> None:
    write(runtime, 2)
    tamper_head_deleted(runtime)
    with pytest.raises(audit.AuditBroken), runtime.db.transaction() as conn:
        audit.record(conn, actor="awa", action="report.view", object_type="report",
                     object_id=1, now=utcnow())


def test_concurrent_writers_never_fork_the_chain(runtime: Runtime) -> None:
    def writer(k: int) -> None:
        for i in range(10):
            with runtime.db.transaction() as conn:
                audit.record(conn, actor=f"writer{k}", action="report.view",
                             object_type="report", object_id=i, now=utcnow())

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(writer, range(6)))
    assert verify(runtime) is None
    with runtime.db.transaction() as conn:
        assert audit.head(conn) is not None
        assert audit.head(conn)[0] == 60  # type: ignore[index]


@pytest.mark.parametrize("details", [
    {"phone": "+22370000001"},
    {"phone": "70 00 00 01 23"},
    {"phones": ["ok", "223.70.00.00.01"]},
    {"text": "Des hommes en uniforme sont venus au marché de Konna hier soir, ils ont " * 2},
    {"nested": {"a": 1}},
    {"Bad Key": 1},
])
def test_details_hold_ids_and_codes_only(runtime: Runtime, details: audit.Details) -> None:
    with pytest.raises(ValueError, match="audit"), runtime.db.transaction() as conn:
        audit.record(conn, actor="awa", action="report.view", object_type="report",
                     object_id=1, details=details, now=utcnow())


def test_an_object_id_or_actor_shaped_like_a_phone_number_is_refused(runtime: Runtime) -> None:
    for fields in ({"actor": "awa", "object_id": "22370000001"},
                   {"actor": "+22370000001", "object_id": 1}):
        with pytest.raises(ValueError, match="audit"), runtime.db.transaction() as conn:
            audit.record(conn, action="report.view", object_type="report", now=utcnow(),
                         **fields)


def test_a_client_address_is_not_taken_for_a_phone_number(runtime: Runtime) -> None:
    with runtime.db.transaction() as conn:
        entry = audit.record(conn, actor="awa", action="auth.sign_in", object_type="account",
                             object_id=1, details={"client": "192.168.100.200"}, now=utcnow())
    assert json.loads(entry.details) == {"client": "192.168.100.200"}


def test_entries_page_newest_first_with_a_cursor(runtime: Runtime) -> None:
    write(runtime, 7)
    write(runtime, 2, actor="moussa")
    with runtime.db.transaction() as conn:
        first = audit.entries(conn, limit=4)
        second = audit.entries(conn, cursor=first.next, limit=4)
        third = audit.entries(conn, cursor=second.next, limit=4)
        by_actor = audit.entries(conn, actor="moussa")
    assert [e.id for e in first.items] == [9, 8, 7, 6] and first.next == 6
    assert [e.id for e in second.items] == [5, 4, 3, 2] and second.next == 2
    assert [e.id for e in third.items] == [1] and third.next is None
    assert [e.id for e in by_actor.items] == [9, 8] and by_actor.next is None
