"""``gateway simulate``: a terminal feature phone for a running gateway.

It dials over HTTP exactly as Africa's Talking does (reference/africastalking.md §1, §7.2):
a fresh ``sessionId`` per dial, form-encoded POSTs whose ``text`` is ``""`` on the dial and
then the whole input history joined with ``*``, a reply checked strictly (200,
``text/plain``, ``CON ``/``END ``), the ``at-ussd-hop-metadata`` label echoed, and one
end-of-session notification per dial: ``Success`` after ``END``, ``Incomplete`` when the
resident hangs up, ``Failed`` on a malformed reply. Each screen is shown with its length
against the USSD budget and its encoding, measured by :mod:`gateway.text.encoding`.
"""

from __future__ import annotations

import io
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from gateway.settings import Settings
from gateway.text.encoding import encoding_of, length_in, screen_length

USSD_PATH = "/webhooks/africastalking/ussd"
EVENTS_PATH = USSD_PATH + "/events"
NETWORK_CODE = "99999"  # the sandbox's network
COST = "XOF 0.00"
HOP_METADATA = "at-ussd-hop-metadata"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # AT waits about 10 s for an application
EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
        """A line from the resident (None at end of input); piped input is echoed."""
        try:
            line = self.ask(prompt)
        except EOFError:
            print()
            return None
        if not sys.stdin.isatty():
            print(line)
        return line.strip()

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
