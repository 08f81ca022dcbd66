"""``/api/v1/audit`` (admin): the audit trail, newest first, and its chain check."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from gateway.operators import audit
from gateway.operators.access import MAX_ID, Role, require
from gateway.operators.api.deps import Conn, CurrentPrincipal

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditItem(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    object_type: str | None
    object_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditItem]
    next: int | None  # pass as `cursor` for the next (older) page


class Verification(BaseModel):
    intact: bool
    entries: int
    head: str | None
    broken_entry: int | None = None
    reason: str | None = None


@router.get("")
def list_entries(who: CurrentPrincipal, conn: Conn,
                 cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 100,
                 actor: str | None = None, action: str | None = None) -> AuditPage:
    """Every sign-in and failed sign-in, account change, out-of-scope attempt and audited
    action, newest first: the actor's account name, the action, object ids, time and the
    chain hash. Never a phone number or a report's text."""
    require(who, Role.admin)
    page = audit.entries(conn, cursor=cursor, limit=limit, actor=actor, action=action)
    return AuditPage(items=[AuditItem(**e.as_dict()) for e in page.items], next=page.next)


@router.get("/verify")
def verify(who: CurrentPrincipal, conn: Conn) -> Verification:
    """The chain check of `gateway audit verify`."""
    require(who, Role.admin)
    broken = audit.verify(conn)
    at_head = audit.head(conn)
    entries, head = at_head if at_head is not None else (0, None)
    if broken is None:
        return Verification(intact=True, entries=entries, head=head)
    return Verification(intact=False, entries=entries, head=head,
                        broken_entry=broken.entry_id, reason=broken.reason)
