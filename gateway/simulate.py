"""``gateway simulate``: a terminal feature phone (placeholder until the simulator lands)."""

from __future__ import annotations


def run(*, base: str, phone: str, service_code: str, token: str | None) -> int:
    raise NotImplementedError
