"""Live results: how soon a USSD vote reaches 50 stream listeners, and what a long
results read costs USSD hops on SQLite.

On a fresh database (an SQLite file in a temporary folder; ``--database postgres``: a
fresh PostgreSQL database on 127.0.0.1:5432), with ``--answers`` answers seeded (as
bench/results.py does, default 300,000, folded), two ``gateway serve`` processes run:
one answers the USSD webhook, the other serves the streams (the change must travel
through the database).

1. Latency: ``--listeners`` (default 50) Server-Sent Events clients on the streams
   process (half ``results?question=army&by=commune``, half ``by=gender``, as an admin);
   ``--votes`` residents (default 30) vote one after the other through the USSD webhook
   of the other process, ``--gap`` seconds apart. For each vote and each listener: the
   time from the vote's last USSD hop to the event carrying it. Goal: p95 under 2 s.
2. (SQLite) Hops under a long read: USSD hops to the votes process, timed, while this
   process runs a results read over the answers table (``since``: every answer) in a
   loop, first in a write transaction (``BEGIN IMMEDIATE``, as every API request did
   before), then in a read-only one (``Database.reading``: plain ``BEGIN``), then with
   no reader at all.

    .venv/bin/python -m bench.results_live [--database sqlite|postgres] [--answers 300000]
        [--listeners 50] [--votes 30] [--gap 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import OUT, Postgres, clean_env, gateway, load_average, percentile, stop
from bench.results import COMMUNES, POLL, QUESTION, START, answers, seed_postgres, seed_sqlite

GOAL_SECONDS = 2.0


def base_of(log: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "running on http://" in line:
                return line.split("running on ")[1].split()[0]
        time.sleep(0.05)
    raise SystemExit(f"gateway did not start:\n{log.read_text(errors='replace')[-3000:]}")


def vote(client: httpx.Client, number: str, army: str) -> tuple[float, list[float]]:
    """A new phone votes through the main menu; the time of the last hop's answer, and
    each hop's duration."""
    session = f"ATUid_{uuid.uuid4().hex}"
    keys = ["1", "2", army, "4", "4", "4", "1", "2", "2", "1", "5"]
    hops = []
    for n in range(len(keys) + 1):
        t0 = time.perf_counter()
        response = client.post("/webhooks/africastalking/ussd", data={
            "sessionId": session, "serviceCode": "*123#", "phoneNumber": number,
            "networkCode": "99999", "text": "*".join(keys[:n])})
        hops.append(time.perf_counter() - t0)
        assert response.status_code == 200 and response.text.startswith(("CON", "END"))
    assert response.text.startswith("END"), response.text
    return time.monotonic(), hops


async def listen(base: str, path: str, token: str, seen: dict[int, float],
                 ready: asyncio.Event, stopping: asyncio.Event) -> None:
    """One stream: the arrival time of the first event showing each total."""
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=None)) as c, \
            c.stream("GET", path, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status_code == 200, await r.aread()
        data = ""
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                data += line[5:].strip()
            elif line == "" and data:
                n = json.loads(data)["total"]["n"]
                seen.setdefault(n, time.monotonic())
                ready.set()
                data = ""
            if stopping.is_set():
                return


def latency(streams: str, votes: str, token: str, *, listeners: int, count: int,
            gap: float, base_n: int) -> list[float]:
    samples: list[float] = []

    async def run() -> None:
        seen: list[dict[int, float]] = [{} for _ in range(listeners)]
        readies = [asyncio.Event() for _ in range(listeners)]
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(listen(
            streams, f"/api/v1/polls/{POLL}/results/stream?question={QUESTION}"
                     f"&by={'commune' if i % 2 else 'gender'}", token, seen[i], readies[i],
            stopping)) for i in range(listeners)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        with httpx.Client(base_url=votes, timeout=30) as client:
            for i in range(1, count + 1):
                last_hop, _ = await asyncio.to_thread(vote, client, f"+2237100{i:04d}", "4")
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and \
                        not all(base_n + i in s for s in seen):
                    await asyncio.sleep(0.01)
                samples.extend(s.get(base_n + i, float("inf")) - last_hop for s in seen)
                await asyncio.sleep(gap)
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    return samples


def hops_under_reads(db: Any, votes: str, areas: Any, values: Sequence[str],
                     say: Any) -> None:
    from gateway.operators.access import Principal, Role
    from gateway.operators.results import results

    admin = Principal(1, "bench", Role.admin)

    def read_loop(mode: str, stopping: threading.Event, reads: list[float]) -> None:
        while not stopping.is_set():
            t0 = time.perf_counter()
            opened = db.transaction() if mode == "immediate" else db.reading()
            with opened as conn:
                results(conn, who=admin, areas=areas, poll=POLL, question=QUESTION,
                        values=values, by=["commune"], since=START, fold_changes=False)
            reads.append(time.perf_counter() - t0)

    say(f"{'reader alongside the hops':<34} {'reads':>5} {'read s':>7} {'hops':>5} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    with httpx.Client(base_url=votes, timeout=60) as client:
        for n, mode in enumerate(("immediate", "reading", "none")):
            stopping = threading.Event()
            reads: list[float] = []
            hops: list[float] = []
            reader = threading.Thread(target=read_loop, args=(mode, stopping, reads)) \
                if mode != "none" else None
            if reader:
                reader.start()
                time.sleep(0.2)
            t_end = time.monotonic() + 8
            i = 0
            while time.monotonic() < t_end:
                i += 1
                _, timed = vote(client, f"+22372{n}{i:05d}", "2")
                hops.extend(timed)
            stopping.set()
            if reader:
                reader.join()
            label = {"immediate": "results read in BEGIN IMMEDIATE",
                     "reading": "results read in BEGIN (read-only)",
                     "none": "no reader"}[mode]
            read_s = f"{percentile(reads, 50):.2f}" if reads else "-"
            say(f"{label:<34} {len(reads):>5} {read_s:>7} {len(hops):>5} "
                f"{percentile(hops, 50) * 1000:>7.1f} {percentile(hops, 95) * 1000:>7.1f} "
                f"{max(hops) * 1000:>7.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    from gateway.content.catalogs import load, locate
    from gateway.operators import accounts
    from gateway.operators.access import Areas, Role
    from gateway.operators.results import find_poll, fold
    from gateway.privacy import keys as keys_mod
    from gateway.store import migrate
    from gateway.store.db import Database
    from gateway.store.models import utcnow

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--answers", type=int, default=300_000)
    parser.add_argument("--listeners", type=int, default=50)
    parser.add_argument("--votes", type=int, default=30)
    parser.add_argument("--gap", type=float, default=1.0)
    args = parser.parse_args(argv)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    content = load(locate(None))[0]
    areas = Areas.of(content.communes)
    communes = [m.id for c in content.communes.cercles for m in c.communes][:COMMUNES]
    values = find_poll(content, POLL).question(QUESTION).value_ids
    pg = Postgres() if args.database == "postgres" else None
    processes = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="dannaya-live-bench-") as tmp_name:
        tmp = Path(tmp_name)
        url = pg.create() if pg else f"sqlite:///{tmp / 'gateway.db'}"
        db = Database(url)
        try:
            migrate.upgrade(db.engine)
            say(f"results_live: database={args.database} answers={args.answers:,} "
                f"listeners={args.listeners} votes={args.votes} gap={args.gap}s "
                f"load={load_average()}")
            (seed_postgres if pg else seed_sqlite)(db.engine, answers(args.answers, communes))
            with db.transaction() as conn:
                fold(conn)
                accounts.create(conn, name="bench", role=Role.admin, cercles=(),
                                password=secrets.token_urlsafe(16),
                                known_cercles=areas.communes_of,
                                actor="cli", now=utcnow())
                token = accounts.new_cli_token(conn, name="bench", label="bench", actor="cli",
                                               now=utcnow())
            keys_mod.load(tmp / "gateway.keys", create=True)
            env = clean_env(GATEWAY_DATABASE_URL=url,
                            GATEWAY_KEY_FILE=str(tmp / "gateway.keys"))
            bases = []
            for name in ("votes", "streams"):
                log = tmp / f"{name}.log"
                processes.append(gateway(["serve", "--port", "0", "--no-worker"], env=env,
                                         cwd=tmp, log=log))
                bases.append(base_of(log))
            samples = latency(bases[1], bases[0], token, listeners=args.listeners,
                              count=args.votes, gap=args.gap, base_n=args.answers)
            lost = sum(1 for s in samples if s == float("inf"))
            p95 = percentile(samples, 95)
            ok = p95 < GOAL_SECONDS and not lost
            say(f"answer-to-event latency over {len(samples)} events "
                f"({args.listeners} listeners x {args.votes} votes): "
                f"p50 {percentile(samples, 50):.2f} s, p95 {p95:.2f} s, "
                f"max {max(samples):.2f} s, missed {lost}; goal p95 < {GOAL_SECONDS:.0f} s: "
                f"{'met' if ok else 'MISSED'}")
            if not pg:
                hops_under_reads(db, bases[0], areas, values, say)
            say(f"load={load_average()}")
        finally:
            for process in processes:
                stop(process)
            db.dispose()
            if pg:
                pg.drop()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"results-live-{args.database}-{stamp}.txt"
    path.write_text("\n".join(lines) + "\n")
    print(f"written: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
