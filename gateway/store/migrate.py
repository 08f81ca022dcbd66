"""Bring a database to the current schema with Alembic.

An SQLite database migrates itself when the gateway starts. A PostgreSQL database is
migrated by `gateway migrate` (one deliberate step, before new replicas start); a
gateway pointed at one behind the latest migration refuses to start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from gateway.content.catalogs import PACKAGE_CONTENT, SOURCE_CONTENT
from gateway.store.db import Database

log = logging.getLogger("gateway.store.migrate")


class SchemaBehind(Exception):
    """The database is not at the schema this code expects."""


def migrations_dir() -> Path:
    """Migrations ship with the code (inside the wheel), not with the flows."""
    packaged = PACKAGE_CONTENT / "alembic"
    return packaged if packaged.is_dir() else SOURCE_CONTENT / "alembic"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"migrations have {len(heads)} heads"
    return heads[0]


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def prepare_database(db: Database) -> None:
    """At start: migrate SQLite; check PostgreSQL is at the latest migration."""
    if db.sqlite:
        upgrade(db.engine)
        return
    at, expected = current(db.engine), head()
    if at != expected:
        raise SchemaBehind(
            f"the database is at migration {at or 'none (empty)'} but this gateway needs "
            f"{expected}: run `gateway migrate` with the same GATEWAY_DATABASE_URL first"
        )

