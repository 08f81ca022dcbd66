"""A handset that texts the gateway as Africa's Talking delivers SMS, and reads what the
outbox sends back through the fake provider.

    handset.send("D2")  -> ["Attention: les SMS restent dans le téléphone. ... 1 Oui, 2 Non"]
    handset.send("1")   -> ["Faites-vous confiance à l'armée (FAMa)?\\n1. Pas du tout..."]
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from gateway.channels.fake import FakeSender
from gateway.runtime import Runtime, make_worker

SMS_PATH = "/webhooks/africastalking/sms"
_ids = itertools.count(1)


@dataclass
class Handset:
    client: Any
    runtime: Runtime
    number: str
    shortcode: str = "36123"
    token: str | None = None
    seen: int = 0
    last_id: str = ""
    ids: list[str] = field(default_factory=list)

    def deliver(self, text: str, message_id: str | None = None) -> str:
        """Post one incoming message; returns the gateway's answer body."""
        self.last_id = message_id or f"ATXid_{next(_ids):06d}"
        params = {"token": self.token} if self.token else None
        response = self.client.post(SMS_PATH, params=params, data={
            "from": self.number, "to": self.shortcode, "text": text, "id": self.last_id,
            "date": "2026-11-24 10:00:00", "networkCode": "99999",
        })
        assert response.status_code == 200, response.text
        return str(response.text)

    def send(self, text: str) -> list[str]:
        """Text the gateway, let the outbox work, and return the replies received."""
        self.deliver(text)
        return self.inbox()

    def inbox(self) -> list[str]:
        """Run the outbox until it is idle; the texts sent to this number since last read."""
        drain(self.runtime)
        sender = self.runtime.sender
        assert isinstance(sender, FakeSender)
        mine = [m.text for m in sender.sent if m.to == self.number]
        new, self.seen = mine[self.seen:], len(mine)
        return new


def drain(runtime: Runtime) -> int:
    """Send everything due now (the fake provider answers at once)."""
    async def run() -> int:
        worker = make_worker(runtime, clock=runtime.sms.clock)
        total = 0
        for _ in range(200):
            handled, more = await worker.step()
            total += handled
            if not more:
                break
            if not handled:  # waiting for the rate's next tokens
                await asyncio.sleep(0.01)
        return total

    return asyncio.run(run())
