"""What tests watch with: log records before redaction, and loopback HTTP servers run in a
thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import HTTPServer


class RawLog(logging.Handler):
    """Every record as logged (name, message, traceback), before the gateway's redacting
    filter could rewrite it: the code itself must not log a number."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")


@contextmanager
def raw_log() -> Iterator[RawLog]:
    """A ``RawLog`` ahead of every other root handler, with the root logger at DEBUG."""
    handler = RawLog()
    root = logging.getLogger()
    level = root.level
    root.handlers.insert(0, handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@contextmanager
def serving(server: HTTPServer, poll_interval: float = 0.05) -> Iterator[None]:
    """Serve ``server`` on a daemon thread for the block, then shut it down and close it."""
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
