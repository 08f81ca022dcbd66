"""Bring a database to the current schema."""

from __future__ import annotations

from sqlmodel import SQLModel

from gateway import models  # noqa: F401  (registers the tables)
from gateway.db import Database


def prepare_database(db: Database) -> None:
    SQLModel.metadata.create_all(db.engine)
