"""The dashboard over HTTP (TestClient): headers, sessions, CSRF, escaping, language, page
weight, and the broadcast journey's form plumbing. The browser side is tests/browser/."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gateway.app import create_app
from gateway.operators import audit
from gateway.operators.dashboard.seams import Seams
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Environment, Settings
from tests.operators.dashboard_client import (
    ADMIN,
    DJENNE,
    OPERATOR,
    REVIEWER,
    assets,
    hidden,
    seams_for,
    sign_in,
)
from tests.operators.residents import RESIDENTS, seed

REPO = Path(__file__).resolve().parents[2]
LIMIT = 100 * 1024
# Pages over HTTP: SQLite is enough (the query they add, subscribers per cercle, runs on
# both databases in test_subscribers.py).
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, with a price per SMS so pages show costs, and no quiet hours
    (settings the broadcasts module reads; ignored without it)."""
    return Settings(_env_file=None, database_url=settings.database_url,
                    key_file=settings.key_file, content_dir=settings.content_dir,
                    send_rate=settings.send_rate, quiet_hours="", sms_price=Decimal(25))


@pytest.fixture
def dash(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(settings, runtime=runtime)
    app.state.dashboard_seams = seams_for(runtime)
    seed(runtime, RESIDENTS)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def signed_in(dash: TestClient) -> TestClient:
    assert sign_in(dash).status_code == 303
    return dash


def compose_form(client: TestClient, **fields: str | list[str]) -> dict[str, str | list[str]]:
    page = client.get("/dashboard/broadcasts/new")
    assert page.status_code == 200
    form: dict[str, str | list[str]] = {
        "csrf": hidden(page.text, "csrf"), "key": hidden(page.text, "key"),
        "message_fr": "Réunion de sécurité samedi à la mairie.",
        "message_bm": "Lakana ɲɔgɔnye bɛ kɛ sibiri.",
        "title": "", "send_at": "", "valid_until": ""}
    form.update(fields)
    return form


# --- headers and sessions ---------------------------------------------------------------

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; "
       "base-uri 'none'")


@pytest.mark.parametrize("path", [
    "/dashboard/login", "/dashboard/", "/dashboard/broadcasts", "/dashboard/broadcasts/new",
    "/dashboard/broadcasts/recipients", "/dashboard/no-such-page", "/dashboard/static/app.css",
])
def test_every_dashboard_response_carries_the_security_headers(signed_in: TestClient,
                                                               path: str) -> None:
    response = signed_in.get(path)
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    if "/static/" not in path:
        assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/broadcasts",
                                  "/dashboard/broadcasts/new", "/dashboard/broadcasts/1"])
def test_signed_out_pages_send_to_the_sign_in_page_and_back(dash: TestClient,
                                                            path: str) -> None:
    response = dash.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/dashboard/login?next={path}"


def test_a_signed_in_operator_lands_where_they_were_going(dash: TestClient) -> None:
    page = dash.get("/dashboard/login?next=/dashboard/broadcasts")
    response = dash.post("/dashboard/login", data={
        "csrf": hidden(page.text, "csrf"), "username": OPERATOR.name,
        "password": "correct horse battery staple", "next": hidden(page.text, "next")},
        follow_redirects=False)
    assert response.headers["location"] == "/dashboard/broadcasts"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x",
                                    "/dashboard/\\evil", "/elsewhere"])
def test_sign_in_never_sends_elsewhere(dash: TestClient, target: str) -> None:
    page = dash.get("/dashboard/login")
    response = dash.post("/dashboard/login", data={
        "csrf": hidden(page.text, "csrf"), "username": OPERATOR.name,
        "password": "correct horse battery staple", "next": target}, follow_redirects=False)
    assert response.headers["location"] == "/dashboard/"


def test_a_second_sign_in_page_does_not_spoil_the_first(dash: TestClient) -> None:
    """Two tabs on the sign-in page, or the sign-in page a signed-out page's script is sent
    to in the background: the browser keeps one token, so the first form still signs in."""
    first = dash.get("/dashboard/login")
    second = dash.get("/dashboard/login")
    assert hidden(second.text, "csrf") == hidden(first.text, "csrf")
    response = dash.post("/dashboard/login", data={
        "csrf": hidden(first.text, "csrf"), "username": OPERATOR.name,
        "password": "correct horse battery staple", "next": "/dashboard/"},
        follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/"


def test_a_forged_login_cookie_is_not_taken_as_the_token(dash: TestClient) -> None:
    dash.cookies.set("dannaya_login", "<script>", path="/dashboard/login")
    token = hidden(dash.get("/dashboard/login").text, "csrf")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)


@pytest.mark.parametrize("path", ["/dashboard/broadcasts/recipients?cercle=mopti",
                                  "/dashboard/broadcasts/1/status",
                                  "/dashboard/onair/1/stream"])
def test_a_page_script_whose_session_ended_is_told_so(dash: TestClient, path: str) -> None:
    """What pages' scripts ask in the background answers 401, not the sign-in page (which
    a script cannot show, and whose form token it would only replace)."""
    response = dash.get(path, follow_redirects=False)
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


def test_the_session_cookie_is_http_only_and_lax(dash: TestClient) -> None:
    cookie = sign_in(dash).headers["set-cookie"]
    assert "dannaya_session=" in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # development: plain http on 127.0.0.1


def test_the_session_cookie_is_secure_in_production(settings: Settings, tmp_path: Path) -> None:
    dev = build_runtime(settings)  # writes the key file production then requires
    dev.db.dispose()
    production = settings.model_copy(update={"env": Environment.production,
                                             "webhook_token": SecretStr("t" * 32)})
    rt = build_runtime(production)
    app = create_app(production, runtime=rt)
    app.state.dashboard_seams = seams_for(rt)
    with TestClient(app, base_url="https://testserver") as client:
        cookie = sign_in(client).headers["set-cookie"]
    rt.db.dispose()
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_a_wrong_password_says_so_plainly(dash: TestClient) -> None:
    response = sign_in(dash, password="not the password")
    assert response.status_code == 401
    assert "Nom d&#39;utilisateur ou mot de passe incorrect." in response.text
    assert "set-cookie" not in response.headers or "dannaya_session" not in \
        response.headers["set-cookie"]


def test_after_five_failures_sign_in_waits_even_for_the_right_password(
        dash: TestClient) -> None:
    for _ in range(5):
        assert sign_in(dash, password="guess").status_code == 401
    response = sign_in(dash)
    assert response.status_code == 429
    assert "Trop d&#39;essais. Réessayez dans 15 minutes." in response.text
    assert int(response.headers["retry-after"]) > 14 * 60


def test_sign_out_ends_the_session(signed_in: TestClient) -> None:
    home = signed_in.get("/dashboard/")
    response = signed_in.post("/dashboard/logout", data={"csrf": hidden(home.text, "csrf")},
                              follow_redirects=False)
    assert response.headers["location"] == "/dashboard/login?signed_out=1"
    assert signed_in.get("/dashboard/", follow_redirects=False).status_code == 303


# --- CSRF ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/dashboard/logout", "/dashboard/broadcasts/new", "/dashboard/broadcasts/check",
    "/dashboard/broadcasts", "/dashboard/broadcasts/1/cancel",
])
@pytest.mark.parametrize("token", ["missing", "wrong", "cross-site"])
def test_a_post_without_the_session_token_is_refused(signed_in: TestClient, path: str,
                                                     token: str) -> None:
    form = compose_form(signed_in, commune="mopti-konna")
    headers = {}
    if token == "missing":
        del form["csrf"]
    elif token == "wrong":
        form["csrf"] = "x" * 32
    else:
        headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    response = signed_in.post(path, data=form, headers=headers, follow_redirects=False)
    assert response.status_code == 403
    assert "Formulaire expiré" in response.text
    broadcasts = signed_in.get("/dashboard/broadcasts")
    assert "Aucune diffusion pour l&#39;instant." in broadcasts.text


def test_the_sign_in_form_needs_its_own_token(dash: TestClient) -> None:
    response = dash.post("/dashboard/login", data={
        "username": OPERATOR.name, "password": "correct horse battery staple"})
    assert response.status_code == 403


# --- what the pages show ----------------------------------------------------------------


def test_no_page_has_inline_script_or_style(signed_in: TestClient) -> None:
    form = compose_form(signed_in, commune="mopti-konna", message_bm="I ni ce")
    check = signed_in.post("/dashboard/broadcasts/check", data=form)
    created = signed_in.post("/dashboard/broadcasts", data=form)
    pages = [signed_in.get(p) for p in ("/dashboard/login", "/dashboard/",
                                        "/dashboard/broadcasts", "/dashboard/broadcasts/new",
                                        "/dashboard/broadcasts/1/cancel")]
    for page in [*pages, check, created]:
        assert page.status_code == 200
        assert assets(page.text).inline == [], page.url


def test_text_typed_by_an_operator_is_escaped(signed_in: TestClient) -> None:
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)>'
    form = compose_form(signed_in, commune="mopti-konna", title=evil, message_fr=evil)
    for page in (signed_in.post("/dashboard/broadcasts/check", data=form),
                 signed_in.post("/dashboard/broadcasts", data=form),
                 signed_in.get("/dashboard/broadcasts")):
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_the_language_toggle_is_kept_in_a_cookie(signed_in: TestClient) -> None:
    page = signed_in.get("/dashboard/broadcasts?lang=bm")
    assert '<html lang="bm">' in page.text and "<h1>Cikanw</h1>" in page.text
    assert "lang=bm" in page.headers["set-cookie"]
    again = signed_in.get("/dashboard/broadcasts/new")
    assert '<html lang="bm">' in again.text
    assert "Bamanankan na" in again.text  # the Bambara message box
    assert "Cercles entiers" not in again.text and "Sɛrikiliw" in again.text
    back = signed_in.get("/dashboard/?lang=fr")
    assert '<html lang="fr">' in back.text and "Tableau de bord" in back.text


def test_static_files_are_cached_for_a_year_under_their_hash(dash: TestClient) -> None:
    page = dash.get("/dashboard/login")
    css = next(u for u in assets(page.text).urls if "app.css" in u)
    response = dash.get(css)
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-type"] == "text/css; charset=utf-8"
    stale = dash.get("/dashboard/static/app.css?v=000000000000")
    assert stale.headers["cache-control"] == "no-cache"
    assert dash.get("/dashboard/static/../app.py").status_code == 404
    assert dash.get("/dashboard/static/nothing.js").status_code == 404


def test_each_page_weighs_under_100_kb(signed_in: TestClient,
                                      record_property: Callable[[str, object], None]) -> None:
    """HTML + CSS + JS of a first load (uncompressed: gzip only makes it smaller)."""
    form = compose_form(signed_in, commune="mopti-konna", message_bm="I ni ce")
    pages = {
        "login": signed_in.get("/dashboard/login"),
        "home": signed_in.get("/dashboard/"),
        "compose": signed_in.get("/dashboard/broadcasts/new"),
        "check": signed_in.post("/dashboard/broadcasts/check", data=form),
        "progress": signed_in.post("/dashboard/broadcasts", data=form),
        "list": signed_in.get("/dashboard/broadcasts"),
        "cancel": signed_in.get("/dashboard/broadcasts/1/cancel"),
    }
    weights = {}
    for name, page in pages.items():
        assert page.status_code == 200, name
        files = [signed_in.get(url) for url in assets(page.text).urls]
        weights[name] = len(page.content) + sum(len(f.content) for f in files)
    record_property("page_weights", weights)
    assert all(w < LIMIT for w in weights.values()), weights


def test_pages_are_gzipped_for_slow_links(signed_in: TestClient) -> None:
    response = signed_in.get("/dashboard/broadcasts/new", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"


# --- roles and seams ---------------------------------------------------------------


@pytest.mark.parametrize(("who", "status"), [(OPERATOR, 200), (ADMIN, 200), (REVIEWER, 403)])
def test_broadcast_pages_are_for_operators_and_admins(dash: TestClient, who: object,
                                                      status: int) -> None:
    sign_in(dash, who)  # type: ignore[arg-type]
    assert dash.get("/dashboard/broadcasts/new").status_code == status
    assert dash.get("/dashboard/").status_code == 200


def test_another_cercles_broadcast_is_not_found_and_the_try_audited(
        dash: TestClient, runtime: Runtime) -> None:
    sign_in(dash, OPERATOR)
    made = dash.post("/dashboard/broadcasts", data=compose_form(dash, commune="mopti-konna"))
    assert made.status_code == 200
    dash.cookies.clear()
    sign_in(dash, DJENNE)
    assert dash.get("/dashboard/broadcasts/1").status_code == 404
    assert dash.get("/dashboard/broadcasts/1/status").status_code == 404
    assert dash.get("/dashboard/broadcasts/99").status_code == 404  # none: not audited
    with runtime.db.transaction() as conn:
        tries = audit.entries(conn, action="access.out_of_scope").items
    assert [(e.actor, json.loads(e.details)) for e in tries] == [
        ("moussa", {"method": "GET", "param_broadcast_id": "1",
                    "route": "/dashboard/broadcasts/{broadcast_id:int}/status"}),
        ("moussa", {"method": "GET", "param_broadcast_id": "1",
                    "route": "/dashboard/broadcasts/{broadcast_id:int}"}),
    ]


def test_sign_in_and_out_are_audited(dash: TestClient, runtime: Runtime) -> None:
    sign_in(dash, OPERATOR, password="wrong password here")
    sign_in(dash, OPERATOR)
    home = dash.get("/dashboard/")
    dash.post("/dashboard/logout", data={"csrf": hidden(home.text, "csrf")})
    with runtime.db.transaction() as conn:
        mine = audit.entries(conn, actor=OPERATOR.name).items
        assert audit.verify(conn) is None
    assert [(e.action, json.loads(e.details).get("via")) for e in reversed(mine)] == [
        ("auth.sign_in_failed", "dashboard"), ("auth.sign_in", "dashboard"),
        ("auth.sign_out", "dashboard")]


def test_without_a_domain_module_its_pages_say_not_yet(settings: Settings,
                                                       runtime: Runtime) -> None:
    app = create_app(settings, runtime=runtime)
    app.state.dashboard_seams = Seams()  # neither accounts nor broadcasts
    with TestClient(app) as client:
        page = client.get("/dashboard/login")
        assert page.status_code == 200
        response = client.post("/dashboard/login", data={
            "csrf": hidden(page.text, "csrf"), "username": "a", "password": "b"})
    assert response.status_code == 503
    assert "Pas encore disponible" in response.text


# --- the broadcast journey's plumbing ---------------------------------------------------


def test_the_recipient_count_follows_the_audience(signed_in: TestClient) -> None:
    def count(query: str) -> object:
        return signed_in.get(f"/dashboard/broadcasts/recipients?{query}").json()

    assert count("commune=mopti-konna") == {"recipients": 2, "languages": {"bm": 1, "fr": 1}}
    assert count("cercle=koro") == {"recipients": 2, "languages": {"bm": 1, "ff": 1}}
    assert count("cercle=mopti&language=fr") == {"recipients": 2, "languages": {"fr": 2}}
    assert count("")["recipients"] == 5  # type: ignore[index]
    response = signed_in.get("/dashboard/broadcasts/recipients?commune=djenne-djenne")
    assert response.status_code == 403


def test_check_shows_what_goes_over_the_air_and_the_cost(signed_in: TestClient) -> None:
    form = compose_form(signed_in, commune="mopti-konna", message_bm="Kɔnɔ ɲɛnɛ bɛ sɔgɔma")
    assert 'id="message_ff"' in signed_in.get("/dashboard/broadcasts/new").text
    page = signed_in.post("/dashboard/broadcasts/check", data=form)
    assert page.status_code == 200
    assert "Kònò nyènè bè sògòma" in page.text  # transliterated, as sent
    assert "50 XOF" in page.text  # 2 recipients x 1 SMS x 25
    assert "Envoyer à 2 personnes" in page.text
    # Its three forms (back, send, change) carry the compose page's idempotency key.
    assert page.text.count(f'name="key" value="{form["key"]}"') == 3


def test_an_empty_message_is_an_error_linked_to_its_field(signed_in: TestClient) -> None:
    form = compose_form(signed_in, commune="mopti-konna", message_fr="  ", message_bm="")
    page = signed_in.post("/dashboard/broadcasts/check", data=form)
    assert page.status_code == 422
    assert "<title>Erreur : Nouvelle diffusion" in page.text
    assert '<a href="#message_fr">Écrivez au moins un message.</a>' in page.text
    assert f'value="{form["key"]}"' in page.text  # the same key, kept


def test_an_audience_outside_the_scope_is_an_error_on_the_audience(
        signed_in: TestClient) -> None:
    form = compose_form(signed_in, commune="djenne-djenne")
    page = signed_in.post("/dashboard/broadcasts/check", data=form)
    assert page.status_code == 422
    assert '<a href="#cercle">Cette audience sort de vos cercles.</a>' in page.text


def test_readers_of_a_language_need_a_text_in_it(signed_in: TestClient) -> None:
    form = compose_form(signed_in, commune="mopti-konna", message_bm="")
    page = signed_in.post("/dashboard/broadcasts/check", data=form)
    assert page.status_code == 422
    assert '<a href="#message_bm">Des destinataires lisent le bambara : écrivez aussi le ' \
        'message en bambara.</a>' in page.text
    assert ">Réunion de sécurité samedi à la mairie.</textarea>" in page.text


def test_a_double_submit_makes_one_broadcast(signed_in: TestClient) -> None:
    form = compose_form(signed_in, commune="mopti-konna")
    first = signed_in.post("/dashboard/broadcasts", data=form, follow_redirects=False)
    second = signed_in.post("/dashboard/broadcasts", data=form, follow_redirects=False)
    assert first.headers["location"] == second.headers["location"] == \
        "/dashboard/broadcasts/1?created=1"
    listing = signed_in.get("/dashboard/broadcasts").text
    assert listing.count('href="/dashboard/broadcasts/1"') == 1
    assert 'href="/dashboard/broadcasts/2"' not in listing


def test_change_brings_the_compose_page_back_filled_in(signed_in: TestClient) -> None:
    form = compose_form(signed_in, commune=["mopti-konna", "mopti-sio"], language="bm",
                        message_bm="I ni ce", title="Réunion")
    page = signed_in.post("/dashboard/broadcasts/new", data=form)
    assert page.status_code == 200
    assert 'value="mopti-konna" checked' in page.text and 'value="mopti-sio" checked' in \
        page.text
    assert 'value="bm" checked' in page.text and ">I ni ce</textarea>" in page.text
    assert f'name="key" value="{form["key"]}"' in page.text


def test_a_scheduled_broadcast_can_be_cancelled(signed_in: TestClient) -> None:
    form = compose_form(signed_in, commune="mopti-konna", send_at="2099-01-01T09:00")
    progress = signed_in.post("/dashboard/broadcasts", data=form)
    assert "Programmée" in progress.text and "01/01/2099 09:00" in progress.text
    confirm = signed_in.get("/dashboard/broadcasts/1/cancel")
    assert "Annuler la diffusion n° 1 ?" in confirm.text
    done = signed_in.post("/dashboard/broadcasts/1/cancel",
                          data={"csrf": hidden(confirm.text, "csrf")})
    assert "Diffusion annulée." in done.text and "Annulée" in done.text
    assert signed_in.get("/dashboard/broadcasts/1/status").json()["status"] == "cancelled"


def test_home_shows_running_broadcasts_and_subscribers_per_cercle(
        signed_in: TestClient) -> None:
    signed_in.post("/dashboard/broadcasts",
                   data=compose_form(signed_in, commune="mopti-konna", title="Réunion"))
    home = signed_in.get("/dashboard/").text
    assert "Réunion" in home and 'class="tag tag-s' in home  # scheduled or sending
    assert "<th scope=\"row\">Mopti</th><td class=\"num\">3</td>" in home
    assert "<th scope=\"row\">Koro</th><td class=\"num\">2</td>" in home
    assert "Djenné" not in home
