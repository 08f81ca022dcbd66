"""A stand-in SMSC on loopback for the fake provider's URL mode, with scripted faults:
hold some requests (until released, or for a while) and refuse others with 429 and a
``Retry-After``. Every request is recorded on arrival, with its time and what it got: the
ground truth for "was it sent, when, and how often".

``script(message) -> Answer`` decides; the default answers 200 at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from tests.capture import serving


@dataclass(frozen=True)
class Answer:
    status: int = 200
    retry_after: str | None = None
    hold: threading.Event | float | None = None  # wait for the event, or this many seconds


@dataclass(frozen=True)
class Arrival:
    id: int
    text: str
    at: float  # time.monotonic()
    status: int


class FlakySmsc:
    def __init__(self, script: Callable[[dict[str, Any]], Answer] | None = None) -> None:
        self.script = script or (lambda message: Answer())
        self.arrivals: list[Arrival] = []
        self.active = 0  # requests being answered now
        self.most_active = 0
        self.lock = threading.Lock()
        smsc = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                if not raw or len(raw) < length:
                    return  # the sender gave up before the body was out: nothing was sent
                message = json.loads(raw)
                answer = smsc.script(message)
                with smsc.lock:
                    smsc.arrivals.append(Arrival(int(message["id"]), str(message["text"]),
                                                 time.monotonic(), answer.status))
                    smsc.active += 1
                    smsc.most_active = max(smsc.most_active, smsc.active)
                try:
                    if isinstance(answer.hold, threading.Event):
                        answer.hold.wait(30)
                    elif answer.hold:
                        time.sleep(answer.hold)
                    self.send_response(answer.status)
                    if answer.retry_after is not None:
                        self.send_header("retry-after", answer.retry_after)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"OK")
                except OSError:
                    pass  # the sender gave up waiting: ambiguous for them
                finally:
                    with smsc.lock:
                        smsc.active -= 1

            def log_message(self, *args: Any) -> None:
                return None

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # a batch of sends arrives at once
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def taken(self) -> Counter[int]:
        """How many times each message was taken (answered other than 429)."""
        with self.lock:
            return Counter(a.id for a in self.arrivals if a.status != 429)

    def seen(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)

    @contextmanager
    def running(self) -> Iterator[Self]:
        with serving(self.server):
            yield self
