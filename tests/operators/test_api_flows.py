"""``/api/v1/flows``: who may read and publish flows (a table of role x route), every
screen of a flow as a phone shows it, a reworded Bambara question added as a version and
published while residents are mid-way (each finishes on the version it began on), an
over-long Bambara screen refused with its reason, a rollback, each publication audited,
and poll results by wave."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.operators import audit
from gateway.operators.access import Role
from gateway.runtime import Runtime
from gateway.store import queries
from tests.operators.people import Person, cast
from tests.phone import END, Phone

FLOWS = "/api/v1/flows"
OLD_BM = "I da bè sòròdasiw (FAMa) la wa?"
NEW_BM = "I dalen bè sòròdasiw (FAMa) la wa?"
NEW_FR = "Avez-vous confiance en l'armée (FAMa)?"


@pytest.fixture
def people(runtime: Runtime) -> dict[Role, Person]:
    return cast(runtime)


@pytest.fixture
def operator(people: dict[Role, Person]) -> Person:
    return people[Role.operator]


def get(client: TestClient, who: Person, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=who.auth)
    assert response.status_code == 200, response.text
    return response.json()


def reworded(client: TestClient, who: Person, **texts: str) -> dict[str, Any]:
    """The published poll with ``poll-trust-army`` reworded in the languages given."""
    poll = get(client, who, f"{FLOWS}/poll")
    messages = poll["messages"]
    for lang, text in texts.items():
        messages[lang]["poll-trust-army"] = text
    return {"definition": poll["definition"], "messages": messages}


def add(client: TestClient, who: Person, body: dict[str, Any]) -> int:
    response = client.post(f"{FLOWS}/poll/versions", json=body, headers=who.auth)
    assert response.status_code == 201, response.text
    version: int = response.json()["version"]
    return version


def publish(client: TestClient, who: Person, version: int) -> dict[str, Any]:
    response = client.post(f"{FLOWS}/poll/versions/{version}/publish", headers=who.auth)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def to_army_question(client: TestClient, number: str) -> Phone:
    """A Bambara speaker's phone at the poll's first question."""
    phone = Phone(client, number)
    phone.dial()
    phone.press("2", "2")  # Bamanankan, then the poll
    return phone


ROUTES = [("GET", FLOWS), ("GET", f"{FLOWS}/poll"), ("POST", f"{FLOWS}/poll/versions"),
          ("POST", f"{FLOWS}/poll/versions/1/publish"), ("GET", f"{FLOWS}/poll/diff?old=1&new=1")]
MAY = {Role.admin: True, Role.operator: True, Role.reviewer: False, Role.radio: False}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_role_by_route(client: TestClient, people: dict[Role, Person], method: str,
                       path: str) -> None:
    body = reworded(client, people[Role.admin]) if method == "POST" else None
    for role, may in MAY.items():
        response = client.request(method, path, json=body, headers=people[role].auth)
        expected = (201 if path.endswith("/versions") else 200) if may else 403
        assert response.status_code == expected, (role, response.text)
    assert client.request(method, path, json=body).status_code == 401


def test_the_files_are_version_1_of_each_flow_published(client: TestClient,
                                                       operator: Person) -> None:
    found = {f["flow"]: f for f in get(client, operator, FLOWS)}
    assert set(found) == {"erase", "info", "language", "main", "poll", "report", "subscribe"}
    assert all((f["published"], f["latest"], f["versions"]) == (1, 1, 1) for f in found.values())
    assert found["poll"]["poll"] == "trust-fds"
    assert found["poll"]["title"]["fr"] == "Sondage"


def test_every_screen_per_language_with_its_septets_encoding_and_budget(
        client: TestClient, operator: Person) -> None:
    poll = get(client, operator, f"{FLOWS}/poll")
    assert (poll["published"], poll["version"]) == (1, 1)
    assert poll["definition"].startswith("# Trust poll")
    assert poll["messages"]["bm"]["poll-trust-army"] == "I da bɛ sɔrɔdasiw (FAMa) la wa?"
    assert set(poll["messages"]) == {"fr", "bm", "ff"}
    assert poll["problems"] == []
    screens = {(s["step"], s["language"], s["page"]): s for s in poll["screens"]}
    army = screens[("army", "bm", 0)]
    assert army["text"].startswith(OLD_BM + "\n1. Abada")  # as the phone shows it
    assert army["encoding"] == "GSM-7" and army["budget"] == 160
    assert army["septets"] == len(army["text"]) and army["fits"]
    assert {lang for (_, lang, _) in screens} == {"fr", "bm", "ff"}
    assert all(s["fits"] for s in poll["screens"])


def test_a_new_wording_reaches_the_next_caller_while_the_one_mid_way_finishes_on_the_old(
        client: TestClient, operator: Person) -> None:
    before = to_army_question(client, "+22370000101")
    assert before.press("0").text.startswith("Dannaya")  # back to the menu, then the poll
    assert before.press("2").text.startswith(OLD_BM)

    version = add(client, operator, reworded(client, operator, bm="I dalen bɛ sɔrɔdasiw "
                                             "(FAMa) la wa?", fr=NEW_FR))
    assert version == 2
    # Stored, not yet published: a new caller still gets version 1.
    assert to_army_question(client, "+22370000102").repeat().text.startswith(OLD_BM)

    done = publish(client, operator, 2)
    assert (done["flow"], done["version"], done["previous"]) == ("poll", 2, 1)
    after = to_army_question(client, "+22370000103")
    assert after.repeat().text.startswith(NEW_BM)
    # The caller who began before the publication goes on with the wording they began on.
    assert before.press("0", "2").text.startswith(OLD_BM)

    flow = get(client, operator, f"{FLOWS}/poll")
    assert flow["published"] == 2
    assert [(v["version"], v["source"], v["created_by"], v["published"])
            for v in flow["versions"]] == [(1, "files", None, False), (2, "api", "moussa", True)]


def test_an_over_long_bambara_screen_is_refused_with_its_reason_and_nothing_is_stored(
        client: TestClient, operator: Person) -> None:
    body = reworded(client, operator)
    # The poll's last screen (no pages: it ends the session) made far too long.
    body["messages"]["bm"]["ack-answer"] = "I ni ce, jaabi sɔrɔla. " * 8
    response = client.post(f"{FLOWS}/poll/versions", headers=operator.auth, json=body)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert problems == ["flows/poll.yml: step 'done': key 'ack-answer' in bm: end screen "
                        "of 184 septets, budget 160"]
    assert get(client, operator, f"{FLOWS}/poll")["versions"][-1]["version"] == 1


@pytest.mark.parametrize(("change", "expected"), [
    ({"definition": "flow: poll\nstart: [unclosed"}, "flows/poll.yml: cannot read"),
    ({"definition": "flow: poll\nversion: 1\nstart: nowhere\nsteps: {}\n"},
     "start step 'nowhere' does not exist"),
    ({"drop": ("ff", "poll-trust-army")}, "key 'poll-trust-army' missing in ff"),
    ({"definition": "flow: other\nversion: 1\nstart: a\nsteps: {a: {type: end, prompt: apology}}"},
     "flow id 'other' differs from 'poll'"),
])
def test_a_version_the_validator_refuses_is_a_422_naming_each_problem(
        client: TestClient, operator: Person, change: dict[str, Any], expected: str) -> None:
    body = reworded(client, operator)
    if "drop" in change:
        lang, key = change["drop"]
        del body["messages"][lang][key]
    else:
        body["definition"] = change["definition"]
    response = client.post(f"{FLOWS}/poll/versions", json=body, headers=operator.auth)
    assert response.status_code == 422, response.text
    assert any(expected in p for p in response.json()["detail"]), response.json()


def test_an_older_version_published_again_is_a_rollback_and_each_publication_is_audited(
        client: TestClient, runtime: Runtime, operator: Person) -> None:
    publish(client, operator, add(client, operator, reworded(
        client, operator, bm="I dalen bɛ sɔrɔdasiw (FAMa) la wa?")))
    assert to_army_question(client, "+22370000111").repeat().text.startswith(NEW_BM)
    back = publish(client, operator, 1)
    assert (back["version"], back["previous"]) == (1, 2)
    assert to_army_question(client, "+22370000112").repeat().text.startswith(OLD_BM)
    with runtime.db.transaction() as conn:
        entries = sorted((e for e in audit.entries(conn, limit=1000).items
                          if e.action.startswith("flow.")), key=lambda e: e.id)
    assert [(e.actor, e.action, e.object_id) for e in entries] == [
        ("moussa", "flow.version", "poll"), ("moussa", "flow.publish", "poll"),
        ("moussa", "flow.publish", "poll")]
    assert '"previous":2' in entries[-1].details and '"version":1' in entries[-1].details


def test_unknown_flows_and_versions_are_404s(client: TestClient, operator: Person) -> None:
    assert client.get(f"{FLOWS}/nothing", headers=operator.auth).status_code == 404
    assert client.get(f"{FLOWS}/poll", params={"version": 9},
                      headers=operator.auth).status_code == 404
    assert client.post(f"{FLOWS}/poll/versions/9/publish",
                       headers=operator.auth).status_code == 404
    assert client.get(f"{FLOWS}/BAD%20NAME", headers=operator.auth).status_code == 404


def test_the_diff_between_two_versions(client: TestClient, operator: Person) -> None:
    body = reworded(client, operator, bm="I dalen bɛ sɔrɔdasiw (FAMa) la wa?")
    body["definition"] = body["definition"].replace("expires_after_minutes: 60",
                                                    "expires_after_minutes: 30")
    add(client, operator, body)
    found = get(client, operator, f"{FLOWS}/poll/diff", old=1, new=2)
    assert "-expires_after_minutes: 60" in found["definition"]
    assert "+expires_after_minutes: 30" in found["definition"]
    assert found["messages"] == [{"language": "bm", "key": "poll-trust-army",
                                  "old": "I da bɛ sɔrɔdasiw (FAMa) la wa?",
                                  "new": "I dalen bɛ sɔrɔdasiw (FAMa) la wa?"}]


def vote(client: TestClient, number: str, army: str) -> None:
    """A French speaker answers the army question, and the first option after it."""
    phone = Phone(client, number)
    phone.dial()
    screen = phone.press("1", "2", army)
    for _ in range(12):  # the other questions, who answered, the place: the first option
        if screen.kind == "END":
            return
        screen = phone.press("1")
    raise AssertionError("the poll did not end")


def test_a_new_version_of_a_poll_starts_a_wave_and_results_filter_by_wave(
        client: TestClient, operator: Person, people: dict[Role, Person]) -> None:
    vote(client, "+22370000121", "4")
    vote(client, "+22370000122", "4")
    publish(client, operator, add(client, operator, reworded(client, operator, fr=NEW_FR)))
    vote(client, "+22370000123", "1")
    admin = people[Role.admin]
    results = "/api/v1/polls/trust-fds/results"
    everyone = get(client, admin, results, question="army")["total"]["counts"]
    first = get(client, admin, results, question="army", wave=1)["total"]["counts"]
    second = get(client, admin, results, question="army", wave=2)["total"]["counts"]
    assert (everyone["a_lot"], everyone["not_at_all"]) == (2, 1)
    assert (first["a_lot"], first["not_at_all"]) == (2, 0)
    assert (second["a_lot"], second["not_at_all"]) == (0, 1)
    assert client.get(results, params={"question": "army", "wave": 0},
                      headers=admin.auth).status_code == 422


def trial_phone(client: TestClient, who: Person, version: int | None) -> Phone:
    response = client.post(f"{FLOWS}/poll/trials", json={"version": version}, headers=who.auth)
    assert response.status_code == 201, response.text
    phone = Phone(client, "+22370000131")
    phone.dial(response.json()["session_id"])
    return phone


def saved(runtime: Runtime) -> tuple[int, int]:
    """Poll answers and reports stored."""
    with runtime.db.transaction() as conn:
        answers = conn.execute(select(func.count()).select_from(queries.poll_answers)).scalar()
        reports = conn.execute(select(func.count()).select_from(queries.reports)).scalar()
    return int(answers or 0), int(reports or 0)


def test_the_phone_in_the_page_walks_a_draft_and_saves_nothing(
        client: TestClient, runtime: Runtime, operator: Person) -> None:
    draft = add(client, operator, reworded(client, operator,
                                           bm="I dalen bɛ sɔrɔdasiw (FAMa) la wa?"))
    phone = trial_phone(client, operator, draft)  # not published: only the trial shows it
    assert phone.press("2", "2").text.startswith(NEW_BM)
    screen = phone.press("4")
    while screen.kind == "CON":
        screen = phone.press("1")
    assert screen == END("I ni ce, jaabi sòròla.")
    assert to_army_question(client, "+22370000132").repeat().text.startswith(OLD_BM)
    # A report walked on the published flows: acknowledged, never queued for review.
    phone = trial_phone(client, operator, None)
    phone.press("1", "1", "1", "1", "7")  # help, army, today, cercle "other"
    assert phone.press("2").kind == "END"
    assert saved(runtime) == (0, 0)


def test_a_session_id_that_only_looks_like_a_trial_is_an_ordinary_session(
        client: TestClient, runtime: Runtime) -> None:
    phone = Phone(client, "+22370000133")
    phone.dial("trial-poll-0-000000000000-00000000000000000000")
    screen = phone.press("1", "2", "4")
    while screen.kind == "CON":
        screen = phone.press("1")
    assert saved(runtime)[0] > 0


@pytest.mark.parametrize(("answer", "wording"), [("1", OLD_BM), ("2", NEW_BM)])
def test_a_dropped_session_resumed_keeps_its_wording_and_a_restart_gets_the_new(
        client: TestClient, operator: Person, answer: str, wording: str) -> None:
    dropped = to_army_question(client, "+22370000141")  # then the line drops
    publish(client, operator, add(client, operator, reworded(
        client, operator, bm="I dalen bɛ sɔrɔdasiw (FAMa) la wa?")))
    again = Phone(client, "+22370000141")
    assert again.dial().text.startswith("I ma a laban.")  # the offer to resume
    screen = again.press(answer)
    if answer == "2":  # start again: the main menu, then the poll
        screen = again.press("2")
    assert screen.text.startswith(wording)
    assert dropped.session_id != again.session_id
