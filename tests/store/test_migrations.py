"""Migrations: an empty database reaches the latest schema; the schema the migrations
build is exactly the models; one step down and up again works; a PostgreSQL database
behind the latest migration stops the gateway from starting; SQLite migrates itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from gateway.cli import main
from gateway.errors import StartupError
from gateway.runtime import build_runtime
from gateway.settings import Settings
from gateway.store import migrate
from gateway.store.db import make_engine
from tests.conftest import REPO

TABLES = {"contact", "vault", "tombstone", "ussd_session", "ussd_event",
          "report", "poll_answer", "outbox", "pending_report", "inbound_message",
          "sms_conversation", "counter", "rate_bucket", "alembic_version"}


def test_gateway_migrate_takes_an_empty_database_to_the_latest_schema(
        empty_database_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", empty_database_url)
    assert main(["migrate"]) == 0
    assert f"migrated from empty to {migrate.head()}" in capsys.readouterr().out
    engine = make_engine(empty_database_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert migrate.current(engine) == migrate.head()
    engine.dispose()
    assert main(["migrate"]) == 0
    assert "already at the latest migration" in capsys.readouterr().out


def test_the_migrations_build_exactly_the_models(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    engine.dispose()
    assert differences == []


def test_one_step_down_and_up_again(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    migrate.upgrade(engine)
    script = ScriptDirectory.from_config(migrate.alembic_config())
    previous = script.get_revision(migrate.head()).down_revision
    migrate.downgrade(engine, str(previous) if previous else "base")
    assert migrate.current(engine) == previous
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


def test_migration_files_are_named_by_date() -> None:
    for path in (REPO / "alembic" / "versions").glob("*.py"):
        assert path.name[:10].count("-") == 2 and path.name[:4].isdigit(), path.name


def test_an_empty_sqlite_database_migrates_itself_at_start(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'new.db'}",
                        key_file=tmp_path / "keys", content_dir=REPO)
    runtime = build_runtime(settings)
    assert migrate.current(runtime.db.engine) == migrate.head()
    runtime.db.dispose()


def test_a_postgres_database_behind_the_latest_migration_refuses_to_start(
        empty_postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=empty_postgres_url,
                        key_file=tmp_path / "keys", content_dir=REPO)
    with pytest.raises(StartupError, match="run `gateway migrate`"):
        build_runtime(settings)  # empty
    engine = make_engine(empty_postgres_url)
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")  # behind the latest migration
    engine.dispose()
    with pytest.raises(StartupError, match="needs " + migrate.head()):
        build_runtime(settings)


@pytest.mark.parametrize("table", ["outbox", "ussd_session"])
def test_postgres_samples_few_rows_of_the_busy_tables_for_statistics(
        empty_postgres_url: str, table: str) -> None:
    """Every column of the outbox and of the sessions, a new one too, has the small
    statistics target: an ANALYZE of a queue a broadcast just filled samples 3,000 rows
    (about 20 ms), not 30,000 (300 ms of a core the USSD hops share)."""
    engine = make_engine(empty_postgres_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        targets: dict[str, int] = dict(conn.execute(text(
            "SELECT attname, attstattarget FROM pg_attribute WHERE attrelid = "
            "CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"), {"t": table}).all())
    engine.dispose()
    assert set(targets) == set(SQLModel.metadata.tables[table].columns.keys())
    assert set(targets.values()) == {10}, targets
