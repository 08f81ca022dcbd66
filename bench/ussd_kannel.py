"""USSD hops per second and p99 through a real Kannel, against the same gateway's Africa's
Talking path, in one run.

Starts, on loopback:

- the gateway exactly as ``gateway serve`` runs it (fake SMS provider, one uvicorn worker;
  a fresh SQLite file, or with ``--database postgres`` a fresh PostgreSQL database);
- a fake operator USSD gateway in this process: an SMPP 3.4 server
  (``gateway.simulate.SmppOperator``, the one ``gateway simulate --kannel`` runs);
- Kannel's bearerbox and smsbox between them, configured as the README says (the USSD bind
  to that server, the two smpp-tlv groups, the USSD sms-service; tests/kannel.py writes it).

The Kannel path: the phone's operation leaves the fake operator as a ``deliver_sm``
(``ussd_service_op`` 1 then 18, ``its_session_info``), Kannel calls the gateway's get-url,
and the screen comes back as a ``submit_sm``; a hop is timed from the ``deliver_sm`` to
that ``submit_sm``. The Africa's Talking path: the same hops posted to
``/webhooks/africastalking/ussd`` (cumulative ``text``) on keep-alive connections. Both
walk the same real flows to their END (bench/ussd_hops.py's scripts), a new number per
session; every screen is checked (CON then END, the operation and the session echoed).
Rounds alternate kannel, africastalking at each concurrency (8, 32 and 96 sessions).

    .venv/bin/python -m bench.ussd_kannel [--database sqlite|postgres] [--seconds 10]
        [--rounds 3] [--levels 8,32,96]

Targets: p99 through Kannel under 300 ms at 8 concurrent sessions; Kannel's throughput at
least 0.5x the Africa's Talking path's, each path at its best over the levels (a path's
capacity: Kannel adds a fixed delay per hop, so it needs more sessions in flight to fill
the same CPU). Results go to stdout and bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

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
    stop,
    wait_http,
)
from bench.ussd_hops import SCRIPTS, Numbers, RawClient
from gateway.simulate import ANSWER, BEGIN, SmppOperator

TARGET_P99_MS = 300.0
TARGET_THROUGHPUT = 0.5
SCREEN_TIMEOUT = 10.0
PATHS = ("kannel", "africastalking")


@dataclass
class RoundResult:
    round: int
    path: str
    concurrency: int
    seconds: float
    hops: int
    sessions: int
    hops_per_s: float
    p50_ms: float
    p99_ms: float
    gateway_cpu: float  # share of one core
    kannel_cpu: float  # bearerbox and smsbox, share of one core
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Stack:
    port: int
    proc: Any
    operator: SmppOperator
    kannel_pids: list[int]


async def kannel_user(stack: Stack, scripts: Sequence[tuple[str, ...]],
                      order: itertools.count[int], numbers: Numbers, deadline: float,
                      latencies: list[float], errors: Counter[str],
                      counts: Counter[str]) -> None:
    operator = stack.operator
    while time.perf_counter() < deadline:
        script = scripts[next(order) % len(scripts)]
        phone, session = numbers.new(), random.randrange(256)
        for hop in range(len(script) + 1):
            if time.perf_counter() >= deadline:
                return
            info = bytes([session, (hop << 1) & 0xFE])
            op, text = (BEGIN, "*123#") if hop == 0 else (ANSWER, script[hop - 1])
            started = time.perf_counter()
            try:
                await operator.send(phone, op, text, session=info)
            except Exception as exc:
                errors[f"send:{exc.__class__.__name__}"] += 1
                break
            screen = await operator.screen(phone, SCREEN_TIMEOUT)
            done = time.perf_counter()
            last = hop == len(script)
            problem = None
            if screen is None:
                problem = "no-screen"
            elif screen.session != info:
                problem = "session-not-echoed"
            elif screen.op != (17 if last else 2):
                problem = "flow:END-early" if not last else "flow:no-END"
            if problem:
                errors[problem] += 1
                break
            if done <= deadline:
                latencies.append(done - started)
                counts["hops"] += 1
        else:
            counts["sessions"] += 1


async def at_user(client: RawClient, scripts: Sequence[tuple[str, ...]],
                  order: itertools.count[int], numbers: Numbers, deadline: float,
                  latencies: list[float], errors: Counter[str], counts: Counter[str]) -> None:
    while time.perf_counter() < deadline:
        script = scripts[next(order) % len(scripts)]
        session_id, phone = f"ATUid_{uuid.uuid4().hex}", numbers.new()
        for hop in range(len(script) + 1):
            if time.perf_counter() >= deadline:
                return
            body = urlencode({"sessionId": session_id, "serviceCode": "*123#",
                              "phoneNumber": phone, "networkCode": "61002",
                              "text": "*".join(script[:hop])}).encode()
            started = time.perf_counter()
            try:
                status, _, text = await asyncio.wait_for(client.post(body), 30)
            except Exception as exc:
                errors[f"exception:{exc.__class__.__name__}"] += 1
                await client.close()
                break
            done = time.perf_counter()
            last = hop == len(script)
            if status != 200 or text.startswith("END ") != last:
                errors[f"status:{status}" if status != 200 else "flow"] += 1
                break
            if done <= deadline:
                latencies.append(done - started)
                counts["hops"] += 1
        else:
            counts["sessions"] += 1


async def run_round(stack: Stack, path: str, *, concurrency: int, seconds: float,
                    round_no: int, numbers: Numbers) -> RoundResult:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    scripts = list(SCRIPTS.values())
    order = itertools.count(random.randrange(len(scripts)))
    clients = [RawClient("127.0.0.1", stack.port) for _ in range(concurrency)]
    gw0 = cpu_seconds(stack.proc.pid)
    k0 = sum(cpu_seconds(pid) for pid in stack.kannel_pids)
    wall0 = time.perf_counter()
    deadline = wall0 + seconds
    if path == "kannel":
        users = [kannel_user(stack, scripts, order, numbers, deadline, latencies, errors,
                             counts) for _ in range(concurrency)]
    else:
        users = [at_user(c, scripts, order, numbers, deadline, latencies, errors, counts)
                 for c in clients]
    await asyncio.gather(*users)
    wall = time.perf_counter() - wall0
    for c in clients:
        await c.close()
    await asyncio.sleep(0.5)  # a screen still on its way is dropped with its phone
    ms = [x * 1000 for x in latencies]
    return RoundResult(
        round=round_no, path=path, concurrency=concurrency, seconds=seconds,
        hops=counts["hops"], sessions=counts["sessions"], hops_per_s=counts["hops"] / seconds,
        p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99),
        gateway_cpu=(cpu_seconds(stack.proc.pid) - gw0) / wall,
        kannel_cpu=(sum(cpu_seconds(pid) for pid in stack.kannel_pids) - k0) / wall,
        errors=dict(errors))


HEADER = (f"{'round':>5} {'conc':>4} {'path':<14} {'hops/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'gw cpu':>6} {'kannel':>6} errors")


def row(r: RoundResult, label: str | None = None) -> str:
    return (f"{label or r.round:>5} {r.concurrency:>4} {r.path:<14} {r.hops_per_s:>8.1f} "
            f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.gateway_cpu:>5.0%} {r.kannel_cpu:>6.0%} "
            f"{sum(r.errors.values())}" + (f" {r.errors}" if r.errors else ""))


def summarise(results: list[RoundResult], levels: Sequence[int],
              low: int) -> tuple[list[str], dict[str, Any]]:
    lines = ["", "medians over rounds:", HEADER.replace("round", "  med")]
    summary: dict[str, Any] = {}
    for conc in levels:
        for path in PATHS:
            rs = [r for r in results if r.path == path and r.concurrency == conc]
            med = RoundResult(
                round=0, path=path, concurrency=conc, seconds=rs[0].seconds,
                hops=int(median([r.hops for r in rs])),
                sessions=int(median([r.sessions for r in rs])),
                hops_per_s=median([r.hops_per_s for r in rs]),
                p50_ms=median([r.p50_ms for r in rs]), p99_ms=median([r.p99_ms for r in rs]),
                gateway_cpu=median([r.gateway_cpu for r in rs]),
                kannel_cpu=median([r.kannel_cpu for r in rs]),
                errors=dict(sum((Counter(r.errors) for r in rs), Counter())))
            summary[f"{path}@{conc}"] = asdict(med)
            lines.append(row(med, "med"))
    lines.append("")
    for conc in levels:
        ratio = summary[f"kannel@{conc}"]["hops_per_s"] / \
            summary[f"africastalking@{conc}"]["hops_per_s"]
        summary[f"throughput_ratio@{conc}"] = ratio
        lines.append(f"throughput kannel/africastalking at {conc}: {ratio:.2f}")
    best: dict[str, int] = {}
    for path in PATHS:
        best[path] = max(levels, key=lambda c: float(summary[f"{path}@{c}"]["hops_per_s"]))
    capacity = {path: summary[f"{path}@{best[path]}"]["hops_per_s"] for path in PATHS}
    ratio = capacity["kannel"] / capacity["africastalking"]
    met = ratio >= TARGET_THROUGHPUT
    summary.update(capacity=capacity, capacity_at=best, throughput_ratio=ratio)
    lines.append(f"throughput at best: kannel {capacity['kannel']:.0f} hops/s (at "
                 f"{best['kannel']}) / africastalking {capacity['africastalking']:.0f} hops/s "
                 f"(at {best['africastalking']}) = {ratio:.2f}  target >= "
                 f"{TARGET_THROUGHPUT}: {'MET' if met else 'MISSED'}")
    p99 = summary[f"kannel@{low}"]["p99_ms"]
    at_p99 = summary[f"africastalking@{low}"]["p99_ms"]
    ok = p99 < TARGET_P99_MS
    met = met and ok
    lines.append(f"p99 through kannel at {low}: {p99:.1f} ms (africastalking {at_p99:.1f} ms, "
                 f"ratio {p99 / at_p99:.2f})  target < {TARGET_P99_MS:.0f} ms: "
                 f"{'MET' if ok else 'MISSED'}")
    errors = sum(sum(r.errors.values()) for r in results)
    lines.append(f"errors: {errors}")
    summary.update(p99_ms=p99, errors=errors, met=met and not errors)
    return lines, summary


async def bench(args: argparse.Namespace, work: Path) -> int:
    from tests.kannel import Binaries, Kannel, find_binaries

    binaries = find_binaries()
    if not isinstance(binaries, Binaries):
        print(f"ussd_kannel: Kannel is needed ({binaries}); scripts/install-kannel")
        return 2
    pg: Postgres | None = None
    if args.database == "postgres":
        pg = Postgres()
        url = pg.create()
    else:
        url = f"sqlite:///{work / 'gateway.db'}"
    env = clean_env(GATEWAY_DATABASE_URL=url, GATEWAY_KEY_FILE=str(work / "gateway.keys"),
                    GATEWAY_CONTENT_DIR=str(REPO))
    if pg is not None:
        print(run_gateway(["migrate"], env=env, cwd=work))
    port = free_port()
    log = work / "gateway.log"
    proc = gateway(["serve", "--port", str(port)], env=env, cwd=work, log=log)
    operator = SmppOperator("127.0.0.1", free_port())
    kannel = Kannel(work / "kannel", gateway_url=f"http://127.0.0.1:{port}",
                    binaries=binaries, ussd_port=operator.port)
    out_lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        out_lines.append(line)

    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
        await operator.start()
        await asyncio.to_thread(kannel.start)
        await operator.bound(30)
        stack = Stack(port, proc, operator, kannel.box_pids())
        numbers = Numbers(seed=args.seed)
        levels = sorted({args.low, *(int(c) for c in args.levels.split(","))})
        per_session = sum(len(s) + 1 for s in SCRIPTS.values()) / len(SCRIPTS)
        say(f"ussd_kannel: database={args.database} seconds={args.seconds} "
            f"rounds={args.rounds} scripts={len(SCRIPTS)} (avg {per_session:.1f} "
            f"hops/session) load={load_average()}")
        for path in PATHS:  # warm-up: imports, caches, Kannel's connections
            await run_round(stack, path, concurrency=args.low, seconds=args.warmup,
                            round_no=0, numbers=numbers)
        say(HEADER)
        results: list[RoundResult] = []
        for round_no in range(1, args.rounds + 1):
            for conc in levels:
                for path in PATHS:
                    result = await run_round(stack, path, concurrency=conc,
                                             seconds=args.seconds, round_no=round_no,
                                             numbers=numbers)
                    results.append(result)
                    say(row(result))
        lines, summary = summarise(results, levels, args.low)
        for line in lines:
            say(line)
        text = log.read_text(errors="replace")
        say(f"gateway log: {sum(' ERROR ' in line for line in text.splitlines())} ERROR "
            f"line(s), {len(re.findall(r'2237[0-9]{7}', text))} phone number(s); "
            f"load={load_average()}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        OUT.mkdir(parents=True, exist_ok=True)
        base = OUT / f"ussd_kannel-{args.database}-{stamp}"
        base.with_suffix(".txt").write_text("\n".join(out_lines) + "\n")
        base.with_suffix(".json").write_text(json.dumps({
            "args": vars(args), "rounds": [asdict(r) for r in results],
            "summary": summary}, indent=2, default=str))
        print(f"written: {base.with_suffix('.txt')} and .json")
        return 0 if summary["met"] else 1
    finally:
        await asyncio.to_thread(kannel.stop)
        await operator.stop()
        stop(proc)
        if pg is not None:
            pg.drop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=10.0, help="per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per path")
    parser.add_argument("--low", type=int, default=8, help="concurrency for latency")
    parser.add_argument("--levels", default="8,32,96",
                        help="concurrent sessions, comma-separated (throughput at each)")
    parser.add_argument("--seed", type=int, default=2238)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dannaya-ussd-kannel-") as tmp:
        return asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
