"""The flow pages over HTTP (TestClient): the list, a flow drawn and every screen shown,
the editor's check and its refusal of a too-long Bambara screen, publish after a
confirmation page, roll back, the diff, the phone in the page (through the real USSD
webhook, saving nothing), who may see them, and the page weight."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.store import flow_versions, queries
from tests.operators.dashboard_client import REVIEWER, assets, hidden, seams_for, sign_in
from tests.phone import Phone

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
OLD_BM = "I da bè sòròdasiw (FAMa) la wa?"
NEW_BM = "I dalen bè sòròdasiw (FAMa) la wa?"
LIMIT = 100 * 1024


@pytest.fixture
def dash(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(settings, runtime=runtime)
    app.state.dashboard_seams = seams_for(runtime)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def signed_in(dash: TestClient) -> TestClient:
    assert sign_in(dash).status_code == 303
    return dash


def editor_form(client: TestClient, **changes: str) -> dict[str, str]:
    """The poll's editor as a browser would submit it, with ``changes`` (field: value)."""
    page = client.get("/dashboard/flows/poll/edit")
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'<textarea[^>]* name="([^"]+)"[^>]*>([^<]*)</textarea>', page.text))
    form = {name: unescape(value) for name, value in fields.items()}
    form.update(csrf=hidden(page.text, "csrf"), base=hidden(page.text, "base"))
    form.update(changes)
    return form


def test_the_flow_list_and_a_flow_drawn_with_every_screen(signed_in: TestClient) -> None:
    page = signed_in.get("/dashboard/flows")
    assert page.status_code == 200
    for flow in ("main", "poll", "report", "subscribe"):
        assert f'href="/dashboard/flows/{flow}"' in page.text
    page = signed_in.get("/dashboard/flows/poll")
    assert page.status_code == 200
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="flow-diagram"' in page.text
    assert "Faites-vous confiance" in page.text and OLD_BM in page.text
    assert "/160 caractères" in page.text and "GSM-7" in page.text
    assert len(page.content) < LIMIT
    found = assets(page.text)
    assert found.inline == []


def test_the_editor_previews_and_refuses_a_too_long_bambara_screen(
        signed_in: TestClient) -> None:
    form = editor_form(signed_in, **{"m.bm.poll-trust-army": "I dalen bɛ sɔrɔdasiw (FAMa) la wa?",
                                     "action": "check"})
    page = signed_in.post("/dashboard/flows/poll/edit", data=form)
    assert page.status_code == 200
    assert NEW_BM in page.text and "Aucun problème" in page.text
    form.update({"m.bm.ack-answer": "I ni ce, jaabi sɔrɔla. " * 8, "action": "save"})
    page = signed_in.post("/dashboard/flows/poll/edit", data=form)
    assert page.status_code == 422
    assert "key &#39;ack-answer&#39; in bm: end screen of 183 septets, budget 160" in page.text
    assert "version=2" not in page.text


def test_save_confirm_publish_roll_back_and_diff(signed_in: TestClient, dash: TestClient,
                                                 runtime: Runtime) -> None:
    form = editor_form(signed_in, **{"m.bm.poll-trust-army": "I dalen bɛ sɔrɔdasiw (FAMa) la wa?",
                                     "action": "save"})
    saved = signed_in.post("/dashboard/flows/poll/edit", data=form, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"].endswith("?version=2&done=saved")
    confirm = signed_in.get("/dashboard/flows/poll/publish/2")
    assert "Publier la version 2 de poll ?" in confirm.text
    assert "I dalen bɛ sɔrɔdasiw" in confirm.text  # what changes, before deciding
    done = signed_in.post("/dashboard/flows/poll/publish/2",
                          data={"csrf": hidden(confirm.text, "csrf")}, follow_redirects=False)
    assert done.status_code == 303
    caller = Phone(dash, "+22370000301")
    caller.dial()
    assert caller.press("2", "2").text.startswith(NEW_BM)
    diff = signed_in.get("/dashboard/flows/poll/diff?old=1&new=2")
    assert "<del>I da bɛ sɔrɔdasiw (FAMa) la wa?</del>" in diff.text
    back = signed_in.get("/dashboard/flows/poll/publish/1")
    assert "Revenir à la version 1 de poll ?" in back.text
    rolled = signed_in.post("/dashboard/flows/poll/publish/1",
                            data={"csrf": hidden(back.text, "csrf")}, follow_redirects=False)
    assert rolled.status_code == 303, rolled.text
    caller.dial()
    assert caller.press("2", "2").text.startswith(OLD_BM)


def test_a_publication_without_the_csrf_token_is_refused(signed_in: TestClient) -> None:
    assert signed_in.post("/dashboard/flows/poll/publish/1",
                          data={"csrf": "forged"}).status_code == 403


def test_the_phone_in_the_page_walks_the_real_webhook_and_saves_nothing(
        signed_in: TestClient, runtime: Runtime) -> None:
    page = signed_in.get("/dashboard/flows/poll/phone")
    assert page.status_code == 200 and "Langue / Kan / Demngal" in page.text
    for answer in ("2", "2", "4"):
        page = signed_in.post("/dashboard/flows/poll/phone", data={
            "csrf": hidden(page.text, "csrf"), "trial": hidden(page.text, "trial"),
            "text": hidden(page.text, "text"), "version": "", "input": answer})
    assert "I da bè zandaramuw la wa?" in page.text  # the gendarmerie question, after the army's
    while 'name="trial"' in page.text:
        page = signed_in.post("/dashboard/flows/poll/phone", data={
            "csrf": hidden(page.text, "csrf"), "trial": hidden(page.text, "trial"),
            "text": hidden(page.text, "text"), "version": "", "input": "1"})
    assert "I ni ce, jaabi sòròla." in page.text
    with runtime.db.transaction() as conn:
        assert conn.execute(select(func.count()).select_from(queries.poll_answers)).scalar() == 0
    assert "+2230" not in page.text  # the trial's phone number is never on the page


def test_a_reviewer_may_not_see_the_flows(dash: TestClient) -> None:
    assert sign_in(dash, REVIEWER).status_code == 303
    assert dash.get("/dashboard/flows").status_code == 403
    assert dash.get("/dashboard/flows/poll/phone").status_code == 403


def test_the_live_check_answers_the_problems_and_screens_and_stores_nothing(
        signed_in: TestClient, runtime: Runtime) -> None:
    """What flowcheck.js posts as one types: the editor's form to /check; the answer is the
    fragment it swaps in (problems, phone screens, the count for the aria-live region)."""
    long_bm = "I ni ce, jaabi sɔrɔla. " * 8
    form = editor_form(signed_in, **{"m.bm.ack-answer": long_bm})
    part = signed_in.post("/dashboard/flows/poll/check", data=form)
    assert part.status_code == 200, part.text
    assert part.headers["cache-control"] == "no-store"
    assert "<html" not in part.text  # a fragment, not a page
    assert "key &#39;ack-answer&#39; in bm: end screen of 183 septets, budget 160" in part.text
    assert '<figure class="phone over" lang="bm">' in part.text
    assert "Vérification faite : 1 problème à corriger." in part.text
    assert 'role="alert"' not in part.text  # the count is what the live region reads out

    form["m.bm.ack-answer"] = "I ni ce, jaabi sɔrɔla."
    part = signed_in.post("/dashboard/flows/poll/check", data=form)
    assert "Aucun problème" in part.text and "rien à corriger" in part.text
    assert "phone over" not in part.text

    form["m.fr.poll-trust-army"] = "<b>x</b>"
    part = signed_in.post("/dashboard/flows/poll/check", data=form)
    assert "<b>x</b>" not in part.text and "&lt;b&gt;x&lt;/b&gt;" in part.text

    with runtime.db.transaction() as conn:
        assert [v.version for v in flow_versions.versions_of(conn, flow="poll")] == [1]


def test_the_live_check_needs_the_csrf_token_a_session_and_an_operator(
        signed_in: TestClient, dash: TestClient) -> None:
    form = editor_form(signed_in)
    assert signed_in.post("/dashboard/flows/poll/check",
                          data={**form, "csrf": "forged"}).status_code == 403
    signed_in.cookies.clear()
    gone = signed_in.post("/dashboard/flows/poll/check", data=form, follow_redirects=False)
    assert gone.status_code == 303 and "/dashboard/login" in gone.headers["location"]
    assert sign_in(dash, REVIEWER).status_code == 303
    assert dash.post("/dashboard/flows/poll/check", data=form).status_code == 403
