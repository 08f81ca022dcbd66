"""The senders' HTTP client against a raw socket server that misbehaves the way a provider
(or the network in front of it) does: what each fault becomes, and how many requests the
provider saw, which is how many SMS it may have sent."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from gateway.channels.base import OutboundSms, SendOutcome
from gateway.channels.http import Answer, AnswerLost, NotSent, ProviderClient
from gateway.channels.kannel import KannelSender

pytestmark = pytest.mark.nodb

OK = (b"HTTP/1.1 202 Accepted\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n"
      b"Connection: keep-alive\r\n\r\n0: Accepted for delivery")


@dataclass
class RawServer:
    """Answers the connection's requests in turn from ``answers`` (None: read the request,
    then close the connection without a word); records each request line."""

    answers: list[bytes | None]
    requests: list[str] = field(default_factory=list)
    port: int = 0


def _serve(server: RawServer, listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_answer, args=(server, conn), daemon=True).start()


def _answer(server: RawServer, conn: socket.socket) -> None:
    with conn:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            server.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            answer = server.answers.pop(0) if server.answers else None
            if answer is None:
                return  # the request was read: the SMS may be on its way
            conn.sendall(answer)


@contextmanager
def raw_server(*answers: bytes | None) -> Iterator[RawServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    server = RawServer(list(answers), port=listener.getsockname()[1])
    thread = threading.Thread(target=_serve, args=(server, listener), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        listener.close()
        thread.join(5)


def kannel(port: int) -> KannelSender:
    return KannelSender(sendsms_url=f"http://127.0.0.1:{port}/cgi-bin/sendsms?username=u"
                        "&password=p%26q", sender="36123", public_url="http://gw.test/",
                        timeout=2.0, connections=4)


def sms(outbox_id: int) -> OutboundSms:
    return OutboundSms(outbox_id, "+22370000001", "Merci, message reçu", "GSM-7")


def test_a_connection_cut_after_the_request_is_ambiguous_and_never_sent_again() -> None:
    """The second send goes out on the kept-alive connection, which the provider closes
    after reading it: aiohttp would send a GET again on a new connection by itself (two
    SMS); the client reports the answer lost instead, and the provider saw it once."""

    async def go(port: int) -> list[SendOutcome]:
        sender = kannel(port)
        try:
            return [(await sender.send(sms(i))).outcome for i in (1, 2)]
        finally:
            await sender.close()

    with raw_server(OK, None) as server:
        outcomes = asyncio.run(go(server.port))
    assert outcomes == [SendOutcome.accepted, SendOutcome.ambiguous]
    assert len(server.requests) == 2


def test_the_request_carries_the_parameters_percent_encoded_and_the_urls_own() -> None:
    async def go(port: int) -> None:
        sender = kannel(port)
        try:
            await sender.send(sms(7))
        finally:
            await sender.close()

    with raw_server(OK) as server:
        asyncio.run(go(server.port))
    [line] = server.requests
    method, target, _ = line.split(" ")
    assert method == "GET"
    assert target.startswith("/cgi-bin/sendsms?username=u&password=p%26q&to=%2B22370000001&")
    assert "&dlr-url=http%3A%2F%2Fgw.test%2Fwebhooks%2Fkannel%2Fdelivery%3Fid%3D7%26status" \
           "%3D%25d&" in target + "&"


async def get_once(client: ProviderClient, url: str) -> Answer:
    """One request, then the client closed in the same event loop (as a worker does)."""
    try:
        return await client.get(url)
    finally:
        await client.close()


def test_no_connection_means_not_sent() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    client = ProviderClient(timeout=1.0, connections=2)
    with pytest.raises(NotSent):
        asyncio.run(get_once(client, f"http://127.0.0.1:{port}/"))


def test_an_answer_that_never_comes_is_lost() -> None:
    release = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def hold() -> None:
        conn, _ = listener.accept()
        release.wait(5)
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    client = ProviderClient(timeout=0.3, connections=2)
    try:
        with pytest.raises(AnswerLost):
            asyncio.run(get_once(client, f"http://127.0.0.1:{listener.getsockname()[1]}/"))
    finally:
        release.set()
        thread.join(5)
        listener.close()


def test_a_client_closed_in_one_event_loop_serves_the_next() -> None:
    """``asyncio.run`` twice (a worker stopped and started again in the same process, as
    the tests do): the second loop opens its own connection."""
    client = ProviderClient(timeout=2.0, connections=2)
    with raw_server(OK, OK) as server:
        url = f"http://127.0.0.1:{server.port}/"
        first = asyncio.run(get_once(client, url))
        second = asyncio.run(get_once(client, url))
    assert first == second == Answer(202, "0: Accepted for delivery", None)
    assert len(server.requests) == 2
