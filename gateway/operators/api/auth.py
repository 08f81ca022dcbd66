"""``/api/v1/auth``: sign in for a token (the OAuth2 password flow), who am I, sign out."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from gateway.operators import accounts
from gateway.operators.api.deps import (
    AppSettings,
    Conn,
    CurrentPrincipal,
    Rt,
    bearer,
    client_address,
    unauthorized,
)
from gateway.store.models import utcnow

router = APIRouter(prefix="/auth", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a type, not a secret)
    expires_in: int  # seconds


class Me(BaseModel):
    name: str
    role: str
    cercles: list[str]


@router.post("/token", responses={
    401: {"description": "Wrong username or password"},
    429: {"description": "Too many failed sign-ins for the account or the client address; "
                         "wait `Retry-After` seconds"},
})
def sign_in(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request,
            response: Response, rt: Rt, settings: AppSettings) -> TokenOut:
    """Form fields `username` and `password` -> a bearer token that lasts
    `GATEWAY_TOKEN_HOURS`. After 5 failures for one account or from one address within
    15 minutes: 429, even with the right password."""
    for field, value in (("username", form.username), ("password", form.password)):
        if "\x00" in value:  # PostgreSQL text cannot hold it: a 422 here, not a 500 there
            raise HTTPException(422, f"{field}: a NUL character is not text")
    now = utcnow()
    try:
        who = accounts.sign_in(rt.db, name=form.username, password=form.password,
                               client=client_address(request), via="api", now=now)
    except accounts.Throttled as exc:
        raise HTTPException(429, "too many failed sign-ins; try again later",
                            headers={"Retry-After": str(exc.retry_after)}) from None
    except accounts.BadCredentials:
        raise unauthorized("incorrect username or password") from None
    lifetime = timedelta(hours=settings.token_hours)
    with rt.db.transaction() as conn:
        _, token = accounts.issue_token(conn, account_id=who.account_id, kind="login",
                                        label="sign-in", expires_at=now + lifetime, now=now)
    response.headers["Cache-Control"] = "no-store"
    return TokenOut(access_token=token, expires_in=int(lifetime.total_seconds()))


@router.get("/me")
def me(who: CurrentPrincipal) -> Me:
    """The signed-in account: name, role and cercles (empty for an admin: every one)."""
    return Me(name=who.name, role=who.role.value, cercles=sorted(who.cercles))


@router.post("/logout", status_code=204)
def sign_out(who: CurrentPrincipal, request: Request, conn: Conn,
             token: Annotated[str | None, Depends(bearer)]) -> Response:
    """Revoke the bearer token of this request (or end the dashboard session)."""
    del who  # authenticated above; what follows ends that credential
    now = utcnow()
    if token is not None:
        accounts.revoke_token(conn, token=token, now=now)
    else:
        accounts.end_session(conn, cookie=request.cookies.get(accounts.SESSION_COOKIE, ""),
                             now=now)
    return Response(status_code=204)
