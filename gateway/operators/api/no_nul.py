"""One guard for the whole operator API: a NUL character anywhere a request carries text
(the path, a query parameter, a string or a key of a JSON body) gets a 422 naming where,
before any endpoint sees it. PostgreSQL text cannot hold a NUL: without this, an endpoint
that forgot to check (``GET /audit?action=%00`` did) answered 500 there and worked on
SQLite."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOT_TEXT = "a NUL character is not text"


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = _in_path_or_query(scope)
        if where is None and _json(scope):
            body, receive = await _buffered(receive)
            where = _in_json(body)
        if where is not None:
            response = JSONResponse({"detail": f"{where}: {NOT_TEXT}"}, status_code=422)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _in_path_or_query(scope: Scope) -> str | None:
    if "\x00" in scope.get("path", ""):
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "") or "query"
    return "query"


def _json(scope: Scope) -> bool:
    """Whether the endpoint will read the body as JSON: FastAPI does when it says so, and
    when it names no content type at all."""
    if scope.get("method") in ("GET", "HEAD"):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return True


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a ``receive`` that hands it on as one message."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left: let the app see it
            chunks.append(b"")
            first: Message = message
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            break
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return b"".join(chunks), replay


def _in_json(body: bytes) -> str | None:
    if b"\\u0000" not in body and b"\x00" not in body:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None  # not JSON: the endpoint says so
    return _walk(document, "body")


def _walk(value: Any, where: str) -> str | None:
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key.replace(chr(0), '')}"
            if "\x00" in key:
                return name
            found = _walk(item, name)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _walk(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


class DropNulFromQuery:
    """The dashboard's gentler form: its pages drop NUL characters from the query string
    (as they do from forms: ``web.read_form``), so a filter never carries one to the
    database; a path with one finds no page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query: bytes = scope.get("query_string", b"")
            if b"%00" in query or b"\x00" in query:
                scope = {**scope, "query_string": query.replace(b"%00", b"")
                         .replace(b"\x00", b"")}
            if "\x00" in scope.get("path", ""):
                response = JSONResponse({"detail": f"path: {NOT_TEXT}"}, status_code=404)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
