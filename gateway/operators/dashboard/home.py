"""The home page: what needs the operator now. Broadcasts running or scheduled, the
delivery rate of the last 30 days, and subscribers per cercle of the operator's scope."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.operators import subscribers
from gateway.operators.access import Role
from gateway.operators.dashboard.seams import Broadcast
from gateway.operators.dashboard.web import Dashboard

RATE_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Rate:
    delivered: int
    handed_over: int  # sent, delivered or failed: what the provider took

    @property
    def percent(self) -> int:
        return round(100 * self.delivered / self.handed_over) if self.handed_over else 0


def delivery_rate(items: Sequence[Broadcast], *, now: datetime) -> Rate | None:
    """Delivered over handed to the provider, for broadcasts created in the window; None
    when nothing was handed over yet."""
    delivered = handed = 0
    for item in items:
        if item.created_at.replace(tzinfo=item.created_at.tzinfo or UTC) < now - RATE_WINDOW:
            continue
        delivered += item.counts.get("delivered", 0)
        handed += sum(item.counts.get(k, 0) for k in ("sent", "delivered", "failed"))
    return Rate(delivered, handed) if handed else None


def router(dash: Dashboard) -> APIRouter:
    r = APIRouter()

    @r.get("/")
    async def home(request: Request) -> Response:
        session = await dash.signed_in(request)
        who = session.principal
        operates = who.role in (Role.admin, Role.operator)
        rt = dash.runtime()

        def counts() -> list[subscribers.CercleCount]:
            with rt.db.transaction() as conn:
                return subscribers.per_cercle(conn, who=who, areas=dash.areas)

        per_cercle = await run_in_threadpool(counts) if operates else []
        broadcasts = dash.seams().broadcasts
        running: list[Broadcast] | None = None
        rate: Rate | None = None
        if operates and broadcasts is not None:
            items = await run_in_threadpool(lambda: broadcasts.list(who))
            running = [b for b in items if b.status in ("scheduled", "sending")]
            rate = delivery_rate(items, now=datetime.now(UTC))
        return dash.render(
            request, "home.html", session=session, operates=operates,
            per_cercle=[(c.cercle, dash.cercle_name(c.cercle) if c.cercle else None,
                         c.subscribers) for c in per_cercle],
            total=sum(c.subscribers for c in per_cercle),
            running=running, rate=rate, broadcasts_ready=broadcasts is not None)

    return r
