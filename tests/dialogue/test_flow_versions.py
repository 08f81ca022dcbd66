"""Flow versions at start and over SMS: the content location's files become version 1,
a file changed since becomes a new version at the next start (published, unless an
operator published another version of that flow meanwhile), and an SMS conversation
finishes on the version it began with while a new one gets the published version."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.operators.access import Role
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.store import flow_versions as store
from tests.conftest import REPO
from tests.handset import Handset
from tests.operators.people import make

OLD_FR = "Faites-vous confiance à l'armée (FAMa)?"
NEW_FR = "Avez-vous confiance en l'armée (FAMa)?"


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """A copy of the shipped content, to change between starts."""
    root = tmp_path / "content"
    shutil.copytree(REPO / "flows", root / "flows")
    shutil.copytree(REPO / "messages", root / "messages")
    return root


def started(settings: Settings, content: Path) -> Runtime:
    return build_runtime(settings.model_copy(update={"content_dir": content}))


def published(rt: Runtime) -> dict[str, tuple[int, str]]:
    with rt.db.transaction() as conn:
        live = store.current_publications(conn)
        return {flow: (p.version, store.get_version(conn, flow=flow, version=p.version)
                       .source)  # type: ignore[union-attr]
                for flow, p in live.items()}


def reword(content: Path) -> None:
    catalog = content / "messages" / "fr" / "poll.yml"
    catalog.write_text(catalog.read_text(encoding="utf-8").replace(OLD_FR, NEW_FR),
                       encoding="utf-8")


def test_files_become_version_1_and_a_changed_file_a_new_published_version(
        settings: Settings, content: Path) -> None:
    rt = started(settings, content)
    assert set(published(rt).values()) == {(1, "files")}
    rt.db.dispose()
    rt = started(settings, content)  # nothing changed: nothing new
    assert published(rt)["poll"] == (1, "files")
    rt.db.dispose()
    reword(content)
    rt = started(settings, content)
    try:
        assert published(rt)["poll"] == (2, "files")
        assert published(rt)["main"] == (1, "files")
        assert NEW_FR in rt.engine.say("fr", "poll-trust-army")
    finally:
        rt.db.dispose()


def test_a_changed_file_does_not_replace_what_an_operator_published(
        settings: Settings, content: Path) -> None:
    rt = started(settings, content)
    operator = make(rt, "moussa", Role.operator, "mopti")
    with TestClient(create_app(rt.settings, runtime=rt)) as client:
        poll = client.get("/api/v1/flows/poll", headers=operator.auth).json()
        poll["messages"]["bm"]["poll-trust-army"] = "I dalen bɛ sɔrɔdasiw (FAMa) la wa?"
        added = client.post("/api/v1/flows/poll/versions", headers=operator.auth, json={
            "definition": poll["definition"], "messages": poll["messages"]})
        assert added.json() == {"version": 2, "warnings": []}
        assert client.post("/api/v1/flows/poll/versions/2/publish",
                           headers=operator.auth).status_code == 200
    rt.db.dispose()
    reword(content)
    rt = started(settings, content)
    try:
        assert published(rt)["poll"] == (2, "api")  # stored as version 3, not published
        with rt.db.transaction() as conn:
            assert [(v.version, v.source) for v in store.versions_of(conn, flow="poll")] == [
                (1, "files"), (2, "api"), (3, "files")]
    finally:
        rt.db.dispose()


def test_an_sms_conversation_finishes_on_the_version_it_began_with(
        client: TestClient, runtime: Runtime, handset: Handset) -> None:
    operator = make(runtime, "moussa", Role.operator, "mopti")
    [warning] = handset.send("SONDAGE")  # over SMS the poll warns first (issue 17)
    assert warning.startswith("Attention: les SMS restent dans le téléphone.")
    [question] = handset.send("1")
    assert question.startswith(OLD_FR)

    poll = client.get("/api/v1/flows/poll", headers=operator.auth).json()
    poll["messages"]["fr"]["poll-trust-army"] = NEW_FR
    poll["messages"]["fr"]["poll-trust-gendarmerie"] = "Avez-vous confiance en la gendarmerie?"
    assert client.post("/api/v1/flows/poll/versions", headers=operator.auth, json={
        "definition": poll["definition"], "messages": poll["messages"]}).status_code == 201
    assert client.post("/api/v1/flows/poll/versions/2/publish",
                       headers=operator.auth).status_code == 200

    [second] = handset.send("4")  # the conversation begun on version 1 goes on with it
    assert second.startswith("Faites-vous confiance à la gendarmerie?")
    other = Handset(client, runtime, "+22370000002")
    other.send("SONDAGE")
    [first] = other.send("1")  # a new conversation: version 2
    assert first.startswith(NEW_FR)


def test_a_replica_restarting_on_older_files_changes_nothing(
        settings: Settings, content: Path, tmp_path: Path) -> None:
    older = tmp_path / "older"
    shutil.copytree(content, older)
    reword(content)
    for root in (older, content, older):  # a rolling deploy: old, new, an old one restarts
        started(settings, root).db.dispose()
    rt = started(settings, content)
    try:
        assert published(rt)["poll"] == (2, "files")
        assert NEW_FR in rt.engine.say("fr", "poll-trust-army")
    finally:
        rt.db.dispose()
