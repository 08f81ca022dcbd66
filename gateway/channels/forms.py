"""What every webhook does first: cap the body (413) and the time it takes to arrive
(408), then check the token (403), then decode the form strictly. Only then does a
provider adapter see the fields. A client that hangs up mid-body is noted in one quiet
line and answered nothing.

Bodies are parsed here, not by python-multipart: a form is at most 16 KiB, decoded as
UTF-8 (invalid bytes are replaced, never a 500), with a bounded number of fields.
``decode_form`` reads fields as urllib's ``parse_qsl`` does (a test holds it to that) at
a fraction of its cost: most values need no unquoting. Kannel's fields are read as bytes
instead (``read_raw_form``): its ``text`` is in the charset it names beside it, which may
be UTF-16BE, and its adapter decodes it by that charset.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from urllib.parse import unquote, unquote_to_bytes

from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response

log = logging.getLogger("gateway.channels.forms")

MAX_FIELDS = 64


class Refused(Exception):
    """The request is refused before anything is read or stored."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def read_form(request: Request, *, max_bytes: int, token: str | None,
                    timeout: float | None = None) -> dict[str, str]:
    """The request's fields (query string, then a form body), after the size, time and
    token checks. Raises ``Refused`` with a 413, 408 or 403 response (or, for a client
    that hung up, a response nobody will read)."""
    query, body = await _read(request, max_bytes=max_bytes, timeout=timeout)
    pairs = decode_form(query.decode("latin-1"), max_fields=None)
    if token is not None:
        _check_token([(k, v.encode("utf-8", "replace")) for k, v in pairs if k == "token"],
                     token)
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key != "token":
            fields.setdefault(key, value)
    if body:
        text = body.decode("utf-8", errors="replace")
        try:
            pairs = decode_form(text)
        except ValueError:
            pairs = []
        for key, value in pairs:
            fields[key] = value.replace("\x00", "")
    return fields


async def read_raw_form(request: Request, *, max_bytes: int, token: str | None,
                        timeout: float | None = None) -> dict[str, bytes]:
    """``read_form`` with each value as the bytes that were sent, percent-escapes
    decoded and nothing else: for a provider whose fields are not all UTF-8 (Kannel hands
    a UCS-2 message over as raw UTF-16BE bytes, in the charset it names beside them)."""
    query, body = await _read(request, max_bytes=max_bytes, timeout=timeout)
    raw_pairs = decode_form_bytes(query, max_fields=None)
    if token is not None:
        _check_token(raw_pairs, token)
    fields: dict[str, bytes] = {}
    for key, value in raw_pairs:
        if key != "token":
            fields.setdefault(key, value)
    if body:
        try:
            pairs = decode_form_bytes(body)
        except ValueError:
            pairs = []
        for key, value in pairs:
            fields[key] = value
    return fields


async def _read(request: Request, *, max_bytes: int,
                timeout: float | None) -> tuple[bytes, bytes]:
    """The raw query string and body, once their size and time are checked."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise Refused(PlainTextResponse("Request body too large", status_code=413))
    body = b""
    if request.method == "POST":
        try:
            async with asyncio.timeout(timeout):
                body = await _body(request, max_bytes)
        except TimeoutError:
            log.info("%s: body not received within %gs; 408", request.url.path, timeout)
            raise Refused(PlainTextResponse("Request body too slow", status_code=408,
                                            headers={"Connection": "close"})) from None
        except ClientDisconnect:
            log.info("%s: the client hung up before its body ended", request.url.path)
            raise Refused(PlainTextResponse("Client disconnected", status_code=400)) from None
    query: bytes = request.scope.get("query_string", b"")
    return query, body


def _check_token(pairs: list[tuple[str, bytes]], token: str) -> None:
    """Refuse (403) unless the last ``token`` field, as Starlette's query_params.get
    gives it, is ``token``."""
    given = b""
    for key, value in pairs:
        if key == "token":
            given = value
    if not hmac.compare_digest(given, token.encode()):
        raise Refused(PlainTextResponse("Forbidden", status_code=403))


async def _body(request: Request, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Refused(PlainTextResponse("Request body too large", status_code=413))
        chunks.append(chunk)
    return b"".join(chunks)


def decode_form(text: str, *, max_fields: int | None = MAX_FIELDS) -> list[tuple[str, str]]:
    """``application/x-www-form-urlencoded`` fields in order, blank values kept; a field
    without ``=`` has an empty value. More than ``max_fields`` raises ValueError."""
    if not text:
        return []
    parts = text.split("&")
    if max_fields is not None and len(parts) > max_fields:
        raise ValueError("too many fields")
    pairs = []
    for part in parts:
        if part:
            name, _, value = part.partition("=")
            pairs.append((_unquote(name), _unquote(value)))
    return pairs


def _unquote(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    if "%" in text:
        text = unquote(text, errors="replace")
    return text


def decode_form_bytes(raw: bytes, *, max_fields: int | None = MAX_FIELDS,
                      ) -> list[tuple[str, bytes]]:
    """``decode_form`` with each value left as bytes (``+`` and percent-escapes
    decoded, no charset applied); names are read as UTF-8."""
    if not raw:
        return []
    parts = raw.split(b"&")
    if max_fields is not None and len(parts) > max_fields:
        raise ValueError("too many fields")
    pairs = []
    for part in parts:
        if part:
            name, _, value = part.partition(b"=")
            pairs.append((_unquote_bytes(name).decode("utf-8", "replace"),
                          _unquote_bytes(value)))
    return pairs


def _unquote_bytes(raw: bytes) -> bytes:
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    return raw
