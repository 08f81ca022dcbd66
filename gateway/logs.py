"""Logging that cannot leak a phone number.

Code logs pseudonyms and ids, never numbers. As a second line of defence, every record
that reaches a handler has anything shaped like a phone number (8 to 15 digits, with an
optional ``+`` and spaces or dots) replaced by ``[number]``, and the ``token`` query value
by ``[token]``. uvicorn's access log is off: query strings (Kannel's get-url) carry
numbers.
"""

from __future__ import annotations

import logging
import re

# 8 to 15 digits, optionally after + (or its form encoding) and split by single spaces
# or dots as people write them (+223 70 00 00 01). Dashes are left alone: dates.
_NUMBER = re.compile(r"(?<![\w.:-])(?:\+|%2[bB])?\d(?:[ .]?\d){7,14}(?![\w:-])")
_TOKEN = re.compile(r"(token=)[^&\s]+")


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1[token]", _NUMBER.sub("[number]", text))


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Install one redacting handler on the root logger (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # HTTP clients log each request's URL, and a send URL carries the recipient.
    for name in ("httpx", "httpx2", "httpcore", "urllib3", "aiohttp"):
        logging.getLogger(name).setLevel(logging.WARNING)
