"""The fake provider: for development and for tests of the layers above the providers.

By default it records the latest messages in memory (``sent``) and logs their id and size,
never the recipient. With a URL (``GATEWAY_FAKE_SMSC_URL``) it POSTs each message as JSON
to that URL instead, a stand-in SMSC on loopback, and classifies the answer as a real provider
would: 2xx accepted, 429/5xx or no connection retry, a lost answer ambiguous.
"""

from __future__ import annotations

import logging
from collections import deque

import httpx

from gateway.channels.base import OutboundSms, SendOutcome, SendResult

log = logging.getLogger("gateway.channels.fake")
NAME = "fake"
KEEP = 10_000  # messages kept in memory for inspection
# Connections to the stand-in SMSC: as many as the worker keeps sends in flight
# (``send_slots``), so that a request hanging until its timeout holds its own connection and
# no other send waits behind it. The worker paces what it hands over, so only about
# rate x answer time of them are open at once (httpcore checks every pooled connection on
# every request: a few dozen idle ones cost CPU); KEEPALIVE bounds those kept idle.
CONNECTIONS = 8
KEEPALIVE = 16


class FakeSender:
    name = NAME

    def __init__(self, *, url: str | None = None, timeout: float = 10.0,
                 connections: int = CONNECTIONS) -> None:
        # The last messages only (numbers in clear, in memory): enough for tests and a
        # developer's look, never a growing record.
        self.sent: deque[OutboundSms] = deque(maxlen=KEEP)
        self.url = url
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, pool=None),  # waiting for a connection is not an error
            limits=httpx.Limits(max_connections=connections,
                                max_keepalive_connections=min(connections, KEEPALIVE)),
        ) if url else None

    async def send(self, message: OutboundSms) -> SendResult:
        if self._client is not None and self.url is not None:
            return await self._post(message)
        self.sent.append(message)
        log.info("fake send: outbox #%d, %d chars, %s", message.outbox_id, len(message.text),
                 message.encoding)
        return SendResult(SendOutcome.accepted, provider_message_id=f"fake-{message.outbox_id}")

    async def _post(self, message: OutboundSms) -> SendResult:
        assert self._client is not None and self.url is not None
        payload = {"id": message.outbox_id, "to": message.to, "text": message.text,
                   "encoding": message.encoding}
        try:
            response = await self._client.post(self.url, json=payload)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            return SendResult(SendOutcome.retry, code="connect")
        except httpx.HTTPError:
            return SendResult(SendOutcome.ambiguous, code="no-answer")
        if response.is_success:
            return SendResult(SendOutcome.accepted,
                              provider_message_id=f"fake-{message.outbox_id}")
        code = str(response.status_code)
        if response.status_code == 429 or response.status_code >= 500:
            after = response.headers.get("retry-after")
            return SendResult(SendOutcome.retry, code=code,
                              retry_after=float(after) if after and after.isdigit() else None,
                              throttled=response.status_code == 429)
        return SendResult(SendOutcome.failed, code=code)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
