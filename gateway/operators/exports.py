"""CSV exports, streamed: RFC 4180 (comma, double quotes, CRLF line ends), UTF-8, and no
cell a spreadsheet would run. Logic only; the HTTP is in ``api/exports.py``.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a
formula (or turns into one) in Excel, LibreOffice and Google Sheets: it is prefixed with
``'`` (:func:`neutralise`). Rows are read in batches, each in its own short transaction,
and sent as they are written, so an export of any size holds little memory and no lock.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence

from gateway.operators.access import Principal
from gateway.operators.reports import Filters, Vocabulary, day_of, rows_for_export
from gateway.store.db import Database

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BATCH = 500
MEDIA_TYPE = "text/csv; charset=utf-8"

Cell = str | int | None


def neutralise(value: Cell) -> str:
    """The cell as text, prefixed with ``'`` when a spreadsheet would read a formula."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_text(rows: Iterable[Sequence[Cell]]) -> Iterator[str]:
    """Each row as one CSV record (RFC 4180: quoted as needed, CRLF), cells neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, dialect="excel", lineterminator="\r\n")
    for row in rows:
        writer.writerow([neutralise(v) for v in row])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def chunked(lines: Iterator[str], size: int = 64 * 1024) -> Iterator[bytes]:
    """UTF-8 bytes, sent in chunks of about ``size``."""
    pending: list[str] = []
    held = 0
    for line in lines:
        pending.append(line)
        held += len(line)
        if held >= size:
            yield "".join(pending).encode("utf-8")
            pending, held = [], 0
    if pending:
        yield "".join(pending).encode("utf-8")


# -- reports.csv -------------------------------------------------------------------------


def report_header(vocab: Vocabulary) -> list[str]:
    """id, date (the UTC day, not the time), channel, flow, status, then each coded
    question and its label,
    then the redacted text and any answer no current flow names."""
    columns = ["id", "date", "channel", "flow", "status"]
    for question in vocab.all_questions():
        columns += [question, f"{question}_label"]
    return [*columns, "redacted_text", "other_answers"]


def report_records(db: Database, *, who: Principal, vocab: Vocabulary, chosen: Filters,
                   batch: int = BATCH) -> Iterator[list[Cell]]:
    """The rows of ``reports.csv``, oldest first: coded answers and the redacted text,
    never the original text."""
    questions = vocab.all_questions()
    after: int | None = None
    while True:
        with db.transaction() as conn:
            rows = rows_for_export(conn, who=who, vocab=vocab, chosen=chosen, after=after,
                                   limit=batch)
        for row in rows:
            answers = vocab.answers(row.flow, json.loads(row.answers))
            record: list[Cell] = [row.id, day_of(row.created_at), row.channel, row.flow,
                                  row.status]
            for question in questions:
                answer = answers.pop(question, None)
                record += [answer["value"], answer["label"]] if answer else [None, None]
            other = "; ".join(f"{k}={a['value']}" for k, a in answers.items())
            yield [*record, row.redacted_text, other or None]
        if len(rows) < batch:
            return
        after = rows[-1].id


def reports_csv(db: Database, *, who: Principal, vocab: Vocabulary,
                chosen: Filters) -> Iterator[bytes]:
    """``reports.csv`` as a stream of bytes."""

    def rows() -> Iterator[Sequence[Cell]]:
        yield report_header(vocab)
        yield from report_records(db, who=who, vocab=vocab, chosen=chosen)

    return chunked(csv_text(rows()))
