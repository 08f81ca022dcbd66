"""USSD hop latency while flows are published every second, against no publishing.

Starts the gateway exactly as ``gateway serve`` runs it by default (outbox worker
in-process, fake provider; on PostgreSQL its database process) on a fresh database, with
an operator account and a second version of the poll flow (its Bambara army question
reworded) added through the API. Then rounds alternate, ``quiet`` and ``publishing``, at
the same concurrency (8 by default): in a ``publishing`` round a publisher makes version
2, 1, 2, 1... of the poll live through ``POST /api/v1/flows/poll/versions/{n}/publish``
once a second, so every hop's process learns of a new generation each second and builds
its content and engine; sessions under way finish on the version they began with. The
load generator is ``bench.ussd_hops``' (real flows walked to their END, every hop
checked).

    .venv/bin/python -m bench.flows_publish [--database sqlite|postgres] [--seconds 10]
        [--rounds 3] [--concurrency 8]

Goal: p99 publishing / p99 quiet <= 1.2 (medians over rounds, one run). Results go to
stdout and to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import httpx

from bench.common import (
    OUT,
    REPO,
    Postgres,
    clean_env,
    free_port,
    gateway,
    load_average,
    median,
    run_gateway,
    stop,
    wait_http,
)
from bench.ussd_hops import HEADER, Numbers, RoundResult, Server, check_scripts, row, run_round

GOAL = 1.2
PASSWORD = "sept pintades au marché"  # noqa: S105 - a throwaway bench account


def operator_token(env: dict[str, str], work: Path) -> str:
    made = subprocess.run([sys.executable, "-m", "gateway", "users", "create", "bench",
                           "--role", "operator", "--cercle", "mopti"], input=PASSWORD + "\n",
                          env=env, cwd=work, capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise SystemExit(f"users create failed: {made.stdout}{made.stderr}")
    return run_gateway(["users", "token", "bench"], env=env, cwd=work).splitlines()[-1]


def second_version(base: str, auth: dict[str, str]) -> None:
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        poll = client.get("/api/v1/flows/poll").json()
        poll["messages"]["bm"]["poll-trust-army"] = "I dalen bɛ sɔrɔdasiw (FAMa) la wa?"
        added = client.post("/api/v1/flows/poll/versions", json={
            "definition": poll["definition"], "messages": poll["messages"]})
        if added.status_code != 201:
            raise SystemExit(f"adding a version failed: {added.status_code} {added.text}")


async def publisher(base: str, auth: dict[str, str], stop_at: float,
                    took: list[float], failed: list[str]) -> int:
    """Publish version 2, 1, 2, ... once a second until ``stop_at``; how many."""
    done = 0
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as client:
        next_at = time.perf_counter()
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            started = time.perf_counter()
            response = await client.post(f"/api/v1/flows/poll/versions/{2 - done % 2}/publish")
            if response.status_code != 200:
                failed.append(f"{response.status_code} {response.text[:200]}")
            took.append(time.perf_counter() - started)
            done += 1
            next_at += 1.0
    return done


async def bench(args: argparse.Namespace, work: Path) -> int:
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
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", proc, log)
        auth = {"Authorization": f"Bearer {operator_token(env, work)}"}
        second_version(base, auth)
        check_scripts(port)
        server = Server("gateway", port, proc, checks_flow=True)
        numbers = Numbers(seed=args.seed)
        say(f"flows_publish: database={args.database} seconds={args.seconds} "
            f"rounds={args.rounds} concurrency={args.concurrency} load={load_average()}")
        await run_round(server, concurrency=args.concurrency, seconds=args.warmup,
                        round_no=0, numbers=numbers, client_kind="raw")
        say(HEADER.replace("server", "mode    "))
        results: dict[str, list[RoundResult]] = {"quiet": [], "publishing": []}
        publications, publish_ms = 0, []
        failed: list[str] = []
        for round_no in range(1, args.rounds + 1):
            for mode in ("quiet", "publishing"):
                took: list[float] = []
                pub = None
                if mode == "publishing":
                    pub = asyncio.create_task(publisher(
                        base, auth, time.perf_counter() + args.seconds, took, failed))
                result = await run_round(server, concurrency=args.concurrency,
                                         seconds=args.seconds, round_no=round_no,
                                         numbers=numbers, client_kind="raw")
                if pub is not None:
                    publications += await pub
                    publish_ms += [t * 1000 for t in took]
                result.server = mode
                results[mode].append(result)
                say(row(result))
        quiet = median([r.p99_ms for r in results["quiet"]])
        busy = median([r.p99_ms for r in results["publishing"]])
        ratio = busy / quiet
        per_round = [b.p99_ms / q.p99_ms
                     for q, b in zip(results["quiet"], results["publishing"], strict=True)]
        errors = sum(sum(r.errors.values()) for rs in results.values() for r in rs)
        if failed:
            say(f"publications refused: {len(failed)}, first: {failed[0]}")
            OUT.mkdir(parents=True, exist_ok=True)
            kept = OUT / "flows_publish-gateway.log"
            kept.write_text(log.read_text(errors="replace"))
            say(f"the gateway's log: {kept}")
            errors += len(failed)
        say("")
        say(f"p99 quiet {quiet:.2f} ms, publishing {busy:.2f} ms (medians over rounds)")
        say(f"p99 publishing/quiet: {ratio:.2f} (per round "
            f"{', '.join(f'{x:.2f}' for x in per_round)})  goal <= {GOAL}: "
            f"{'MET' if ratio <= GOAL else 'MISSED'}")
        say(f"publications: {publications}, each answered in median "
            f"{median(publish_ms):.1f} ms (max {max(publish_ms, default=0):.1f} ms); "
            f"errors: {errors}; load={load_average()}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        OUT.mkdir(parents=True, exist_ok=True)
        out = OUT / f"flows_publish-{args.database}-{stamp}"
        out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
        out.with_suffix(".json").write_text(json.dumps({
            "args": vars(args), "ratio": ratio, "per_round": per_round,
            "rounds": {m: [asdict(r) for r in rs] for m, rs in results.items()},
        }, indent=2, default=str))
        print(f"written: {out.with_suffix('.txt')} and .json")
        return 0 if ratio <= GOAL and not errors else 1
    finally:
        stop(proc)
        if pg is not None:
            pg.drop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=10.0, help="per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2237)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dannaya-flows-bench-") as tmp:
        return asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
