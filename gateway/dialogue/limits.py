"""Flood limits per contact (by pseudonym): replies sent by SMS, reports kept.

One phone that texts 200 messages in a minute, or files report after report over USSD,
must cost nothing beyond its budget. Beyond it, a message is still received and handled
(STOP still stops, SUPPRIMER still erases), but no reply is queued; a report still gets its
neutral acknowledgement on the screen, but is not kept for review. Each refusal is counted
in the ``counter`` table (``replies_over_budget``, ``reports_over_limit``, shown by
``/readyz``) and logged once an hour per contact, by the start of its pseudonym, never the
number.

What was used is counted from ``budget_use`` rows (one per reply or report, kept a day),
not from the outbox or the reports, which an erasure deletes: SUPPRIMER then OUI in a loop
would otherwise reset the budget at every turn.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from gateway.store import queries

log = logging.getLogger("gateway.dialogue.limits")

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
REPLY = "reply"
REPORT = "report"
COUNTERS = {REPLY: "replies_over_budget", REPORT: "reports_over_limit"}
LOGGED_KEPT = 4096  # contacts whose refusal was logged lately, remembered in memory


@dataclass(frozen=True)
class Limits:
    replies_hour: int = 20
    replies_day: int = 60
    reports_hour: int = 5
    reports_day: int = 20

    def of(self, what: str) -> tuple[int, int]:
        if what == REPLY:
            return self.replies_hour, self.replies_day
        return self.reports_hour, self.reports_day


def fits(conn: Connection, *, limits: Limits, pseudonym: str, what: str,
         now: datetime) -> bool:
    """Whether one more ``what`` fits the contact's limits. When it does not, the excess is
    counted (and logged once an hour for this contact)."""
    per_hour, per_day = limits.of(what)
    hour, day = queries.budget_used(conn, pseudonym=pseudonym, what=what, hour=now - HOUR,
                                    day=now - DAY)
    if hour < per_hour and day < per_day:
        return True
    queries.bump(conn, name=COUNTERS[what], now=now)
    if _first_refusal(pseudonym, what, now):
        if what == REPLY:
            log.warning("limits: contact %s is past its reply budget (%d an hour, %d a day): "
                        "its messages are handled, nothing is sent back; counted as %s",
                        pseudonym[:8], per_hour, per_day, COUNTERS[what])
        else:
            log.warning("limits: contact %s is past its report limit (%d an hour, %d a day): "
                        "further reports are acknowledged, not kept; counted as %s",
                        pseudonym[:8], per_hour, per_day, COUNTERS[what])
    return False


def spend(conn: Connection, *, pseudonym: str, what: str, now: datetime) -> None:
    """Count one ``what`` against the contact's limits."""
    queries.use_budget(conn, pseudonym=pseudonym, what=what, now=now)


def forget(conn: Connection, *, now: datetime) -> int:
    """Delete what no limit counts any more."""
    return queries.forget_budget_use(conn, before=now - DAY)


_logged: OrderedDict[tuple[str, str], datetime] = OrderedDict()
_logged_lock = threading.Lock()  # USSD hops' effects run on a thread pool


def _first_refusal(pseudonym: str, what: str, now: datetime) -> bool:
    """Whether this refusal is the first for the contact this hour (in this process)."""
    key = (pseudonym, what)
    with _logged_lock:
        last = _logged.get(key)
        if last is not None and now - last < HOUR:
            return False
        _logged[key] = now
        _logged.move_to_end(key)
        if len(_logged) > LOGGED_KEPT:
            _logged.popitem(last=False)
        return True
