"""Accounts and credentials without HTTP: throttling over time, token expiry, dashboard
sessions and their CSRF token, what is stored (hashes only)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.operators import accounts, audit
from gateway.operators.access import Role
from gateway.runtime import Runtime
from gateway.store.models import utcnow
from tests.operators.people import PASSWORD, make

T0 = utcnow().replace(microsecond=0)
WRONG = "pas le bon mot de passe"


def attempt(rt: Runtime, *, name: str = "moussa", password: str = WRONG,
            client: str = "10.0.0.1", at: timedelta = timedelta(0)) -> str:
    """One sign-in at T0 + ``at``: "ok", "refused" or "throttled <seconds>"."""
    try:
        accounts.sign_in(rt.db, name=name, password=password, client=client, via="api",
                         now=T0 + at)
    except accounts.Throttled as exc:
        return f"throttled {exc.retry_after}"
    except accounts.BadCredentials:
        return "refused"
    return "ok"


def test_five_failures_for_an_account_then_even_the_right_password_waits(
        runtime: Runtime) -> None:
    make(runtime, "moussa", Role.operator, "mopti")
    minute = timedelta(minutes=1)
    # five failures from five addresses, a minute apart
    assert [attempt(runtime, client=f"10.0.0.{i}", at=i * minute) for i in range(5)] == \
        ["refused"] * 5
    # the right password, from a sixth address: refused until the first failure is 15 min old
    assert attempt(runtime, password=PASSWORD, client="10.0.0.9", at=5 * minute) == \
        "throttled 600"
    assert attempt(runtime, password=PASSWORD, at=timedelta(minutes=14, seconds=59)) == \
        "throttled 1"
    assert attempt(runtime, password=PASSWORD, at=15 * minute) == "ok"
    # a successful sign-in forgets the account's failures
    with runtime.db.transaction() as conn:
        assert accounts.failures(conn, name="moussa", now=T0 + 15 * minute) == 0


def test_five_failures_from_one_address_throttle_every_name_from_it(runtime: Runtime) -> None:
    make(runtime, "moussa", Role.operator, "mopti")
    names = ["awa", "fanta", "admin", "root", "moussa"]
    assert [attempt(runtime, name=n, client="10.9.9.9", at=timedelta(seconds=i))
            for i, n in enumerate(names)] == ["refused"] * 5
    assert attempt(runtime, password=PASSWORD, client="10.9.9.9",
                   at=timedelta(seconds=10)) == "throttled 890"
    # the account itself is not locked elsewhere (one failure for its name)
    assert attempt(runtime, password=PASSWORD, client="10.1.1.1",
                   at=timedelta(seconds=11)) == "ok"


def test_throttled_attempts_are_audited_and_not_counted(runtime: Runtime) -> None:
    make(runtime, "moussa", Role.operator, "mopti")
    for i in range(5):
        attempt(runtime, at=timedelta(seconds=i))
    for i in range(3):
        assert attempt(runtime, at=timedelta(minutes=1, seconds=i)).startswith("throttled")
    with runtime.db.transaction() as conn:
        assert accounts.failures(conn, name="moussa", now=T0 + timedelta(minutes=2)) == 5
        page = audit.entries(conn, action="auth.sign_in_failed")
    reasons = [e.as_dict()["details"]["reason"] for e in reversed(page.items)]
    assert reasons == ["wrong_password"] * 5 + ["throttled"] * 3


def test_sign_ins_are_audited_without_making_accounts(runtime: Runtime) -> None:
    make(runtime, "moussa", Role.operator, "mopti")
    attempt(runtime, name="  Moussa ", password=PASSWORD)  # names are folded
    attempt(runtime, name="nobody")
    attempt(runtime, name="+223 70 00 00 01")  # a phone number typed as a name
    with runtime.db.transaction() as conn:
        entries = audit.entries(conn, cursor=None).items[:3]
        assert [a.name for a in accounts.list_accounts(conn)] == ["moussa"]
    seen = [(e.actor, e.action, e.object_id, e.as_dict()["details"]) for e in reversed(entries)]
    base = {"via": "api", "client": "10.0.0.1"}
    assert seen == [
        ("moussa", "auth.sign_in", "1", base),
        ("nobody", "auth.sign_in_failed", None,
         {**base, "reason": "unknown_account"}),
        ("(invalid-name)", "auth.sign_in_failed", None,
         {**base, "reason": "unknown_account"}),
    ]


def test_a_disabled_account_cannot_sign_in(runtime: Runtime) -> None:
    make(runtime, "moussa", Role.operator, "mopti")
    with runtime.db.transaction() as conn:
        accounts.disable(conn, name="moussa", actor="cli", now=T0)
    assert attempt(runtime, password=PASSWORD) == "refused"


def test_only_hashes_are_stored(runtime: Runtime) -> None:
    person = make(runtime, "moussa", Role.operator, "mopti")
    with runtime.db.transaction() as conn:
        session = accounts.create_session(conn, account_id=person.principal.account_id,
                                          hours=8, now=T0)
        account = conn.execute(select(accounts.accounts_table)).one()
        token = conn.execute(select(accounts.tokens_table)).one()
        stored = conn.execute(select(accounts.sessions_table)).one()
    assert account.password_hash.startswith("$argon2id$") and PASSWORD not in \
        account.password_hash
    assert token.token_hash == hashlib.sha256(person.token.encode()).hexdigest()
    assert stored.session_hash == hashlib.sha256(session.cookie.encode()).hexdigest()
    assert len(person.token) > 40 and len(session.cookie) > 40


def test_login_tokens_expire(runtime: Runtime) -> None:
    person = make(runtime, "moussa", Role.operator, "mopti")
    with runtime.db.transaction() as conn:
        _, token = accounts.issue_token(conn, account_id=person.principal.account_id,
                                        kind="login", expires_at=T0 + timedelta(hours=12),
                                        now=T0)
        assert accounts.resolve_token(conn, token=token, now=T0) == person.principal
        assert accounts.resolve_token(conn, token=token,
                                      now=T0 + timedelta(hours=12)) is None
        assert accounts.resolve_token(conn, token=token + "x", now=T0) is None
        assert accounts.resolve_token(conn, token="", now=T0) is None


def test_a_session_resolves_until_it_expires_or_ends(runtime: Runtime) -> None:
    person = make(runtime, "moussa", Role.operator, "mopti", "koro")
    with runtime.db.transaction() as conn:
        made = accounts.create_session(conn, account_id=person.principal.account_id,
                                       hours=8, now=T0)
    assert made.expires_at == T0 + timedelta(hours=8)
    with runtime.db.transaction() as conn:
        live = accounts.resolve_session(conn, cookie=made.cookie, now=T0 + timedelta(hours=7))
        assert accounts.resolve_session(conn, cookie=made.cookie,
                                        now=T0 + timedelta(hours=8)) is None
        assert accounts.resolve_session(conn, cookie="not-a-session", now=T0) is None
    assert live is not None and live.principal == person.principal
    assert live.csrf_token == made.csrf_token and live.csrf_token != made.cookie
    assert accounts.csrf_ok(live, made.csrf_token)
    assert not accounts.csrf_ok(live, None) and not accounts.csrf_ok(live, "0" * 64)
    with runtime.db.transaction() as conn:
        other = accounts.create_session(conn, account_id=person.principal.account_id,
                                        hours=8, now=T0)
    assert other.cookie != made.cookie and other.csrf_token != made.csrf_token
    with runtime.db.transaction() as conn:
        assert accounts.end_session(conn, cookie=made.cookie, now=T0)
        assert not accounts.end_session(conn, cookie=made.cookie, now=T0)
        assert accounts.resolve_session(conn, cookie=made.cookie, now=T0) is None
        assert accounts.resolve_session(conn, cookie=other.cookie, now=T0) is not None
        last = audit.entries(conn, limit=1).items[0]
    assert (last.actor, last.action) == ("moussa", "auth.sign_out")


def test_disabling_refuses_sessions_and_tokens_at_once(runtime: Runtime) -> None:
    person = make(runtime, "moussa", Role.operator, "mopti")
    with runtime.db.transaction() as conn:
        session = accounts.create_session(conn, account_id=person.principal.account_id,
                                          hours=8, now=T0)
    with runtime.db.transaction() as conn:
        accounts.disable(conn, name="moussa", actor="awa", now=T0)
    with runtime.db.transaction() as conn:
        assert accounts.resolve_session(conn, cookie=session.cookie, now=T0) is None
        assert accounts.resolve_token(conn, token=person.token, now=T0) is None


@pytest.mark.parametrize("password", ["", "x" * 11, "y" * 1025])
def test_password_length_is_checked(runtime: Runtime, password: str) -> None:
    make(runtime, "moussa", Role.operator, "mopti")
    with pytest.raises(accounts.InvalidAccount), runtime.db.transaction() as conn:
        accounts.set_password(conn, name="moussa", password=password, actor="cli", now=T0)
