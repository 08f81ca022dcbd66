"""The dashboard's seams over the domain modules. Thin translations only: the rules, the
scope checks and the audit entries are the domain modules'.

- accounts: ``gateway/operators/accounts.py`` (sign-in with throttling, audited; server-side
  sessions whose CSRF token the forms carry);
- broadcasts: not in this gateway yet (the pages answer 503 until it is).
"""

from __future__ import annotations

from gateway.operators import accounts
from gateway.operators.dashboard import seams
from gateway.runtime import Runtime
from gateway.store.models import utcnow


class Accounts:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def sign_in(self, *, username: str, password: str,
                client: str) -> seams.SignedIn | seams.Throttled | None:
        try:
            who = accounts.sign_in(self.rt.db, name=username, password=password,
                                   client=client, via="dashboard", now=utcnow())
        except accounts.Throttled as exc:
            return seams.Throttled(exc.retry_after)
        except accounts.BadCredentials:
            return None
        with self.rt.db.transaction() as conn:
            made = accounts.create_session(conn, account_id=who.account_id,
                                           hours=self.rt.settings.session_hours, now=utcnow())
        return seams.SignedIn(made.cookie)

    def session(self, *, session_id: str) -> seams.Session | None:
        with self.rt.db.transaction() as conn:
            found = accounts.resolve_session(conn, cookie=session_id, now=utcnow())
        return None if found is None else seams.Session(found.principal, found.csrf_token)

    def sign_out(self, *, session_id: str) -> None:
        with self.rt.db.transaction() as conn:
            accounts.end_session(conn, cookie=session_id, now=utcnow())


def default_seams(rt: Runtime) -> seams.Seams:
    """What a gateway serves the dashboard with."""
    return seams.Seams(accounts=Accounts(rt))
