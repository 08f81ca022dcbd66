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
# Connections to the stand-in SMSC. A worker hands over a whole claimed batch at once (up
# to 50); the extra requests wait for a connection instead of opening one each: httpcore
# checks every pooled connection on every request, so 50 connections cost about twice the
# CPU per message of 8, and a loopback SMSC answers fast enough for 8 to keep up.
CONNECTIONS = 8


class FakeSender:
    name = NAME

    def __init__(self, *, url: str | None = None, timeout: float = 10.0) -> None:
        # The last messages only (numbers in clear, in memory): enough for tests and a
        # developer's look, never a growing record.
        self.sent: deque[OutboundSms] = deque(maxlen=KEEP)
        self.url = url
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, pool=None),  # waiting for a connection is not an error
            limits=httpx.Limits(max_connections=CONNECTIONS,
                                max_keepalive_connections=CONNECTIONS),
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
                              retry_after=float(after) if after and after.isdigit() else None)
        return SendResult(SendOutcome.failed, code=code)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
