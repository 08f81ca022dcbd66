"""``gateway simulate`` against a real gateway: ``gateway serve`` runs in a subprocess on a
port the OS picks, and the simulator runs in another, fed a resident's digits on stdin.

A fake gateway (an httpx mock transport) covers what a correct gateway never does:
screens over the budget and malformed replies.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlalchemy import create_engine, text

from gateway import simulate

REPO = Path(__file__).resolve().parent.parent
PHONE = "+22370000009"
TOKEN = "simulate-test-token"
STATUS_LINE = re.compile(r"^\[(CON|END) · (\d+)/160 septets · GSM-7\]$", re.MULTILINE)

# Dial 1, French: language, report, help, "don't know" which force, today, Mopti, Konna,
# send without a message. Dial 2: the language menu, Bambara, then the trust poll
# (not at all, don't know, a little, somewhat) and "other" cercle. Dial 3: hang up.
RESIDENT = "1\n1\n1\n6\n1\n1\n5\n2\ny\n6\n2\n2\n1\n5\n2\n3\n3\n5\n3\n7\ny\n"


@dataclass
class Gateway:
    url: str
    database: Path
    env: dict[str, str]
    log: list[str]


def gateway_env(tmp_path: Path, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path / 'gateway.db'}",
        GATEWAY_KEY_FILE=str(tmp_path / "gateway.keys"),
        GATEWAY_CONTENT_DIR=str(REPO),
        PYTHONIOENCODING="utf-8",
    )
    if token is not None:
        env["GATEWAY_WEBHOOK_TOKEN"] = token
    return env


def _drain(stream: IO[str], lines: queue.Queue[str], log: list[str]) -> None:
    for line in stream:
        log.append(line)
        lines.put(line)


@contextmanager
def running_gateway(tmp_path: Path, token: str | None) -> Iterator[Gateway]:
    """``gateway serve --port 0 --no-worker`` in ``tmp_path``. The port is read from its
    log, so no other server on the machine can answer in its place."""
    env = gateway_env(tmp_path, token)
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", "--no-worker"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, encoding="utf-8",
    ) as proc:
        assert proc.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        log: list[str] = []
        reader = threading.Thread(target=_drain, args=(proc.stderr, lines, log), daemon=True)
        reader.start()
        try:
            url, deadline = None, time.monotonic() + 20
            while url is None:
                alive = proc.poll() is None or not lines.empty()
                assert alive, "gateway serve exited:\n" + "".join(log)
                assert time.monotonic() < deadline, "gateway serve is silent:\n" + "".join(log)
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                match = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
                url = match.group(1) if match else None
            assert httpx.get(url + "/healthz", timeout=5).json() == {"status": "ok"}
            yield Gateway(url, tmp_path / "gateway.db", env, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)


@pytest.fixture(params=[None, TOKEN], ids=["no-token", "token"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    with running_gateway(tmp_path, request.param) as running:
        yield running


def simulate_cli(*args: str, stdin: str, env: dict[str, str],
                 cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "simulate", "--phone", PHONE, *args],
        input=stdin, capture_output=True, text=True, encoding="utf-8", env=env, cwd=cwd,
        timeout=30, check=False,
    )


def rows(database: Path, sql: str) -> list[dict[str, object]]:
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def test_a_report_a_poll_and_a_hang_up(gateway: Gateway, tmp_path: Path) -> None:
    run = simulate_cli("--url", gateway.url, stdin=RESIDENT, env=gateway.env, cwd=tmp_path)
    out = run.stdout

    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert "│ Merci, message recu.\n[END · 20/160 septets · GSM-7]\n" in out
    assert "│ I ni ce, jaabi sòròla.\n[END · 22/160 septets · GSM-7]\n" in out
    assert "│ Langue / Kan / Demngal:\n│ 1. Francais\n│ 2. Bamanankan\n│ 3. Fulfulde\n[CON · " \
        in out
    statuses = STATUS_LINE.findall(out)
    assert len(statuses) == 9 + 12 + 1  # every hop of the three dials shows its status
    assert all(int(length) <= 160 for _, length in statuses)
    assert [kind for kind, _ in statuses].count("END") == 2
    assert "warning" not in out
    assert out.count("--- Success: 9 hops") == out.count("--- Success: 12 hops") == 1
    assert out.count("--- Incomplete: 1 hop,") == 1
    assert out.count("notification sent") == 3
    assert out.count(PHONE) == 1  # the banner, and nowhere else

    [report] = rows(gateway.database, "SELECT flow, channel, answers, text FROM report")
    assert report["flow"] == "report" and report["channel"] == "ussd"
    assert report["text"] is None
    assert json.loads(str(report["answers"])) == {
        "category": "help", "force": "unknown", "when": "today",
        "cercle": "mopti", "commune": "mopti-konna",
    }
    answers = rows(gateway.database, "SELECT question, answer FROM poll_answer")
    assert {row["question"]: row["answer"] for row in answers} == {
        "army": "not_at_all", "gendarmerie": "dont_know", "police": "just_a_little",
        "national_guard": "somewhat", "gender": "refused", "age_band": "refused",
        "displaced": "refused", "cercle": "other",
    }
    events = rows(gateway.database,
                  "SELECT session_id, status, hops, duration_ms FROM ussd_event ORDER BY id")
    assert [(e["status"], e["hops"]) for e in events] == [
        ("success", 9), ("success", 12), ("incomplete", 1)]
    assert all(isinstance(e["duration_ms"], int) for e in events)
    assert all(re.fullmatch(r"ATUid_[0-9a-f]{32}", str(e["session_id"])) for e in events)
    assert len({e["session_id"] for e in events}) == 3  # a fresh session per dial
    assert not any("70000009" in line for line in gateway.log)  # never logged


def test_without_the_token_the_gateway_refuses_and_the_session_fails(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, TOKEN) as gw:
        env = {k: v for k, v in gw.env.items() if k != "GATEWAY_WEBHOOK_TOKEN"}
        run = simulate_cli("--url", gw.url, stdin="", env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "warning: malformed reply: HTTP 403" in run.stdout
        assert "--- Failed: 1 hop," in run.stdout
        assert "warning: notification answered HTTP 403" in run.stdout
        assert rows(gw.database, "SELECT id FROM ussd_session") == []
        assert rows(gw.database, "SELECT id FROM ussd_event") == []


def test_an_unreachable_gateway_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        run = simulate_cli("--url", url, stdin="1\n", env=gateway_env(tmp_path, None),
                           cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.startswith(f"gateway simulate: cannot reach the gateway at {url}: ")
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_a_url_that_is_not_http_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = simulate.run(base="127.0.0.1:8000", phone=PHONE, service_code="*123#", token=None)
    assert code == 2
    assert "is not an http(s) URL" in capsys.readouterr().err


# --- a misbehaving gateway, in process ------------------------------------------------


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` reads ``Settings()``: give it the defaults, whatever this shell has set."""
    monkeypatch.chdir(tmp_path)  # no .env
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("settings_env")
def test_over_budget_and_malformed_replies_are_flagged_and_fail_the_session(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    requests: list[httpx.Request] = []

    def fake_gateway(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if request.url.path.endswith("/events"):
            return httpx.Response(200, text="OK")
        if form["text"] == "":
            return httpx.Response(200, text="CON " + "x" * 170 + "\n1. Suite",
                                  headers={simulate.HOP_METADATA: "welcome"})
        return httpx.Response(200, text="Oops")

    monkeypatch.setattr(sys, "stdin", io.StringIO("1\nn\n"))
    code = simulate.run(base="http://gateway.test", phone=PHONE, service_code="*123#",
                        token="t0k", transport=httpx.MockTransport(fake_gateway))
    out = capsys.readouterr().out

    assert code == 0
    assert "[CON · 179/160 septets · GSM-7]" in out
    assert "warning: screen over budget: 179 > 160 septets" in out
    assert "warning: malformed reply: Response should start with a CON or an END" in out
    assert "--- Failed: 2 hops," in out

    dial, answer, event = requests
    assert b"phoneNumber=%2B22370000009" in dial.content  # the + survives form encoding
    assert all(r.url.params["token"] == "t0k" for r in requests)
    assert answer.headers[simulate.HOP_METADATA] == "welcome"
    forms = [dict(parse_qsl(r.content.decode(), keep_blank_values=True)) for r in requests]
    assert [f.get("text") for f in forms[:2]] == ["", "1"]
    assert forms[0]["sessionId"] == forms[1]["sessionId"] == forms[2]["sessionId"]
    sent = forms[2]
    assert event.url.path == "/webhooks/africastalking/ussd/events"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", sent.pop("date"))
    assert sent.pop("durationInMillis").isdigit()
    assert sent == {
        "sessionId": forms[0]["sessionId"], "serviceCode": "*123#", "networkCode": "99999",
        "phoneNumber": PHONE, "status": "Failed", "cost": "XOF 0.00", "hopsCount": "2",
        "hopsMetadata": "welcome", "input": "1", "lastAppResponse": "Oops",
        "errorMessage": "malformed reply: Response should start with a CON or an END",
    }


@pytest.mark.usefixtures("settings_env")
def test_a_gateway_too_slow_to_answer_fails_the_session(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    events: list[dict[str, str]] = []

    def slow_gateway(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            raise httpx.ReadTimeout("timed out", request=request)
        events.append(dict(parse_qsl(request.content.decode(), keep_blank_values=True)))
        return httpx.Response(200, text="OK")

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = simulate.run(base="http://gateway.test", phone=PHONE, service_code="*123#",
                        token=None, transport=httpx.MockTransport(slow_gateway))
    assert code == 0
    assert "warning: no reply within 10 s" in capsys.readouterr().out
    [event] = events
    assert (event["status"], event["hopsCount"], event["errorMessage"]) == (
        "Failed", "1", "no reply within 10 s")


def test_a_ucs2_screen_is_counted_in_units_and_charged_double() -> None:
    assert simulate.status_line("CON", "Kɛnɛ", 160) == (
        "[CON · 4 UCS-2 units, counted 8/160 septets · UCS-2]")


# --- --kannel: the operator's USSD gateway for a deployer's own Kannel ------------------

KANNEL_STATUS = re.compile(
    r"^\[(CON|END) · op (\d+) · session echoed · (\d+)/160 septets · GSM-7\]$", re.MULTILINE)
# Dial 1: French, the poll (not at all x4), cercle "other". Dial 2: the main menu, hang up.
KANNEL_RESIDENT = "1\n2\n1\n1\n1\n1\n3\n5\n3\n7\ny\n"


@pytest.mark.kannel
@pytest.mark.slow
def test_kannel_mode_walks_the_menus_through_a_real_kannel(tmp_path: Path) -> None:
    from tests.kannel import Kannel, free_port, require_kannel, wait_for

    binaries = require_kannel()
    port = free_port()
    env = gateway_env(tmp_path, None)
    with running_gateway(tmp_path, None) as gateway, subprocess.Popen(
            [sys.executable, "-m", "gateway", "simulate", "--kannel", "--smpp-port", str(port),
             "--phone", PHONE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, encoding="utf-8", env=env,
            cwd=tmp_path) as sim:
        assert sim.stdout is not None and sim.stdin is not None
        lines: queue.Queue[str] = queue.Queue()
        out: list[str] = []
        threading.Thread(target=_drain, args=(sim.stdout, lines, out), daemon=True).start()
        wait_for(lambda: any("Waiting for Kannel" in line for line in out), 30,
                 "the simulator to listen")
        kannel = Kannel(tmp_path / "kannel", gateway_url=gateway.url, binaries=binaries,
                        ussd_port=port)
        with kannel.running():
            sim.stdin.write(KANNEL_RESIDENT)
            sim.stdin.close()
            assert sim.wait(timeout=60) == 0, "".join(out)
    text = "".join(out)
    assert "smsc-id = ussd\n  host = 127.0.0.1\n  port = " + str(port) in text
    assert "│ Langue / Kan / Demngal:\n│ 1. Francais\n" in text
    statuses = KANNEL_STATUS.findall(text)
    assert [(kind, op) for kind, op, _ in statuses] == \
        [("CON", "2")] * 10 + [("END", "17"), ("CON", "2")]
    assert "│ Merci, réponse recue.\n" in text
    assert text.count("--- Success ---") == 1 and text.count("--- Incomplete ---") == 1
    assert "warning" not in text
    answers = rows(tmp_path / "gateway.db", "SELECT question, answer FROM poll_answer")
    assert {(r["question"], r["answer"]) for r in answers} == {
        ("army", "not_at_all"), ("gendarmerie", "not_at_all"), ("police", "not_at_all"),
        ("national_guard", "not_at_all"), ("gender", "refused"), ("age_band", "refused"),
        ("displaced", "refused"), ("cercle", "other")}


def test_kannel_mode_says_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = simulate_cli("--kannel", "--smpp-port", str(port), stdin="",
                           env=gateway_env(tmp_path, None), cwd=tmp_path)
    assert run.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(("screen", "sent", "status", "problems"), [
    (simulate.SmppScreen("Langue", 2, b"\x0a\x02", 0, "USSD"), b"\x0a\x02",
     "[CON · op 2 · session echoed · 6/160 septets · GSM-7]", []),
    (simulate.SmppScreen("Fin", 17, None, 8, "USSD"), None,
     "[END · op 17 · no session · 3/160 septets · UCS-2]", []),
    (simulate.SmppScreen("x", 3, b"\x0a\x04", 0, "USSD"), b"\x0a\x02",
     "[??? · op 3 · no session · 1/160 septets · GSM-7]",
     ["ussd_service_op is 3, neither 2 (waits) nor 17 (last screen)",
      "its_session_info b'\\n\\x04' is not the b'\\n\\x02' sent"]),
    (simulate.SmppScreen("y" * 161, 2, None, 0, "USSD"), None,
     "[CON · op 2 · no session · 161/160 septets · GSM-7]",
     ["screen over budget: 161 > 160 septets (GATEWAY_USSD_BUDGET)"]),
])
def test_each_screen_from_kannel_is_checked(screen: simulate.SmppScreen, sent: bytes | None,
                                            status: str, problems: list[str]) -> None:
    assert simulate.smpp_status(screen, sent, 160, wait_op=2, end_op=17) == (status, problems)
