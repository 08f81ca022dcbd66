"""Poll results over a million answers: breakdowns by commune, and by commune x gender.

On a fresh database (an SQLite file in a temporary folder; ``--database postgres``: a
fresh PostgreSQL database on 127.0.0.1:5432), brought to the latest migration:

1. seed ``--answers`` (default 1,000,000) answers to one question (``army`` of
   ``trust-fds``) straight into ``poll_answer`` (SQLite: executemany; PostgreSQL: COPY), one
   per respondent, across the first 50 communes of the list, with gender, age band and
   displacement drawn at random and times spread over eight weeks: every answer is one the
   measured query must count (the harder reading: rows of other questions would sit
   outside the index range it reads). The triggers record each insert as a tally change;
2. fold those changes into ``poll_tally`` once and time it (a deployment folds as it
   goes: every results read folds what arrived since the last);
3. time ``gateway.operators.results.results`` (the whole call: query and figures,
   Wilson intervals, suppression) ``--repeat`` times per case, after one warm-up;
4. cast 1,000 new votes (each changes an answer: two tally changes) and time the next
   read, which folds them first.

Goal: by commune and by commune x gender under 100 ms. Results go to stdout and to
bench/out/.

    .venv/bin/python -m bench.results [--database sqlite|postgres] [--answers 1000000]
        [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import OUT, Postgres, load_average

POLL, QUESTION = "trust-fds", "army"
COMMUNES = 50
GOAL_MS = 100.0
START = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday; eight weeks of answers from there
SPAN_SECONDS = 8 * 7 * 86400
ANSWERS = {"not_at_all": 10, "just_a_little": 15, "somewhat": 25, "a_lot": 35,
           "dont_know": 10, "refused": 5}
GENDERS = {"woman": 48, "man": 47, "refused": 5}
AGE_BANDS = {"15-24": 30, "25-34": 30, "35-49": 22, "50+": 15, "refused": 3}
DISPLACED = {"yes": 20, "no": 75, "refused": 5}
COLUMNS = ("poll", "pseudonym", "question", "answer", "flow_version", "updated_at", "area",
           "gender", "age_band", "displaced")


def weighted(table: dict[str, int], count: int, rng: random.Random) -> list[str]:
    return rng.choices(list(table), weights=list(table.values()), k=count)


def answers(count: int, communes: Sequence[str], seed: int = 12) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    chunk = 50_000
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        picks = zip(weighted(ANSWERS, size, rng), weighted(GENDERS, size, rng),
                    weighted(AGE_BANDS, size, rng), weighted(DISPLACED, size, rng),
                    strict=True)
        for i, (answer, gender, age, displaced) in enumerate(picks, start):
            when = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
            yield (POLL, f"{i:064x}", QUESTION, answer, 1, when, rng.choice(communes), gender,
                   age, displaced)


def seed_sqlite(engine: Any, rows: Iterator[tuple[Any, ...]]) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.driver_connection.cursor()
        cur.execute("BEGIN")
        cur.executemany(
            f"INSERT INTO poll_answer ({', '.join(COLUMNS)}) VALUES "  # noqa: S608 - constants
            f"({', '.join('?' * len(COLUMNS))})",
            ((*r[:5], r[5].replace(tzinfo=None).isoformat(" ", "microseconds"), *r[6:])
             for r in rows))
        cur.execute("COMMIT")
    finally:
        raw.close()


def seed_postgres(engine: Any, rows: Iterator[tuple[Any, ...]]) -> None:
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur, cur.copy(
                f"COPY poll_answer ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE poll_answer")
        conn.autocommit = False
    finally:
        raw.close()


def revote(db: Any, count: int, communes: Sequence[str]) -> None:
    """``count`` respondents answer again, differently (as the USSD upsert would)."""
    from gateway.store import queries
    from gateway.store.models import utcnow

    rng = random.Random(99)
    with db.transaction() as conn:
        for i in rng.sample(range(1_000), count):
            queries.upsert_poll_answers(
                conn, poll=POLL, pseudonym=f"{i:064x}", answers={QUESTION: "dont_know"},
                flow_version=1, now=utcnow(),
                respondent=queries.Respondent(area=rng.choice(communes), gender="refused"))


def timed(call: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    call()  # warm-up
    times = []
    found = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = call()
        times.append((time.perf_counter() - t0) * 1000)
    return times, found


def main(argv: Sequence[str] | None = None) -> int:
    from sqlalchemy import func, select

    from gateway.content.catalogs import load, locate
    from gateway.operators.access import Areas, Principal, Role
    from gateway.operators.results import find_poll, fold, results
    from gateway.store import migrate
    from gateway.store.db import Database
    from gateway.store.models import PollTally, PollTallyChange

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    out_lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        out_lines.append(line)

    content = load(locate(None))[0]
    areas = Areas.of(content.communes)
    communes = [m.id for c in content.communes.cercles for m in c.communes][:COMMUNES]
    values = find_poll(content, POLL).question(QUESTION).value_ids
    admin = Principal(1, "bench", Role.admin)
    first_cercle = content.communes.cercles[0].id
    operator = Principal(2, "bench-op", Role.operator, frozenset({first_cercle}))
    pg = Postgres() if args.database == "postgres" else None
    with tempfile.TemporaryDirectory(prefix="dannaya-results-bench-") as tmp:
        url = pg.create() if pg else f"sqlite:///{Path(tmp) / 'gateway.db'}"
        db = Database(url)
        try:
            migrate.upgrade(db.engine)
            say(f"results: database={args.database} answers={args.answers:,} "
                f"communes={len(communes)} repeat={args.repeat} load={load_average()}")
            t0 = time.perf_counter()
            (seed_postgres if pg else seed_sqlite)(db.engine, answers(args.answers, communes))
            say(f"seeded {args.answers:,} answers (triggers on) in "
                f"{time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            with db.transaction() as conn:
                fold(conn)
            with db.transaction() as conn:
                tally = conn.execute(select(func.count()).select_from(PollTally)).scalar()
                pending = conn.execute(
                    select(func.count()).select_from(PollTallyChange)).scalar()
            say(f"first fold of {args.answers:,} changes: {time.perf_counter() - t0:.1f} s; "
                f"poll_tally now {tally:,} rows, {pending} changes pending")

            def case(who: Principal, **query: Any) -> Callable[[], Any]:
                def call() -> Any:
                    with db.transaction() as conn:
                        return results(conn, who=who, areas=areas, poll=POLL,
                                       question=QUESTION, values=values, **query)
                return call

            last_week = START + timedelta(days=49)
            cases: list[tuple[str, Callable[[], Any], bool]] = [
                ("by commune", case(admin, by=["commune"]), True),
                ("by commune x gender", case(admin, by=["commune", "gender"]), True),
                (f"by commune, operator of {first_cercle}", case(operator, by=["commune"]),
                 False),
                ("by commune x gender, shared view",
                 case(admin, by=["commune", "gender"], suppress=True), False),
                ("by cercle x age band", case(admin, by=["cercle", "age_band"]), False),
                ("by week, all 8 weeks (answers table)", case(admin, by=["week"]), False),
                ("by commune, last 7 days (answers table)",
                 case(admin, by=["commune"], since=last_week), False),
            ]
            say(f"{'case':<44} {'rows':>5} {'median ms':>10} {'max ms':>8}  goal")
            ok = True
            for name, call, goal in cases:
                times, found = timed(call, args.repeat)
                assert found["total"]["n"] > 0
                median = statistics.median(times)
                met = "" if not goal else ("met" if median < GOAL_MS else "MISSED")
                ok = ok and (not goal or median < GOAL_MS)
                say(f"{name:<44} {len(found['rows']):>5} {median:>10.1f} {max(times):>8.1f}"
                    f"  {met}")
            n_before = case(admin)()["total"]["n"]
            revote(db, 1_000, communes)
            t0 = time.perf_counter()
            found = case(admin, by=["commune"])()
            say(f"{'by commune after 1,000 new votes (folds 2,000)':<44} "
                f"{len(found['rows']):>5} {(time.perf_counter() - t0) * 1000:>10.1f}")
            assert found["total"]["n"] == n_before == args.answers
            say(f"load={load_average()}")
        finally:
            db.dispose()
            if pg:
                pg.drop()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"results-{args.database}-{stamp}.txt"
    path.write_text("\n".join(out_lines) + "\n")
    print(f"written: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
