"""The container's parts that can be checked without Docker: the entrypoint script runs
migrations then serves; the Dockerfile keeps the promises the README makes of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.privacy import keys as keys_mod
from gateway.store import migrate
from gateway.store.db import make_engine
from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_entrypoint_migrates_then_serves(tmp_path: Path) -> None:
    key_file = tmp_path / "gateway.keys"
    keys_mod.load(key_file, create=True)  # production brings its own keys
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "GATEWAY_ENV": "production", "GATEWAY_WEBHOOK_TOKEN": "s3cret",
           "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
           "GATEWAY_KEY_FILE": str(key_file), "GATEWAY_CONTENT_DIR": str(REPO),
           "GATEWAY_PROVIDER": "fake", "HOST": "127.0.0.1", "PORT": str(port)}
    log = (tmp_path / "entrypoint.log").open("wb")
    process = subprocess.Popen(["sh", str(REPO / "docker" / "entrypoint.sh"), "--no-worker"],
                               env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "entrypoint.log").read_text()
            time.sleep(0.1)
        engine = make_engine(env["GATEWAY_DATABASE_URL"])
        assert migrate.current(engine) == migrate.head()
        engine.dispose()
        without = httpx.post(f"http://127.0.0.1:{port}/webhooks/africastalking/ussd", data={})
        assert without.status_code == 403  # production: the token is required
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0  # a clean shutdown: systemd sees success
    output = (tmp_path / "entrypoint.log").read_text()
    assert "database migrated from empty to" in output
    assert "Application shutdown complete" in output


def test_the_dockerfile_builds_a_slim_non_root_image_with_a_dependency_layer() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    assert lines[next(i for i, line in enumerate(lines) if line.startswith("FROM"))] == \
        "FROM python:3.11-slim"
    deps = next(i for i, line in enumerate(lines) if "requirements.txt" in line)
    source = next(i for i, line in enumerate(lines) if line.startswith("COPY gateway"))
    assert deps < source  # dependencies are installed before the code is copied
    user = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    assert lines[user] != "USER root" and user > source
    assert any(line.startswith("ENTRYPOINT") and "dannaya-entrypoint" in line for line in lines)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "*.db", "*.keys", ".env"} <= set(ignored)
    assert os.access(REPO / "docker" / "entrypoint.sh", os.X_OK)
