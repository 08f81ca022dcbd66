"""A broadcast to 100,000 residents: preview, queueing, memory, USSD latency, send rate.

On a fresh database (an SQLite file in a temporary folder by default; ``--database
postgres``: a fresh PostgreSQL database on 127.0.0.1:5432 brought up by ``gateway
migrate``):

1. seed the contacts directly (subscribed, a number in the vault, spread over the first
   ``--communes`` communes of flows/lists/communes.yml, 60% French, 35% Bambara, 5% with no
   language), in large transactions;
2. time ``broadcasts.preview`` for an audience of all those communes (in this process, on
   the same database: the API's own call without the HTTP around it);
3. start the gateway exactly as ``gateway serve`` runs it (worker in-process, fake provider
   in URL mode POSTing each message to a loopback receiver, ``GATEWAY_SEND_RATE=--rate``,
   no quiet hours), and drive USSD sessions at a steady ``--ussd-rate`` hops per second
   (8 users, real flows walked to their END, a new number per session) while idle;
4. create the broadcast (``broadcasts.create``; the service's worker picks it up within a
   second) and keep the same USSD load running until every recipient is queued: the time
   to queue them all, and USSD latency meanwhile (an operator watches its progress page
   meanwhile, whose counts are asked every 3 s; the benchmark's own check reads only the
   broadcast's row);
5. keep the load on for ``--send-window`` seconds more while the worker sends: the send
   rate counted at the receiver, against the cap;
6. cancel the broadcast (as an operator would: the time it takes is reported), wait until
   the receiver counts nothing more, and measure idle USSD latency once more: "idle" in the
   ratio below is both idle phases' hops together, before and after (this machine is shared
   and its other load drifts over the minutes of a run: one idle phase before the queueing
   compared a quiet minute with a busy one as often as the queueing with the idle; each
   phase's own ratio is printed too);
7. the service's peak memory: the highest total Pss of ``gateway serve`` and its child
   processes (on PostgreSQL the USSD database process and the outbox worker), sampled every
   half second (each process's VmHWM is shown too; it counts shared pages in each).

    .venv/bin/python -m bench.broadcast [--database sqlite|postgres] [--contacts 100000]

Targets: preview < 1 s; queueing < 30 s; peak memory < 250 MB; USSD p99 while queueing
<= 2x idle (before and after); send rate 0.95-1.0 of the cap. Results go to stdout and
to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import select

from bench.common import (
    OUT,
    REPO,
    Postgres,
    clean_env,
    cpu_seconds,
    free_port,
    gateway,
    load_average,
    percentile,
    run_gateway,
    start,
    stop,
    wait_http,
)
from bench.ussd_hops import SCRIPTS, Numbers, RawClient
from gateway.operators.dashboard.broadcasts import POLL_SECONDS

TARGET_PREVIEW_S = 1.0
TARGET_QUEUE_S = 30.0
TARGET_MEMORY_MB = 250.0
TARGET_P99_RATIO = 2.0
TARGET_RATE = (0.95, 1.0)
USERS = 8
WARM_UP_SECONDS = 5.0
MEMORY_EVERY_S = 0.5
PURGE_DONE = "worker: retention purge done"  # the gateway's log, at INFO
SEED_BATCH = 5_000
FR = ("Réunion d'information sur la sécurité à la mairie samedi à 10h. Entrée libre, "
      "venez nombreux. Pour ne plus recevoir ces messages, envoyez STOP.")
BM = ("Lajɛlen bɛ kɛ meri la sibiri sɔgɔma waati 10. Bɛɛ ka na. Ni i t'a fɛ ka cikanw "
      "sɔrɔ tugun, STOP ci.")


# --- seeding ---------------------------------------------------------------------------


def settings_for(url: str, work: Path) -> Any:
    from gateway.settings import Settings

    return Settings(_env_file=None, database_url=url, key_file=work / "gateway.keys",
                    content_dir=REPO, quiet_hours="")


def seed(url: str, work: Path, contacts: int, communes: Sequence[str]) -> float:
    """Insert ``contacts`` subscribed contacts with sealed numbers; the seconds it took."""
    from gateway.runtime import build_runtime
    from gateway.store import queries
    from gateway.store.models import utcnow

    logging.getLogger("gateway.privacy.keys").setLevel(logging.ERROR)  # "created a new key file"
    rt = build_runtime(settings_for(url, work))
    rng = random.Random(7)
    started = time.perf_counter()
    try:
        now = utcnow()
        for first in range(0, contacts, SEED_BATCH):
            people, numbers = [], []
            for n in range(first, min(contacts, first + SEED_BATCH)):
                e164 = f"+2236{n:07d}"  # 6x: never one the USSD load dials (7x)
                pseudonym = rt.keys.pseudonym(e164)
                draw = rng.random()
                language = "fr" if draw < 0.60 else "bm" if draw < 0.95 else None
                wrapped = rt.keys.new_data_key(pseudonym=pseudonym)  # as subscribing does
                people.append({"pseudonym": pseudonym, "pseudonym_version": 1,
                               "language": language, "subscribed": True,
                               "area": communes[n % len(communes)], "stopped": False,
                               "data_key": wrapped, "created_at": now, "last_seen_at": now})
                numbers.append({"pseudonym": pseudonym, "updated_at": now,
                                "number": rt.keys.seal_number(wrapped, e164,
                                                              pseudonym=pseudonym)})
            with rt.db.transaction() as conn:
                conn.execute(queries.contacts.insert(), people)
                conn.execute(queries.vault.insert(), numbers)
        if not rt.db.sqlite:
            with rt.db.transaction() as conn:
                conn.exec_driver_sql("ANALYZE")
        return time.perf_counter() - started
    finally:
        rt.db.dispose()


def first_communes(count: int) -> list[str]:
    from gateway.content.catalogs import load

    content, _ = load(REPO)
    ids = [c.id for cercle in content.communes.cercles for c in cercle.communes]
    if len(ids) < count:
        raise SystemExit(f"only {len(ids)} communes in flows/lists/communes.yml")
    return ids[:count]


# --- the broadcast, in this process ------------------------------------------------------


class Operator:
    """The domain calls the API makes, on the benchmark's database."""

    def __init__(self, url: str, work: Path, communes: Sequence[str]) -> None:
        from gateway.operators import broadcasts
        from gateway.operators.access import Principal, Role
        from gateway.runtime import build_runtime

        self.broadcasts = broadcasts
        self.rt = build_runtime(settings_for(url, work))
        self.rules = broadcasts.Rules.of(self.rt.settings, self.rt.engine.content)
        self.who = Principal(0, "bench", Role.admin)
        self.request = broadcasts.BroadcastRequest.model_validate({
            "messages": {"fr": FR, "bm": BM}, "audience": {"communes": list(communes)},
            "title": "bench"})

    def preview(self) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        with self.rt.db.transaction() as conn:
            found = self.broadcasts.preview(conn, who=self.who, rules=self.rules,
                                            request=self.request, now=datetime.now(UTC))
        return time.perf_counter() - started, found.as_json()

    def create(self) -> int:
        with self.rt.db.transaction() as conn:
            made, _ = self.broadcasts.create(conn, who=self.who, rules=self.rules,
                                             request=self.request, idempotency_key="bench",
                                             now=datetime.now(UTC))
        return made.id

    def progress(self, broadcast_id: int) -> tuple[int, bool, dict[str, int]]:
        """What the progress page shows (it asks every ``POLL_SECONDS``): the counts
        read every outbox row of the broadcast."""
        with self.rt.db.reading() as conn:  # takes no write lock the service waits for
            found = self.broadcasts.get(conn, who=self.who, broadcast_id=broadcast_id)
        return found.expanded, found.expanded_at is not None, found.counts.as_json()

    def queued_all(self, broadcast_id: int) -> bool:
        """Whether every recipient is queued: the broadcast's own row, nothing more (the
        instrument's check must not load the database it measures)."""
        b = self.broadcasts.broadcasts.c
        with self.rt.db.reading() as conn:
            expanded_at = conn.execute(select(b.expanded_at).where(
                b.id == broadcast_id)).scalar_one()
        return expanded_at is not None

    def cancel(self, broadcast_id: int) -> None:
        with self.rt.db.transaction() as conn:
            self.broadcasts.cancel(conn, who=self.who, broadcast_id=broadcast_id,
                                   now=datetime.now(UTC))

    def close(self) -> None:
        self.rt.db.dispose()


# --- USSD load ---------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    hops: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    errors: dict[str, int] = field(default_factory=dict)
    server_cpu: float = 0.0  # share of one core


async def ussd_load(port: int, rate: float, numbers: Numbers, done: Callable[[], bool],
                    pid: int, name: str, samples: list[float] | None = None) -> Phase:
    """USERS users, together ``rate`` hops per second on a fixed schedule, walking the
    real flows, until ``done()``; hop latencies (each one, in ms, added to ``samples``)."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    interval = USERS / rate
    scripts = list(SCRIPTS.values())
    order = itertools.count()

    async def user(offset: float) -> None:
        client = RawClient("127.0.0.1", port)
        next_at = time.perf_counter() + offset
        try:
            while not done():
                script = scripts[next(order) % len(scripts)]
                session_id, phone = f"ATUid_{uuid.uuid4().hex}", numbers.new()
                for hop in range(len(script) + 1):
                    wait = next_at - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    next_at = max(next_at + interval, time.perf_counter() - interval)
                    if done():
                        return
                    body = urlencode({"sessionId": session_id, "serviceCode": "*123#",
                                      "phoneNumber": phone, "networkCode": "61002",
                                      "text": "*".join(script[:hop])}).encode()
                    began = time.perf_counter()
                    try:
                        status, _, text = await asyncio.wait_for(client.post(body), 30)
                    except Exception as exc:
                        errors[f"exception:{exc.__class__.__name__}"] += 1
                        await client.close()
                        break
                    latencies.append(time.perf_counter() - began)
                    want = "END " if hop == len(script) else "CON "
                    if status != 200 or not text.startswith(want):
                        errors[f"status:{status}" if status != 200 else "flow"] += 1
                        break
        finally:
            await client.close()

    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(user(i * interval / USERS) for i in range(USERS)))
    wall = time.perf_counter() - wall0
    ms = [x * 1000 for x in latencies]
    if samples is not None:
        samples.extend(ms)
    return Phase(name=name, seconds=wall, hops=len(ms), p50_ms=percentile(ms, 50),
                 p99_ms=percentile(ms, 99), max_ms=max(ms) if ms else float("nan"),
                 errors=dict(errors), server_cpu=(cpu_seconds(pid) - cpu0) / wall)


async def wait_for_line(log: Path, text: str, *, timeout: float) -> float:
    """Wait until ``text`` appears in ``log``: the seconds it took."""
    started = time.perf_counter()
    while text not in log.read_text(errors="replace"):
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"no {text!r} in {log} within {timeout:g} s")
        await asyncio.sleep(0.2)
    return time.perf_counter() - started


def received(receiver_url: str) -> int:
    """How many messages the loopback receiver has counted."""
    return int(httpx.get(receiver_url + "count", timeout=10).text)


async def settled(receiver_url: str, quiet_s: float = 2.0) -> None:
    """Wait until the receiver has counted nothing new for ``quiet_s`` seconds (after a
    cancel: the sends already handed over finish)."""
    last, since = -1, time.perf_counter()
    while time.perf_counter() - since < quiet_s:
        count = await asyncio.to_thread(received, receiver_url)
        if count != last:
            last, since = count, time.perf_counter()
        await asyncio.sleep(0.2)


def until(deadline: float) -> Callable[[], bool]:
    return lambda: time.perf_counter() >= deadline


# --- memory ------------------------------------------------------------------------------


def _tree_mb(pid: int, *, file: str, field: str) -> dict[str, float]:
    """One figure (``field`` of /proc/<pid>/``file``, in kB) of a process and of its
    children, in MB, labelled "service" and "child <pid>"."""
    out: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if int(entry.name) != pid and parent != pid:
                continue
            text = (entry / file).read_text()
        except OSError:  # gone meanwhile
            continue
        for line in text.splitlines():
            if line.startswith(field):
                label = "service" if int(entry.name) == pid else f"child {entry.name}"
                out[label] = int(line.split()[1]) / 1024
    return out


def peak_memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak resident set) of a process and of its children, in MB."""
    return _tree_mb(pid, file="status", field="VmHWM:")


def pss_mb(pid: int) -> dict[str, float]:
    """Proportional set size (Pss: a page shared by n processes counts 1/n in each) of a
    process and of its children, in MB: their sum is what they take from the machine. The
    worker on PostgreSQL is a fork of the service and shares most of its pages, which
    VmHWM counts whole in each process."""
    return _tree_mb(pid, file="smaps_rollup", field="Pss:")


async def watch_pss(pid: int, peak: dict[str, float]) -> None:
    """Keep in ``peak`` the breakdown of the highest total Pss seen, every half second."""
    while True:
        now = await asyncio.to_thread(pss_mb, pid)
        if sum(now.values()) > sum(peak.values()):
            peak.clear()
            peak.update(now)
        await asyncio.sleep(MEMORY_EVERY_S)


# --- one run -----------------------------------------------------------------------------


@dataclass
class Result:
    database: str
    contacts: int
    communes: int
    seed_s: float = 0.0
    preview_s: list[float] = field(default_factory=list)
    preview: dict[str, Any] = field(default_factory=dict)
    queue_s: float = float("nan")
    queued: int = 0
    sent_while_queueing: int = 0
    send_rate: float = float("nan")
    cap: float = 0.0
    memory_mb: dict[str, float] = field(default_factory=dict)  # peak total Pss
    vmhwm_mb: dict[str, float] = field(default_factory=dict)  # each process's own peak
    phases: list[Phase] = field(default_factory=list)
    idle_p99_ms: float = float("nan")  # both idle phases' hops together
    cancel_s: float = float("nan")
    counts: dict[str, int] = field(default_factory=dict)
    log_errors: int = 0

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    @property
    def p99_ratio(self) -> float:
        return self.phase("queueing").p99_ms / self.idle_p99_ms

    @property
    def rate_ratio(self) -> float:
        return self.send_rate / self.cap

    @property
    def memory_total(self) -> float:
        return sum(self.memory_mb.values())


async def bench(args: argparse.Namespace, work: Path, say: Callable[[str], None]) -> Result:
    communes = first_communes(args.communes)
    pg: Postgres | None = None
    if args.database == "postgres":
        pg = Postgres()
        url = pg.create()
    else:
        url = f"sqlite:///{work / 'gateway.db'}"
    result = Result(args.database, args.contacts, len(communes), cap=args.rate)
    receiver_port = free_port()
    receiver = start(["-m", "bench.outbox_rate", "--receiver", str(receiver_port)],
                     env=clean_env(), cwd=REPO, log=work / "receiver.log")
    receiver_url = f"http://127.0.0.1:{receiver_port}/"
    env = clean_env(GATEWAY_DATABASE_URL=url, GATEWAY_KEY_FILE=str(work / "gateway.keys"),
                    GATEWAY_CONTENT_DIR=str(REPO), GATEWAY_FAKE_SMSC_URL=receiver_url,
                    GATEWAY_SEND_RATE=f"{args.rate:g}", GATEWAY_QUIET_HOURS="")
    server: subprocess.Popen[bytes] | None = None
    operator: Operator | None = None
    try:
        if pg is not None:
            run_gateway(["migrate"], env=env, cwd=work)
        result.seed_s = seed(url, work, args.contacts, communes)
        say(f"seeded {args.contacts} contacts over {len(communes)} communes in "
            f"{result.seed_s:.1f} s")
        operator = Operator(url, work, communes)
        for _ in range(args.previews):
            took, result.preview = operator.preview()
            result.preview_s.append(took)
        say(f"preview: {result.preview['recipients']} recipients, "
            f"{result.preview['segments']} segments "
            f"({result.preview['segments_as_written']} without transliteration); "
            f"{', '.join(f'{t * 1000:.0f}' for t in result.preview_s)} ms")

        port = free_port()
        log = work / "gateway.log"
        server = gateway(["serve", "--port", str(port)], env=env, cwd=work, log=log)
        wait_http(f"http://127.0.0.1:{port}/healthz", server, log)
        pss_peak: dict[str, float] = {}
        memory = asyncio.create_task(watch_pss(server.pid, pss_peak))
        wait_http(receiver_url + "count", receiver, work / "receiver.log")
        numbers = Numbers(seed=args.seed)
        # The worker's start-up chores (the retention purge and the stopped contacts' sweep
        # run at its start, then daily and every ten minutes) are not in the idle phase this
        # run compares with: on a slow machine the purge of 100,000 contacts outlasted a
        # fixed warm-up. Then a warm-up: imports, caches, connections.
        purged = await wait_for_line(log, PURGE_DONE, timeout=args.timeout)
        say(f"the worker's start-up purge ended {purged:.1f} s after the service answered")
        await ussd_load(port, args.ussd_rate, numbers,
                        until(time.perf_counter() + WARM_UP_SECONDS), server.pid, "warm-up")
        idle_ms: list[float] = []
        idle = await ussd_load(port, args.ussd_rate, numbers,
                               until(time.perf_counter() + args.ussd_seconds), server.pid,
                               "idle", idle_ms)
        result.phases.append(idle)

        broadcast_id = await asyncio.to_thread(operator.create)
        created = time.perf_counter()
        finished: list[float] = []
        sent_at_create = received(receiver_url)

        async def watch() -> None:
            while True:
                if await asyncio.to_thread(operator.queued_all, broadcast_id):
                    finished.append(time.perf_counter())
                    return
                if time.perf_counter() - created > args.timeout:
                    finished.append(float("nan"))
                    return
                await asyncio.sleep(0.2)

        async def viewer() -> None:  # an operator on the progress page meanwhile
            while not finished:
                await asyncio.to_thread(operator.progress, broadcast_id)
                await asyncio.sleep(POLL_SECONDS)

        watcher = asyncio.create_task(watch())
        viewing = asyncio.create_task(viewer())
        queueing = await ussd_load(port, args.ussd_rate, numbers, lambda: bool(finished),
                                   server.pid, "queueing")
        await watcher
        viewing.cancel()
        result.queue_s = finished[0] - created
        result.phases.append(queueing)
        result.queued, _, _ = operator.progress(broadcast_id)
        count0 = received(receiver_url)
        result.sent_while_queueing = count0 - sent_at_create
        window0 = time.perf_counter()
        sending = await ussd_load(port, args.ussd_rate, numbers,
                                  until(window0 + args.send_window), server.pid, "sending")
        count1 = received(receiver_url)
        result.send_rate = (count1 - count0) / (time.perf_counter() - window0)
        result.phases.append(sending)
        result.vmhwm_mb = peak_memory_mb(server.pid)
        memory.cancel()
        result.memory_mb = dict(pss_peak)
        _, _, result.counts = operator.progress(broadcast_id)
        began = time.perf_counter()
        await asyncio.to_thread(operator.cancel, broadcast_id)
        result.cancel_s = time.perf_counter() - began
        await settled(receiver_url)
        again = await ussd_load(port, args.ussd_rate, numbers,
                                until(time.perf_counter() + args.ussd_seconds), server.pid,
                                "idle again", idle_ms)
        result.phases.append(again)
        result.idle_p99_ms = percentile(idle_ms, 99)
        result.log_errors = sum(1 for line in log.read_text(errors="replace").splitlines()
                                if " ERROR " in line)
        return result
    finally:
        if operator is not None:
            operator.close()
        if server is not None:
            stop(server)
        stop(receiver)
        if pg is not None and not args.keep:
            pg.drop()


def report(r: Result, say: Callable[[str], None]) -> bool:
    say(f"{'phase':<10} {'seconds':>7} {'hops':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'srv cpu':>7} errors")
    for p in r.phases:
        say(f"{p.name:<10} {p.seconds:>7.1f} {p.hops:>6} {p.p50_ms:>7.2f} {p.p99_ms:>7.2f} "
            f"{p.max_ms:>7.1f} {p.server_cpu:>6.0%} {sum(p.errors.values())}"
            + (f" {p.errors}" if p.errors else ""))
    preview = statistics.median(r.preview_s)
    queueing = r.phase("queueing").p99_ms
    before = queueing / r.phase("idle").p99_ms
    after = queueing / r.phase("idle again").p99_ms
    checks = [
        ("preview", f"{preview * 1000:.0f} ms (median of {len(r.preview_s)}, first "
                    f"{r.preview_s[0] * 1000:.0f} ms) for {r.preview['recipients']} recipients",
         f"< {TARGET_PREVIEW_S:g} s", preview < TARGET_PREVIEW_S),
        ("queue all", f"{r.queue_s:.1f} s for {r.queued} messages "
                      f"({r.queued / r.queue_s:.0f}/s; {r.sent_while_queueing} sent meanwhile)",
         f"< {TARGET_QUEUE_S:g} s", r.queue_s < TARGET_QUEUE_S and r.queued >= r.contacts),
        ("peak memory (Pss)", f"{r.memory_total:.0f} MB ("
                              + ", ".join(f"{k} {v:.0f}" for k, v in r.memory_mb.items())
                              + "; VmHWM " + ", ".join(f"{k} {v:.0f}"
                                                       for k, v in r.vmhwm_mb.items()) + ")",
         f"< {TARGET_MEMORY_MB:g} MB", r.memory_total < TARGET_MEMORY_MB),
        ("USSD p99 queueing/idle", f"{r.p99_ratio:.2f} (idle p99 {r.idle_p99_ms:.2f} ms, both "
                                   f"phases; against each: {before:.2f} before, "
                                   f"{after:.2f} after)",
         f"<= {TARGET_P99_RATIO:g}", r.p99_ratio <= TARGET_P99_RATIO),
        ("send rate/cap", f"{r.rate_ratio:.3f} ({r.send_rate:.1f}/s of {r.cap:g}/s)",
         f"{TARGET_RATE[0]}-{TARGET_RATE[1]}",
         TARGET_RATE[0] <= r.rate_ratio <= TARGET_RATE[1] + 0.005),
    ]
    say("")
    for name, value, target, met in checks:
        say(f"{name:<23} {value}  target {target}: {'MET' if met else 'MISSED'}")
    errors = sum(sum(p.errors.values()) for p in r.phases)
    say(f"cancelled afterwards in {r.cancel_s:.1f} s")
    say(f"counts at the end: {r.counts}; USSD errors: {errors}; "
        f"gateway log: {r.log_errors} ERROR line(s)")
    return all(met for *_, met in checks) and not errors and not r.log_errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--communes", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100.0, help="send rate cap, messages/s")
    parser.add_argument("--ussd-rate", type=float, default=200.0,
                        help="USSD hops per second offered during every phase")
    # 20 s: 4,000 hops, about as many as the queueing phase has to compare with (10 s left
    # the idle p99 on 2,000 hops, and the ratio swung by 0.2 between runs on its own).
    parser.add_argument("--ussd-seconds", type=float, default=20.0, help="the idle phase")
    parser.add_argument("--send-window", type=float, default=20.0,
                        help="seconds of sending measured after queueing")
    parser.add_argument("--previews", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=2237)
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (and the PostgreSQL database)")
    args = parser.parse_args(argv)
    out_lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        out_lines.append(line)

    say(f"broadcast: database={args.database} contacts={args.contacts} "
        f"communes={args.communes} cap={args.rate:g}/s ussd={args.ussd_rate:g} hops/s "
        f"load={load_average()}")
    if args.keep:
        work = Path(tempfile.mkdtemp(prefix="dannaya-broadcast-bench-"))
        say(f"work folder: {work}")
        result = asyncio.run(bench(args, work, say))
    else:
        with tempfile.TemporaryDirectory(prefix="dannaya-broadcast-bench-") as tmp:
            result = asyncio.run(bench(args, Path(tmp), say))
    ok = report(result, say)
    say(f"load={load_average()}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    OUT.mkdir(parents=True, exist_ok=True)
    base = OUT / f"broadcast-{args.database}-{stamp}"
    base.with_suffix(".txt").write_text("\n".join(out_lines) + "\n")
    base.with_suffix(".json").write_text(json.dumps(
        {"args": vars(args), "result": asdict(result)}, indent=2, default=str))
    print(f"written: {base.with_suffix('.txt')} and .json")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
