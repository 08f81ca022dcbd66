"""Quiet hours: which instants they hold, when they end, and what the setting accepts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.outbox.quiet import QuietHours
from gateway.settings import Settings

pytestmark = pytest.mark.nodb

NIGHT = QuietHours.parse("21:00-07:00", "Africa/Bamako")
NOON = QuietHours.parse("12:00-14:00", "Africa/Lagos")  # UTC+1


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, 6, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(("quiet", "now", "holds", "ends"), [
    (NIGHT, at(20, 59), False, at(20, 59)),
    (NIGHT, at(21, 0), True, datetime(2026, 12, 7, 7, 0, tzinfo=UTC)),
    (NIGHT, at(3, 30), True, at(7, 0)),
    (NIGHT, at(7, 0), False, at(7, 0)),
    (NOON, at(11, 0), True, at(13, 0)),  # noon in Lagos
    (NOON, at(13, 0), False, at(13, 0)),
])
def test_quiet_hours_hold_and_end(quiet: QuietHours | None, now: datetime, holds: bool,
                                  ends: datetime) -> None:
    assert quiet is not None
    assert quiet.holds(now) is holds
    assert quiet.ends_after(now) == ends


@pytest.mark.parametrize(("text", "zone", "problem"), [
    ("21h-7h", "Africa/Bamako", "HH:MM-HH:MM"),
    ("24:00-07:00", "Africa/Bamako", "not a time of day"),
    ("07:00-07:00", "Africa/Bamako", "same time"),
    ("21:00-07:00", "Africa/Tombouctou-Nord", "unknown time zone"),
])
def test_a_setting_that_does_not_parse_is_refused(text: str, zone: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings(_env_file=None, quiet_hours=text, timezone=zone)


def test_empty_quiet_hours_hold_nothing() -> None:
    assert QuietHours.parse("", "Africa/Bamako") is None
    assert Settings(_env_file=None, quiet_hours=" ").quiet is None
