"""Flow versions, their publications and the generation counter (``flow_version``,
``flow_publication``, ``flow_generation``). Keyword-only, one connection each, never
commit: the caller's transaction is the boundary."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, func, insert, select, update

from gateway.store.models import FlowGeneration, FlowPublication, FlowVersion


def _t(model: Any) -> Table:
    table: Table = model.__table__
    return table


versions = _t(FlowVersion)
publications = _t(FlowPublication)
generation_row = _t(FlowGeneration)
COUNTER_ID = 1
_LATEST = "SELECT generation FROM flow_generation WHERE id = 1"


class Stored(NamedTuple):
    flow: str
    version: int
    definition: str
    messages: dict[str, dict[str, str]]
    digest: str
    source: str
    created_by: str | None
    created_at: datetime


class Publication(NamedTuple):
    generation: int
    flow: str
    version: int
    published_by: str | None
    published_at: datetime


def latest_generation(conn: Connection) -> int:
    """The latest generation: one primary-key read, the check every process makes at
    most once a second."""
    found = conn.exec_driver_sql(_LATEST).scalar()
    return int(found or 0)


def lock_generation(conn: Connection) -> int:
    """The latest generation, its row locked until the transaction ends (PostgreSQL;
    SQLite's write lock does the same): publications and imports take turns."""
    found = conn.execute(select(generation_row.c.generation)
                         .where(generation_row.c.id == COUNTER_ID).with_for_update()).scalar()
    if found is None:
        conn.execute(insert(generation_row).values(id=COUNTER_ID, generation=0))
        return 0
    return int(found)


def published_at(conn: Connection, *, generation: int) -> dict[str, int]:
    """Each flow's published version as of ``generation``."""
    latest = (select(publications.c.flow, func.max(publications.c.generation).label("g"))
              .where(publications.c.generation <= generation)
              .group_by(publications.c.flow).subquery())
    rows = conn.execute(
        select(publications.c.flow, publications.c.version)
        .join(latest, (latest.c.flow == publications.c.flow)
              & (latest.c.g == publications.c.generation)))
    return {row.flow: int(row.version) for row in rows}


def _stored(row: Any) -> Stored:
    return Stored(row.flow, int(row.version), row.definition, json.loads(row.messages),
                  row.digest, row.source, row.created_by, row.created_at)


def get_versions(conn: Connection, *, wanted: Iterable[tuple[str, int]]) -> list[Stored]:
    """The stored versions named (flow, version); those that do not exist are left out."""
    found: list[Stored] = []
    by_flow: dict[str, list[int]] = {}
    for flow, version in wanted:
        by_flow.setdefault(flow, []).append(version)
    for flow, numbers in sorted(by_flow.items()):
        rows = conn.execute(select(versions).where(versions.c.flow == flow,
                                                   versions.c.version.in_(numbers)))
        found.extend(_stored(row) for row in rows)
    return found


def get_version(conn: Connection, *, flow: str, version: int) -> Stored | None:
    found = get_versions(conn, wanted=[(flow, version)])
    return found[0] if found else None


def versions_of(conn: Connection, *, flow: str) -> list[Stored]:
    rows = conn.execute(select(versions).where(versions.c.flow == flow)
                        .order_by(versions.c.version))
    return [_stored(row) for row in rows]


def latest_from_files(conn: Connection, *, flow: str) -> Stored | None:
    row = conn.execute(select(versions).where(versions.c.flow == flow,
                                              versions.c.source == "files")
                       .order_by(versions.c.version.desc()).limit(1)).one_or_none()
    return None if row is None else _stored(row)


def flow_ids(conn: Connection) -> list[str]:
    return [str(f) for f in conn.execute(select(versions.c.flow).distinct()
                                         .order_by(versions.c.flow)).scalars()]


def add_version(conn: Connection, *, flow: str, definition: str, messages: str,
                digest: str, source: str, created_by: str | None, now: datetime) -> int:
    """Store a new version (the next number for ``flow``) and return its number. The
    caller holds the generation lock, so two additions do not pick the same number."""
    last = conn.execute(select(func.max(versions.c.version))
                        .where(versions.c.flow == flow)).scalar()
    number = int(last or 0) + 1
    conn.execute(insert(versions).values(
        flow=flow, version=number, definition=definition, messages=messages, digest=digest,
        source=source, created_by=created_by, created_at=now))
    return number


def publish(conn: Connection, *, flow: str, version: int, by: str | None,
            now: datetime) -> int:
    """Make ``version`` of ``flow`` the published one: a new generation, returned."""
    generation = lock_generation(conn) + 1
    conn.execute(update(generation_row).where(generation_row.c.id == COUNTER_ID)
                 .values(generation=generation))
    conn.execute(insert(publications).values(
        generation=generation, flow=flow, version=version, published_by=by,
        published_at=now))
    return generation


def publications_of(conn: Connection, *, flow: str) -> list[Publication]:
    rows = conn.execute(select(publications).where(publications.c.flow == flow)
                        .order_by(publications.c.generation))
    return [Publication(int(r.generation), r.flow, int(r.version), r.published_by,
                        r.published_at) for r in rows]


def current_publications(conn: Connection) -> dict[str, Publication]:
    """Each flow's latest publication."""
    latest = (select(publications.c.flow, func.max(publications.c.generation).label("g"))
              .group_by(publications.c.flow).subquery())
    rows = conn.execute(select(publications).join(
        latest, (latest.c.flow == publications.c.flow)
        & (latest.c.g == publications.c.generation)))
    return {r.flow: Publication(int(r.generation), r.flow, int(r.version), r.published_by,
                                r.published_at) for r in rows}
