"""The HTTP client of the senders that speak HTTP to their provider: Kannel's sendsms and
the fake provider's stand-in SMSC. (Africa's Talking goes through its official SDK.)

It is aiohttp's: a send costs about a fifth of the CPU httpx's did (0.2 ms against
0.9-1.0 ms on loopback), and the worker's sends share the event loop with the USSD hops.

A send ends one of three ways, and the sender names the outcome:

- an ``Answer`` (any status): the provider answered;
- ``NotSent``: no connection could be made (refused, no route, connecting timed out), so
  nothing left this machine: the message may be tried again;
- ``AnswerLost``: the request may have reached the provider, but no whole answer came back
  (a timeout while waiting for it, a connection cut): the message may have gone out.

aiohttp retries a GET once, by itself, when a kept-alive connection turns out closed; a
retry of a send that did reach the provider would send the SMS twice, so this client
never does that: a cut connection is ``AnswerLost``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL


class NotSent(Exception):
    """No connection to the provider: the request never left."""


class AnswerLost(Exception):
    """The request may have reached the provider; its answer did not come back."""


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    retry_after: str | None


class ProviderClient:
    """Requests to one provider, up to ``connections`` at once (one per send the worker
    keeps in flight: a request hanging until its timeout holds its own connection, and no
    other send waits behind it). ``timeout``: the longest wait for an answer once the
    request is out; ``connect_timeout``: for a new connection. Waiting for a free
    connection is not an error and has no limit.

    The session is made on first use, in the event loop of that use (the worker's), and
    closed by ``close`` in that loop; after that, another loop may use the client."""

    def __init__(self, *, timeout: float, connect_timeout: float | None = None,
                 connections: int) -> None:
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=connect_timeout or timeout,
            sock_read=timeout)
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _current(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None:
            if self._loop is loop:
                return self._session
            # Its connections belong to the other loop, which must close it (``close``)
            # before another loop sends: a worker closes its sender when it stops.
            raise RuntimeError("the provider's HTTP client is still open in another "
                               "event loop")
        connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0,
                                         use_dns_cache=True, enable_cleanup_closed=False)
        session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                        auto_decompress=False, trust_env=False,
                                        skip_auto_headers=("User-Agent",))
        # No silent second try of a GET on a kept-alive connection found closed (see the
        # module's docstring). The switch is not public; tests/channels/test_http.py
        # fails if it stops working.
        session._retry_connection = False
        self._session, self._loop = session, loop
        return session

    async def get(self, url: str) -> Answer:
        return await self._request("GET", url)

    async def post_json(self, url: str, payload: Any) -> Answer:
        return await self._request("POST", url, json=payload)

    async def _request(self, method: str, url: str, **kwargs: Any) -> Answer:
        session = self._current()
        try:
            # As written: the senders percent-encode their parameters themselves.
            async with session.request(method, URL(url, encoded=True), allow_redirects=False,
                                       **kwargs) as response:
                text = await response.text(errors="replace")
                return Answer(response.status, text, response.headers.get("retry-after"))
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotSent(exc.__class__.__name__) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AnswerLost(exc.__class__.__name__) from None

    async def close(self) -> None:
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

