"""Alembic environment: the gateway's SQLModel tables, on the connection it is given.

``gateway.store.migrate`` passes a live connection in ``config.attributes["connection"]``;
run from the command line, the URL comes from GATEWAY_DATABASE_URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from gateway.store import models  # noqa: F401  (registers the tables)
from gateway.store.db import make_engine
from gateway.settings import Settings

config = context.config
target_metadata = SQLModel.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = make_engine(Settings().database_url)
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
