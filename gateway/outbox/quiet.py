"""Quiet hours: when broadcasts wait (``GATEWAY_QUIET_HOURS`` in ``GATEWAY_TIMEZONE``).

Direct replies to a resident are never held; only ``broadcast`` messages wait, in the
queue, until the quiet period ends (the outbox's claim skips them meanwhile).

    QuietHours.parse("21:00-07:00", "Africa/Bamako").holds(now)  -> True at 23:30 in Mopti
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def zone(name: str) -> ZoneInfo:
    """The time zone named ``name`` (IANA, e.g. ``Africa/Bamako``); ValueError if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{name}' (an IANA name, e.g. Africa/Bamako)")\
            from None


def _clock(hours: str, minutes: str) -> time:
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise ValueError(f"{hours}:{minutes} is not a time of day")
    return time(h, m)


@dataclass(frozen=True)
class QuietHours:
    """A daily period, local to ``tz``, from ``start`` (included) to ``end`` (excluded);
    it may run past midnight (21:00-07:00)."""

    start: time
    end: time
    tz: ZoneInfo

    @classmethod
    def parse(cls, text: str, timezone: str) -> QuietHours | None:
        """``HH:MM-HH:MM`` in ``timezone``; None for an empty setting (no quiet hours)."""
        tz = zone(timezone)
        if not text.strip():
            return None
        found = _SPAN.match(text)
        if found is None:
            raise ValueError(f"quiet hours '{text}' are not HH:MM-HH:MM (e.g. 21:00-07:00)")
        start, end = _clock(*found.group(1, 2)), _clock(*found.group(3, 4))
        if start == end:
            raise ValueError("quiet hours start and end at the same time (empty them for none)")
        return cls(start, end, tz)

    def holds(self, now: datetime) -> bool:
        """Whether ``now`` (aware) falls in the quiet period."""
        local = now.astimezone(self.tz).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, now: datetime) -> datetime:
        """When the quiet period holding ``now`` ends (``now`` itself when it does not)."""
        if not self.holds(now):
            return now
        local = now.astimezone(self.tz)
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0,
                            microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end.astimezone(now.tzinfo)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.tz.key}"
