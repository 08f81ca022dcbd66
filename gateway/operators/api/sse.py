"""Server-Sent Events for the live figures, with sse-starlette (the protocol, keep-alive
pings, disconnects): each event carries the figures' JSON as its data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Hashable

from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.operators.live import Figures, Hub

__all__ = ["EventSourceResponse", "stream"]

PING_SECONDS = 15  # a comment line now and then keeps proxies from closing the stream
RETRY_MS = 2000  # how soon a browser's EventSource reconnects after a drop
# A stream ends after this long, and the browser's EventSource reconnects: its credentials
# are checked again (a disabled account or a revoked token stops receiving within it).
STREAM_SECONDS = 600.0


def stream(hub: Hub, key: Hashable, compute: Callable[[], Figures], *,
           event: str) -> EventSourceResponse:
    """An event ``event`` with the figures now, then each time they change, for
    ``STREAM_SECONDS``."""

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for figures in hub.follow(key, compute, seconds=STREAM_SECONDS):
            yield ServerSentEvent(data=json.dumps(figures, ensure_ascii=False,
                                                  separators=(",", ":")),
                                  event=event, retry=RETRY_MS)

    return EventSourceResponse(events(), ping=PING_SECONDS,
                               headers={"Cache-Control": "no-store",
                                        "X-Accel-Buffering": "no"})
