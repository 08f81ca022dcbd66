"""``/api/v1/partners``: who reports are referred to. Admins add them; reviewers list them
to choose one. A webhook partner's secret is never shown again."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from gateway.operators import referrals, reports
from gateway.operators.access import Role, require
from gateway.operators.api.deps import AppSettings, Conn, CurrentPrincipal, Rt
from gateway.operators.api.reports import Body, refusals
from gateway.store.models import utcnow

router = APIRouter(prefix="/partners", tags=["reports"])


class PartnerIn(Body):
    name: str
    email: str | None = None
    webhook_url: str | None = None
    secret: str | None = None  # a webhook's: signs each body (16 to 256 characters)


class PartnerOut(Body):
    id: int
    name: str
    kind: Literal["email", "webhook"]
    email: str | None
    webhook_url: str | None
    disabled: bool
    created_at: str


@router.get("")
def list_partners(who: CurrentPrincipal, conn: Conn) -> list[PartnerOut]:
    """Every partner (reviewers choose one to refer a report to)."""
    require(who, *reports.REVIEWERS)
    return [PartnerOut.model_validate(p.as_dict()) for p in referrals.list_partners(conn)]


@router.post("", status_code=201, responses={409: {"description": "The name is taken"}})
def add_partner(body: PartnerIn, who: CurrentPrincipal, conn: Conn, rt: Rt,
                settings: AppSettings) -> PartnerOut:
    """`{"name", "email"}` (needs `GATEWAY_SMTP_HOST` and `GATEWAY_SMTP_FROM`) or
    `{"name", "webhook_url", "secret"}` (https in production)."""
    require(who, Role.admin)
    with refusals():
        made = referrals.create_partner(
            conn, who=who, keys=rt.keys, mail=referrals.Mail.of(settings),
            production=settings.is_production, name=body.name, email=body.email,
            webhook_url=body.webhook_url, secret=body.secret, now=utcnow())
    return PartnerOut.model_validate(made.as_dict())
