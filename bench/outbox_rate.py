"""Outbox dispatch against a rate cap, counted at the receiving side.

For each (cap, messages) of the plan, on a fresh database (an SQLite file in a temporary
folder by default; ``--database postgres``: a fresh PostgreSQL database on 127.0.0.1:5432
brought up by ``gateway migrate``):

1. enqueue the messages with ``gateway.outbox.outbox.enqueue`` (broadcasts to distinct numbers,
   in a few transactions) and time it;
2. run the real ``gateway worker`` as a subprocess with ``GATEWAY_SEND_RATE=<cap>`` and the
   fake provider in URL mode (``GATEWAY_FAKE_SMSC_URL``), which POSTs each message as JSON to
   a receiver on loopback (a separate process, an asyncio HTTP/1.1 server that records each
   id and its arrival time);
3. when every message has arrived (or progress stops), stop the worker and compare.

Reported per run: enqueue time; the worker's CPU time per message (the receiver answers at
once, in its own process, so this is the gateway's side only) and, subtracting what the
fake provider's HTTP client alone costs per message (measured first, in this process, with
the same batches of concurrent sends), an estimate of the outbox's own overhead; the
achieved rate against the cap, measured at the receiver (target: within 5%); messages lost
or received twice (target: none) and the final statuses in the database.

    .venv/bin/python -m bench.outbox_rate [--database sqlite|postgres] [--quick]
        [--plan 500:100000,10:2000,50:2000,100:2000]

Results go to stdout and to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
    run_gateway,
    serve_until_signal,
    start,
    stop,
)

FULL_PLAN = "500:100000,10:2000,50:2000,100:2000"
QUICK_PLAN = "500:3000,10:200,50:500,100:500"
TARGET_RATE = 0.05  # achieved rate within 5% of the cap
ENQUEUE_BATCH = 5000  # messages per transaction
TEXT = ("Dannaya: la radio de votre commune parle de securite ce soir a 20h. "
        "Appelez *123# pour donner votre avis, c'est anonyme.")


# --- the receiver (a separate process) -----------------------------------------------


class Receiver:
    """A stand-in SMSC: one asyncio HTTP/1.1 server, keep-alive, that records the id of
    every JSON message POSTed to it and when it arrived; GET /stats returns them."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.times: list[float] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if method == "POST":
                    message = json.loads(body)
                    self.times.append(time.monotonic())
                    self.ids.append(int(message["id"]))
                    payload, ctype = b"OK", b"text/plain"
                elif target.startswith("/reset"):
                    self.ids, self.times = [], []
                    payload, ctype = b"{}", b"application/json"
                elif target.startswith("/count"):
                    payload, ctype = str(len(self.ids)).encode(), b"text/plain"
                else:
                    payload = json.dumps({"ids": self.ids, "times": self.times}).encode()
                    ctype = b"application/json"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype
                             + b"\r\nContent-Length: " + str(len(payload)).encode()
                             + b"\r\n\r\n" + payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve(self, port: int) -> None:
        await serve_until_signal(self.handle, port)


# --- one run -------------------------------------------------------------------------


@dataclass
class RunResult:
    cap: float
    messages: int
    enqueue_s: float
    enqueue_us_per_msg: float
    dispatch_s: float
    received: int
    distinct: int
    duplicates: int  # received more than once
    missing: int  # recorded as sent but never received: lost
    unsent: int  # still waiting when the run stopped (deadline or stall)
    rate: float  # (received - 1) / (last - first arrival)
    rate_ratio: float  # rate / cap
    steady_rate: float  # between the 5th and 95th percentile of arrivals
    max_1s: int  # most messages in any one-second window
    worker_cpu: float  # share of one core while dispatching
    worker_us_per_msg: float
    outbox_us_per_msg: float  # worker_us_per_msg less the fake sender's own cost
    receiver_cpu: float
    statuses: dict[str, int] = field(default_factory=dict)
    worker_errors: int = 0

    @property
    def rate_ok(self) -> bool:
        return abs(self.rate_ratio - 1) <= TARGET_RATE

    @property
    def delivery_ok(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.unsent == 0 \
            and self.distinct == self.messages


def sender_cost(receiver_url: str, count: int = 3000, batch: int = 50) -> float:
    """CPU µs per message of the fake provider's sender alone (its HTTP client), sending as
    the worker does: a batch of concurrent sends at a time."""
    from gateway.channels.base import OutboundSms
    from gateway.channels.fake import FakeSender

    async def run() -> float:
        sender = FakeSender(url=receiver_url)
        try:
            async def batch_of(start: int) -> None:
                await asyncio.gather(*(sender.send(OutboundSms(
                    i, f"+2237{i:07d}", TEXT, "gsm7")) for i in range(start, start + batch)))

            await batch_of(0)  # connections
            began = time.process_time()
            for start in range(batch, count + batch, batch):
                await batch_of(start)
            return (time.process_time() - began) / count * 1e6
        finally:
            await sender.close()

    return asyncio.run(run())


def enqueue(url: str, work: Path, count: int) -> float:
    """Queue ``count`` broadcasts in transactions of ENQUEUE_BATCH; the seconds it took."""
    from gateway.outbox import outbox
    from gateway.runtime import build_runtime
    from gateway.settings import Settings
    from gateway.store.models import utcnow

    settings = Settings(_env_file=None, database_url=url, key_file=work / "gateway.keys",
                        content_dir=REPO)
    logging.getLogger("gateway.privacy.keys").setLevel(logging.ERROR)  # "created a new key file"
    rt = build_runtime(settings)
    try:
        started = time.perf_counter()
        done = 0
        while done < count:
            with rt.db.transaction() as conn:
                now = utcnow()
                for n in range(done, min(count, done + ENQUEUE_BATCH)):
                    e164 = f"+2237{n:07d}"
                    outbox.enqueue(conn, keys=rt.keys, policy=rt.outbox_policy,
                                   pseudonym=rt.keys.pseudonym(e164), e164=e164, text=TEXT,
                                   kind="broadcast", dedupe_key=f"bench:{n}", now=now)
            done = min(count, done + ENQUEUE_BATCH)
        return time.perf_counter() - started
    finally:
        rt.db.dispose()


def statuses(url: str) -> dict[int, str]:
    """Each queued message's final status in the database, by id."""
    from sqlalchemy import create_engine, select

    from gateway.outbox.outbox import outbox

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {int(i): str(s) for i, s in conn.execute(select(outbox.c.id,
                                                                     outbox.c.status))}
    finally:
        engine.dispose()


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run_once(args: argparse.Namespace, work: Path, receiver: subprocess.Popen[bytes],
             receiver_url: str, cap: float, count: int, sender_us: float) -> RunResult:
    pg: Postgres | None = None
    if args.database == "postgres":
        pg = Postgres()
        url = pg.create()
    else:
        url = f"sqlite:///{work / f'outbox-{cap:g}.db'}"
    try:
        env = clean_env(GATEWAY_DATABASE_URL=url, GATEWAY_KEY_FILE=str(work / "gateway.keys"),
                        GATEWAY_CONTENT_DIR=str(REPO), GATEWAY_FAKE_SMSC_URL=receiver_url,
                        GATEWAY_SEND_RATE=f"{cap:g}", GATEWAY_QUIET_HOURS="")
        if pg is not None:
            run_gateway(["migrate"], env=env, cwd=work)
        enqueue_s = enqueue(url, work, count)
        httpx.get(receiver_url + "reset", timeout=10)
        log = work / f"worker-{cap:g}.log"
        log.write_bytes(b"")
        r_cpu0 = cpu_seconds(receiver.pid)
        worker = gateway(["worker"], env=env, cwd=work, log=log)
        started = time.monotonic()
        deadline = started + count / cap * 1.5 + 60
        w_cpu0: float | None = None
        first_count = 0
        received, last_progress, last_count = 0, time.monotonic(), -1
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < deadline:
                received = int(client.get(receiver_url + "count").text)
                if w_cpu0 is None and received:
                    w_cpu0, first_count = cpu_seconds(worker.pid), received  # startup excluded
                if received >= count:
                    break
                if received != last_count:
                    last_count, last_progress = received, time.monotonic()
                elif time.monotonic() - last_progress > 30:
                    print(f"  cap {cap:g}: no progress for 30 s at {received}/{count}",
                          flush=True)
                    break
                if worker.poll() is not None:
                    print(f"  cap {cap:g}: the worker exited ({worker.returncode})", flush=True)
                    break
                time.sleep(0.05 if w_cpu0 is None else 0.25)
            time.sleep(1.0)  # anything still in flight (a duplicate would show now)
            w_cpu1 = cpu_seconds(worker.pid) if worker.poll() is None else float("nan")
            dispatch_s = time.monotonic() - started
            stop(worker)
            data = client.get(receiver_url + "stats").json()
        r_cpu = cpu_seconds(receiver.pid) - r_cpu0
        ids: list[int] = data["ids"]
        times: list[float] = data["times"]
        seen = Counter(ids)
        final = statuses(url)
        sent = {i for i, status in final.items() if status in ("sent", "delivered")}
        duplicates = sum(n - 1 for n in seen.values() if n > 1)
        span = times[-1] - times[0] if len(times) > 1 else float("nan")
        rate = (len(times) - 1) / span if len(times) > 1 and span > 0 else float("nan")
        lo, hi = int(len(times) * 0.05), int(len(times) * 0.95) - 1
        steady = ((hi - lo) / (times[hi] - times[lo])
                  if hi > lo and times[hi] > times[lo] else float("nan"))
        sent_after_first = max(1, len(ids) - first_count)
        busy = times[-1] - times[0] if len(times) > 1 else dispatch_s
        w_cpu = (w_cpu1 - w_cpu0) if w_cpu0 is not None else float("nan")
        errors = sum(1 for line in log.read_text(errors="replace").splitlines()
                     if " ERROR " in line)
        return RunResult(
            cap=cap, messages=count, enqueue_s=enqueue_s,
            enqueue_us_per_msg=enqueue_s / count * 1e6, dispatch_s=dispatch_s,
            received=len(ids), distinct=len(seen), duplicates=duplicates,
            missing=len(sent - set(seen)), unsent=count - len(sent), rate=rate,
            rate_ratio=rate / cap,
            steady_rate=steady, max_1s=max_in_window(times),
            worker_cpu=w_cpu / busy if busy > 0 else float("nan"),
            statuses=dict(Counter(final.values())),
            worker_us_per_msg=w_cpu / sent_after_first * 1e6,
            outbox_us_per_msg=w_cpu / sent_after_first * 1e6 - sender_us,
            receiver_cpu=r_cpu / dispatch_s, worker_errors=errors,
        )
    finally:
        if pg is not None:
            pg.drop()


HEADER = (f"{'cap/s':>6} {'msgs':>7} {'enqueue':>9} {'µs/enq':>7} {'rate/s':>8} {'ratio':>6} "
          f"{'steady':>7} {'max1s':>6} {'wrk cpu':>7} {'µs/msg':>7} {'-sender':>7} "
          f"{'rcv cpu':>7} {'recv':>7} {'dup':>4} {'lost':>5} {'unsent':>6} statuses")


def row(r: RunResult) -> str:
    return (f"{r.cap:>6g} {r.messages:>7} {r.enqueue_s:>8.2f}s {r.enqueue_us_per_msg:>7.0f} "
            f"{r.rate:>8.2f} {r.rate_ratio:>6.3f} {r.steady_rate:>7.2f} {r.max_1s:>6} "
            f"{r.worker_cpu:>6.0%} {r.worker_us_per_msg:>7.0f} {r.outbox_us_per_msg:>7.0f} "
            f"{r.receiver_cpu:>6.0%} "
            f"{r.received:>7} {r.duplicates:>4} {r.missing:>5} {r.unsent:>6} "
            + ",".join(f"{k}={v}" for k, v in sorted(r.statuses.items()))
            + (f" worker-errors={r.worker_errors}" if r.worker_errors else ""))


def parse_plan(text: str) -> list[tuple[float, int]]:
    plan = []
    for item in text.split(","):
        cap, _, count = item.partition(":")
        plan.append((float(cap), int(count)))
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help=f"the plan {QUICK_PLAN}")
    parser.add_argument("--plan", default=None,
                        help=f"cap:messages,... (default {FULL_PLAN})")
    parser.add_argument("--receiver", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver is not None:
        asyncio.run(Receiver().serve(args.receiver))
        return 0
    plan = parse_plan(args.plan or (QUICK_PLAN if args.quick else FULL_PLAN))
    out_lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        out_lines.append(line)

    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="dannaya-outbox-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        receiver = start(["-m", "bench.outbox_rate", "--receiver", str(port)], env=clean_env(),
                         cwd=REPO, log=work / "receiver.log")
        receiver_url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(100):
                try:
                    httpx.get(receiver_url + "count", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            say(f"outbox_rate: database={args.database} plan="
                f"{','.join(f'{c:g}:{n}' for c, n in plan)} load={load_average()}")
            sender_us = sender_cost(receiver_url)
            httpx.get(receiver_url + "reset", timeout=10)
            say(f"fake provider's sender alone (aiohttp, 50 concurrent sends a batch): "
                f"{sender_us:.0f} µs CPU per message")
            say(HEADER)
            for cap, count in plan:
                result = run_once(args, work, receiver, receiver_url, cap, count, sender_us)
                results.append(result)
                say(row(result))
        finally:
            stop(receiver)
    say("")
    for r in results:
        say(f"cap {r.cap:g}/s, {r.messages} messages: rate {r.rate:.2f}/s = {r.rate_ratio:.3f} "
            f"of the cap ({'MET' if r.rate_ok else 'MISSED'}: within {TARGET_RATE:.0%}); "
            f"lost {r.missing}, twice {r.duplicates}, not sent {r.unsent} "
            f"({'MET' if r.delivery_ok else 'MISSED'}); worker {r.worker_us_per_msg:.0f} µs "
            f"CPU per message, ~{r.outbox_us_per_msg:.0f} without the sender's HTTP client; "
            f"enqueue {r.enqueue_us_per_msg:.0f} µs per message")
    say(f"load={load_average()}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    OUT.mkdir(parents=True, exist_ok=True)
    base = OUT / f"outbox_rate-{args.database}-{stamp}"
    base.with_suffix(".txt").write_text("\n".join(out_lines) + "\n")
    base.with_suffix(".json").write_text(json.dumps(
        {"args": vars(args), "runs": [asdict(r) for r in results]}, indent=2, default=str))
    print(f"written: {base.with_suffix('.txt')} and .json")
    return 0 if all(r.rate_ok and r.delivery_ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
