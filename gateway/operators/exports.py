"""CSV exports, streamed: RFC 4180 (comma, double quotes, CRLF line ends), UTF-8, and no
cell a spreadsheet would run. Logic only; the HTTP is in ``api/exports.py``.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a
formula (or turns into one) in Excel, LibreOffice and Google Sheets: it is prefixed with
``'`` (:func:`neutralise`). Rows are read in batches, each in its own short transaction,
and sent as they are written, so an export of any size holds little memory and no lock.

Three exports: ``reports.csv`` (coded answers and redacted text), ``results.csv`` (poll
figures, always the shared view: small groups suppressed with their complements) and
``answers.csv`` (admins: one row per counted poll answer). ``answers.csv`` carries no phone
number and no pseudonym: each export draws a fresh random key, and its row ``id`` and
``respondent`` are keyed hashes under it, so one export's rows can be grouped by person
(the answers one resident gave) but two exports cannot be joined on either column; times
leave as the UTC day only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Table, select

from gateway.dialogue.engine import OTHER
from gateway.operators.access import Areas, Principal
from gateway.operators.reports import Filters, Vocabulary, day_of, rows_for_export
from gateway.store.db import Database
from gateway.store.models import PollAnswer

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BATCH = 500
MEDIA_TYPE = "text/csv; charset=utf-8"

Cell = str | int | float | None


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


# -- results.csv -------------------------------------------------------------------------


def results_header(dims: Sequence[str], values: Sequence[str]) -> list[str]:
    """``level`` (``total`` or ``group``), each dimension, ``n``, ``suppressed``, then per
    answer value its count and its percentage with the 95 % Wilson interval."""
    columns = ["level", *dims, "n", "suppressed"]
    for value in values:
        columns += [value, f"{value}_pct", f"{value}_low", f"{value}_high"]
    return columns


def _figures(n: int | None, counts: Mapping[str, int] | None,
             shares: Mapping[str, Mapping[str, float]] | None,
             values: Sequence[str]) -> list[Cell]:
    cells: list[Cell] = []
    for value in values:
        share = (shares or {}).get(value)
        cells += [None if counts is None else counts.get(value),
                  *((share["value"], share["low"], share["high"]) if share and n
                    else (None, None, None))]
    return cells


def results_records(figures: Mapping[str, Any], dims: Sequence[str]) -> Iterator[list[Cell]]:
    """The rows of ``results.csv`` from :func:`gateway.operators.results.results`'s
    figures (asked with ``suppress=True``): the total first, then each group."""
    total = figures["total"]
    values = list(total["counts"] or {})
    if not values:
        values = sorted({v for row in figures["rows"] for v in (row["counts"] or {})})
    yield list[Cell](results_header(dims, values))
    yield ["total", *([None] * len(dims)), total["n"],
           "true" if total["n"] is None else "false",
           *_figures(total["n"], total["counts"], total["percent"], values)]
    for row in figures["rows"]:
        yield ["group", *(row["group"][d] for d in dims), row["n"],
               "true" if row["suppressed"] else "false",
               *_figures(row["n"], row["counts"], row["percent"], values)]


def results_csv(figures: Mapping[str, Any], dims: Sequence[str]) -> Iterator[bytes]:
    """``results.csv`` as a stream of bytes."""
    return chunked(csv_text(results_records(figures, dims)))


# -- answers.csv -------------------------------------------------------------------------

ANSWER_HEADER = ("id", "respondent", "poll", "question", "answer", "date", "cercle",
                 "commune", "gender", "age_band", "displaced", "campaign")
ANSWER_BATCH = 5000
_poll_answers: Table = PollAnswer.__table__  # type: ignore[attr-defined]
_ANSWER_COLUMNS = ("id", "pseudonym", "question", "answer", "updated_at", "area", "gender",
                   "age_band", "displaced", "campaign")


def answer_batch(conn: Connection, *, poll: str, after: int, limit: int,
                 ) -> Sequence[Row[Any]]:
    """Up to ``limit`` answers to ``poll`` with an id above ``after``, in id order (keyset:
    each batch is one short read along the primary key, however far into the table).

    The poll is compared as ``poll || ''`` so that no index on ``poll`` is used: SQLite
    would otherwise read every answer of the poll through ``ix_poll_answer_time`` and sort
    them for each batch (a million-row export then reads the table 200 times)."""
    t = _poll_answers
    return conn.execute(
        select(*(t.c[c] for c in _ANSWER_COLUMNS))
        .where((t.c.poll + "") == poll, t.c.id > after).order_by(t.c.id).limit(limit)).all()


class ExportKey:
    """A random key drawn for one export: the ids it hands out mean nothing elsewhere."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def _hash(self, kind: bytes, value: str) -> str:
        return hashlib.blake2b(value.encode(), key=self._key, person=kind,
                               digest_size=8).hexdigest()

    def row_id(self, answer_id: int) -> str:
        return self._hash(b"row", str(answer_id))

    def respondent(self, pseudonym: str) -> str:
        return self._hash(b"respondent", pseudonym)


def answer_records(db: Database, *, poll: str, areas: Areas, key: ExportKey | None = None,
                   batch: int = ANSWER_BATCH) -> Iterator[list[Cell]]:
    """The rows of ``answers.csv``: every counted answer to ``poll``, each in its own
    short transaction's batch. Place as cercle and commune ids (commune ``other`` when
    the resident named only the cercle); the day, never the time."""
    key = key or ExportKey()
    after = 0
    while True:
        with db.transaction() as conn:
            rows = answer_batch(conn, poll=poll, after=after, limit=batch)
        for row in rows:
            cercle = areas.cercle(row.area)
            commune = None if cercle is None else (OTHER if row.area == cercle else row.area)
            yield [key.row_id(row.id), key.respondent(row.pseudonym), poll, row.question,
                   row.answer, day_of(row.updated_at), cercle, commune, row.gender,
                   row.age_band, row.displaced, row.campaign]
        if len(rows) < batch:
            return
        after = rows[-1].id


def answers_csv(db: Database, *, poll: str, areas: Areas) -> Iterator[bytes]:
    """``answers.csv`` as a stream of bytes."""

    def rows() -> Iterator[Sequence[Cell]]:
        yield ANSWER_HEADER
        yield from answer_records(db, poll=poll, areas=areas)

    return chunked(csv_text(rows()))
