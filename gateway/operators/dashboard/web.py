"""What every dashboard page shares: templates, static files, security headers, the session
cookie, CSRF, the language, form reading and the error pages.

Security (BRIEF.md, "Operator contract", Dashboard): every response carries a strict
Content-Security-Policy (no inline script or style anywhere), ``nosniff`` and
``Referrer-Policy: no-referrer``; the session cookie is an opaque id (HttpOnly,
SameSite=Lax, Secure in production) whose server-side row holds the account and the CSRF
token; every POST carries that token and is refused (403) without it; templates autoescape.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.operators import accounts
from gateway.operators.access import Areas
from gateway.operators.dashboard import strings
from gateway.operators.dashboard.seams import Seams, Session
from gateway.runtime import Runtime
from gateway.settings import Settings

HERE = Path(__file__).resolve().parent
PREFIX = "/dashboard"
SESSION_COOKIE = accounts.SESSION_COOKIE  # an opaque session id, nothing else
LOGIN_COOKIE = "dannaya_login"  # the sign-in form's CSRF token, before any session
LANG_COOKIE = "lang"
MAX_FORM_BYTES = 65_536
MAX_FORM_FIELDS = 400
TIMEZONE = ZoneInfo("Africa/Bamako")  # Mali: UTC+0 all year; what operators read and type

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; "
       "base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware: the security headers on every dashboard response (pages, JSON,
    static files, errors), and ``no-store`` on all but the static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in {h for h, _ in SECURITY_HEADERS}]
                headers.extend(SECURITY_HEADERS)
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


# --- errors the pages raise, answered by dashboard_app's handlers ---------------------


class SignInRequired(Exception):
    """No live session: go to the sign-in page (and come back)."""


class CsrfRefused(Exception):
    """A POST without the right CSRF token, or from another site (403)."""


class BadForm(Exception):
    """A body the dashboard never sends (not a form, too large, too many fields): 400."""


# --- static files --------------------------------------------------------------------


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    version: str  # 12 hex digits of the SHA-256: the URL changes when the file does


class Assets:
    """The files of ``static/``, read once. URLs carry the content hash, and a request
    with the current hash is cached for a year (``immutable``)."""

    def __init__(self, folder: Path) -> None:
        self.files: dict[str, Asset] = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                body = path.read_bytes()
                media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if media.startswith("text/") or media.endswith(("javascript", "json")):
                    media += "; charset=utf-8"
                self.files[path.name] = Asset(body, media,
                                              hashlib.sha256(body).hexdigest()[:12])

    def url(self, name: str) -> str:
        return f"{PREFIX}/static/{name}?v={self.files[name].version}"

    def response(self, name: str, version: str | None) -> Response:
        asset = self.files.get(name)
        if asset is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        cache = ("public, max-age=31536000, immutable" if version == asset.version
                 else "no-cache")
        return Response(asset.body, media_type=asset.media_type,
                        headers={"Cache-Control": cache, "ETag": f'"{asset.version}"'})


# --- formatting ----------------------------------------------------------------------

NARROW_SPACE = "\u202f"


def number(value: int | float | Decimal) -> str:
    """1 234 567 (French grouping with a narrow no-break space)."""
    return f"{value:,.0f}".replace(",", NARROW_SPACE)


def money(value: Decimal) -> str:
    """Whole amounts without decimals (XOF has none), others with two."""
    if value == value.to_integral_value():
        return number(value)
    whole, _, cents = f"{value:,.2f}".partition(".")
    return whole.replace(",", NARROW_SPACE) + "," + cents


def local_time(value: datetime | None, fmt: str = "%d/%m/%Y %H:%M") -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(TIMEZONE).strftime(fmt)


def parse_local(text: str) -> datetime | None:
    """A ``datetime-local`` field (``YYYY-MM-DDTHH:MM``, Bamako time) as an aware UTC
    datetime; None for an empty field; ValueError for anything else."""
    text = text.strip()
    if not text:
        return None
    value = datetime.fromisoformat(text.replace(" ", "T"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=TIMEZONE)
    return value.astimezone(UTC)


# --- forms ---------------------------------------------------------------------------


@dataclass
class Form:
    """A submitted form: every value of every field, in order."""

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str = "") -> str:
        for key, value in self.pairs:
            if key == name:
                return value
        return default

    def names(self) -> set[str]:
        return {key for key, _ in self.pairs}

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


async def read_form(request: Request) -> Form:
    """The urlencoded body of a dashboard form; :class:`BadForm` for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadForm("not a form")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm("form too large")
    try:
        pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True,
                          max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        raise BadForm("too many fields") from None
    return Form([(k, v.replace("\x00", "")) for k, v in pairs])


def same_origin(request: Request) -> bool:
    """The second layer under the token: a browser's ``Sec-Fetch-Site`` or ``Origin`` that
    names another site is refused (clients that send neither pass on the token alone)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in {"same-origin", "none"}:
        return False
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host
    return True


def check_csrf(request: Request, form: Form, expected: str | None) -> None:
    given = form.get("csrf")
    if not expected or not given or not same_origin(request) or \
            not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfRefused


# --- the per-request context ----------------------------------------------------------


@dataclass
class Dashboard:
    """Built once per app: settings, the runtime (once started), seams, templates, files.
    ``overrides`` gives the seams to serve with instead of the domain modules' (None: those,
    built on first use by ``wiring.default_seams``)."""

    settings: Settings
    runtime: Callable[[], Runtime]
    overrides: Callable[[], Seams | None]
    # The gateway's own ASGI app: the phone in the page posts to its USSD webhook.
    gateway: Callable[[], Any] = lambda: None
    assets: Assets = field(default_factory=lambda: Assets(HERE / "static"))
    env: Environment = field(init=False)
    _areas: Areas | None = None
    _seams: Seams | None = None

    def seams(self) -> Seams:
        given = self.overrides()
        if given is not None:
            return given
        if self._seams is None:
            from gateway.operators.dashboard.wiring import default_seams

            self._seams = default_seams(self.runtime())
        return self._seams

    def __post_init__(self) -> None:
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                               undefined=StrictUndefined, trim_blocks=True,
                               lstrip_blocks=True, auto_reload=False)
        self.env.globals["static"] = self.assets.url
        self.env.filters["number"] = number
        self.env.filters["money"] = money
        self.env.filters["local_time"] = local_time

    @property
    def areas(self) -> Areas:
        if self._areas is None:
            self._areas = Areas.of(self.runtime().engine.content.communes)
        return self._areas

    def cercle_name(self, cercle_id: str) -> str:
        cercle = self.runtime().engine.content.communes.cercle(cercle_id)
        return cercle.name if cercle is not None else cercle_id

    def language(self, request: Request) -> tuple[str, bool]:
        """The page language (``?lang=`` first, then the cookie) and whether to remember
        it in the cookie."""
        asked = request.query_params.get("lang")
        if asked in strings.LANGUAGES:
            return asked, asked != request.cookies.get(LANG_COOKIE)
        kept = request.cookies.get(LANG_COOKIE)
        return (kept if kept in strings.LANGUAGES else strings.DEFAULT), False

    async def session(self, request: Request) -> Session | None:
        sid = request.cookies.get(SESSION_COOKIE)
        accounts = self.seams().accounts
        if not sid or accounts is None:
            return None
        return await run_in_threadpool(lambda: accounts.session(session_id=sid))

    async def signed_in(self, request: Request) -> Session:
        found = await self.session(request)
        if found is None:
            raise SignInRequired
        request.state.principal = found.principal  # for the audit of an out-of-scope try
        return found

    def render(self, request: Request, name: str, *, session: Session | None,
               status: int = 200, headers: Mapping[str, str] | None = None,
               **values: Any) -> HTMLResponse:
        lang, remember = self.language(request)
        t = strings.translator(lang)
        other = "fr" if lang == "bm" else "bm"
        context = {
            "lang": lang, "t": t, "session": session,
            "csrf": session.csrf_token if session else "",
            "switch_url": f"{request.url.path}?lang={other}",
            "path": request.url.path,
            **values,
        }
        html = self.env.get_template(name).render(context)
        response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
        if remember:
            self.set_cookie(response, LANG_COOKIE, lang, max_age=365 * 86400, http_only=False)
        return response

    def set_cookie(self, response: Response, name: str, value: str, *, max_age: int | None,
                   http_only: bool = True, path: str = PREFIX, same_site: str = "lax") -> None:
        response.set_cookie(name, value, max_age=max_age, path=path, httponly=http_only,
                            samesite=same_site,  # type: ignore[arg-type]
                            secure=self.settings.is_production)

    def redirect(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)


def new_token() -> str:
    return secrets.token_urlsafe(24)


_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


def login_token(request: Request) -> str:
    """The sign-in form's CSRF token: the one this browser already holds, else a new one.
    Every sign-in page a browser opens (a second tab, or the redirect a page's own
    background request gets once its session has ended) then carries the same token, so
    opening one never makes another's form fail the check."""
    held = request.cookies.get(LOGIN_COOKIE, "")
    return held if _TOKEN.fullmatch(held) else new_token()


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path of ours, never another site."""
    if target and target.startswith(PREFIX + "/") and "//" not in target and "\\" not in target:
        return target
    return PREFIX + "/"
