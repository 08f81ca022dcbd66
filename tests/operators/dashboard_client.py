"""A dashboard user for TestClient tests: signs in through the form, reads the CSRF token
and the idempotency key off the pages as a browser would, and posts forms."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from fastapi.testclient import TestClient
from httpx2 import Response

from gateway.operators import accounts
from gateway.operators.access import Areas, Principal, Role
from gateway.operators.dashboard import wiring
from gateway.operators.dashboard.seams import Seams
from gateway.runtime import Runtime
from gateway.store.models import utcnow

PASSWORD = "correct horse battery staple"
OPERATOR = Principal(1, "awa", Role.operator, frozenset({"mopti", "koro"}))
ADMIN = Principal(2, "root", Role.admin)
REVIEWER = Principal(3, "fanta", Role.reviewer, frozenset({"mopti"}))
DJENNE = Principal(4, "moussa", Role.operator, frozenset({"djenne"}))


def seams_for(rt: Runtime) -> Seams:
    """The accounts above, made as the CLI makes them, and the dashboard's seams over the
    real accounts and broadcasts modules."""
    areas = Areas.of(rt.engine.content.communes)
    with rt.db.transaction() as conn:
        for who in (OPERATOR, ADMIN, REVIEWER, DJENNE):
            accounts.create(conn, name=who.name, role=who.role, cercles=who.cercles,
                            password=PASSWORD, known_cercles=areas.communes_of, actor="cli",
                            now=utcnow())
    return Seams(wiring.Accounts(rt), wiring.Broadcasts(rt))


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)


def sign_in(client: TestClient, who: Principal = OPERATOR, password: str = PASSWORD,
            ) -> Response:
    page = client.get("/dashboard/login")
    return client.post("/dashboard/login", data={
        "csrf": hidden(page.text, "csrf"), "username": who.name, "password": password,
        "next": "/dashboard/"}, follow_redirects=False)


class Assets(HTMLParser):
    """The stylesheets and scripts a page loads, and what the CSP would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "link" and values.get("rel") == "stylesheet" and values.get("href"):
            self.urls.append(values["href"] or "")
        if tag == "script":
            if values.get("src"):
                self.urls.append(values["src"] or "")
            else:
                self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"{tag} {name}=")


def assets(html: str) -> Assets:
    parser = Assets()
    parser.feed(html)
    return parser
