"""Faults with real processes: SIGKILL and SIGTERM of `gateway worker` mid-send, and
SIGKILL of `gateway serve` mid-intake. Nothing accepted is lost; no acknowledgement goes
out twice; a broadcast goes out at most once more than it should.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from gateway.dialogue import sms
from gateway.outbox import outbox
from gateway.runtime import build_runtime
from gateway.settings import Settings
from gateway.store.models import utcnow
from tests.conftest import REPO
from tests.fake_smsc import FakeSmsc

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({
        "GATEWAY_DATABASE_URL": settings.database_url,
        "GATEWAY_KEY_FILE": str(settings.key_file),
        "GATEWAY_CONTENT_DIR": str(REPO),
        "GATEWAY_QUIET_HOURS": "",  # broadcasts go out whatever the hour
        **extra,
    })
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "gateway", *args], env=env,
                                cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def smsc() -> Iterator[FakeSmsc]:
    with FakeSmsc(delay=0.2).running() as server:
        yield server


def statuses(settings: Settings) -> dict[int, tuple[str, str]]:
    rt = build_runtime(settings)
    try:
        with rt.db.transaction() as conn:
            rows = conn.execute(select(outbox.outbox.c.id, outbox.outbox.c.kind,
                                       outbox.outbox.c.status)).all()
    finally:
        rt.db.dispose()
    return {r.id: (r.kind, r.status) for r in rows}


def last_errors(settings: Settings) -> dict[int, object]:
    rt = build_runtime(settings)
    with rt.db.transaction() as conn:
        rows = conn.execute(select(outbox.outbox).where(
            outbox.outbox.c.status == "unknown")).all()
    rt.db.dispose()
    return {r.id: (r.kind, r.last_error, r.attempts) for r in rows if r.kind == "broadcast"}


def enqueue(settings: Settings, kinds: dict[str, int]) -> None:
    rt = build_runtime(settings)
    try:
        with rt.db.transaction() as conn:
            n = 0
            for kind, count in kinds.items():
                for _ in range(count):
                    n += 1
                    outbox.enqueue(conn, keys=rt.keys, policy=rt.outbox_policy,
                                   pseudonym=f"{n:032d}", e164=f"+2237000{n:04d}",
                                   text=f"{kind} {n}", kind=kind, dedupe_key=f"{kind}:{n}",
                                   now=utcnow())
    finally:
        rt.db.dispose()


def test_killing_the_worker_mid_send_loses_no_broadcast_and_repeats_no_ack(
        settings: Settings, smsc: FakeSmsc, tmp_path: Path) -> None:
    env = environment(settings, GATEWAY_FAKE_SMSC_URL=smsc.url, GATEWAY_SEND_RATE="200",
                      GATEWAY_SEND_LEASE_SECONDS="5")
    enqueue(settings, {"ack": 30, "broadcast": 120})
    worker = start(["worker"], env, tmp_path / "worker.log")
    wait_for(lambda: len(smsc.received) >= 40, 30, "the first sends")
    worker.send_signal(signal.SIGKILL)  # mid-batch: some sends are in flight
    worker.wait()
    in_flight = [i for i, (_, s) in statuses(settings).items() if s == "sending"]
    assert in_flight, "the kill should have caught sends in flight"

    worker = start(["worker"], env, tmp_path / "worker.log")
    try:
        def settled() -> bool:
            return all(s in outbox.FINAL or s in ("sent", "unknown")
                       for _, s in statuses(settings).values())
        wait_for(settled, 60, "the queue to drain after the restart")
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    final = statuses(settings)
    counts = smsc.counts()
    for message_id, (kind, status) in final.items():
        if kind == "broadcast":
            assert status == "sent", (message_id, status, counts[message_id],
                                      message_id in in_flight, last_errors(settings))
            assert 1 <= counts[message_id] <= 2  # none lost, at most one duplicate
            if counts[message_id] == 2:
                assert message_id in in_flight
        else:
            assert counts[message_id] <= 1, f"acknowledgement {message_id} sent twice"
            assert status == ("unknown" if message_id in in_flight else "sent")


def test_sigterm_finishes_what_is_in_flight_and_stops_claiming(
        settings: Settings, smsc: FakeSmsc, tmp_path: Path) -> None:
    env = environment(settings, GATEWAY_FAKE_SMSC_URL=smsc.url, GATEWAY_SEND_RATE="100")
    enqueue(settings, {"broadcast": 300})
    worker = start(["worker"], env, tmp_path / "worker.log")
    wait_for(lambda: len(smsc.received) >= 20, 30, "the first sends")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    final = statuses(settings)
    assert [i for i, (_, s) in final.items() if s == "sending"] == []
    sent = {i for i, (_, s) in final.items() if s == "sent"}
    assert sent == set(smsc.counts())  # everything handed over was recorded
    assert len(sent) < 300  # it stopped claiming


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_killing_the_api_mid_intake_keeps_every_accepted_message_once(
        settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = environment(settings)
    base = f"http://127.0.0.1:{port}"

    def serve() -> subprocess.Popen[bytes]:
        process = start(["serve", "--port", str(port), "--no-worker"], env,
                        tmp_path / "serve.log")
        wait_for(lambda: _up(base), 30, "the gateway to start")
        return process

    def post(i: int, client: httpx.Client | None = None) -> bool:
        try:
            response = (client or httpx).post(
                f"{base}/webhooks/africastalking/sms", timeout=5, data={
                "from": f"+2237001{i:04d}", "to": "36123", "text": "SONDAGE",
                "id": f"ATXid_{i}", "date": "2026-11-24 10:00:00"})
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    server = serve()
    total = 400
    accepted: set[int] = set()
    answered = threading.Semaphore(0)

    def post_and_count(i: int) -> bool:
        ok = post(i)
        answered.release()
        return ok

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = {pool.submit(post_and_count, i): i for i in range(total)}
        for _ in range(30):  # kill once some are in, whatever the machine's speed
            answered.acquire()
        server.send_signal(signal.SIGKILL)
        for future, i in futures.items():
            if future.result():
                accepted.add(i)
    server.wait()
    assert 0 < len(accepted) < total, "the kill should land mid-intake"

    server = serve()
    try:  # the provider retries what did not get a 200 (and some that did)
        with httpx.Client() as client:
            for i in range(total):
                assert post(i, client)
    finally:
        server.terminate()
        server.wait(timeout=30)

    rt = build_runtime(settings)
    try:
        with rt.db.transaction() as conn:
            inbound = conn.execute(select(func.count()).select_from(
                sms.inbound)).scalar_one()
            replies = conn.execute(select(func.count()).select_from(outbox.outbox)).scalar_one()
    finally:
        rt.db.dispose()
    assert inbound == total and replies == total  # each exactly once


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_on_postgresql_sends_from_a_worker_process_it_starts_again(
        settings: Settings, smsc: FakeSmsc, tmp_path: Path) -> None:
    """`gateway serve` on PostgreSQL: the outbox worker is a child process of its own. A
    reply queued by the service goes out through it; killed, it is started again and the
    next reply goes out too; a SIGTERM of the service stops it with the service."""
    if settings.database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL only: on SQLite the worker runs in the service's process")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    server = start(["serve", "--port", str(port)],
                   environment(settings, GATEWAY_FAKE_SMSC_URL=smsc.url), log)

    def workers() -> list[int]:
        return [int(line.split("worker process ")[1].split()[0])
                for line in log.read_text().splitlines() if "worker process " in line
                and " started" in line]

    def poll(n: int) -> None:
        assert httpx.post(f"{base}/webhooks/africastalking/sms", timeout=10, data={
            "from": f"+22370020{n:03d}", "to": "36123", "text": "SONDAGE",
            "id": f"ATXid_w{n}", "date": "2026-11-24 10:00:00"}).status_code == 200

    try:
        wait_for(lambda: _up(base), 30, "the gateway to start")
        wait_for(lambda: len(workers()) == 1, 10, "the worker process")
        first = workers()[0]
        assert first != server.pid
        assert f"PPid:\t{server.pid}\n" in Path(f"/proc/{first}/status").read_text()
        poll(1)
        wait_for(lambda: len(smsc.received) == 1, 30, "the first reply")
        wait_for(lambda: {s for _, s in statuses(settings).values()} == {"sent"}, 30,
                 "the first reply recorded as sent")

        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(workers()) == 2, 30, "another worker process")
        second = workers()[1]
        assert second != first
        poll(2)
        wait_for(lambda: len(smsc.received) == 2, 30, "the reply after the restart")
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
    wait_for(lambda: not Path(f"/proc/{second}").exists(), 10, "the worker to stop too")
    assert {s for _, s in statuses(settings).values()} == {"sent"}
    assert "Traceback" not in log.read_text()
