"""A stand-in for Africa's Talking's SMS API on loopback, for the real SDK to talk to.

It speaks the classic endpoint as documented (reference/africastalking.md §3, behaviour
from §7.2): ``POST /version1/messaging``, form-encoded ``username``, ``to`` (comma-separated),
``message`` and optional ``from``, the key in the ``apiKey`` header. A request without the
right key, username, ``to`` or ``message`` gets 401 in plain text; without
``Accept: application/json`` the answer is XML. Otherwise 201 with::

    {"SMSMessageData": {"Message": "Sent to 1/1 Total Cost: KES 0.8000",
     "Recipients": [{"statusCode": 101, "number": "+2547...", "status": "Success",
                     "cost": "KES 0.8000", "messageId": "ATXid_...", "messageParts": 1}]}}

Every request is recorded on arrival, before any scripted delay, so a sender that gives
up waiting still left a trace (the ground truth for "was it sent?"). Scripting, set before
the sends: ``status`` (every recipient) or ``statuses[number]``; ``http_status`` (a
plain-text error instead, with ``headers`` such as ``Retry-After``); ``body`` and
``content_type`` (answer this instead of the JSON); ``delay`` (seconds before answering);
``drop`` (read the request, then close the connection without a word).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

PATH = "/version1/messaging"
AUTH_FAILED = "The supplied authentication is invalid"
NAMES = {  # statusCode -> the status text AT sends (not always the code's name: 101)
    100: "Processed", 101: "Success", 102: "Queued", 401: "RiskHold",
    402: "InvalidSenderId", 403: "InvalidPhoneNumber", 404: "UnsupportedNumberType",
    405: "InsufficientBalance", 406: "UserInBlacklist", 407: "CouldNotRoute",
    409: "DoNotDisturbRejection", 500: "InternalServerError", 501: "GatewayError",
    502: "RejectedByGateway",
}
ACCEPTED = (100, 101, 102)
PRICE = 0.8


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    form: dict[str, str]
    answer: Any = None  # the JSON answered, when there was one


class FakeAfricasTalking:
    def __init__(self, *, username: str = "dannaya-test", api_key: str = "at-test-key") -> None:
        self.username = username
        self.api_key = api_key
        self.status = 101
        self.statuses: dict[str, int] = {}
        self.http_status: int | None = None
        self.headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.content_type = "application/json"
        self.delay = 0.0
        self.drop = False
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._busy = threading.Condition(self._lock)
        self._active = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with fake._busy:
                    fake._active += 1
                try:
                    fake._handle(self)
                finally:
                    with fake._busy:
                        fake._active -= 1
                        fake._busy.notify_all()

            def log_message(self, *args: Any) -> None:
                return None

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base + PATH

    # --- answering ---------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length", "0"))
        raw = handler.rfile.read(length).decode("ascii", "replace")
        form = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        received = Received(handler.path, {k.lower(): v for k, v in handler.headers.items()},
                            form)
        with self._lock:
            self.received.append(received)
        if self.delay:
            time.sleep(self.delay)
        if self.drop:
            handler.close_connection = True
            return
        status, content_type, body = self._answer(handler, received)
        try:
            handler.send_response(status)
            handler.send_header("content-type", content_type)
            handler.send_header("content-length", str(len(body)))
            for name, value in self.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client gave up waiting

    def _answer(self, handler: BaseHTTPRequestHandler,
                received: Received) -> tuple[int, str, bytes]:
        if handler.path != PATH:
            return 404, "text/plain", b"Not Found"
        form = received.form
        if received.headers.get("apikey") != self.api_key \
                or form.get("username") != self.username:
            return 401, "text/plain", AUTH_FAILED.encode()
        if not form.get("to") or not form.get("message"):
            return 401, "text/plain", b"Request is missing required form field"
        if self.http_status is not None:
            return self.http_status, "text/plain", b"Error"
        if self.body is not None:
            return 201, self.content_type, self.body
        answer = self._recipients(form["to"].split(","))
        received.answer = answer
        if "application/json" not in received.headers.get("accept", ""):
            return 201, "application/xml", _xml(answer)
        return 201, self.content_type, json.dumps(answer).encode()

    def _recipients(self, numbers: list[str]) -> dict[str, Any]:
        recipients = []
        for number in numbers:
            code = self.statuses.get(number, self.status)
            ok = code in ACCEPTED
            recipients.append({
                "statusCode": code, "number": number, "status": NAMES.get(code, "Unknown"),
                "cost": f"KES {PRICE:.4f}" if ok else "0",
                "messageId": f"ATXid_{uuid.uuid4().hex}" if ok else "None",
                **({"messageParts": 1} if ok else {}),
            })
        sent = sum(1 for r in recipients if r["statusCode"] in ACCEPTED)
        return {"SMSMessageData": {
            "Message": f"Sent to {sent}/{len(numbers)} Total Cost: KES {sent * PRICE:.4f}",
            "Recipients": recipients,
        }}

    # --- running -----------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[FakeAfricasTalking]:
        thread = threading.Thread(target=self.server.serve_forever,
                                  kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            with self._busy:  # let delayed answers finish before the next test
                self._busy.wait_for(lambda: self._active == 0, timeout=10)
            self.server.server_close()


def _xml(answer: dict[str, Any]) -> bytes:
    data = answer["SMSMessageData"]
    items = "".join(
        f"<Recipient><number>{r['number']}</number><status>{r['status']}</status>"
        f"<statusCode>{r['statusCode']}</statusCode><cost>{r['cost']}</cost>"
        f"<messageId>{r['messageId']}</messageId></Recipient>"
        for r in data["Recipients"])
    return (f"<?xml version='1.0' encoding='UTF-8'?><AfricasTalkingResponse><SMSMessageData>"
            f"<Message>{data['Message']}</Message><Recipients>{items}</Recipients>"
            f"</SMSMessageData></AfricasTalkingResponse>").encode()
