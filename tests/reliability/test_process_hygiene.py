"""Process hygiene, with real processes: `gateway serve` exits 0 after a clean SIGTERM; a
client hanging up mid-body is one quiet log line; a body that trickles in gets 408 and its
socket closed; commands that need the key file refuse in production before touching the
database; no command ends in a raw traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.nodb
USSD = "/webhooks/africastalking/ussd"
SMS = "/webhooks/africastalking/sms"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
                "GATEWAY_KEY_FILE": str(tmp_path / "gateway.keys"),
                "GATEWAY_CONTENT_DIR": str(REPO), **extra})
    return env


def gateway(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args],
                          env=environment(tmp_path, **env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(tmp_path: Path, *args: str, ready: bool = True, **env: str) -> Iterator[Served]:
    """`gateway serve` on a free port, ready (or with ``ready=False`` only alive); stopped
    (SIGKILL if it must) at the end."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port), *args],
            env=environment(tmp_path, **env), cwd=tmp_path, stdout=out,
            stderr=subprocess.STDOUT)
    served = Served(process, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, served.output()
            try:
                path = "/readyz" if ready else "/healthz"
                if httpx.get(f"{served.base}{path}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def raw_request(port: int, path: str, body: bytes, *, declared: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\n"
                 f"Content-Length: {declared}\r\n\r\n".encode() + body)
    return sock


# --- signals -------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_exits_0_after_a_clean_shutdown_on_a_signal(
        tmp_path: Path, sig: signal.Signals) -> None:
    with serving(tmp_path) as served:
        assert httpx.post(f"{served.base}{USSD}", data={
            "sessionId": "s1", "phoneNumber": "+22370000001", "serviceCode": "*123#",
            "text": ""}).status_code == 200
        assert served.stop(sig) == 0
    output = served.output()
    assert "Application shutdown complete" in output
    assert "Traceback" not in output


# --- bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [USSD, SMS], ids=["ussd", "sms"])
def test_a_client_hanging_up_mid_body_logs_one_quiet_line(tmp_path: Path, path: str) -> None:
    with serving(tmp_path, "--no-worker") as served:
        for _ in range(20):
            sock = raw_request(served.port, path, b"sessionId=abc&phone", declared=500)
            sock.close()
        # The server is still fine.
        deadline = time.monotonic() + 10
        while served.output().count("hung up") < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{served.base}/healthz").status_code == 200
        assert served.stop() == 0
    lines = served.output().splitlines()
    hung = [line for line in lines if "hung up" in line]
    assert len(hung) == 20
    assert all(" INFO " in line and path in line for line in hung)
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line]


@pytest.mark.parametrize("path", [USSD, SMS], ids=["ussd", "sms"])
def test_a_body_that_trickles_in_gets_408_and_its_connection_closed(
        tmp_path: Path, path: str) -> None:
    with serving(tmp_path, "--no-worker", GATEWAY_BODY_TIMEOUT_SECONDS="1") as served:
        body = b"sessionId=slow&phoneNumber=%2B22370000001&serviceCode=%2A123%23&text="
        sock = raw_request(served.port, path, body[:5], declared=len(body))
        started = time.monotonic()
        answer = b""
        sock.settimeout(0.2)
        for byte in body[5:]:  # a byte every 0.2 s: the body would take 13 s
            try:
                sock.sendall(bytes([byte]))
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if answer:
                break
        elapsed = time.monotonic() - started
        sock.settimeout(5)
        while True:  # the server closes the connection after its answer
            try:
                more = sock.recv(4096)
            except OSError:
                break
            if not more:
                break
            answer += more
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert elapsed < 3
        # Requests that send their body at once are not affected.
        fast = httpx.post(f"{served.base}{path}", data={
            "sessionId": "fast", "phoneNumber": "+22370000001", "serviceCode": "*123#",
            "text": "", "from": "+22370000001", "to": "36123", "id": "AT1"})
        assert fast.status_code == 200
        assert served.stop() == 0
    output = served.output()
    assert "408" in output and "Traceback" not in output and " ERROR " not in output


# --- commands --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["migrate"], ["purge"], ["keys", "rotate"],
                                     ["keys", "shred"]])
def test_commands_that_need_the_keys_refuse_in_production_without_them(
        tmp_path: Path, command: list[str]) -> None:
    production = {"GATEWAY_ENV": "production", "GATEWAY_WEBHOOK_TOKEN": "s3cret"}
    serve = gateway(tmp_path, "serve", **production)
    assert serve.returncode == 1
    assert "production refuses to start without its keys" in serve.stderr
    run = gateway(tmp_path, *command, **production)
    assert run.returncode == 1
    if command[0] != "keys":
        assert run.stderr == serve.stderr  # the same message as `serve`
    assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1
    assert not (tmp_path / "gateway.db").exists()  # the database was not touched
    assert not (tmp_path / "gateway.keys").exists()


UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/dannaya"


@pytest.mark.parametrize(("command", "env", "says"), [
    (["purge"], {"GATEWAY_DATABASE_URL": UNREACHABLE}, "cannot be reached"),
    (["migrate"], {"GATEWAY_DATABASE_URL": UNREACHABLE}, "cannot reach the database"),
    (["serve"], {"GATEWAY_DATABASE_URL": UNREACHABLE}, "cannot be reached"),
    (["worker"], {"GATEWAY_DATABASE_URL": UNREACHABLE}, "cannot be reached"),
    (["keys", "rotate"], {"GATEWAY_DATABASE_URL": UNREACHABLE}, "cannot be reached"),
    (["purge"], {"GATEWAY_KEY_FILE": "/dev/null"}, "cannot start"),
    (["nonsense"], {}, "invalid choice"),  # a usage error: argparse's message, exit 2
], ids=["purge-db", "migrate-db", "serve-db", "worker-db", "rotate-db", "purge-keys",
        "usage"])
def test_no_command_ends_in_a_raw_traceback(
        tmp_path: Path, command: list[str], env: dict[str, str], says: str) -> None:
    if command == ["keys", "rotate"]:
        assert gateway(tmp_path, "keys", "init").returncode == 0
    run = gateway(tmp_path, *command, **env)
    assert run.returncode == (2 if command == ["nonsense"] else 1), run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert says in run.stderr
    assert "127.0.0.1:1" not in run.stderr  # nothing the driver said is repeated
