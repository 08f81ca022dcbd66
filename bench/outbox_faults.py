"""Outbox sending against a faulty provider: answers that hang past the client timeout,
and a provider whose real limit is below the configured cap.

Each scenario runs on a fresh SQLite database: messages are queued with
``gateway.outbox.outbox.enqueue``, then the real ``gateway worker`` runs as a subprocess
(``GATEWAY_SEND_RATE=<cap>``, ``GATEWAY_SEND_TIMEOUT=<timeout>``) with the fake provider in
URL mode, POSTing each message to a stand-in provider on loopback (a separate process, an
asyncio HTTP/1.1 server). The stand-in records every request on arrival, the ground truth,
then, as the scenario says:

- ``clean``: answers 200 at once (the reference);
- ``hang10-reply``, ``hang10-broadcast``: holds 10 % of requests (drawn at random, seeded)
  for ``--hold`` seconds, past the client's timeout, before an answer nobody waits for any
  more; the others at once. Replies and acknowledgements whose answer is lost are never
  sent again (``unknown``); a broadcast may go out once more;
- ``limit-half``: takes at most cap/2 requests in any one-second window and refuses the
  rest with ``429`` and ``Retry-After: 1``.

Reported per scenario: requests the provider saw, answered at once (``ok``), held
(``hung``) and refused (``429``); the rate of ``ok`` answers over the run and in its steady
part (5th to 95th percentile of them) against the cap; the most requests taken in any
one-second window; messages taken twice, split into those the kind rules allow (a broadcast
whose first send hung, sent once more) and any other (must be none); final statuses; the
worker's CPU.

Goals (issue 17, item 2): ``ok`` rate at least 0.8 x the cap with 10 % of answers hanging;
at most 5 % of requests refused when the provider's limit is half the cap; nothing sent
twice outside the kind rules.

    .venv/bin/python -m bench.outbox_faults [--cap 10] [--messages 300] [--timeout 2]
        [--hold 4] [--scenarios clean,hang10-reply,hang10-broadcast,limit-half]

Results go to stdout and to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from bench.common import (
    OUT,
    REPO,
    clean_env,
    cpu_seconds,
    free_port,
    gateway,
    load_average,
    serve_until_signal,
    start,
    stop,
)
from bench.outbox_rate import TEXT, max_in_window, statuses

SCENARIOS = "clean,hang10-reply,hang10-broadcast,limit-half"
HANG_SHARE = 0.10
OK_GOAL = 0.8  # ok rate against the cap, with hangs
REFUSED_GOAL = 0.05  # share of requests refused, provider at half the cap
FINAL = {"sent", "delivered", "failed", "unknown", "expired", "cancelled"}


# --- the stand-in provider (a separate process) --------------------------------------


class Provider:
    """Answers POSTed JSON messages as the scenario says (``GET /config?...``: ``hang``
    share, ``hold`` seconds, ``limit`` per second, ``seed``; it also clears the records);
    ``GET /stats`` returns every request: id, arrival time, outcome."""

    def __init__(self) -> None:
        self.hang, self.hold, self.limit = 0.0, 0.0, 0.0
        self.random = random.Random(1)
        self.taken: deque[float] = deque()
        self.records: list[tuple[int, float, str]] = []

    def configure(self, query: dict[str, list[str]]) -> None:
        self.hang = float(query.get("hang", ["0"])[0])
        self.hold = float(query.get("hold", ["0"])[0])
        self.limit = float(query.get("limit", ["0"])[0])
        self.random = random.Random(int(query.get("seed", ["1"])[0]))
        self.taken.clear()
        self.records = []

    def outcome(self, now: float) -> str:
        if self.limit:
            while self.taken and now - self.taken[0] >= 1.0:
                self.taken.popleft()
            if len(self.taken) >= self.limit:
                return "refused"
            self.taken.append(now)
        if self.hang and self.random.random() < self.hang:
            return "hung"
        return "ok"

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
                status, extra, payload = b"200 OK", b"", b"OK"
                if method == "POST":
                    now = time.monotonic()
                    outcome = self.outcome(now)
                    self.records.append((int(json.loads(body)["id"]), now, outcome))
                    if outcome == "hung":
                        await asyncio.sleep(self.hold)  # the client has given up by then
                    elif outcome == "refused":
                        status, extra, payload = (b"429 Too Many Requests",
                                                  b"Retry-After: 1\r\n", b"slow down")
                elif target.startswith("/config"):
                    self.configure(parse_qs(urlsplit(target).query))
                elif target.startswith("/stats"):
                    payload = json.dumps(self.records).encode()
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\n"
                             + extra + b"Content-Length: " + str(len(payload)).encode()
                             + b"\r\n\r\n" + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve(self, port: int) -> None:
        await serve_until_signal(self.handle, port)


# --- one scenario --------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    kind: str
    hang: float = 0.0
    limit_share: float = 0.0  # the provider's limit, as a share of the cap


def scenario(name: str) -> Scenario:
    return {
        "clean": Scenario("clean", "broadcast"),
        "hang10-reply": Scenario("hang10-reply", "reply", hang=HANG_SHARE),
        "hang10-broadcast": Scenario("hang10-broadcast", "broadcast", hang=HANG_SHARE),
        "limit-half": Scenario("limit-half", "broadcast", limit_share=0.5),
    }[name]


@dataclass
class Result:
    scenario: str
    kind: str
    cap: float
    messages: int
    requests: int
    ok: int
    hung: int
    refused: int
    refused_share: float
    ok_rate: float  # ok answers per second, first request to last ok
    ok_ratio: float
    steady_ok_rate: float  # between the 5th and 95th percentile of ok answers
    steady_ok_ratio: float
    max_1s: int  # most requests the provider took (not refused) in any second
    taken_twice: int
    twice_allowed: int  # broadcasts whose first send hung, sent once more
    twice_outside_rules: int
    not_taken: int  # messages the provider never took
    worker_cpu: float  # share of one core, first to last request
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)

    def goals(self, scenario: Scenario) -> list[tuple[str, bool]]:
        goals = [("nothing twice outside the kind rules", self.twice_outside_rules == 0)]
        if scenario.hang:
            goals.append((f"ok rate >= {OK_GOAL} x cap", self.steady_ok_ratio >= OK_GOAL))
        if scenario.limit_share:
            goals.append((f"refused <= {REFUSED_GOAL:.0%}", self.refused_share <= REFUSED_GOAL))
        if not scenario.hang and not scenario.limit_share:
            goals.append(("everything sent", self.statuses.get("sent", 0) == self.messages))
        return goals


def enqueue(url: str, work: Path, count: int, kind: str) -> None:
    from gateway.outbox import outbox
    from gateway.runtime import build_runtime
    from gateway.settings import Settings
    from gateway.store.models import utcnow

    settings = Settings(_env_file=None, database_url=url, key_file=work / "gateway.keys",
                        content_dir=REPO)
    logging.getLogger("gateway.privacy.keys").setLevel(logging.ERROR)
    rt = build_runtime(settings)
    try:
        with rt.db.transaction() as conn:
            now = utcnow()
            for n in range(count):
                e164 = f"+2237{n:07d}"
                outbox.enqueue(conn, keys=rt.keys, policy=rt.outbox_policy,
                               pseudonym=rt.keys.pseudonym(e164), e164=e164, text=TEXT,
                               kind=kind, dedupe_key=f"bench:{kind}:{n}", now=now)
    finally:
        rt.db.dispose()


def rate(times: Sequence[float]) -> tuple[float, float]:
    """(overall, steady) events per second."""
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan"), float("nan")
    overall = (len(times) - 1) / (times[-1] - times[0])
    lo, hi = int(len(times) * 0.05), int(len(times) * 0.95) - 1
    steady = (hi - lo) / (times[hi] - times[lo]) if hi > lo and times[hi] > times[lo] \
        else float("nan")
    return overall, steady


def run_once(args: argparse.Namespace, work: Path, provider_url: str,
             sc: Scenario) -> Result:
    url = f"sqlite:///{work / f'{sc.name}.db'}"
    env = clean_env(GATEWAY_DATABASE_URL=url, GATEWAY_KEY_FILE=str(work / "gateway.keys"),
                    GATEWAY_CONTENT_DIR=str(REPO), GATEWAY_FAKE_SMSC_URL=provider_url,
                    GATEWAY_SEND_RATE=f"{args.cap:g}", GATEWAY_SEND_TIMEOUT=f"{args.timeout:g}")
    enqueue(url, work, args.messages, sc.kind)
    limit = sc.limit_share * args.cap
    httpx.get(f"{provider_url}config", timeout=10, params={
        "hang": sc.hang, "hold": args.hold, "limit": limit, "seed": 1})
    log = work / f"worker-{sc.name}.log"
    worker = gateway(["worker"], env=env, cwd=work, log=log)
    started = time.monotonic()
    cpu0 = cpu_seconds(worker.pid)
    deadline = started + args.messages / args.cap * 4 + 60
    final: dict[int, str] = {}
    while time.monotonic() < deadline:
        time.sleep(0.5)
        final = statuses(url)
        if final and all(s in FINAL for s in final.values()):
            break
        if worker.poll() is not None:
            print(f"  {sc.name}: the worker exited ({worker.returncode})", flush=True)
            break
    else:
        print(f"  {sc.name}: not finished by the deadline", flush=True)
    cpu = cpu_seconds(worker.pid) - cpu0 if worker.poll() is None else float("nan")
    stop(worker)
    final = statuses(url)
    records = [(int(i), float(t), str(o)) for i, t, o in
               httpx.get(f"{provider_url}stats", timeout=30).json()]
    ok_times = sorted(t for _, t, o in records if o == "ok")
    taken = [(i, t, o) for i, t, o in records if o != "refused"]
    counts = Counter(o for _, _, o in records)
    overall, steady = rate(ok_times)
    if ok_times and records:  # from the first request, whatever it got
        first = min(t for _, t, _ in records)
        overall = len(ok_times) / (ok_times[-1] - first) if ok_times[-1] > first else overall
    per_id: dict[int, list[str]] = {}
    for i, _, o in sorted(taken, key=lambda r: r[1]):
        per_id.setdefault(i, []).append(o)
    twice = {i: seen for i, seen in per_id.items() if len(seen) > 1}
    allowed = {i for i, seen in twice.items()
               if sc.kind == "broadcast" and len(seen) == 2 and seen[0] == "hung"}
    span = max(t for _, t, _ in records) - min(t for _, t, _ in records) if records else 0.0
    return Result(
        scenario=sc.name, kind=sc.kind, cap=args.cap, messages=args.messages,
        requests=len(records), ok=counts["ok"], hung=counts["hung"],
        refused=counts["refused"],
        refused_share=counts["refused"] / len(records) if records else float("nan"),
        ok_rate=overall, ok_ratio=overall / args.cap, steady_ok_rate=steady,
        steady_ok_ratio=steady / args.cap, max_1s=max_in_window([t for _, t, _ in taken]),
        taken_twice=len(twice), twice_allowed=len(allowed),
        twice_outside_rules=len(twice) - len(allowed),
        not_taken=args.messages - len(per_id), worker_cpu=cpu / span if span else float("nan"),
        seconds=time.monotonic() - started, statuses=dict(Counter(final.values())),
    )


HEADER = (f"{'scenario':<17} {'kind':<9} {'cap':>4} {'msgs':>5} {'reqs':>5} {'ok':>5} "
          f"{'hung':>4} {'429':>4} {'429%':>5} {'ok/s':>6} {'ratio':>6} {'steady':>6} "
          f"{'ratio':>6} {'max1s':>5} {'twice':>5} {'rule':>4} {'other':>5} {'cpu':>4} "
          f"{'secs':>5} statuses")


def row(r: Result) -> str:
    return (f"{r.scenario:<17} {r.kind:<9} {r.cap:>4g} {r.messages:>5} {r.requests:>5} "
            f"{r.ok:>5} {r.hung:>4} {r.refused:>4} {r.refused_share:>5.1%} {r.ok_rate:>6.2f} "
            f"{r.ok_ratio:>6.3f} {r.steady_ok_rate:>6.2f} {r.steady_ok_ratio:>6.3f} "
            f"{r.max_1s:>5} {r.taken_twice:>5} {r.twice_allowed:>4} "
            f"{r.twice_outside_rules:>5} {r.worker_cpu:>4.0%} {r.seconds:>5.0f} "
            + ",".join(f"{k}={v}" for k, v in sorted(r.statuses.items())))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cap", type=float, default=10.0, help="GATEWAY_SEND_RATE")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=2.0, help="GATEWAY_SEND_TIMEOUT")
    parser.add_argument("--hold", type=float, default=None,
                        help="seconds a hung answer is held (default: timeout + 2)")
    parser.add_argument("--scenarios", default=SCENARIOS)
    parser.add_argument("--provider", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.provider is not None:
        asyncio.run(Provider().serve(args.provider))
        return 0
    if args.hold is None:
        args.hold = args.timeout + 2.0
    plan = [scenario(name) for name in args.scenarios.split(",")]
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    results: list[tuple[Scenario, Result]] = []
    with tempfile.TemporaryDirectory(prefix="dannaya-outbox-faults-") as tmp:
        work = Path(tmp)
        port = free_port()
        provider: subprocess.Popen[bytes] = start(
            ["-m", "bench.outbox_faults", "--provider", str(port)], env=clean_env(), cwd=REPO,
            log=work / "provider.log")
        provider_url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(100):
                try:
                    httpx.get(provider_url + "stats", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            say(f"outbox_faults: cap {args.cap:g}/s, {args.messages} messages per scenario, "
                f"client timeout {args.timeout:g} s, hung answers held {args.hold:g} s, "
                f"load={load_average()}")
            say(HEADER)
            for sc in plan:
                result = run_once(args, work, provider_url, sc)
                results.append((sc, result))
                say(row(result))
        finally:
            stop(provider)
    say("")
    ok = True
    for sc, r in results:
        goals = r.goals(sc)
        ok = ok and all(met for _, met in goals)
        say(f"{r.scenario}: ok {r.steady_ok_rate:.2f}/s steady = {r.steady_ok_ratio:.2f} x cap "
            f"({r.ok_rate:.2f}/s overall), refused {r.refused_share:.1%} of {r.requests} "
            f"requests, taken twice {r.taken_twice} ({r.twice_allowed} by the broadcast rule, "
            f"{r.twice_outside_rules} otherwise); "
            + "; ".join(f"{name}: {'MET' if met else 'MISSED'}" for name, met in goals))
    say(f"load={load_average()}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    OUT.mkdir(parents=True, exist_ok=True)
    base = OUT / f"outbox_faults-{stamp}"
    base.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    base.with_suffix(".json").write_text(json.dumps(
        {"args": vars(args), "runs": [asdict(r) for _, r in results]}, indent=2, default=str))
    print(f"written: {base.with_suffix('.txt')} and .json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
