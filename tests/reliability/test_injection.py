"""Row 13 of the battery, SQL injection: text made to break a query (quotes, `;--`, `%`,
`_`, backslashes) goes in through an SMS report and through every report filter. It is
stored byte for byte, comes back byte for byte on the report's page, and no filter turns
it into SQL: counts change only as expected, never a 5xx, never a database error.
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.operators.access import Role
from gateway.runtime import Runtime
from gateway.store import queries
from tests.handset import Handset
from tests.operators.people import make

NASTY = [
    "'; DROP TABLE report;--",
    "Robert'); DELETE FROM contact;--",
    "' OR '1'='1",
    "100% _sur_ \\ \"guillemets\" \\'",
    "%_%' UNION SELECT text FROM report --",
    "'); SELECT pg_sleep(5);--",
]
REPORT_TO_TEXT = ("D1", "1", "3", "6", "3", "7", "1")  # a report, up to its typed text


def count(runtime: Runtime, table: object) -> int:
    with runtime.db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_text_made_to_break_a_query_is_stored_and_shown_byte_for_byte(
        client: TestClient, runtime: Runtime) -> None:
    for n, text in enumerate(NASTY):
        handset = Handset(client, runtime, f"+2237009{n:04d}")
        for said in REPORT_TO_TEXT:
            handset.send(said)
        assert handset.send(text) == ["Merci, message recu."]
    assert count(runtime, queries.reports) == len(NASTY)
    admin = make(runtime, "awa", Role.admin)
    items = client.get("/api/v1/reports", headers=admin.auth).json()["items"]
    shown = {client.get(f"/api/v1/reports/{item['id']}", headers=admin.auth).json()["text"]
             for item in items}
    assert shown == set(NASTY)


def test_a_filter_made_to_break_a_query_is_refused_or_matches_nothing(
        client: TestClient, runtime: Runtime) -> None:
    handset = Handset(client, runtime, "+22370090099")
    for said in REPORT_TO_TEXT:
        handset.send(said)
    handset.send("texte")
    admin = make(runtime, "awa", Role.admin)
    answers = set()
    for name in ("status", "cercle", "commune", "cursor"):
        for value in NASTY:
            response = client.get("/api/v1/reports", params={name: value},
                                  headers=admin.auth)
            assert response.status_code in (200, 403, 404, 422), (name, value, response.text)
            if response.status_code == 200:
                assert response.json()["items"] == [], (name, value)
            else:
                assert "detail" in response.json()
            answers.add((name, response.status_code))
    assert count(runtime, queries.reports) == 1 and count(runtime, queries.contacts) == 1
    assert answers  # each filter answered: refused (4xx) or nothing matched
