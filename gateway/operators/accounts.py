"""Operator accounts and their credentials: passwords, API tokens, dashboard sessions.

Accounts are made on the command line (``gateway users ...``). Passwords are hashed with
argon2id; API tokens and dashboard session ids are random secrets of which only the SHA-256
is stored. Every request resolves its token or session again (:func:`resolve_token`,
:func:`resolve_session`): nothing is cached, so a disabled account, a revoked token or an
ended session is refused at once.

Signing in (:func:`sign_in`) is throttled: after ``THROTTLE_FAILURES`` refused sign-ins for
one account name, or from one client address, within ``THROTTLE_WINDOW``, every attempt is
refused (even with the right password, which is then not even checked) until the oldest of
those failures leaves the window. Each sign-in, refused or not, is in the audit log.

Account changes are audited here, in the transaction that makes them (actor: the account
name of who did it, ``"cli"`` for the command line).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Row, Table, delete, func, insert, or_, select, text, update

from gateway.operators import audit
from gateway.operators.access import Principal, Role
from gateway.store.db import Database
from gateway.store.models import Account, ApiToken, OperatorSession, SignInFailure

accounts_table: Table = Account.__table__  # type: ignore[attr-defined]
tokens_table: Table = ApiToken.__table__  # type: ignore[attr-defined]
sessions_table: Table = OperatorSession.__table__  # type: ignore[attr-defined]
failures_table: Table = SignInFailure.__table__  # type: ignore[attr-defined]

NAME_RULE = "a lowercase letter, then up to 63 lowercase letters, digits, '.', '_' or '-'"
_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # longer is refused without hashing
THROTTLE_FAILURES = 5
THROTTLE_WINDOW = timedelta(minutes=15)
TOKEN_PREFIX = "dny_"  # noqa: S105 (not a secret: tokens are recognisable by it)
SESSION_COOKIE = "dannaya_session"  # the dashboard's cookie: the raw session id
CSRF_HEADER = "X-CSRF-Token"  # a dashboard script's unsafe API call carries the CSRF token
SCOPED_ROLES = frozenset({Role.operator, Role.reviewer})  # need at least one cercle
_SIGN_IN_LOCK = 0x44616E6E  # PostgreSQL advisory lock: throttling checks, one at a time

# OWASP's argon2id profile (19 MiB, 2 passes): about 30 ms here, and small enough that a few
# sign-ins at once do not crowd the USSD service's memory on a small server.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)

TokenKind = Literal["login", "cli"]


class InvalidAccount(ValueError):
    """An account cannot be made or changed like that (the message says why)."""


class AccountExists(Exception):
    """An account with that name already exists."""


class UnknownAccount(LookupError):
    """No account with that name."""


class BadCredentials(Exception):
    """Sign-in refused: unknown name, wrong password or disabled account (not told apart)."""


class Throttled(Exception):
    """Too many refused sign-ins for that account or from that address: wait."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; retry after {retry_after} s")
        self.retry_after = retry_after  # seconds, at least 1


@dataclass(frozen=True)
class AccountInfo:
    id: int
    name: str
    role: Role
    cercles: frozenset[str]
    disabled: bool
    created_at: datetime
    updated_at: datetime

    @property
    def principal(self) -> Principal:
        return Principal(self.id, self.name, self.role, self.cercles)


@dataclass(frozen=True)
class NewSession:
    """A dashboard session just made: set ``cookie`` as the ``SESSION_COOKIE`` value (it is
    shown only this once) and put ``csrf_token`` in every form."""

    cookie: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class WebSession:
    """A live dashboard session, resolved from its cookie."""

    id: int
    principal: Principal
    csrf_token: str
    expires_at: datetime


# -- helpers ---------------------------------------------------------------------------


def fold_name(name: str) -> str:
    """A name as typed at sign-in, as accounts are named (names are lowercase)."""
    return name.strip().lower()[:64]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _cercles_text(cercles: Iterable[str]) -> str:
    return ",".join(sorted(set(cercles)))


def _cercles_of(value: str) -> frozenset[str]:
    return frozenset(c for c in value.split(",") if c)


def _info(row: Row[Any]) -> AccountInfo:
    return AccountInfo(row.id, row.name, Role(row.role), _cercles_of(row.cercles),
                       bool(row.disabled), row.created_at, row.updated_at)


def _principal(row: Any) -> Principal:  # a Row with id, name, role, cercles
    return Principal(row.id, row.name, Role(row.role), _cercles_of(row.cercles))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``, after checking its length."""
    if len(password) < MIN_PASSWORD:
        raise InvalidAccount(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidAccount(f"a password has at most {MAX_PASSWORD} characters")
    return _hasher.hash(password)


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the name is unknown, so that takes as long as a real check."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _password_matches(stored: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _account(conn: Connection, name: str) -> Row[Any]:
    row = conn.execute(select(accounts_table).where(accounts_table.c.name == name)).one_or_none()
    if row is None:
        raise UnknownAccount(f"no account named {name!r}")
    return row


# -- accounts --------------------------------------------------------------------------


def create(conn: Connection, *, name: str, role: Role, cercles: Iterable[str],
           password: str, known_cercles: Collection[str], actor: str,
           now: datetime) -> AccountInfo:
    """Make an account. ``known_cercles``: the cercle ids of ``flows/lists/communes.yml``.
    Raises :class:`InvalidAccount` (bad name, unknown cercle, an operator or reviewer
    without a cercle, an admin with one, a short password) or :class:`AccountExists`."""
    wanted = frozenset(cercles)
    if not _NAME.match(name):
        raise InvalidAccount(f"an account name is {NAME_RULE}")
    unknown = sorted(wanted - set(known_cercles))
    if unknown:
        raise InvalidAccount(f"unknown cercle id(s): {', '.join(unknown)} (known: "
                             f"{', '.join(sorted(known_cercles))})")
    if role in SCOPED_ROLES and not wanted:
        raise InvalidAccount(f"an {role} account needs at least one cercle")
    if role is Role.admin and wanted:
        raise InvalidAccount("an admin sees every cercle: give it none")
    password_hash = hash_password(password)
    if conn.execute(select(accounts_table.c.id).where(accounts_table.c.name == name)).first():
        raise AccountExists(f"an account named {name!r} already exists")
    account_id = conn.execute(insert(accounts_table).values(
        name=name, role=role.value, cercles=_cercles_text(wanted), password_hash=password_hash,
        disabled=False, created_at=now, updated_at=now,
    ).returning(accounts_table.c.id)).scalar_one()
    audit.record(conn, actor=actor, action="account.create", object_type="account",
                 object_id=account_id, details={"role": role.value, "cercles": sorted(wanted)},
                 now=now)
    return get(conn, name=name)


def get(conn: Connection, *, name: str) -> AccountInfo:
    """Raises :class:`UnknownAccount`."""
    return _info(_account(conn, name))


def list_accounts(conn: Connection) -> list[AccountInfo]:
    rows = conn.execute(select(accounts_table).order_by(accounts_table.c.name)).all()
    return [_info(row) for row in rows]


def disable(conn: Connection, *, name: str, actor: str, now: datetime) -> AccountInfo:
    """Disable an account: its tokens and sessions are refused from the next request on.
    Raises :class:`UnknownAccount`."""
    row = _account(conn, name)
    if not row.disabled:
        conn.execute(update(accounts_table).where(accounts_table.c.id == row.id)
                     .values(disabled=True, updated_at=now))
        audit.record(conn, actor=actor, action="account.disable", object_type="account",
                     object_id=row.id, now=now)
    return get(conn, name=name)


def set_password(conn: Connection, *, name: str, password: str, actor: str,
                 now: datetime) -> None:
    """A new password; the account's dashboard sessions end and its sign-in tokens are
    revoked (tokens from ``gateway users token`` stay). Raises :class:`UnknownAccount`,
    :class:`InvalidAccount`."""
    row = _account(conn, name)
    password_hash = hash_password(password)
    conn.execute(update(accounts_table).where(accounts_table.c.id == row.id)
                 .values(password_hash=password_hash, updated_at=now))
    ended = conn.execute(delete(sessions_table)
                         .where(sessions_table.c.account_id == row.id)).rowcount
    revoked = _revoke(conn, account_id=row.id, now=now, kind="login")
    audit.record(conn, actor=actor, action="account.password", object_type="account",
                 object_id=row.id, details={"sessions_ended": ended, "tokens_revoked": revoked},
                 now=now)


# -- API tokens ------------------------------------------------------------------------


def issue_token(conn: Connection, *, account_id: int, kind: TokenKind, label: str = "",
                expires_at: datetime | None, now: datetime) -> tuple[int, str]:
    """A new bearer token for an account: (its id, the token). Only its SHA-256 is
    stored; the token itself is shown once. Not audited: the caller records why."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = conn.execute(insert(tokens_table).values(
        token_hash=_digest(token), account_id=account_id, kind=kind, label=label[:100],
        created_at=now, expires_at=expires_at, revoked_at=None,
    ).returning(tokens_table.c.id)).scalar_one()
    return int(token_id), token


def new_cli_token(conn: Connection, *, name: str, label: str, actor: str,
                  now: datetime) -> str:
    """``gateway users token``: a token that lasts until revoked. Raises
    :class:`UnknownAccount`, :class:`InvalidAccount` (a disabled account)."""
    row = _account(conn, name)
    if row.disabled:
        raise InvalidAccount(f"account {name!r} is disabled")
    token_id, token = issue_token(conn, account_id=row.id, kind="cli", label=label,
                                  expires_at=None, now=now)
    audit.record(conn, actor=actor, action="account.token", object_type="account",
                 object_id=row.id, details={"token_id": token_id}, now=now)
    return token


def _revoke(conn: Connection, *, account_id: int, now: datetime,
            kind: TokenKind | None = None) -> int:
    query = update(tokens_table).where(tokens_table.c.account_id == account_id,
                                       tokens_table.c.revoked_at.is_(None))
    if kind is not None:
        query = query.where(tokens_table.c.kind == kind)
    return int(conn.execute(query.values(revoked_at=now)).rowcount)


def revoke_tokens(conn: Connection, *, name: str, actor: str, now: datetime) -> int:
    """``gateway users revoke``: every API token of the account (sign-in and command-line
    ones) stops working at once. Returns how many were live. Raises
    :class:`UnknownAccount`."""
    row = _account(conn, name)
    revoked = _revoke(conn, account_id=row.id, now=now)
    audit.record(conn, actor=actor, action="account.revoke", object_type="account",
                 object_id=row.id, details={"tokens_revoked": revoked}, now=now)
    return revoked


def revoke_token(conn: Connection, *, token: str, now: datetime) -> bool:
    """Revoke one token (signing out of the API); audited. False if it was not live."""
    who = resolve_token(conn, token=token, now=now)
    if who is None:
        return False
    conn.execute(update(tokens_table).where(tokens_table.c.token_hash == _digest(token))
                 .values(revoked_at=now))
    audit.record(conn, actor=who.name, action="auth.sign_out", object_type="account",
                 object_id=who.account_id, details={"via": "api"}, now=now)
    return True


def resolve_token(conn: Connection, *, token: str, now: datetime) -> Principal | None:
    """Who a bearer token belongs to, or None: unknown, revoked or expired token, or a
    disabled account. One query, on every request."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    row = conn.execute(
        select(accounts_table.c.id, accounts_table.c.name, accounts_table.c.role,
               accounts_table.c.cercles)
        .select_from(tokens_table.join(accounts_table))
        .where(tokens_table.c.token_hash == _digest(token),
               tokens_table.c.revoked_at.is_(None),
               or_(tokens_table.c.expires_at.is_(None), tokens_table.c.expires_at > now),
               accounts_table.c.disabled.is_(False))
    ).one_or_none()
    return None if row is None else _principal(row)


# -- signing in ------------------------------------------------------------------------


def _throttled_for(conn: Connection, *, name: str, client: str, now: datetime) -> int | None:
    """Seconds to wait, or None: the failures within the window for the name and for the
    address; with ``THROTTLE_FAILURES`` of them, the wait ends when the oldest of the last
    ``THROTTLE_FAILURES`` leaves the window."""
    waits = []
    for column, value in ((failures_table.c.name, name), (failures_table.c.client, client)):
        times = conn.execute(
            select(failures_table.c.at).where(column == value,
                                              failures_table.c.at > now - THROTTLE_WINDOW)
            .order_by(failures_table.c.at.desc()).limit(THROTTLE_FAILURES)
        ).scalars().all()
        if len(times) >= THROTTLE_FAILURES:
            until = times[-1] + THROTTLE_WINDOW
            waits.append(max(1, math.ceil((until - now).total_seconds())))
    return max(waits) if waits else None


def _actor_for(name: str) -> str:
    """The audit actor of a sign-in: the name tried when it could be an account's."""
    return name if _NAME.match(name) else "(invalid-name)"


def sign_in(db: Database, *, name: str, password: str, client: str, via: str,
            now: datetime) -> Principal:
    """Check a name and password; returns the account's :class:`Principal`.

    Raises :class:`Throttled` (the password is then not checked) or
    :class:`BadCredentials`. Runs its own transactions (the failure and the audit entry
    must stay when the sign-in is refused), and checks the password between them, outside
    any transaction (argon2 takes tens of milliseconds; SQLite's write lock must not wait
    on it). A failure is counted before the check and forgotten if the password is right,
    so parallel attempts cannot get past the limit. ``via``: ``api`` or ``dashboard``;
    ``client``: the client's address.
    """
    folded, client = fold_name(name), (client or "unknown")[:64]
    base = {"via": via, "client": client}
    with db.transaction() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SIGN_IN_LOCK})
        wait = _throttled_for(conn, name=folded, client=client, now=now)
        row = conn.execute(select(accounts_table)
                           .where(accounts_table.c.name == folded)).one_or_none()
        if wait is not None:
            audit.record(conn, actor=_actor_for(folded), action="auth.sign_in_failed",
                         object_type="account", object_id=row.id if row else None,
                         details={**base, "reason": "throttled"}, now=now)
        else:
            conn.execute(insert(failures_table).values(name=folded, client=client, at=now))
            conn.execute(delete(failures_table)
                         .where(failures_table.c.at <= now - THROTTLE_WINDOW))
    if wait is not None:
        raise Throttled(wait)
    matches = _password_matches(row.password_hash if row else _dummy_hash(), password)
    with db.transaction() as conn:
        fresh = None if row is None else conn.execute(
            select(accounts_table).where(accounts_table.c.id == row.id)).one_or_none()
        if fresh is not None and matches and not fresh.disabled:
            conn.execute(delete(failures_table).where(failures_table.c.name == folded))
            if _hasher.check_needs_rehash(fresh.password_hash):
                conn.execute(update(accounts_table).where(accounts_table.c.id == fresh.id)
                             .values(password_hash=_hasher.hash(password)))
            audit.record(conn, actor=fresh.name, action="auth.sign_in", object_type="account",
                         object_id=fresh.id, details=base, now=now)
            return _principal(fresh)
        reason = ("unknown_account" if fresh is None
                  else "disabled" if fresh.disabled else "wrong_password")
        audit.record(conn, actor=_actor_for(folded), action="auth.sign_in_failed",
                     object_type="account", object_id=fresh.id if fresh else None,
                     details={**base, "reason": reason}, now=now)
    raise BadCredentials("incorrect username or password")


def failures(conn: Connection, *, name: str | None = None, client: str | None = None,
             now: datetime) -> int:
    """Refused sign-ins within the throttling window, for a name or an address."""
    query = select(func.count()).select_from(failures_table).where(
        failures_table.c.at > now - THROTTLE_WINDOW)
    if name is not None:
        query = query.where(failures_table.c.name == fold_name(name))
    if client is not None:
        query = query.where(failures_table.c.client == client)
    return int(conn.execute(query).scalar_one())


# -- dashboard sessions ------------------------------------------------------------------


def _csrf(cookie: str) -> str:
    """The session's CSRF token: derived from its secret id, so nothing more is stored and
    the token reveals nothing of the id."""
    return hmac.new(cookie.encode("utf-8"), b"dannaya csrf", hashlib.sha256).hexdigest()


def create_session(conn: Connection, *, account_id: int, hours: float,
                   now: datetime) -> NewSession:
    """A new dashboard session for an account that just signed in (:func:`sign_in`).
    Always a new id (never reuse the one a browser had before signing in). Expired
    sessions of every account are deleted on the way."""
    conn.execute(delete(sessions_table).where(sessions_table.c.expires_at <= now))
    cookie = secrets.token_urlsafe(32)
    expires_at = now + timedelta(hours=hours)
    conn.execute(insert(sessions_table).values(
        session_hash=_digest(cookie), account_id=account_id, created_at=now,
        expires_at=expires_at))
    return NewSession(cookie, _csrf(cookie), expires_at)


def resolve_session(conn: Connection, *, cookie: str, now: datetime) -> WebSession | None:
    """The live session a cookie names, or None: unknown, expired or ended, or a
    disabled account. One query, on every request."""
    if not cookie or len(cookie) > 100:
        return None
    row = conn.execute(
        select(sessions_table.c.id.label("session_id"), sessions_table.c.expires_at,
               accounts_table.c.id, accounts_table.c.name, accounts_table.c.role,
               accounts_table.c.cercles)
        .select_from(sessions_table.join(accounts_table))
        .where(sessions_table.c.session_hash == _digest(cookie),
               sessions_table.c.expires_at > now,
               accounts_table.c.disabled.is_(False))
    ).one_or_none()
    if row is None:
        return None
    return WebSession(row.session_id, _principal(row), _csrf(cookie), row.expires_at)


def csrf_ok(session: WebSession, token: str | None) -> bool:
    """Whether a form's or header's CSRF token is the session's (constant time)."""
    return token is not None and hmac.compare_digest(session.csrf_token, token)


def end_session(conn: Connection, *, cookie: str, now: datetime) -> bool:
    """Sign out of the dashboard: the session row is deleted; audited. False if the
    cookie named no live session."""
    session = resolve_session(conn, cookie=cookie, now=now)
    if session is None:
        return False
    conn.execute(delete(sessions_table).where(sessions_table.c.id == session.id))
    audit.record(conn, actor=session.principal.name, action="auth.sign_out",
                 object_type="account", object_id=session.principal.account_id,
                 details={"via": "dashboard"}, now=now)
    return True
