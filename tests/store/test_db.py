"""Connections kept between transactions: reused while fresh, handed back to the pool when
idle or broken, so a restarted PostgreSQL costs at most the hops in flight."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from gateway.channels.base import UssdTurn
from gateway.runtime import Runtime
from gateway.store import db as db_mod
from gateway.store.db import KEPT_IDLE_SECONDS, Database, is_sqlite


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    now = time.monotonic()
    monkeypatch.setattr(db_mod, "idle_clock", lambda: now + seconds)


def test_a_fresh_connection_is_kept_and_an_idle_one_is_not(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    with database.transaction() as first:
        pass
    with database.transaction() as conn:
        assert conn is first
    later(monkeypatch, KEPT_IDLE_SECONDS + 1)
    with database.transaction() as conn:
        assert conn is not first
        assert first.closed


def test_a_connection_whose_transaction_raised_is_not_kept(database: Database) -> None:
    with pytest.raises(ZeroDivisionError), database.transaction() as failed:
        1 / 0  # noqa: B018
    assert failed.closed
    with database.transaction() as conn:
        assert conn is not failed


@pytest.mark.parametrize("pause", [KEPT_IDLE_SECONDS + 1, 0])
def test_hops_survive_postgresql_dropping_every_connection(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, pause: float) -> None:
    if runtime.db.sqlite:
        pytest.skip("PostgreSQL only: SQLite has no server to restart")
    hop = [UssdTurn("africastalking", "ATUid_restart", "+22370000002", "*123#", "99999", text)
           for text in ("", "1")]
    assert runtime.ussd.handle(hop[0]).startswith("CON ")
    # What a restart does to the kept connections: the server ends them.
    admin = create_engine(runtime.db.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    admin.dispose()
    later(monkeypatch, pause)  # the next hop comes after a pause, or at once
    main = runtime.ussd.handle(hop[1])
    assert main.startswith("CON ") and "Sondage" in main
    assert runtime.ussd.handle(hop[1]) == main  # and a repeat still finds the session


def test_a_transaction_ended_on_another_thread_hands_the_writers_turn_back(
        database: Database) -> None:
    """FastAPI starts a dependency's transaction on one pool thread and ends it on
    another: the next writer of the process must still get its turn (it once waited for
    good, and every USSD hop after it got the apology)."""
    import threading

    started = database.transaction()
    done: list[int] = []

    def begin() -> None:
        started.__enter__().execute(text("SELECT 1"))

    def end() -> None:
        started.__exit__(None, None, None)

    for step in (begin, end):
        thread = threading.Thread(target=step)
        thread.start()
        thread.join()
    with db_mod.waiting(1.0), database.transaction() as conn:
        done.append(int(conn.execute(text("SELECT 2")).scalar_one()))
    assert done == [2]


def sqlite_only(database: Database) -> None:
    if not database.sqlite:
        pytest.skip("SQLite only: PostgreSQL has no writers' turn in the process")


def test_a_request_waiting_for_the_write_lock_is_woken_when_it_is_handed_back(
        database: Database) -> None:
    """A USSD hop that finds the lock taken waits on the event loop and is woken the
    moment the transaction ends, not at its next look (it once waited on a thread, taking
    turns at the interpreter lock with the loop)."""
    import asyncio
    import threading

    sqlite_only(database)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with database.transaction():
            held.set()
            release.wait(5)

    async def wait_for_turn() -> float:
        thread = threading.Thread(target=hold)
        thread.start()
        held.wait(5)
        with pytest.raises(db_mod.DatabaseBusy), db_mod.waiting(0), database.transaction():
            pass
        asyncio.get_running_loop().call_later(0.2, release.set)
        started = time.monotonic()
        await database.turn_free(timeout=5.0)
        waited = time.monotonic() - started
        thread.join()
        return waited

    waited = asyncio.run(wait_for_turn())
    assert 0.15 < waited < 2.0  # woken at the release, long before the 5 s timeout
    with db_mod.waiting(0), database.transaction() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_background_work_lets_a_waiting_request_go_first(database: Database) -> None:
    """While a request waits for the writers' turn, a background transaction (the outbox
    worker, a broadcast's chunk, the purge) waits before taking it, up to a bound."""
    import threading

    sqlite_only(database)
    writers = database._writers
    assert writers is not None
    order: list[str] = []
    writers.want(+1)  # a request is waiting

    def background() -> None:
        with db_mod.background(), database.transaction():
            order.append("background")

    thread = threading.Thread(target=background)
    thread.start()
    time.sleep(0.02)
    order.append("request")
    writers.want(-1)
    thread.join(5)
    assert order == ["request", "background"]

    # Nobody waiting, or waiting too long: background work is not held back for good.
    writers.want(+1)
    started = time.monotonic()
    with db_mod.background(), database.transaction():
        pass
    writers.want(-1)
    assert time.monotonic() - started < db_mod.YIELD_MAX_SECONDS + 1.0


def test_a_checkpoint_copies_the_wal_into_the_file_outside_every_transaction(
        database: Database) -> None:
    """The service copies SQLite's WAL back into the file on its own schedule (SQLite's
    own checkpoint ran inside the commit that crossed its threshold, while every other
    writer waited)."""
    if not database.sqlite:
        assert database.checkpoint() is None
        return
    with database.transaction() as conn:
        conn.execute(text("CREATE TABLE filler (x TEXT)"))
        conn.execute(text("INSERT INTO filler VALUES (:x)"), [{"x": "y" * 500}] * 200)
    copied = database.checkpoint()
    assert copied is not None and copied > 0
    with database.transaction() as conn:  # and writing goes on
        conn.execute(text("INSERT INTO filler VALUES ('z')"))
    assert database.commits >= 2


COUNTED = "EXPLAIN SELECT status, count(*) FROM outbox GROUP BY status"


def plan_forced_parallel(conn: Connection) -> str:
    """The plan of a count over the outbox, with a planner that finds a parallel plan
    cheaper for any table however small (as it does for a broadcast's 100,000 rows)."""
    for setting in ("parallel_setup_cost", "parallel_tuple_cost",
                    "min_parallel_table_scan_size"):
        conn.exec_driver_sql(f"SET LOCAL {setting} = 0")
    conn.exec_driver_sql("SET LOCAL enable_indexscan = off")
    conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
    return "\n".join(row[0] for row in conn.exec_driver_sql(COUNTED))


@pytest.mark.parametrize("options", [None, "-c statement_timeout=12345"])
def test_postgresql_plans_no_parallel_query_that_would_take_the_hops_cores(
        database_url: str, options: str | None) -> None:
    """Operators' reads take one core: the other is the USSD hops' (a parallel count of a
    broadcast's messages, asked by its progress page, took both)."""
    if is_sqlite(database_url):
        pytest.skip("PostgreSQL's planner")
    url = make_url(database_url)
    if options:  # a URL with options of its own keeps them
        url = url.update_query_dict({"options": options})
    db = Database(url.render_as_string(hide_password=False))
    try:
        with db.transaction() as conn:
            if options:
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "12345ms"
            assert "Gather" not in plan_forced_parallel(conn)
            conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 2")
            assert "Gather" in plan_forced_parallel(conn)  # the planner would have
    finally:
        db.dispose()
