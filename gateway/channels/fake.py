"""The fake provider: for development and for tests of the layers above the providers.

By default it records the latest messages in memory (``sent``) and logs their id and size,
never the recipient. With a URL (``GATEWAY_FAKE_SMSC_URL``) it POSTs each message as JSON
to that URL instead, a stand-in SMSC on loopback, and classifies the answer as a real provider
would: 2xx accepted, 429/5xx or no connection retry, a lost answer ambiguous.
"""

from __future__ import annotations

import logging
from collections import deque

from gateway.channels.base import OutboundSms, SendOutcome, SendResult
from gateway.channels.http import AnswerLost, NotSent, ProviderClient

log = logging.getLogger("gateway.channels.fake")
NAME = "fake"
KEEP = 10_000  # messages kept in memory for inspection
# Connections to the stand-in SMSC: as many as the worker keeps sends in flight
# (``send_slots``), so that a request hanging until its timeout holds its own connection and
# no other send waits behind it. The worker paces what it hands over, so only about
# rate x answer time of them are open at once.
CONNECTIONS = 8


class FakeSender:
    name = NAME

    def __init__(self, *, url: str | None = None, timeout: float = 10.0,
                 connections: int = CONNECTIONS) -> None:
        # The last messages only (numbers in clear, in memory): enough for tests and a
        # developer's look, never a growing record.
        self.sent: deque[OutboundSms] = deque(maxlen=KEEP)
        self.url = url
        self._client = ProviderClient(timeout=timeout, connections=connections) \
            if url else None

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
            answer = await self._client.post_json(self.url, payload)
        except NotSent:
            return SendResult(SendOutcome.retry, code="connect")
        except AnswerLost:
            return SendResult(SendOutcome.ambiguous, code="no-answer")
        status = answer.status
        if 200 <= status < 300:
            return SendResult(SendOutcome.accepted,
                              provider_message_id=f"fake-{message.outbox_id}")
        code = str(status)
        if status == 429 or status >= 500:
            after = answer.retry_after
            return SendResult(SendOutcome.retry, code=code,
                              retry_after=float(after) if after and after.isdigit() else None,
                              throttled=status == 429)
        return SendResult(SendOutcome.failed, code=code)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
