"""A real Kannel on loopback for the tests: bearerbox, smsbox and the fake SMSC client
``fakesmsc`` (Debian's ``kannel`` and ``kannel-extras``; ``scripts/install-kannel``), in a
temporary directory, on free ports; with ``ussd_port``, also the README's USSD groups,
bound to a fake operator's USSD gateway (``Operator``: an SMPP 3.4 server) on that port.

fakesmsc plays the mobile network. It runs in interactive mode: each line written to its
standard input is one message from a phone (``sender receiver text|ucs2 text``), and it
prints every message Kannel hands it (``Got message N: <from to type text>``), which
``messages()`` returns. It also acknowledges each message, so bearerbox sends the dlr-url
two reports: 8 (accepted by the SMSC), then 1 (delivered).

Kannel's own logs, in the directory, hold phone numbers (test numbers only): they are
files there, never printed by the tests.
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote_to_bytes

import httpx
import pytest

from gateway.simulate import SmppOperator, SmppScreen
from tests.conftest import REPO, SERVICE_MISSING
from tests.phone import Screen

T = TypeVar("T")

FAKESMSC = Path("/usr/lib/kannel/test/fakesmsc")
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
USERNAME = "dannaya"
PASSWORD = "kannel-test-secret"
SHORT_CODE = "36123"
ADMIN_PASSWORD = "adm"
GET_URL = "/webhooks/kannel/sms?from=%p&to=%P&text=%a&id=%I&coding=%c&charset=%C"
USSD_GET_URL = ("/webhooks/kannel/ussd?from=%p&to=%P&text=%a&id=%I&meta=%D&smsc=%i"
                "&coding=%c&charset=%C")
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
                 binaries: Binaries | None = None, mo_recode: bool = True,
                 ussd_port: int | None = None, ussd_url: str | None = None,
                 ussd_session_tlv: bool = True) -> None:
        self.dir = directory
        self.mo_recode = mo_recode
        # The operator's USSD gateway (an SMPP server) Kannel binds to, and where its
        # sms-service calls the gateway (a proxy in front of it, for some tests).
        self.ussd_port = ussd_port
        self.ussd_session_tlv = ussd_session_tlv
        self.ussd_get_url = (ussd_url or gateway_url).rstrip("/") + USSD_GET_URL
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bin = binaries or require_kannel()
        self.admin_port, self.box_port, self.smsc_port, self.sendsms_port = (
            free_port(), free_port(), free_port(), free_port())
        self.get_url = gateway_url.rstrip("/") + GET_URL
        if token is not None:
            self.get_url += f"&token={quote(token, safe='')}"
            self.ussd_get_url += f"&token={quote(token, safe='')}"
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
# A USSD screen must never leave as an SMS (it would stay in the inbox).
denied-smsc-id = ussd

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {self.box_port}
sendsms-port = {self.sendsms_port}
sendsms-interface = 127.0.0.1
log-file = "{d / 'smsbox.log'}"
log-level = 1
# A phone writing ɛ, ɔ or é sends UCS-2: have smsbox hand it to the get-url as UTF-8.
mo-recode = {"true" if self.mo_recode else "false"}
# A get-url call whose answer was lost is made again once, with the same id.
http-request-retry = 1
http-queue-delay = 1

group = sendsms-user
username = {USERNAME}
password = {PASSWORD}
user-allow-ip = "127.0.0.1"
# Without these Kannel cuts a reply longer than one SMS to its first 160 (or 70) letters.
max-messages = 10
concatenation = true

{self.ussd_config()}
group = sms-service
keyword = default
catch-all = yes
max-messages = 0
get-url = "{self.get_url}"
""")

    def ussd_config(self) -> str:
        """The README's USSD groups: the bind to the operator's USSD gateway, the two
        smpp-tlv groups and the USSD sms-service (before the SMS one: Kannel takes the
        first default service that accepts the message's SMSC)."""
        if self.ussd_port is None:
            return ""
        session = "" if not self.ussd_session_tlv else """
group = smpp-tlv
name = its_session_info
tag = 0x1383
type = octetstring
length = 2
smsc-id = ussd
"""
        return f"""
group = smsc
smsc = smpp
smsc-id = ussd
host = 127.0.0.1
port = {self.ussd_port}
transceiver-mode = true
smsc-username = dannaya
smsc-password = operator
system-type = USSD
service-type = USSD
# Only USSD screens go out here: Kannel's smsc-id routes nothing by itself.
allowed-smsc-id = ussd
reconnect-delay = 1

group = smpp-tlv
name = ussd_service_op
tag = 0x0501
type = integer
length = 1
smsc-id = ussd
{session}
group = sms-service
keyword = default
catch-all = true
accepted-smsc = ussd
omit-empty = true
accept-x-kannel-headers = true
get-url = "{self.ussd_get_url}"
"""
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
        if self.ussd_port is not None:
            wait_for(lambda: "online" in self._smsc_line("ussd["), 30,
                     "Kannel to bind to the operator's USSD gateway")

    def _smsc_line(self, name: str = "FAKE") -> str:
        for line in self.status().splitlines():
            if name in line:
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

    def box_pids(self) -> list[int]:
        """bearerbox's and smsbox's process ids (fakesmsc not included)."""
        return [p.pid for p in self._procs if p is not self._fakesmsc]

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
        "GATEWAY_QUIET_HOURS": "",  # broadcasts go out whatever the hour
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


# --- the operator's USSD gateway, on a loop of its own ----------------------------------


class Operator:
    """``gateway.simulate.SmppOperator`` (an SMPP 3.4 server, through ``smpp34``) on an
    event loop in a thread of its own, for synchronous tests: Kannel's USSD bind connects
    to it, phones' operations go out as ``deliver_sm`` and screens come back as
    ``submit_sm``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.smpp = SmppOperator("127.0.0.1", self.port)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self.smpp.start())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.smpp.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Operator]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def send(self, phone: str, op: int, text: str, *, session: bytes | None,
             ucs2: bool = False) -> None:
        self.run(self.smpp.send(phone, op, text, session=session, ucs2=ucs2))

    def screen(self, phone: str, timeout: float = 20.0) -> SmppScreen | None:
        return self.run(self.smpp.screen(phone, timeout), timeout + 5)


@dataclass
class SmppPhone:
    """A phone on the operator's network: each input one operation of its USSD session
    (``ussd_service_op`` 1 to dial, 18 to answer, 0x20 when it hangs up), each with
    ``its_session_info``: the session number, then a sequence number that changes from
    message to message. Screens are what Kannel sent back, checked: operation 2 (CON) or
    17 (END), the session echoed byte for byte."""

    operator: Operator
    number: str
    session: int | None = 0x0A  # None: this operator sends no session parameter
    seq: int = 0
    screens: list[SmppScreen] = field(default_factory=list)

    def info(self) -> bytes | None:
        if self.session is None:
            return None
        self.seq = (self.seq + 1) % 128
        return bytes([self.session, self.seq << 1])

    def operation(self, op: int, text: str, *, ucs2: bool = False,
                  info: bytes | None = None, expect: bool = True) -> SmppScreen | None:
        sent = info if info is not None else self.info()
        self.operator.send(self.number, op, text, session=sent, ucs2=ucs2)
        screen = self.operator.screen(self.number, 20.0 if expect else 2.0)
        if screen is None:
            assert not expect, f"no screen for {self.number[-3:]} within 20 s"
            return None
        assert screen.session == sent, (screen.session, sent)  # echoed byte for byte
        assert screen.op in (2, 17), screen
        assert screen.service_type == "USSD"
        self.screens.append(screen)
        return screen

    def _shown(self, screen: SmppScreen | None) -> Screen:
        assert screen is not None
        return Screen("END" if screen.op == 17 else "CON", screen.text)

    def dial(self, code: str = "*123#", session: int | None = None) -> Screen:
        if session is not None:
            self.session, self.seq = session, 0
        return self._shown(self.operation(1, code))

    def press(self, *keys: str, ucs2: bool = False) -> Screen:
        screen = None
        for key in keys:
            screen = self.operation(18, key, ucs2=ucs2)
        return self._shown(screen)

    def abort(self, op: int = 0x20) -> None:
        """The network ends the session: the gateway must send nothing back."""
        assert self.operation(op, "", expect=False) is None


# --- the gateway in this process, for Kannel to call ------------------------------------


@contextlib.contextmanager
def app_serving(app: Any, port: int) -> Iterator[str]:
    """``app`` on uvicorn at 127.0.0.1:``port`` in a thread (as ``gateway serve`` runs
    it: one worker, no access log); its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False,
                            log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, "the gateway to start")
        assert thread.is_alive(), "the gateway did not start"
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class LosingProxy:
    """A loopback HTTP proxy in front of the gateway that loses the answer to the calls
    ``lose`` picks (it closes the connection once the gateway answered), as a network
    between Kannel and the gateway may: smsbox then makes the same call again."""

    def __init__(self, upstream_port: int, lose: Callable[[bytes], bool]) -> None:
        self.port = free_port()
        self.upstream_port = upstream_port
        self.lose = lose
        self.lost: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
            reader, upstream = client.makefile("rb"), up.makefile("rb")
            while True:
                head = _read_head(reader)
                if not head:
                    return
                up.sendall(head)  # the gateway's GET calls carry no body
                answer = _read_head(upstream)
                length = 0
                for line in answer.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                answer += upstream.read(length)
                if self.lose(head):
                    self.lost.append(head)
                    return  # the gateway did answer; Kannel never hears it
                client.sendall(answer)

    @contextlib.contextmanager
    def running(self) -> Iterator[LosingProxy]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stopping = True
            self._server.close()
            self._thread.join(timeout=5)


def _read_head(stream: Any) -> bytes:
    lines = []
    while True:
        line = stream.readline()
        if not line:
            return b""
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)
