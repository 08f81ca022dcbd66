"""A real Kannel on loopback for the tests: bearerbox, smsbox and the fake SMSC client
``fakesmsc`` (Debian's ``kannel`` and ``kannel-extras``; ``scripts/install-kannel``), in a
temporary directory, on free ports.

fakesmsc plays the mobile network. It runs in interactive mode: each line written to its
standard input is one message from a phone (``sender receiver text|ucs2 text``), and it
prints every message Kannel hands it (``Got message N: <from to type text>``), which
``messages()`` returns. It also acknowledges each message, so bearerbox sends the dlr-url
two reports: 8 (accepted by the SMSC), then 1 (delivered).

Kannel's own logs, in the directory, hold phone numbers (test numbers only): they are
files there, never printed by the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

import httpx
import pytest

from tests.conftest import REPO, SERVICE_MISSING

FAKESMSC = Path("/usr/lib/kannel/test/fakesmsc")
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
USERNAME = "dannaya"
PASSWORD = "kannel-test-secret"
SHORT_CODE = "36123"
ADMIN_PASSWORD = "adm"
GET_URL = "/webhooks/kannel/sms?from=%p&to=%P&text=%a&id=%I&coding=%c&charset=%C"
INSTALL_HINT = "scripts/install-kannel installs Debian's kannel and kannel-extras"


@dataclass(frozen=True)
class Binaries:
    bearerbox: str
    smsbox: str
    fakesmsc: str


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def find_binaries() -> Binaries | str:
    """The three programs, or why they cannot be had here."""
    bearerbox, smsbox = _which("bearerbox"), _which("smsbox")
    fakesmsc = str(FAKESMSC) if os.access(FAKESMSC, os.X_OK) else _which("fakesmsc")
    missing = [name for name, path in (("bearerbox", bearerbox), ("smsbox", smsbox),
                                       ("fakesmsc", fakesmsc)) if path is None]
    if missing or bearerbox is None or smsbox is None or fakesmsc is None:
        return f"{', '.join(missing)} not found"
    return Binaries(bearerbox, smsbox, fakesmsc)


def require_kannel() -> Binaries:
    found = find_binaries()
    if isinstance(found, str):
        pytest.skip(f"{SERVICE_MISSING}: Kannel ({found}; {INSTALL_HINT})")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """End one process we started: SIGTERM, then SIGKILL if it lingers."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@dataclass(frozen=True)
class Mt:
    """One message Kannel handed to the fake SMSC (mobile-terminated), as it went over
    the air: a long text is several of these, each with its UDH."""

    sender: str
    receiver: str
    kind: str  # text | ucs-2 | udh (a part of a concatenated message)
    udh: bytes
    data: bytes  # text: UTF-8; ucs-2: UTF-16BE; udh: either, see Sms


_GOT = re.compile(r"Got message \d+: <(.*)>\s*$")
_HEAD = re.compile(r"\+?\w+ \+?\d+ (text|ucs-2|ucs2|udh|data) ")


def _unescape(value: str) -> bytes:
    return unquote_to_bytes(value.replace("+", "%20"))


class FakesmscOutput:
    """Reads fakesmsc's output into messages.

    fakesmsc prints ``Got message N: <from to type ...>``: a ``text`` message as it is, a
    ``ucs-2`` one as its UTF-16BE bytes URL-escaped (space as ``+``), a part of a
    concatenated message as ``udh <udh> data <bytes>``, both URL-escaped. Its link to
    bearerbox is one message a line, so a text message with line breaks comes out as
    several "messages", the later ones without a header: they are joined back (the
    message itself left Kannel whole; a real SMSC gets it so).
    """

    def __init__(self) -> None:
        self.messages: list[Mt] = []

    def feed(self, line: str) -> None:
        match = _GOT.search(line)
        if match is None:
            return
        content = match.group(1)
        if _HEAD.match(content + " ") is None:
            if self.messages and self.messages[-1].kind == "text":
                last = self.messages[-1]
                self.messages[-1] = Mt(last.sender, last.receiver, last.kind, last.udh,
                                       last.data + b"\n" + content.encode())
            return
        parts = content.split(" ")
        sender, receiver, kind, rest = parts[0], parts[1], parts[2], parts[3:]
        if kind == "udh" and len(rest) >= 3:
            mt = Mt(sender, receiver, kind, _unescape(rest[0]), _unescape(" ".join(rest[2:])))
        elif kind in ("ucs-2", "ucs2"):
            mt = Mt(sender, receiver, "ucs-2", b"", _unescape(" ".join(rest)))
        else:
            mt = Mt(sender, receiver, kind, b"", " ".join(rest).encode())
        self.messages.append(mt)


@dataclass(frozen=True)
class Sms:
    """A whole message as the handset shows it: the parts joined."""

    receiver: str
    text: str
    ucs2: bool
    parts: int


def _concat(udh: bytes) -> tuple[int, int, int] | None:
    """(reference, total, sequence) of a concatenated part's UDH (8- or 16-bit ref)."""
    i, end = 1, 1 + (udh[0] if udh else 0)
    while i + 1 < min(end, len(udh)):
        iei, size = udh[i], udh[i + 1]
        value = udh[i + 2:i + 2 + size]
        if iei == 0x00 and size == 3:
            return value[0], value[1], value[2]
        if iei == 0x08 and size == 4:
            return value[0] << 8 | value[1], value[2], value[3]
        i += 2 + size
    return None


def handset_view(messages: list[Mt]) -> list[Sms]:
    """The messages each handset would show, in order of their first part; a
    concatenated message appears once all its parts have arrived."""
    shown: list[Sms] = []
    pending: dict[tuple[str, int], dict[int, bytes]] = {}
    for mt in messages:
        concat = _concat(mt.udh) if mt.kind == "udh" else None
        if concat is None:
            ucs2 = mt.kind == "ucs-2"
            shown.append(Sms(mt.receiver, mt.data.decode("utf-16-be" if ucs2 else "utf-8"),
                             ucs2, 1))
            continue
        ref, total, seq = concat
        parts = pending.setdefault((mt.receiver, ref), {})
        parts[seq] = mt.data
        if len(parts) == total:
            data = b"".join(parts[i] for i in sorted(parts))
            del pending[(mt.receiver, ref)]
            # fakesmsc does not print a part's coding. Kannel's GSM text is UTF-8 inside,
            # which never holds a NUL; UTF-16BE of any text with a Latin letter does.
            ucs2 = b"\x00" in data
            shown.append(Sms(mt.receiver, data.decode("utf-16-be" if ucs2 else "utf-8"),
                             ucs2, total))
    return shown


class Kannel:
    """bearerbox + smsbox + one fakesmsc, configured for a gateway at ``gateway_url``."""

    def __init__(self, directory: Path, *, gateway_url: str, token: str | None = None,
                 binaries: Binaries | None = None, mo_recode: bool = True) -> None:
        self.dir = directory
        self.mo_recode = mo_recode
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bin = binaries or require_kannel()
        self.admin_port, self.box_port, self.smsc_port, self.sendsms_port = (
            free_port(), free_port(), free_port(), free_port())
        self.get_url = gateway_url.rstrip("/") + GET_URL
        if token is not None:
            self.get_url += f"&token={quote(token, safe='')}"
        self.config = self.dir / "kannel.conf"
        self.output = FakesmscOutput()
        self._last_output = 0.0
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._fakesmsc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def sendsms_url(self) -> str:
        return (f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms"
                f"?username={USERNAME}&password={PASSWORD}")

    def write_config(self) -> None:
        d = self.dir
        self.config.write_text(f"""\
group = core
admin-port = {self.admin_port}
admin-password = {ADMIN_PASSWORD}
admin-allow-ip = "127.0.0.1"
smsbox-port = {self.box_port}
box-allow-ip = "127.0.0.1"
log-file = "{d / 'bearerbox.log'}"
log-level = 1
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = FAKE
port = {self.smsc_port}
connect-allow-ip = "127.0.0.1"

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {self.box_port}
sendsms-port = {self.sendsms_port}
sendsms-interface = 127.0.0.1
log-file = "{d / 'smsbox.log'}"
log-level = 1
# A phone writing ɛ, ɔ or é sends UCS-2: have smsbox hand it to the get-url as UTF-8.
mo-recode = {"true" if self.mo_recode else "false"}

group = sendsms-user
username = {USERNAME}
password = {PASSWORD}
user-allow-ip = "127.0.0.1"
# Without these Kannel cuts a reply longer than one SMS to its first 160 (or 70) letters.
max-messages = 10
concatenation = true

group = sms-service
keyword = default
catch-all = yes
max-messages = 0
get-url = "{self.get_url}"
""")

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.dir / f"{name}.out").open("ab") as out:
            process = subprocess.Popen(args, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append(process)
        return process

    def status(self) -> str:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.admin_port}/status.txt",
                                 params={"password": ADMIN_PASSWORD}, timeout=2)
        except httpx.HTTPError:
            return ""
        return response.text if response.status_code == 200 else ""

    def start(self) -> None:
        self.write_config()
        bearerbox = self._start([self.bin.bearerbox, str(self.config)], "bearerbox")
        wait_for(lambda: bool(self.status()) or bearerbox.poll() is not None, 20,
                 "bearerbox's admin port")
        self._check_alive(bearerbox, "bearerbox")
        smsbox = self._start([self.bin.smsbox, str(self.config)], "smsbox")
        wait_for(lambda: _listening(self.sendsms_port) or smsbox.poll() is not None, 20,
                 "smsbox's sendsms port")
        self._check_alive(smsbox, "smsbox")
        wait_for(lambda: "smsbox" in self.status().split("Box connections:")[-1], 20,
                 "smsbox to connect to bearerbox")
        self._start_fakesmsc()
        wait_for(lambda: "online" in self._smsc_line(), 20, "fakesmsc to connect")

    def _smsc_line(self) -> str:
        for line in self.status().splitlines():
            if "FAKE" in line:
                return line
        return ""

    def _check_alive(self, process: subprocess.Popen[bytes], name: str) -> None:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}; see "
                                 f"{self.dir / (name + '.out')} and its log file")

    def _start_fakesmsc(self) -> None:
        process = subprocess.Popen(
            [self.bin.fakesmsc, "-H", "127.0.0.1", "-r", str(self.smsc_port)],
            cwd=self.dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        self._fakesmsc = process
        self._procs.append(process)
        log = (self.dir / "fakesmsc.out").open("ab")

        def read() -> None:
            assert process.stdout is not None
            with log:
                for raw in process.stdout:
                    log.write(raw)
                    log.flush()
                    with self._lock:
                        self.output.feed(raw.decode("utf-8", "replace"))
                        self._last_output = time.monotonic()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def inject(self, sender: str, text: str, *, receiver: str = SHORT_CODE,
               ucs2: bool = False) -> None:
        """One message from a phone, as the network hands it to Kannel. ``ucs2`` sends
        it as a phone does when the text has letters outside GSM-7 (ɛ, ɔ, é)."""
        assert self._fakesmsc is not None and self._fakesmsc.stdin is not None
        if ucs2:
            line = f"{sender} {receiver} ucs2 {quote(text.encode('utf-16-be'), safe='')}"
        else:
            assert "\n" not in text
            line = f"{sender} {receiver} text {text}"
        self._fakesmsc.stdin.write(line.encode() + b"\n")
        self._fakesmsc.stdin.flush()

    def messages(self) -> list[Mt]:
        with self._lock:
            return list(self.output.messages)

    def wait_for_sms(self, count: int, timeout: float = 30.0) -> list[Sms]:
        """The first ``count`` whole messages handsets received (parts joined)."""
        def settled() -> bool:  # and fakesmsc printed nothing for a moment (see feed)
            with self._lock:
                quiet = time.monotonic() - self._last_output > 0.2
            return quiet and len(handset_view(self.messages())) >= count

        wait_for(settled, timeout,
                 f"{count} message(s) at the fake SMSC (log: {self.dir / 'fakesmsc.out'})")
        return handset_view(self.messages())

    def stop(self) -> None:
        if self._fakesmsc is not None and self._fakesmsc.stdin is not None:
            with contextlib.suppress(OSError):
                self._fakesmsc.stdin.close()
        for process in reversed(self._procs):  # fakesmsc, smsbox, then bearerbox
            _stop(process)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._fakesmsc is not None and self._fakesmsc.stdout is not None:
            self._fakesmsc.stdout.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Kannel]:
        try:
            self.start()
            yield self
        finally:
            self.stop()


# --- the gateway, as a real `gateway serve` ------------------------------------------


def gateway_env(database_url: str, key_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_KEY_FILE": str(key_file),
        "GATEWAY_CONTENT_DIR": str(REPO),
        **extra,
    })
    return env


def gateway_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def gateway_serving(port: int, env: dict[str, str], log: Path,
                    ) -> Iterator[subprocess.Popen[bytes]]:
    """``gateway serve`` (with its outbox worker) on ``port`` until the block ends."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)], env=env,
            cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: gateway_up(f"http://127.0.0.1:{port}") or process.poll() is not None,
                 30, "the gateway to start")
        if process.poll() is not None:
            raise AssertionError(f"gateway serve exited with {process.returncode}; see {log}")
        yield process
    finally:
        _stop(process, timeout=30)
