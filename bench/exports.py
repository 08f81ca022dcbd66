"""answers.csv over a million answers: the time to download it and the serving process's
peak memory.

On a fresh database (an SQLite file in a temporary folder; ``--database postgres``: a fresh
PostgreSQL database on 127.0.0.1:5432), brought to the latest migration:

1. seed ``--answers`` (default 1,000,000) answers straight into ``poll_answer``, as
   ``bench/results.py`` does (one question, 50 communes, eight weeks);
2. make an admin and a token with the ``gateway users`` commands, start ``gateway serve
   --no-worker`` as a subprocess, and note its resident memory once it answers;
3. download ``GET /api/v1/exports/answers.csv?poll=trust-fds`` through httpx in a stream,
   counting rows as they arrive (the csv module reads them back), and read the serving
   process's peak resident set (``VmHWM`` in /proc) afterwards.

Goal: peak under 150 MB (constant memory: the export reads keyset batches, each in its own
short transaction, and sends them as it goes). Results go to stdout and bench/out/.

    .venv/bin/python -m bench.exports [--database sqlite|postgres] [--answers 1000000]
"""

from __future__ import annotations

import argparse
import codecs
import csv
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from bench.common import (
    OUT,
    Postgres,
    clean_env,
    free_port,
    gateway,
    load_average,
    run_gateway,
    stop,
    wait_http,
)
from bench.results import COMMUNES, answers, seed_postgres, seed_sqlite

GOAL_MB = 150.0
PASSWORD = "sept pintades au marché\n"  # noqa: S105 - a throwaway bench account


def memory_mb(pid: int, field: str) -> float:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def lines(response: httpx.Response) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    for chunk in response.iter_bytes():
        pending += decoder.decode(chunk)
        *whole, pending = pending.split("\r\n")
        for line in whole:
            yield line + "\r\n"
    if pending:
        yield pending


def main(argv: Sequence[str] | None = None) -> int:
    from gateway.content.catalogs import load, locate
    from gateway.store import migrate
    from gateway.store.db import Database

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--answers", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    out_lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        out_lines.append(line)

    content = load(locate(None))[0]
    communes = [m.id for c in content.communes.cercles for m in c.communes][:COMMUNES]
    pg = Postgres() if args.database == "postgres" else None
    ok = False
    with tempfile.TemporaryDirectory(prefix="dannaya-exports-bench-") as tmp:
        folder = Path(tmp)
        url = pg.create() if pg else f"sqlite:///{folder / 'gateway.db'}"
        proc = None
        try:
            db = Database(url)
            migrate.upgrade(db.engine)
            t0 = time.perf_counter()
            (seed_postgres if pg else seed_sqlite)(db.engine, answers(args.answers, communes))
            db.dispose()
            say(f"answers.csv: database={args.database} answers={args.answers:,} "
                f"load={load_average()}")
            say(f"seeded {args.answers:,} answers in {time.perf_counter() - t0:.1f} s")

            env = clean_env(GATEWAY_DATABASE_URL=url,
                            GATEWAY_KEY_FILE=str(folder / "gateway.keys"))
            create = ["users", "create", "bench", "--role", "admin"]
            subprocess.run([sys.executable, "-m", "gateway", *create], input=PASSWORD,
                           text=True, env=env, cwd=folder, check=True, capture_output=True)
            token = run_gateway(["users", "token", "bench"], env=env, cwd=folder)
            port = free_port()
            log = folder / "serve.log"
            proc = gateway(["serve", "--no-worker", "--port", str(port)], env=env, cwd=folder,
                           log=log)
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", proc, log)
            say(f"serving process at rest: {memory_mb(proc.pid, 'VmRSS'):.1f} MB resident")

            rows = 0
            size = 0
            t0 = time.perf_counter()
            first_byte = None
            with httpx.stream("GET", f"{base}/api/v1/exports/answers.csv",
                              params={"poll": "trust-fds"},
                              headers={"Authorization": f"Bearer {token}"},
                              timeout=600) as response:
                response.raise_for_status()

                def counted() -> Iterator[str]:
                    nonlocal size, first_byte
                    for line in lines(response):
                        if first_byte is None:
                            first_byte = time.perf_counter() - t0
                        size += len(line)
                        yield line

                reader = csv.reader(counted())
                header = next(reader)
                for row in reader:
                    assert len(row) == len(header)
                    rows += 1
            took = time.perf_counter() - t0
            peak = memory_mb(proc.pid, "VmHWM")
            after = memory_mb(proc.pid, "VmRSS")
            assert rows == args.answers, rows
            say(f"downloaded {rows:,} rows ({size / 1e6:.1f} MB of CSV) in {took:.1f} s "
                f"({rows / took:,.0f} rows/s; first row after {1000 * (first_byte or 0):.0f} ms)")
            ok = peak < GOAL_MB
            say(f"serving process: peak {peak:.1f} MB resident (goal < {GOAL_MB:.0f} MB: "
                f"{'met' if ok else 'MISSED'}), {after:.1f} MB after")
            say(f"load={load_average()}")
        finally:
            if proc is not None:
                stop(proc)
            if pg:
                pg.drop()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"exports-{args.database}-{stamp}.txt"
    path.write_text("\n".join(out_lines) + "\n")
    print(f"written: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
