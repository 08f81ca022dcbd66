"""Full USSD hops per second, with persistence, against a trivial FastAPI endpoint.

Starts two servers as subprocesses:

- the gateway exactly as ``gateway serve`` runs it by default (outbox worker in-process,
  fake provider, one uvicorn worker, no access log; on PostgreSQL its database process,
  whose CPU the ``srv cpu`` and ``µs/hop`` columns include), on a fresh database (an SQLite file
  in a temporary folder, or with ``--database postgres`` a fresh PostgreSQL database on
  127.0.0.1:5432 brought up by ``gateway migrate``), with its own key file;
- bench/trivial_app.py on uvicorn (one worker, no access log): reads the form, answers a
  fixed ``CON`` screen.

A load generator drives sessions as Africa's Talking does: a fresh ``sessionId`` and a new
number (+2237xxxxxxx) per session, form-encoded POSTs with the cumulative ``text``, walking
real flows (trust poll, reports with and without typed text, subscription) to their END.
Both servers get the same request stream. Rounds alternate gateway, trivial, gateway, ...
at concurrency 32 (throughput) and 8 (latency). Every hop must be 200, text/plain,
``CON ``/``END ``; on the gateway every hop but the last must be CON and the last END.

    .venv/bin/python -m bench.ussd_hops [--database sqlite|postgres] [--seconds 10]
        [--rounds 3] [--client raw|httpx]

Targets: throughput gateway/trivial at 32 >= 0.5; p99 gateway/trivial at 8 <= 2.0.
Results go to stdout and to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

from bench.common import (
    OUT,
    REPO,
    Postgres,
    clean_env,
    cpu_seconds,
    free_port,
    gateway,
    load_average,
    median,
    percentile,
    run_gateway,
    start,
    stop,
    wait_http,
)

USSD_PATH = "/webhooks/africastalking/ussd"
TARGET_THROUGHPUT = 0.5
TARGET_P99 = 2.0

# Real flows, walked to their END from a first dial (the language question comes first:
# every number is new). Digits from flows/*.yml and tests/dialogue/test_ussd_flows.py.
SCRIPTS: dict[str, tuple[str, ...]] = {
    # French; poll: 4 actors, woman, 25-34, not displaced, cercle Mopti, its first commune.
    "poll-fr": ("1", "2", "3", "3", "3", "3", "1", "2", "2", "1", "1"),
    # Bambara; poll: 4 actors, who answered left unsaid, cercle "other" (no commune).
    "poll-bm": ("2", "2", "4", "4", "4", "4", "3", "5", "3", "7"),
    # French; report: help, army, today, cercle "other", no message.
    "report-skip": ("1", "1", "1", "1", "1", "7", "2"),
    # French; report on page 2 of the categories, Koro, page 2 of its communes, with a
    # typed message (sealed with a new per-contact data key).
    "report-text": ("1", "1", "9", "3", "2", "2", "5", "9", "4", "1", "Route barree 5000F"),
    # French; subscribe for Youwarou / its sixth commune (the number goes to the vault).
    "subscribe": ("1", "3", "1", "2", "6"),
}


class Numbers:
    """New Malian mobile numbers, never the same twice in a run."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.used: set[int] = set()

    def new(self) -> str:
        while True:
            n = self.random.randrange(10_000_000)
            if n not in self.used:
                self.used.add(n)
                return f"+2237{n:07d}"


# --- clients -------------------------------------------------------------------------


class Client(Protocol):
    async def post(self, body: bytes) -> tuple[int, str, str]: ...

    async def close(self) -> None: ...


class RawClient:
    """One keep-alive HTTP/1.1 connection, as little client work per hop as possible, so
    the load generator is never what limits the trivial server on two cores."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.head = (f"POST {USSD_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: ").encode()

    async def post(self, body: bytes) -> tuple[int, str, str]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers.get("content-type", ""), payload.decode("utf-8", "replace")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.reader = None


class HttpxClient:
    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url

    async def post(self, body: bytes) -> tuple[int, str, str]:
        response = await self.client.post(
            self.url, content=body,
            headers={"content-type": "application/x-www-form-urlencoded"})
        return response.status_code, response.headers.get("content-type", ""), response.text

    async def close(self) -> None:
        return None


# --- one round -----------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    checks_flow: bool  # the gateway must answer CON ... END along the script


@dataclass
class RoundResult:
    round: int
    server: str
    concurrency: int
    seconds: float
    hops: int
    sessions: int
    hops_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    server_cpu: float  # share of one core
    server_us_per_hop: float
    client_cpu: float  # share of one core
    errors: dict[str, int] = field(default_factory=dict)


async def _user(client: Client, server: Server, scripts: Sequence[tuple[str, ...]],
                order: itertools.count[int], numbers: Numbers, deadline: float,
                latencies: list[float], errors: Counter[str], counts: Counter[str]) -> None:
    while time.perf_counter() < deadline:
        script = scripts[next(order) % len(scripts)]
        session_id = f"ATUid_{uuid.uuid4().hex}"
        phone = numbers.new()
        for hop in range(len(script) + 1):
            if time.perf_counter() >= deadline:
                return
            form = {"sessionId": session_id, "serviceCode": "*123#", "phoneNumber": phone,
                    "networkCode": "61002", "text": "*".join(script[:hop])}
            body = urlencode(form).encode()
            started = time.perf_counter()
            try:
                status, ctype, text = await asyncio.wait_for(client.post(body), 30)
            except Exception as exc:
                errors[f"exception:{exc.__class__.__name__}"] += 1
                await client.close()
                break
            done = time.perf_counter()
            problem = None
            if status != 200:
                problem = f"status:{status}"
            elif not ctype.startswith("text/plain"):
                problem = "content-type"
            elif not text.startswith(("CON ", "END ")):
                problem = "body"
            elif server.checks_flow:
                last = hop == len(script)
                if text.startswith("END ") != last:
                    problem = "flow:END-early" if not last else "flow:no-END"
            if problem:
                errors[problem] += 1
                break
            if done <= deadline:
                latencies.append(done - started)
                counts["hops"] += 1
            counts["all_hops"] += 1
        else:
            counts["sessions"] += 1


async def run_round(server: Server, *, concurrency: int, seconds: float, round_no: int,
                    numbers: Numbers, client_kind: str) -> RoundResult:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    scripts = list(SCRIPTS.values())
    order = itertools.count(random.randrange(len(scripts)))
    url = f"http://127.0.0.1:{server.port}{USSD_PATH}"
    shared = httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency,
                                                   max_keepalive_connections=concurrency),
                               timeout=30) if client_kind == "httpx" else None
    clients: list[Client] = [
        HttpxClient(shared, url) if shared is not None else RawClient("127.0.0.1", server.port)
        for _ in range(concurrency)
    ]
    cpu0, own0, wall0 = cpu_seconds(server.proc.pid), time.process_time(), time.perf_counter()
    deadline = wall0 + seconds
    await asyncio.gather(*(_user(c, server, scripts, order, numbers, deadline, latencies,
                                 errors, counts) for c in clients))
    wall = time.perf_counter() - wall0
    cpu, own = cpu_seconds(server.proc.pid) - cpu0, time.process_time() - own0
    for c in clients:
        await c.close()
    if shared is not None:
        await shared.aclose()
    ms = [x * 1000 for x in latencies]
    hops = counts["hops"]
    return RoundResult(
        round=round_no, server=server.name, concurrency=concurrency, seconds=seconds,
        hops=hops, sessions=counts["sessions"], hops_per_s=hops / seconds,
        p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms) if ms else float("nan"),
        server_cpu=cpu / wall, server_us_per_hop=cpu / max(1, counts["all_hops"]) * 1e6,
        client_cpu=own / wall, errors=dict(errors),
    )


# --- servers -------------------------------------------------------------------------


def start_servers(database: str, work: Path) -> tuple[Server, Server, Postgres | None]:
    pg: Postgres | None = None
    if database == "postgres":
        pg = Postgres()
        url = pg.create()
    else:
        url = f"sqlite:///{work / 'gateway.db'}"
    env = clean_env(GATEWAY_DATABASE_URL=url, GATEWAY_KEY_FILE=str(work / "gateway.keys"),
                    GATEWAY_CONTENT_DIR=str(REPO))
    if pg is not None:
        print(run_gateway(["migrate"], env=env, cwd=work))
    gw_port, tr_port = free_port(), free_port()
    gw_log, tr_log = work / "gateway.log", work / "trivial.log"
    gw = gateway(["serve", "--port", str(gw_port)], env=env, cwd=work, log=gw_log)
    tr = start(["-m", "uvicorn", "bench.trivial_app:app", "--host", "127.0.0.1", "--port",
                str(tr_port), "--workers", "1", "--no-access-log", "--no-server-header",
                "--log-level", "warning"], env=clean_env(), cwd=REPO, log=tr_log)
    wait_http(f"http://127.0.0.1:{gw_port}/healthz", gw, gw_log)
    wait_http(f"http://127.0.0.1:{tr_port}/healthz", tr, tr_log)
    return (Server("gateway", gw_port, gw, checks_flow=True),
            Server("trivial", tr_port, tr, checks_flow=False), pg)


def check_scripts(port: int) -> None:
    """Walk every script once: CON all the way, END at the end, before measuring."""
    numbers = Numbers(seed=1)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for name, script in SCRIPTS.items():
            session_id, phone = f"ATUid_{uuid.uuid4().hex}", numbers.new()
            for hop in range(len(script) + 1):
                response = client.post(USSD_PATH, data={
                    "sessionId": session_id, "serviceCode": "*123#", "phoneNumber": phone,
                    "networkCode": "61002", "text": "*".join(script[:hop])})
                want = "END " if hop == len(script) else "CON "
                if response.status_code != 200 or not response.text.startswith(want):
                    raise SystemExit(f"script {name} hop {hop}: {response.status_code} "
                                     f"{response.text!r}")


def persisted(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, func, select

    from gateway.store import queries

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            counts = {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                      for t in (queries.sessions, queries.contacts, queries.reports,
                                queries.poll_answers, queries.vault)}
            hops = conn.execute(select(func.sum(queries.sessions.c.hops))).scalar_one()
            return {**counts, "ussd hops": int(hops or 0)}
    finally:
        engine.dispose()


# --- report --------------------------------------------------------------------------

HEADER = (f"{'round':>5} {'conc':>4} {'server':<8} {'hops/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'mean ms':>7} {'srv cpu':>7} {'µs/hop':>7} {'cli cpu':>7} errors")


def row(r: RoundResult) -> str:
    return (f"{r.round:>5} {r.concurrency:>4} {r.server:<8} {r.hops_per_s:>8.1f} "
            f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.mean_ms:>7.2f} {r.server_cpu:>6.0%} "
            f"{r.server_us_per_hop:>7.0f} {r.client_cpu:>6.0%} "
            f"{sum(r.errors.values()) if r.errors else 0}"
            + (f" {r.errors}" if r.errors else ""))


def summarise(results: list[RoundResult], high: int, low: int) -> tuple[list[str], dict[str, Any]]:
    def pick(server: str, conc: int) -> list[RoundResult]:
        return [r for r in results if r.server == server and r.concurrency == conc]

    lines = ["", "medians over rounds:", HEADER.replace("round", "  med")]
    summary: dict[str, Any] = {}
    for conc in (high, low):
        for server in ("gateway", "trivial"):
            rs = pick(server, conc)
            med = RoundResult(
                round=0, server=server, concurrency=conc, seconds=rs[0].seconds,
                hops=int(median([r.hops for r in rs])),
                sessions=int(median([r.sessions for r in rs])),
                hops_per_s=median([r.hops_per_s for r in rs]),
                p50_ms=median([r.p50_ms for r in rs]), p99_ms=median([r.p99_ms for r in rs]),
                mean_ms=median([r.mean_ms for r in rs]),
                server_cpu=median([r.server_cpu for r in rs]),
                server_us_per_hop=median([r.server_us_per_hop for r in rs]),
                client_cpu=median([r.client_cpu for r in rs]),
                errors=dict(sum((Counter(r.errors) for r in rs), Counter())),
            )
            summary[f"{server}@{conc}"] = asdict(med)
            lines.append(row(med).replace("    0 ", "  med ", 1))
    gw_hi, tr_hi = pick("gateway", high), pick("trivial", high)
    gw_lo, tr_lo = pick("gateway", low), pick("trivial", low)
    throughput = [g.hops_per_s / t.hops_per_s for g, t in zip(gw_hi, tr_hi, strict=True)]
    p99 = [g.p99_ms / t.p99_ms for g, t in zip(gw_lo, tr_lo, strict=True)]
    cpu = [g.server_us_per_hop / t.server_us_per_hop for g, t in zip(gw_hi, tr_hi, strict=True)]
    ratio_t = median([r.hops_per_s for r in gw_hi]) / median([r.hops_per_s for r in tr_hi])
    ratio_p = median([r.p99_ms for r in gw_lo]) / median([r.p99_ms for r in tr_lo])
    errors = sum(sum(r.errors.values()) for r in results)
    lines += [
        "",
        f"throughput gateway/trivial at {high}: {ratio_t:.2f} (medians; per round "
        f"{', '.join(f'{x:.2f}' for x in throughput)})  target >= {TARGET_THROUGHPUT}: "
        f"{'MET' if ratio_t >= TARGET_THROUGHPUT else 'MISSED'}",
        f"p99 latency gateway/trivial at {low}: {ratio_p:.2f} (medians; per round "
        f"{', '.join(f'{x:.2f}' for x in p99)})  target <= {TARGET_P99}: "
        f"{'MET' if ratio_p <= TARGET_P99 else 'MISSED'}",
        f"server CPU per hop gateway/trivial at {high}: "
        f"{', '.join(f'{x:.2f}' for x in cpu)} (per round)",
        f"errors: {errors}",
    ]
    summary.update(throughput_ratio=ratio_t, throughput_ratio_per_round=throughput,
                   p99_ratio=ratio_p, p99_ratio_per_round=p99, cpu_ratio_per_round=cpu,
                   errors=errors, throughput_met=ratio_t >= TARGET_THROUGHPUT,
                   p99_met=ratio_p <= TARGET_P99)
    return lines, summary


async def bench(args: argparse.Namespace, work: Path) -> int:
    gw, tr, pg = start_servers(args.database, work)
    results: list[RoundResult] = []
    out_lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        out_lines.append(line)

    try:
        check_scripts(gw.port)
        numbers = Numbers(seed=args.seed)
        per_session = sum(len(s) + 1 for s in SCRIPTS.values()) / len(SCRIPTS)
        say(f"ussd_hops: database={args.database} client={args.client} "
            f"seconds={args.seconds} rounds={args.rounds} warmup={args.warmup}s "
            f"scripts={len(SCRIPTS)} (avg {per_session:.1f} hops/session) "
            f"load={load_average()}")
        for server in (gw, tr):  # warm-up: imports, caches, connection pools, page cache
            await run_round(server, concurrency=args.high, seconds=args.warmup, round_no=0,
                            numbers=numbers, client_kind=args.client)
        say(HEADER)
        for round_no in range(1, args.rounds + 1):
            for conc in (args.high, args.low):
                for server in (gw, tr):
                    result = await run_round(server, concurrency=conc, seconds=args.seconds,
                                             round_no=round_no, numbers=numbers,
                                             client_kind=args.client)
                    results.append(result)
                    say(row(result))
        lines, summary = summarise(results, args.high, args.low)
        for line in lines:
            say(line)
        log = (work / "gateway.log").read_text(errors="replace")
        numbers_logged = len(re.findall(r"\+?2237\d{7}", log))
        error_lines = sum(1 for line in log.splitlines() if " ERROR " in line)
        counts = persisted(summary_url(args, work, pg))
        say(f"persisted: {counts}")
        say(f"gateway log: {error_lines} ERROR line(s), {numbers_logged} phone number(s); "
            f"load={load_average()}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        OUT.mkdir(parents=True, exist_ok=True)
        base = OUT / f"ussd_hops-{args.database}-{stamp}"
        base.with_suffix(".txt").write_text("\n".join(out_lines) + "\n")
        base.with_suffix(".json").write_text(json.dumps({
            "args": vars(args), "rounds": [asdict(r) for r in results], "summary": summary,
            "persisted": counts, "gateway_log_errors": error_lines,
        }, indent=2, default=str))
        print(f"written: {base.with_suffix('.txt')} and .json")
        ok = summary["throughput_met"] and summary["p99_met"] and not summary["errors"]
        return 0 if ok else 1
    finally:
        stop(gw.proc)
        stop(tr.proc)
        if pg is not None and not args.keep:
            pg.drop()


def summary_url(args: argparse.Namespace, work: Path, pg: Postgres | None) -> str:
    return pg.url if pg is not None else f"sqlite:///{work / 'gateway.db'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=10.0, help="per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per server")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: a minimal keep-alive HTTP/1.1 client (default); httpx")
    parser.add_argument("--high", type=int, default=32, help="concurrency for throughput")
    parser.add_argument("--low", type=int, default=8, help="concurrency for latency")
    parser.add_argument("--seed", type=int, default=2237)
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (and the PostgreSQL database)")
    args = parser.parse_args(argv)
    if args.keep:
        work = Path(tempfile.mkdtemp(prefix="dannaya-ussd-bench-"))
        print(f"work folder: {work}")
        return asyncio.run(bench(args, work))
    with tempfile.TemporaryDirectory(prefix="dannaya-ussd-bench-") as tmp:
        return asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
