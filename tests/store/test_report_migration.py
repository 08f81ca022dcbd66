"""The report-review migration (c13a0b0c0005) fills in the place and the had-text mark of
reports saved before it, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import text

from gateway.store import migrate
from gateway.store.db import make_engine

BEFORE = "c17b0d9e0002"  # the migration before this one
REVISION = "c13a0b0c0005"


def test_reports_saved_before_get_their_place_and_text_mark(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    migrate.upgrade(engine, BEFORE)
    saved = [
        ({"cercle": "mopti", "commune": "mopti-konna", "category": "theft"}, "d1.sealed"),
        ({"cercle": "koro", "commune": "other", "category": "help"}, None),
        ({"cercle": "other", "category": "help"}, None),
        ({"category": "help"}, "d1.sealed"),
    ]
    with engine.begin() as conn:
        for n, (answers, sealed) in enumerate(saved):
            conn.execute(text(
                "INSERT INTO report (source, flow, flow_version, channel, pseudonym, answers, "
                "text, status, created_at) VALUES (:source, 'report', 1, 'ussd', NULL, "
                ":answers, :text, 'new', :at)"),
                {"source": f"ussd:test:{n}", "answers": json.dumps(answers), "text": sealed,
                 "at": datetime(2026, 12, 1, tzinfo=UTC)})
    migrate.upgrade(engine, REVISION)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT area, had_text, redacted_text, assignee_id, status "
                                 "FROM report ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("mopti-konna", True, None, None, "new"),
        ("koro", False, None, None, "new"),
        (None, False, None, None, "new"),
        (None, True, None, None, "new"),
    ]
