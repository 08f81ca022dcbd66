"""Planner statistics on PostgreSQL: a plan kept from when a table was nearly empty must not
outlive the table's growth.

A connection keeps the plans of its PL/pgSQL functions (and psycopg prepares the statements
it runs often). The USSD hops' session save, planned on a fresh database, read the whole
session table at every hop; ``queries.refresh_statistics`` (the worker's tidy-up, every few
seconds) analyzes a table that grew, which makes every kept plan of it plan again.
"""

from __future__ import annotations

import json
import time

import psycopg
from sqlalchemy.engine import Engine, make_url

from gateway.store import migrate, queries
from gateway.store.db import make_engine


def _save_one(conn: psycopg.Connection[tuple[object, ...]], session_id: int) -> None:
    row = {"id": session_id, "expected": -1, "state": "s", "status": "active", "text_len": 0,
           "text_mac": "m", "response": "r", "history": "", "hops": 1,
           "updated_at": "2026-12-07T00:00:00Z"}
    conn.execute("SELECT * FROM save_ussd_sessions(%s::json)", (json.dumps([row]),))


def _scans_of_one_save(conn: psycopg.Connection[tuple[object, ...]],
                       session_id: int) -> tuple[int, int]:
    """The sequential and index scans of ussd_session one save takes (the backend's counts,
    not yet flushed to the shared ones, before and after)."""
    def counts() -> tuple[int, int]:
        row = conn.execute("SELECT seq_scan, coalesce(idx_scan, 0) FROM "
                           "pg_stat_xact_user_tables WHERE relname = 'ussd_session'").fetchone()
        assert row is not None
        return int(str(row[0])), int(str(row[1]))

    seq0, idx0 = counts()
    _save_one(conn, session_id)
    seq1, idx1 = counts()
    conn.commit()
    return seq1 - seq0, idx1 - idx0


def _add_sessions(conn: psycopg.Connection[tuple[object, ...]], first: int, count: int) -> None:
    conn.execute(
        "INSERT INTO ussd_session (id, provider, session_id, pseudonym, state, status, "
        "text_len, text_mac, response, history, hops, created_at, updated_at) "
        "SELECT n, 'africastalking', 'ATUid_' || n, 'p' || n, repeat('s', 400), 'active', 0, "
        "'m', repeat('r', 120), '', 1, now(), now() FROM generate_series(%s::int, %s::int) n",
        (first, first + count - 1))
    conn.commit()
    conn.execute("SELECT pg_stat_force_next_flush()")  # its counts, as idle backends do
    conn.commit()


def _counted(engine: Engine, rows: int) -> None:
    """Wait until the shared statistics count the inserted rows (a backend sends its counts
    when it goes idle, at most once a second)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.exec_driver_sql("SELECT n_mod_since_analyze FROM pg_stat_user_tables "
                                    "WHERE relname = 'ussd_session'").scalar_one() >= rows:
                return
        time.sleep(0.05)
    raise AssertionError("the inserted sessions were never counted")


def test_a_session_save_planned_on_an_empty_table_uses_the_index_once_it_grew(
        empty_postgres_url: str) -> None:
    engine = make_engine(empty_postgres_url)
    migrate.upgrade(engine)
    raw = psycopg.connect(make_url(empty_postgres_url).set(drivername="postgresql")
                          .render_as_string(hide_password=False))
    try:
        # Autovacuum must not analyze it behind the test's back.
        raw.execute("ALTER TABLE ussd_session SET (autovacuum_enabled = false)")
        _add_sessions(raw, 1, 1)
        raw.execute("ANALYZE ussd_session")  # as a database-wide ANALYZE after a restore
        raw.commit()
        for _ in range(10):  # the function's plan is made, and kept, on a one-row table
            _save_one(raw, 1)
            raw.commit()
        _add_sessions(raw, 2, 3000)

        assert _scans_of_one_save(raw, 2000) == (1, 0)  # the kept plan reads all 3,001 rows
        _counted(engine, 3000)

        with engine.begin() as conn:
            assert "ussd_session" in queries.refresh_statistics(conn)
        with engine.begin() as conn:  # analyzed: no longer stale
            assert "ussd_session" not in queries.refresh_statistics(conn)

        assert _scans_of_one_save(raw, 2000) == (0, 1)  # planned again: the primary key
    finally:
        raw.close()
        engine.dispose()


def test_sqlite_has_nothing_to_refresh(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/gateway.db")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        assert queries.refresh_statistics(conn) == []
    engine.dispose()
