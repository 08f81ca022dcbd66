"""Rows 6, 10 and 16 of the battery (reference/security-and-reliability.md §4), against a
real ``gateway serve`` (outbox worker in-process, fake provider) on a fresh database (an
SQLite file, or with ``--database postgres`` a fresh PostgreSQL database):

- row 6, duplicated webhooks: one inbound SMS posted ``--copies`` times (default 10,000)
  over 50 connections, then the last hop of one USSD report ``--copies / 5`` times. Pass:
  exactly one inbound row and one report; every answer 200 (the SMS ``accepted`` once and
  ``duplicate`` after, the hop the same END each time); p99 < 500 ms; no "database is
  locked" reaches a client.
- row 10, form-parser DoS: bodies of 100,000 ``&``, of 100,000 ``;`` and of 25,000 fields
  (over the 16,384-byte cap), and of 16,000 ``&`` (under it). Pass: each refused or parsed
  in < 200 ms, never a 5xx.
- row 16, many phones: ``--phones`` distinct numbers (default 5,000) text a keyword at
  ``--rate`` a second (default 100). Pass: every answer 200 or 503 (then sent again, as a
  provider does, until 200; so is a request that got no answer); every message answered
  200 stored exactly once; no 5xx but 503; readiness sampled each second.

    .venv/bin/python -m bench.soak.webhook_floods [--database sqlite|postgres]
        [--copies 10000] [--phones 5000] [--rate 100]

Results go to stdout and to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    OUT,
    REPO,
    Postgres,
    clean_env,
    free_port,
    gateway,
    load_average,
    percentile,
    run_gateway,
    stop,
    wait_http,
)

SMS = "/webhooks/africastalking/sms"
USSD = "/webhooks/africastalking/ussd"
# A new phone's report to its END: French, the report, its answers, no typed text.
REPORT = ("1", "1", "3", "6", "3", "7", "2")


def sms_form(number: str, message_id: str, text: str = "SONDAGE") -> dict[str, str]:
    return {"from": number, "to": "36123", "text": text, "id": message_id,
            "date": "2026-12-06 10:00:00", "networkCode": "61002"}


def ussd_form(session: str, number: str, text: str) -> dict[str, str]:
    return {"sessionId": session, "serviceCode": "*123#", "phoneNumber": number,
            "networkCode": "61002", "text": text}


async def copies(client: httpx.AsyncClient, path: str, data: dict[str, str], n: int,
                 concurrency: int) -> tuple[Counter[tuple[int, str]], list[float]]:
    """Post ``data`` ``n`` times over ``concurrency`` connections: the answers counted,
    and each request's time."""
    answers: Counter[tuple[int, str]] = Counter()
    times: list[float] = []
    left = iter(range(n))

    async def worker() -> None:
        for _ in left:
            started = time.monotonic()
            response = await client.post(path, data=data)
            times.append(time.monotonic() - started)
            answers[(response.status_code, response.text)] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers, times


def counts(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, func, select

    from gateway.dialogue.sms import inbound
    from gateway.store import queries

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                    for name, t in (("inbound", inbound), ("reports", queries.reports))}
    finally:
        engine.dispose()


async def row6(client: httpx.AsyncClient, args: argparse.Namespace, url: str,
               say: Any) -> bool:
    number = "+22370000001"
    answers, times = await copies(client, SMS, sms_form(number, "ATXid_row6"), args.copies, 50)
    sms_ok = answers == Counter({(200, "accepted"): 1, (200, "duplicate"): args.copies - 1})
    session = "ATUid_row6"
    for hop in range(len(REPORT)):  # the report up to its last screen
        await client.post(USSD, data=ussd_form(session, number, "*".join(REPORT[:hop])))
    last = ussd_form(session, number, "*".join(REPORT))
    hops, hop_times = await copies(client, USSD, last, args.copies // 5, 50)
    ends = {text for (status, text) in hops if status == 200 and text.startswith("END ")}
    hop_ok = sum(hops.values()) == args.copies // 5 and len(ends) == 1 and len(hops) == 1
    stored = counts(url)
    locked = sum(n for (_, text), n in {**answers, **hops}.items() if "locked" in text)
    p99 = percentile(times + hop_times, 0.99) * 1000
    ok = sms_ok and hop_ok and stored == {"inbound": 1, "reports": 1} and locked == 0 \
        and p99 < 500
    say(f"row 6: {args.copies} copies of one SMS: {dict(answers)}; {args.copies // 5} copies "
        f"of a report's last hop: {sum(hops.values())} x {sorted(ends)}; stored {stored}; "
        f"p50 {percentile(times + hop_times, 0.5) * 1000:.0f} ms, p99 {p99:.0f} ms; "
        f"'locked' in {locked} answers: {'pass' if ok else 'FAIL'}")
    return ok


async def row10(client: httpx.AsyncClient, say: Any) -> bool:
    ok = True
    for name, body in (("100,000 '&'", "&" * 100_000), ("100,000 ';'", ";" * 100_000),
                       ("25,000 fields", "a=1&" * 25_000), ("16,000 '&'", "&" * 16_000),
                       ("4,000 fields", "a=1&" * 4_000)):
        started = time.monotonic()
        response = await client.post(SMS, content=body, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        took = (time.monotonic() - started) * 1000
        passed = response.status_code < 500 and took < 200
        ok = ok and passed
        say(f"row 10: {name}: {response.status_code} in {took:.0f} ms: "
            f"{'pass' if passed else 'FAIL'}")
    return ok


async def row16(client: httpx.AsyncClient, args: argparse.Namespace, url: str,
                say: Any) -> bool:
    before = counts(url)["inbound"]
    statuses: Counter[int | str] = Counter()
    accepted: Counter[str] = Counter()
    times: list[float] = []
    retries = 0
    ready: Counter[int | str] = Counter()
    done = asyncio.Event()

    async def send(i: int) -> None:
        nonlocal retries
        form = sms_form(f"+2237{i:07d}", f"ATXid_flood_{i}")
        for attempt in range(20):
            started = time.monotonic()
            try:
                response = await client.post(SMS, data=form)
            except httpx.TransportError as exc:  # no answer: the provider sends it again
                statuses[type(exc).__name__] += 1
                retries += 1
                await asyncio.sleep(min(5.0, 0.5 * 2 ** attempt))
                continue
            times.append(time.monotonic() - started)
            statuses[response.status_code] += 1
            if response.status_code == 200:
                accepted[response.text] += 1
                return
            retries += 1
            await asyncio.sleep(min(5.0, 0.5 * 2 ** attempt))  # as a provider retries

    async def readiness() -> None:
        while not done.is_set():
            try:
                ready[(await client.get("/readyz")).status_code] += 1
            except httpx.TransportError as exc:
                ready[type(exc).__name__] += 1
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(readiness())
    started = time.monotonic()
    tasks = []
    for i in range(args.phones):
        tasks.append(asyncio.create_task(send(i)))
        await asyncio.sleep(max(0.0, started + (i + 1) / args.rate - time.monotonic()))
    await asyncio.gather(*tasks)
    took = time.monotonic() - started
    done.set()
    await sampler
    stored = counts(url)["inbound"] - before
    bad = {s: n for s, n in statuses.items() if isinstance(s, int) and s not in (200, 503)}
    ok = accepted == Counter({"accepted": args.phones}) and stored == args.phones and not bad
    say(f"row 16: {args.phones} phones at {args.rate}/s ({took:.0f} s): answers "
        f"{dict(statuses)}, {retries} sent again (after a 503 or no answer); stored {stored} "
        f"(each once: {stored == args.phones}); p50 {percentile(times, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(times, 0.99) * 1000:.0f} ms; /readyz samples {dict(ready)}: "
        f"{'pass' if ok else 'FAIL'}")
    return ok


async def soak(args: argparse.Namespace, work: Path) -> int:
    pg = Postgres() if args.database == "postgres" else None
    url = pg.create() if pg is not None else f"sqlite:///{work / 'gateway.db'}"
    env = clean_env(GATEWAY_DATABASE_URL=url, GATEWAY_KEY_FILE=str(work / "gateway.keys"),
                    GATEWAY_CONTENT_DIR=str(REPO))
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        if pg is not None:
            run_gateway(["migrate"], env=env, cwd=work)
        port, log = free_port(), work / "gateway.log"
        proc = gateway(["serve", "--port", str(port)], env=env, cwd=work, log=log)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", proc, log)
            say(f"webhook_floods: database={args.database} load={load_average()}")
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                         limits=limits) as client:
                results = [await row6(client, args, url, say), await row10(client, say),
                           await row16(client, args, url, say)]
        finally:
            stop(proc)
        output = log.read_text(errors="replace")
        tracebacks = output.count("Traceback")
        say(f"gateway log: {tracebacks} traceback(s), "
            f"{sum(1 for line in output.splitlines() if ' ERROR ' in line)} ERROR line(s); "
            f"load={load_average()}")
        OUT.mkdir(parents=True, exist_ok=True)
        base = OUT / f"webhook_floods-{args.database}-{time.strftime('%Y%m%d-%H%M%S')}"
        base.with_suffix(".txt").write_text("\n".join(lines) + "\n")
        base.with_suffix(".json").write_text(json.dumps({"args": vars(args),
                                                         "lines": lines}, indent=2))
        return 0 if all(results) and tracebacks == 0 else 1
    finally:
        if pg is not None:
            pg.drop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--copies", type=int, default=10_000)
    parser.add_argument("--phones", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=100.0, help="new phones a second")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dannaya-soak-") as work:
        return asyncio.run(soak(args, Path(work)))


if __name__ == "__main__":
    raise SystemExit(main())
