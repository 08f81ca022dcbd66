"""Live figures across processes: one real ``gateway serve`` answers the USSD votes,
another serves the streams, on one database (an SQLite file, or PostgreSQL); the stream
carries each vote within two seconds of its last USSD hop. And the watcher runs only
while someone listens."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.operators.access import Role
from gateway.operators.live import Hub
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from tests.conftest import REPO
from tests.operators.people import Person, make
from tests.phone import END, Phone

LIVE_SECONDS = 2.0  # the contract: an answer shows within 2 s of its last USSD hop


@dataclass(frozen=True)
class Event:
    at: float  # time.monotonic() when it arrived
    name: str
    data: dict[str, Any]


class Listener:
    """An EventSource-like client on a thread: every event of one stream, as it arrives."""

    def __init__(self, base: str, path: str, token: str) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.status: int | None = None
        self._client = httpx.Client(base_url=base, timeout=httpx.Timeout(5, read=None))
        self._stop = False
        self._thread = threading.Thread(target=self._read, args=(path, token), daemon=True)
        self._thread.start()

    def _read(self, path: str, token: str) -> None:
        try:
            with self._client.stream("GET", path, headers={
                    "Authorization": f"Bearer {token}", "Accept": "text/event-stream"}) as r:
                self.status = r.status_code
                name, data = "message", ""
                for line in r.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                    elif line == "" and data:
                        self.events.put(Event(time.monotonic(), name, json.loads(data)))
                        name, data = "message", ""
        except (httpx.HTTPError, RuntimeError):
            return

    def wait_for(self, test: Callable[[dict[str, Any]], bool], timeout: float = 15) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no event came that passed the test")
            event = self.events.get(timeout=left)
            if test(event.data):
                return event

    def close(self) -> None:
        self._stop = True
        self._client.close()


def _started_at(log: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "running on http://" in line:
                return line.split("running on ")[1].split()[0]
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"gateway did not start: {log.read_text()}")


@dataclass
class Servers:
    votes: str  # the base URL of the process that answers USSD
    streams: str  # ... and of the one that serves the streams
    admin: Person
    host: Person


@pytest.fixture
def servers(database_url: str, tmp_path: Path) -> Iterator[Servers]:
    key_file = tmp_path / "shared.keys"
    settings = Settings(_env_file=None, database_url=database_url, key_file=key_file,
                        content_dir=REPO)
    rt: Runtime = build_runtime(settings)  # migrates SQLite, makes the key file
    try:
        admin = make(rt, "awa", Role.admin)
        host = make(rt, "kaoural", Role.radio)
    finally:
        rt.db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_DATABASE_URL=database_url, GATEWAY_KEY_FILE=str(key_file),
               GATEWAY_CONTENT_DIR=str(REPO), GATEWAY_MIN_CELL="1")
    processes, bases = [], []
    try:
        for name in ("votes", "streams"):
            log_path = tmp_path / f"{name}.log"
            with log_path.open("wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "gateway", "serve", "--port", "0", "--no-worker"],
                    env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT))
            bases.append(_started_at(log_path, processes[-1]))
        yield Servers(bases[0], bases[1], admin, host)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def vote(client: httpx.Client, number: str, army: str) -> float:
    """Dial the show's code, answer every screen; the time of the last hop's answer."""
    phone = Phone(client, number, service_code="*123#")
    phone.session_id, phone.inputs = f"ATUid_{uuid.uuid4().hex}", ["5"]
    phone.post("5")  # *123*5#: the language first (a new phone)
    screen = phone.press("1", army, "4", "4", "4", "1", "2", "2", "1", "5")
    last = time.monotonic()
    assert screen == END("Merci, réponse recue.")
    return last


def test_a_vote_on_one_process_reaches_the_streams_of_another_within_two_seconds(
        servers: Servers) -> None:
    now = datetime.now(UTC)
    with httpx.Client(base_url=servers.votes, timeout=10) as votes:
        made = votes.post("/api/v1/campaigns", headers=servers.admin.auth, json={
            "name": "Débat", "station": "Radio Kaoural", "poll": "trust-fds",
            "question": "army", "service_code": "*123*5#", "hosts": ["kaoural"],
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat()})
        assert made.status_code == 201, made.text
        campaign = made.json()["id"]
        results = Listener(servers.streams, "/api/v1/polls/trust-fds/results/stream"
                           "?question=army&by=campaign", servers.admin.token)
        onair = Listener(servers.streams, f"/api/v1/campaigns/{campaign}/onair/stream",
                         servers.host.token)
        try:
            assert results.wait_for(lambda d: d["total"]["n"] == 0).name == "results"
            assert onair.wait_for(lambda d: d["suppressed"]).name == "onair"
            delays = []
            for n, army in enumerate(("4", "4", "1"), start=1):
                last_hop = vote(votes, f"+2237000090{n}", army)
                seen = results.wait_for(lambda d, n=n: d["total"]["n"] == n)  # type: ignore[misc]
                on = onair.wait_for(lambda d, n=n: d["n"] == n)  # type: ignore[misc]
                delays += [seen.at - last_hop, on.at - last_hop]
            assert seen.data["rows"] == [{
                "group": {"campaign": campaign}, "n": 3,
                "counts": {"not_at_all": 1, "just_a_little": 0, "somewhat": 0, "a_lot": 2,
                           "dont_know": 0, "refused": 0},
                "percent": seen.data["rows"][0]["percent"], "suppressed": False,
                "small": False}]
            assert on.data["sentence"]["fr"] == ("Sur 3 auditeurs, 67 % font beaucoup "
                                                 "confiance à l'armée (FAMa).")
            assert max(delays) < LIVE_SECONDS, delays
        finally:
            results.close()
            onair.close()


def test_a_stream_outside_ones_role_or_scope_is_refused_before_it_starts(
        servers: Servers) -> None:
    with httpx.Client(base_url=servers.streams, timeout=10) as client:
        radio = client.get("/api/v1/polls/trust-fds/results/stream?question=army",
                           headers=servers.host.auth)
        assert radio.status_code == 403
        bad = client.get("/api/v1/polls/trust-fds/results/stream?question=army&by=colour",
                         headers=servers.admin.auth)
        assert bad.status_code == 422
        missing = client.get("/api/v1/campaigns/42/onair/stream", headers=servers.admin.auth)
        assert missing.status_code == 404
        assert client.get("/api/v1/campaigns/42/onair/stream").status_code == 401


def test_the_watcher_runs_only_while_someone_listens(runtime: Runtime) -> None:
    """Nobody listening: no thread reads the database. The first listener starts the
    watcher, listeners of the same figures share one computation, the last one to leave
    stops it."""
    computed: list[int] = []

    def compute() -> dict[str, Any]:
        computed.append(1)
        return {"n": 1}

    async def scenario() -> None:
        hub = Hub(runtime.db, poll_seconds=0.05)
        assert not hub.watching
        first, second = hub.follow("k", compute), hub.follow("k", compute)
        assert await anext(first) == {"n": 1}
        assert await anext(second) == {"n": 1}
        assert hub.watching and len(hub.topics) == 1
        await asyncio.sleep(0.3)  # nothing changes: nothing is sent again
        await first.aclose()
        assert hub.watching
        await second.aclose()
        assert not hub.watching and not hub.topics

    asyncio.run(scenario())
    assert 1 <= len(computed) <= 3  # once, and again after the watcher's first reading
    threads = [t for t in threading.enumerate() if t.name == "live-results-watcher"]
    deadline = time.monotonic() + 3
    while threads and time.monotonic() < deadline:
        time.sleep(0.05)
        threads = [t for t in threads if t.is_alive()]
    assert not threads


def test_a_stream_ends_after_its_time_so_credentials_are_checked_again(
        runtime: Runtime) -> None:
    async def scenario() -> list[dict[str, Any]]:
        hub = Hub(runtime.db, poll_seconds=0.05)
        got = [figures async for figures in hub.follow("k", lambda: {"n": 1}, seconds=0.3)]
        assert not hub.watching and not hub.topics
        return got

    assert asyncio.run(scenario()) == [{"n": 1}]
