"""``gateway simulate``: a terminal feature phone for a running gateway.

By default it dials over HTTP exactly as Africa's Talking does
(reference/africastalking.md §1, §7.2): a fresh ``sessionId`` per dial, form-encoded POSTs
whose ``text`` is ``""`` on the dial and then the whole input history joined with ``*``, a
reply checked strictly (200, ``text/plain``, ``CON ``/``END ``), the
``at-ussd-hop-metadata`` label echoed, and one end-of-session notification per dial:
``Success`` after ``END``, ``Incomplete`` when the resident hangs up, ``Failed`` on a
malformed reply. Each screen is shown with its length against the USSD budget and its
encoding, measured by :mod:`gateway.text.encoding`.

With ``--kannel`` it stands where the operator's USSD gateway stands instead: an SMPP 3.4
server (``SmppOperator``) that a deployer's own Kannel binds to, so the menus can be
walked through that Kannel before the operator's link is live. Each input goes to Kannel
as a ``deliver_sm`` with ``ussd_service_op`` and ``its_session_info``; each screen comes
back as a ``submit_sm``, checked for its operation, its session echoed and its budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from gateway.channels.kannel import UssdConfig
from gateway.settings import Settings
from gateway.text.encoding import (
    encoding_of,
    gsm7_decode,
    gsm7_encode,
    is_gsm7,
    length_in,
    screen_length,
)

USSD_PATH = "/webhooks/africastalking/ussd"
EVENTS_PATH = USSD_PATH + "/events"
NETWORK_CODE = "99999"  # the sandbox's network
COST = "XOF 0.00"
HOP_METADATA = "at-ussd-hop-metadata"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # AT waits about 10 s for an application
EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130



def read_line(ask: Callable[[str], str], prompt: str) -> str | None:
    """A line from the resident (None at end of input); piped input is echoed."""
    try:
        line = ask(prompt)
    except EOFError:
        print()
        return None
    if not sys.stdin.isatty():
        print(line)
    return line.strip()

class Unreachable(Exception):
    """The gateway cannot be reached at all."""


@dataclass
class Call:
    """One dial, as Africa's Talking keeps it."""

    session_id: str = field(default_factory=lambda: f"ATUid_{uuid.uuid4().hex}")
    inputs: list[str] = field(default_factory=list)
    hops: int = 0
    labels: list[str] = field(default_factory=list)  # at-ussd-hop-metadata, in order
    echo: str | None = None  # the label to send back on the next hop
    last_response: str = ""
    started: float = field(default_factory=time.monotonic)


def malformed(response: httpx.Response) -> str | None:
    """Why Africa's Talking would refuse this reply, or None when it is well formed."""
    if response.status_code != 200:
        hint = " (wrong or missing GATEWAY_WEBHOOK_TOKEN?)" if response.status_code == 403 else ""
        return f"HTTP {response.status_code}{hint}"
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/plain"):
        return f"Content-Type {content_type or 'missing'}, not text/plain"
    if not response.text.startswith(("CON ", "END ")):
        return "Response should start with a CON or an END"
    return None


def status_line(kind: str, screen: str, budget: int) -> str:
    """E.g. ``[CON · 123/160 septets · GSM-7]``."""
    encoding = encoding_of(screen)
    if encoding == "GSM-7":
        return f"[{kind} · {length_in(screen, encoding)}/{budget} septets · GSM-7]"
    return (f"[{kind} · {length_in(screen, encoding)} UCS-2 units, counted "
            f"{screen_length(screen)}/{budget} septets · UCS-2]")


class Simulator:
    def __init__(self, client: httpx.Client, *, phone: str, service_code: str,
                 token: str | None, budget: int, ask: Callable[[str], str] = input) -> None:
        self.client = client
        self.phone = phone
        self.service_code = service_code
        self.params = {"token": token} if token else None
        self.budget = budget
        self.ask = ask

    def read(self, prompt: str) -> str | None:
        return read_line(self.ask, prompt)

    def post(self, path: str, data: dict[str, str],
             headers: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self.client.post(path, params=self.params, data=data, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(str(exc) or exc.__class__.__name__) from None

    def dial(self) -> str:
        """One session from dial to hang-up; returns its Africa's Talking status."""
        call = Call()
        print(f"\n--- dial {self.service_code} ({call.session_id}) ---")
        status, error = "Incomplete", None
        try:
            while True:
                error = self.hop(call)
                if error is not None:
                    print(f"warning: {error}; Africa's Talking ends the session")
                    if call.last_response:
                        print(f"  body: {call.last_response[:200]!r}")
                    status = "Failed"
                    break
                if call.last_response.startswith("END "):
                    status = "Success"
                    break
                line = self.read("> ")
                if line is None:
                    break
                call.inputs.append(line)
        except KeyboardInterrupt:
            print("\n(hung up)")
        self.notify(call, status, error)
        return status

    def hop(self, call: Call) -> str | None:
        """Send the history so far and show the screen; returns a problem, if any."""
        headers = {HOP_METADATA: call.echo} if call.echo else None
        data = {"sessionId": call.session_id, "serviceCode": self.service_code,
                "phoneNumber": self.phone, "networkCode": NETWORK_CODE,
                "text": "*".join(call.inputs)}
        call.hops += 1
        try:
            response = self.post(USSD_PATH, data, headers)
        except httpx.TimeoutException:
            return "no reply within 10 s"
        except httpx.TransportError as exc:
            return f"{exc.__class__.__name__}: {exc}"
        call.last_response = response.text
        call.echo = response.headers.get(HOP_METADATA)
        if call.echo:
            call.labels.append(call.echo)
        problem = malformed(response)
        if problem is not None:
            return f"malformed reply: {problem}"
        kind, screen = response.text[:3], response.text[4:]
        for line in screen.split("\n"):
            print(f"│ {line}")
        print(status_line(kind, screen, self.budget))
        cost = screen_length(screen)
        if cost > self.budget:
            print(f"warning: screen over budget: {cost} > {self.budget} septets "
                  "(GATEWAY_USSD_BUDGET); a phone may cut or refuse it")
        return None

    def notify(self, call: Call, status: str, error: str | None) -> None:
        """The end-of-session notification, as Africa's Talking posts it."""
        duration_ms = int((time.monotonic() - call.started) * 1000)
        data = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "sessionId": call.session_id, "serviceCode": self.service_code,
            "networkCode": NETWORK_CODE, "phoneNumber": self.phone, "status": status,
            "cost": COST, "durationInMillis": str(duration_ms), "hopsCount": str(call.hops),
            "hopsMetadata": "|".join(call.labels), "input": "*".join(call.inputs),
            "lastAppResponse": call.last_response,
        }
        if error is not None:
            data["errorMessage"] = error
        outcome = "notification sent"
        try:
            response = self.post(EVENTS_PATH, data)
            if response.status_code != 200:
                outcome = f"warning: notification answered HTTP {response.status_code}"
        except httpx.TransportError as exc:
            outcome = f"warning: notification not sent ({exc.__class__.__name__})"
        hops = f"{call.hops} hop" + ("" if call.hops == 1 else "s")
        print(f"--- {status}: {hops}, {duration_ms} ms; {outcome} ---")


def run(*, base: str, phone: str, service_code: str, token: str | None,
        transport: httpx.BaseTransport | None = None) -> int:
    """Dial ``base`` from the terminal until the operator stops; the CLI's exit code."""
    try:
        url = httpx.URL(base)
    except httpx.InvalidURL:
        url = httpx.URL()
    if url.scheme not in ("http", "https") or not url.host:
        print(f"gateway simulate: --url {base!r} is not an http(s) URL "
              "such as http://127.0.0.1:8000", file=sys.stderr)
        return EXIT_USAGE
    budget = Settings().ussd_budget
    if isinstance(sys.stdout, io.TextIOWrapper):  # a terminal without ò still works
        sys.stdout.reconfigure(errors="replace")
    print(f"Dannaya phone {phone} dialling {service_code} at {base}"
          f"{' (with the webhook token)' if token else ''}; screen budget {budget} septets.")
    print("Type a reply and press Enter; Ctrl-D or Ctrl-C hangs up.")
    with httpx.Client(base_url=base, timeout=TIMEOUT, transport=transport) as client:
        simulator = Simulator(client, phone=phone, service_code=service_code, token=token,
                              budget=budget)
        try:
            while True:
                simulator.dial()
                again = simulator.read("dial again? [Y/n] ")
                if again is None or again.lower().startswith("n"):
                    return EXIT_OK
        except Unreachable as exc:
            print(f"gateway simulate: cannot reach the gateway at {base}: {exc}",
                  file=sys.stderr)
            return EXIT_UNREACHABLE
        except KeyboardInterrupt:
            print()
            return EXIT_INTERRUPTED


# --- the operator's USSD gateway, for a deployer's own Kannel --------------------------

OP_TAG, SESSION_TAG = 0x0501, 0x1383  # ussd_service_op, its_session_info (SMPP 3.4)
BEGIN, ANSWER, ABORT = 1, 18, 0x20  # as an operator's USSD gateway sends them
SCREEN_TIMEOUT = 10.0  # an operator waits about this long for the application
SHORT_CODE = "36123"


@dataclass(frozen=True)
class SmppScreen:
    """A ``submit_sm`` Kannel sent to a phone: the screen and what came with it."""

    text: str
    op: int | None  # ussd_service_op, or None when it was missing
    session: bytes | None  # its_session_info as sent back
    data_coding: int
    service_type: str


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


class SmppOperator:
    """The operator's USSD gateway as Kannel sees it: an SMPP 3.4 server (``smpp34``)
    that Kannel's USSD bind connects to. ``send`` is a phone's operation (a
    ``deliver_sm`` with ``ussd_service_op`` and, unless None, ``its_session_info``);
    ``screen`` waits for Kannel's ``submit_sm`` back to that phone. Screens are kept per
    phone, so several phones can dial at once."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2775, *, op_tag: int = OP_TAG,
                 session_tag: int = SESSION_TAG) -> None:
        self.host, self.port = host, port
        self.op_tag, self.session_tag = op_tag, session_tag
        self._server: Any = None
        self._esme: Any = None
        self._bound: asyncio.Event | None = None
        self._screens: dict[str, asyncio.Queue[SmppScreen]] = {}
        self._pump: asyncio.Task[None] | None = None
        self.submits = 0

    async def start(self) -> None:
        import smpp34

        self._bound = asyncio.Event()
        self._server = smpp34.Server(host=self.host, port=self.port, system_id="DANNAYA-SIM")
        await self._server.start()
        self._pump = asyncio.create_task(self._events())

    async def _events(self) -> None:
        import smpp34

        assert self._server is not None and self._bound is not None
        while True:
            event = await self._server.next()
            if isinstance(event, smpp34.Esme):
                self._esme = event
                self._bound.set()
            elif isinstance(event, smpp34.Unbound):
                if self._esme is not None and event.session_id == self._esme.session_id:
                    self._esme = None
                    self._bound.clear()
            elif isinstance(event, smpp34.SubmitSmEvent):
                self.submits += 1
                event.accept(message_id=f"sim-{self.submits}")
                self.queue(event.destination_addr).put_nowait(self._screen(event))

    def _screen(self, event: Any) -> SmppScreen:
        op: int | None = None
        session: bytes | None = None
        for tlv in event.tlvs:
            if tlv.tag == self.op_tag:
                op = int.from_bytes(tlv.value, "big") if tlv.value else None
            elif tlv.tag == self.session_tag:
                session = bytes(tlv.value)
        data = bytes(event.short_message)
        text = data.decode("utf-16-be", "replace") if event.data_coding == 8 \
            else gsm7_decode(data)
        return SmppScreen(text, op, session, event.data_coding, event.service_type)

    def queue(self, phone: str) -> asyncio.Queue[SmppScreen]:
        return self._screens.setdefault(_digits(phone), asyncio.Queue())

    async def bound(self, timeout: float | None = None) -> str:
        """Wait for Kannel to bind; its system id."""
        assert self._bound is not None
        await asyncio.wait_for(self._bound.wait(), timeout)
        assert self._esme is not None
        return str(self._esme.system_id)

    async def send(self, phone: str, op: int, text: str, *, session: bytes | None,
                   ucs2: bool = False, short_code: str = SHORT_CODE) -> None:
        """One operation from ``phone``, as the operator's gateway delivers it."""
        import smpp34

        if self._esme is None:
            raise ConnectionError("Kannel is not bound")
        tlvs = [smpp34.Tlv(self.op_tag, bytes([op]))]
        if session is not None:
            tlvs.append(smpp34.Tlv(self.session_tag, session))
        data = text.encode("utf-16-be") if ucs2 else gsm7_encode(text)
        response = await self._esme.deliver_sm(
            short_code, data, source_addr=phone, service_type="USSD",
            data_coding=8 if ucs2 else 0, source_addr_ton=1, source_addr_npi=1, tlvs=tlvs)
        if not response.is_success:
            raise ConnectionError(f"Kannel refused the deliver_sm "
                                  f"(status 0x{response.command_status:08X})")

    async def screen(self, phone: str, timeout: float = SCREEN_TIMEOUT) -> SmppScreen | None:
        """The next screen Kannel sent ``phone``, or None when none came in ``timeout``."""
        try:
            return await asyncio.wait_for(self.queue(phone).get(), timeout)
        except TimeoutError:
            return None

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._server is not None:
            await self._server.stop()


def smpp_status(screen: SmppScreen, sent: bytes | None, budget: int, *, wait_op: int,
                end_op: int) -> tuple[str, list[str]]:
    """The status line of a screen from Kannel, and what is wrong with it, if anything."""
    problems = []
    kind = "END" if screen.op == end_op else "CON" if screen.op == wait_op else "???"
    if kind == "???":
        problems.append(f"ussd_service_op is {screen.op}, neither {wait_op} (waits) nor "
                        f"{end_op} (last screen)")
    if screen.session != sent:
        problems.append(f"its_session_info {screen.session!r} is not the {sent!r} sent")
    coding = "UCS-2" if screen.data_coding == 8 else "GSM-7"
    cost = screen_length(screen.text)
    if cost > budget:
        problems.append(f"screen over budget: {cost} > {budget} septets (GATEWAY_USSD_BUDGET)")
    echo = "session echoed" if sent is not None and screen.session == sent else "no session"
    return f"[{kind} · op {screen.op} · {echo} · {cost}/{budget} septets · {coding}]", problems


class KannelSimulator:
    """A terminal phone on the operator's side of a deployer's Kannel."""

    def __init__(self, operator: SmppOperator, *, phone: str, service_code: str,
                 settings: Settings, ask: Callable[[str], str] = input) -> None:
        self.operator = operator
        self.phone = phone
        self.service_code = service_code
        self.budget = settings.ussd_budget
        config = UssdConfig.from_settings(settings)
        self.begin_op, self.answer_op = min(config.begin_ops), min(config.answer_ops)
        self.wait_op, self.end_op = config.wait_op, config.end_op
        self.with_session = bool(config.session_tlv)
        self.ask = ask
        self.session = 0

    async def read(self, prompt: str) -> str | None:
        return await asyncio.to_thread(read_line, self.ask, prompt)

    async def dial(self) -> str:
        """One session from dial to hang-up: ``Success``, ``Incomplete`` or ``Failed``."""
        self.session = (self.session + 1) % 256
        seq = 0
        print(f"\n--- dial {self.service_code} (session {self.session}) ---")
        op, text = self.begin_op, self.service_code
        while True:
            sent = bytes([self.session, seq << 1]) if self.with_session else None
            seq = (seq + 1) % 128
            await self.operator.send(self.phone, op, text, session=sent,
                                     ucs2=not is_gsm7(text))
            screen = await self.operator.screen(self.phone)
            if screen is None:
                print(f"warning: no screen within {SCREEN_TIMEOUT:.0f} s: is the USSD "
                      "sms-service's get-url the gateway's /webhooks/kannel/ussd?")
                return "Failed"
            for shown in screen.text.split("\n"):
                print(f"│ {shown}")
            status, problems = smpp_status(screen, sent, self.budget, wait_op=self.wait_op,
                                           end_op=self.end_op)
            print(status)
            for problem in problems:
                print(f"warning: {problem}")
            if screen.op != self.wait_op:
                return "Success" if screen.op == self.end_op else "Failed"
            typed = await self.read("> ")
            if typed is None:
                sent = bytes([self.session, seq << 1]) if self.with_session else None
                await self.operator.send(self.phone, ABORT, "", session=sent)
                print("(hung up: the network tells the gateway)")
                return "Incomplete"
            op, text = self.answer_op, typed


async def run_kannel_async(*, port: int, phone: str, service_code: str, settings: Settings,
                           op_tag: int, session_tag: int) -> int:
    # Ask the system first: smpp34 1.5.0 raises for a port in use, then crashes the
    # interpreter when the server it could not start is dropped.
    try:
        with socket.create_server(("127.0.0.1", port)):
            pass
    except OSError as exc:
        print(f"gateway simulate: cannot listen on 127.0.0.1:{port}: {exc.strerror}",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    operator = SmppOperator("127.0.0.1", port, op_tag=op_tag, session_tag=session_tag)
    await operator.start()
    try:
        print("Dannaya phone behind an operator's USSD gateway: SMPP on "
              f"127.0.0.1:{port}. In kannel.conf, point the USSD bind at it:\n"
              f"  group = smsc\n  smsc = smpp\n  smsc-id = {settings.kannel_ussd_smsc}\n"
              f"  host = 127.0.0.1\n  port = {port}\n  transceiver-mode = true\n"
              "  smsc-username = dannaya\n  smsc-password = sim\n"
              "  system-type = USSD\n  service-type = USSD\n"
              "with the smpp-tlv groups and the USSD sms-service of the README, then "
              "(re)start bearerbox.")
        print("Waiting for Kannel to bind (Ctrl-C stops)...")
        system_id = await operator.bound()
        print(f"Kannel bound as {system_id!r}. Type a reply and press Enter; Ctrl-D hangs up.")
        simulator = KannelSimulator(operator, phone=phone, service_code=service_code,
                                    settings=settings)
        while True:
            status = await simulator.dial()
            print(f"--- {status} ---")
            again = await simulator.read("dial again? [Y/n] ")
            if again is None or again.lower().startswith("n"):
                return EXIT_OK
    except ConnectionError as exc:
        print(f"gateway simulate: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        await operator.stop()


def run_kannel(*, port: int, phone: str, service_code: str, settings: Settings,
               op_tag: int = OP_TAG, session_tag: int = SESSION_TAG) -> int:
    """``gateway simulate --kannel``: the CLI's exit code."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    try:
        return asyncio.run(run_kannel_async(port=port, phone=phone, service_code=service_code,
                                            settings=settings, op_tag=op_tag,
                                            session_tag=session_tag))
    except KeyboardInterrupt:
        print()
        return EXIT_INTERRUPTED
