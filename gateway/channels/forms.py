"""What every webhook does first: cap the body (413), then check the token (403), then
decode the form strictly. Only then does a provider adapter see the fields.

Bodies are parsed here, not by python-multipart: a form is at most 16 KiB, decoded as
UTF-8 (invalid bytes are replaced, never a 500), with a bounded number of fields.
``decode_form`` reads fields as urllib's ``parse_qsl`` does (a test holds it to that) at
a fraction of its cost: most values need no unquoting.
"""

from __future__ import annotations

import hmac
from urllib.parse import unquote

from fastapi import Request
from starlette.responses import PlainTextResponse, Response

MAX_FIELDS = 64


class Refused(Exception):
    """The request is refused before anything is read or stored."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def read_form(request: Request, *, max_bytes: int, token: str | None) -> dict[str, str]:
    """The request's fields (query string, then a form body), after the size and token
    checks. Raises ``Refused`` with a 413 or 403 response."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise Refused(PlainTextResponse("Request body too large", status_code=413))
    body = b""
    if request.method == "POST":
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise Refused(PlainTextResponse("Request body too large", status_code=413))
            chunks.append(chunk)
        body = b"".join(chunks)
    query = decode_form(request.scope.get("query_string", b"").decode("latin-1"),
                        max_fields=None)
    if token is not None:
        given = ""
        for key, value in query:
            if key == "token":
                given = value  # the last one, as Starlette's query_params.get gives
        if not hmac.compare_digest(given.encode("utf-8", "replace"), token.encode()):
            raise Refused(PlainTextResponse("Forbidden", status_code=403))
    fields: dict[str, str] = {}
    for key, value in query:
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
