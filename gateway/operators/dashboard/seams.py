"""What the dashboard's pages need from the domain modules, and nothing more.

The pages hold no account or broadcast logic: they call an :class:`Accounts` (sign-in,
server-side sessions with their CSRF token) and a :class:`Broadcasts` (preview, create
with an idempotency key, list, get, cancel), given to :func:`gateway.operators.dashboard.
dashboard_app` by whoever composes the app. The shapes below follow the operator contract
(BRIEF.md, "Operator contract": the broadcast JSON), so an adapter over
``gateway/operators/accounts.py`` and ``gateway/operators/broadcasts.py`` is a thin
translation. Until those modules exist the dashboard is served with neither, and every page
that needs one says so (503) instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from gateway.operators.access import Principal

# Broadcast statuses and counts, as the contract names them.
STATUSES = ("scheduled", "sending", "done", "cancelled")
COUNTS = ("recipients", "queued", "sent", "delivered", "failed", "expired", "cancelled")
MESSAGE_LANGUAGES = ("fr", "bm", "ff")  # the versions a form may carry (the catalogs' say which)


class NotReady(Exception):
    """The domain module behind this page is not part of this gateway yet (503)."""


# --- accounts ------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    """A new server-side session: its opaque id goes into the cookie, nothing else."""

    session_id: str


@dataclass(frozen=True)
class Throttled:
    """Too many failures for this account or this address: try again after this long."""

    retry_after_seconds: int


@dataclass(frozen=True)
class Session:
    """A signed-in dashboard session: who, and the CSRF token every form of it carries."""

    principal: Principal
    csrf_token: str


class Accounts(Protocol):
    def sign_in(self, *, username: str, password: str, client: str) -> SignedIn | Throttled | None:
        """A new session for the right password (None for wrong credentials or a disabled
        account; :class:`Throttled` once the contract's limit is reached, whatever the
        password). Audited by the accounts module."""

    def session(self, *, session_id: str) -> Session | None:
        """The live session behind a cookie; None when unknown, expired or disabled."""

    def sign_out(self, *, session_id: str) -> None:
        """End the session (its row is deleted: the cookie is worthless afterwards)."""


# --- broadcasts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    cercles: tuple[str, ...] = ()
    communes: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Draft:
    """What the compose page collects: the contract's create body."""

    messages: Mapping[str, str]
    audience: Audience
    title: str = ""
    send_at: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class LanguagePreview:
    recipients: int
    text: str  # what goes over the air
    encoding: str  # GSM-7 | UCS-2
    segments: int


@dataclass(frozen=True)
class Preview:
    recipients: int
    segments: int
    languages: Mapping[str, LanguagePreview]
    cost: Decimal | None  # None while the price per SMS is not configured
    cost_without_transliteration: Decimal | None
    currency: str
    sends_from: datetime | None = None  # send_at, or the end of the quiet hours it falls in


@dataclass(frozen=True)
class Broadcast:
    id: int
    status: str  # one of STATUSES
    counts: Mapping[str, int]  # the keys of COUNTS
    created_at: datetime
    title: str = ""
    created_by: str = ""
    send_at: datetime | None = None
    valid_until: datetime | None = None
    audience: Audience = field(default_factory=Audience)
    messages: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Invalid(Exception):
    """A 422 from the broadcasts module: the field it names and why."""

    field: str
    message: str


class Conflict(Exception):
    """The idempotency key was used for another broadcast (409)."""


@dataclass(frozen=True)
class Tariff:
    price_per_segment: Decimal
    currency: str
    default_language: str = "fr"  # what a recipient without a text in its language gets
    transliterate: bool = True  # GATEWAY_TRANSLITERATE: texts go out in the GSM-safe form
    # The catalogs' languages: residents read these, and the page has a box for each
    # (French and Bambara side by side first).
    languages: tuple[str, ...] = ("fr", "bm")


class Broadcasts(Protocol):
    """Every call checks the principal's role and scope (``gateway.operators.access``):
    an audience outside it raises ``Forbidden`` (403), another cercle's broadcast
    ``OutOfScope`` (404, audited)."""

    def tariff(self) -> Tariff: ...

    def recipients(self, who: Principal, audience: Audience) -> Mapping[str, int]:
        """Recipients of an audience by language (the audience picker's count)."""

    def preview(self, who: Principal, draft: Draft) -> Preview: ...

    def create(self, who: Principal, draft: Draft, *, idempotency_key: str) -> Broadcast:
        """The broadcast; the same key again gives the same broadcast, queued once."""

    def list(self, who: Principal) -> Sequence[Broadcast]: ...

    def get(self, who: Principal, broadcast_id: int) -> Broadcast: ...

    def cancel(self, who: Principal, broadcast_id: int) -> Broadcast: ...


@dataclass
class Seams:
    """What the dashboard is served with (None: that domain is not installed yet)."""

    accounts: Accounts | None = None
    broadcasts: Broadcasts | None = None

    def need_accounts(self) -> Accounts:
        if self.accounts is None:
            raise NotReady("accounts")
        return self.accounts

    def need_broadcasts(self) -> Broadcasts:
        if self.broadcasts is None:
            raise NotReady("broadcasts")
        return self.broadcasts
