"""Subscribers per cercle: the home page's query, within the caller's scope."""

from __future__ import annotations

from gateway.operators import subscribers
from gateway.operators.access import Areas
from gateway.runtime import Runtime
from tests.operators.dashboard_client import ADMIN, OPERATOR
from tests.operators.residents import RESIDENTS, seed


def test_subscribers_per_cercle_keeps_to_the_scope(runtime: Runtime) -> None:
    seed(runtime, RESIDENTS)
    areas = Areas.of(runtime.engine.content.communes)
    with runtime.db.transaction() as conn:
        mine = subscribers.per_cercle(conn, who=OPERATOR, areas=areas)
        everyone = subscribers.per_cercle(conn, who=ADMIN, areas=areas)
    assert [(c.cercle, c.subscribers) for c in mine] == [("mopti", 3), ("koro", 2)]
    counted = {c.cercle: c.subscribers for c in everyone}
    assert counted["djenne"] == 1 and counted[""] == 1 and counted["youwarou"] == 0
    assert sum(counted.values()) == 7  # the stopped and the unsubscribed are not counted
