"""A stand-in SMSC on loopback for the fake provider's URL mode: it records every message
POSTed to it on arrival (the ground truth for loss and duplicate checks), then answers after
an optional delay, so a sender killed meanwhile loses the answer, not the message.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.capture import serving


class FakeSmsc:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        smsc = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                if not raw or len(raw) < length:
                    return  # the sender died before the body was out: nothing was sent
                body = json.loads(raw)
                with smsc.lock:  # taken on arrival: the answer may then be lost
                    smsc.received.append(body)
                if smsc.delay:
                    time.sleep(smsc.delay)
                try:
                    self.send_response(200)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"OK")
                except OSError:
                    pass  # the sender died meanwhile: it is ambiguous for them

            def log_message(self, *args: Any) -> None:
                return None

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # a batch of sends arrives at once
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def counts(self) -> Counter[int]:
        with self.lock:
            return Counter(int(m["id"]) for m in self.received)

    @contextmanager
    def running(self) -> Iterator[FakeSmsc]:
        with serving(self.server):
            yield self
