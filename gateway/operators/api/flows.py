"""``/api/v1/flows`` (operator, admin): the flows, their versions and screens, adding a
version and publishing one (an older one again: a rollback).

The logic is ``gateway.operators.flows``'; this module reads the request and names the
problems: an unknown flow or version is 404, a version the validator refuses 422 with
its problems (one string each), a version that no longer goes with the flows published
now 409.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, BackgroundTasks, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gateway.dialogue.library import Library
from gateway.operators import flows
from gateway.operators.api.deps import Conn, CurrentPrincipal, Rt
from gateway.runtime import Runtime
from gateway.store.models import utcnow

router = APIRouter(prefix="/flows", tags=["flows"])


class FlowSummary(BaseModel):
    flow: str
    title: dict[str, str]
    poll: str | None
    published: int | None
    published_at: datetime | None
    latest: int | None
    versions: int


class VersionOut(BaseModel):
    version: int
    source: str  # files | api
    created_by: str | None
    created_at: datetime
    last_published_at: datetime | None
    published: bool


class PublicationOut(BaseModel):
    version: int
    generation: int
    published_by: str | None
    published_at: datetime


class ScreenOut(BaseModel):
    step: str
    kind: str
    language: str
    page: int
    text: str
    septets: int
    encoding: str
    budget: int
    fits: bool


class FlowOut(BaseModel):
    flow: str
    published: int | None
    version: int  # the version shown: the published one unless ?version= asked another
    versions: list[VersionOut]
    publications: list[PublicationOut]
    definition: str
    messages: dict[str, dict[str, str]]
    screens: list[ScreenOut]
    problems: list[str]


class NewVersion(BaseModel):
    definition: str = Field(description="the flow's YAML definition")
    messages: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="the flow's own catalog entries: {language: {key: text}}")


class Created(BaseModel):
    version: int
    warnings: list[str] = []


class Published(BaseModel):
    flow: str
    version: int
    generation: int
    previous: int | None


class CheckOut(BaseModel):
    problems: list[str]
    errors: int
    screens: list[ScreenOut]


class DiffEntry(BaseModel):
    language: str
    key: str
    old: str | None
    new: str | None


class DiffOut(BaseModel):
    flow: str
    old: int
    new: int
    definition: list[str]
    messages: list[DiffEntry]


def _library(rt: Runtime) -> Library:
    if rt.library is None:  # pragma: no cover - build_runtime always makes one
        raise HTTPException(503, "flow versions are not available")
    return rt.library


def _problems(status: int, problems: list[str]) -> JSONResponse:
    return JSONResponse({"detail": problems}, status_code=status)


@router.get("")
def list_flows(who: CurrentPrincipal, conn: Conn, rt: Rt) -> list[FlowSummary]:
    """Each flow with its published version and its latest."""
    found = flows.list_flows(conn, who=who, library=_library(rt))
    return [FlowSummary.model_validate(f) for f in found]


@router.get("/{flow}", responses={404: {"description": "No such flow or version"}})
def read_flow(flow: str, who: CurrentPrincipal, conn: Conn, rt: Rt,
              version: int | None = None) -> FlowOut:
    """The flow's versions, and the published one (or ``version``) with its definition,
    its own catalog entries, every screen per language (its septets, encoding and the
    budget) and the validator's problems."""
    found = flows.read_flow(conn, who=who, library=_library(rt), rules=rt.ussd.engines.rules,
                            flow=flow, version=version)
    return FlowOut.model_validate(found)


@router.post("/{flow}/versions", status_code=201, responses={
    422: {"description": "The validator's problems, one string each; nothing stored"}})
def add_version(flow: str, body: NewVersion, who: CurrentPrincipal, conn: Conn,
                rt: Rt) -> Any:
    """Store a new version (not yet published), checked by the validator of ``gateway
    flows check`` with the flows published now."""
    try:
        number, warnings = flows.add_version(
            conn, who=who, library=_library(rt), rules=rt.ussd.engines.rules, flow=flow,
            definition=body.definition, messages=body.messages, now=utcnow())
    except flows.Invalid as exc:
        return _problems(422, exc.problems)
    return Created(version=number, warnings=warnings)


@router.post("/{flow}/check")
def check(flow: str, body: NewVersion, who: CurrentPrincipal, conn: Conn,
          rt: Rt) -> CheckOut:
    """A draft checked and laid out as ``versions`` would, without storing anything (the
    editor's live validation and preview)."""
    found = flows.check_draft(conn, who=who, library=_library(rt), rules=rt.ussd.engines.rules,
                              flow=flow, definition=body.definition, messages=body.messages)
    return CheckOut.model_validate(found)


@router.post("/{flow}/versions/{version}/publish", responses={
    404: {"description": "No such flow or version"},
    409: {"description": "The version no longer goes with the flows published now"}})
def publish(flow: str, version: int, who: CurrentPrincipal, conn: Conn, rt: Rt,
            after: BackgroundTasks) -> Any:
    """Make the version live at once, on every replica, without a restart (an older
    version again: a rollback). Sessions under way finish on the version they began on."""
    # Once committed, this process reads the counter at its next hop; the other
    # processes within GATEWAY_FLOWS_POLL_SECONDS.
    after.add_task(_library(rt).invalidate)
    try:
        done = flows.publish(conn, who=who, library=_library(rt), rules=rt.ussd.engines.rules,
                             flow=flow, version=version, now=utcnow())
    except flows.Conflict as exc:
        return _problems(409, exc.problems)
    return Published.model_validate(done)


class TrialIn(BaseModel):
    version: int | None = Field(None, description="a stored version; none: the published one")


class TrialOut(BaseModel):
    session_id: str
    ussd_path: str


@router.post("/{flow}/trials", status_code=201, responses={
    404: {"description": "No such flow or version"}})
def start_trial(flow: str, body: TrialIn, who: CurrentPrincipal, conn: Conn,
                rt: Rt) -> TrialOut:
    """A trial session for the phone in the page: post its hops to the USSD webhook with
    this ``sessionId`` (and any ``phoneNumber``). It walks the published flows, or
    ``version`` of this flow in place of the published one, and saves nothing it is
    answered: no result, no report."""
    session = flows.start_trial(conn, who=who, keys=rt.keys, flow=flow, version=body.version)
    return TrialOut(session_id=session, ussd_path="/webhooks/africastalking/ussd")


@router.get("/{flow}/diff", responses={404: {"description": "No such flow or version"}})
def diff(flow: str, old: int, new: int, who: CurrentPrincipal, conn: Conn) -> DiffOut:
    """What changed from version ``old`` to ``new``."""
    return DiffOut.model_validate(flows.diff(conn, who=who, flow=flow, old=old, new=new))
