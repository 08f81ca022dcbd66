"""The USSD webhook's contract beyond the happy paths: navigation, pages, bad input,
resuming a dropped session, repeated hops, refusals, failures, end-of-session events,
and random input that must never break it.
"""

from __future__ import annotations

import random
import string
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from textwrap import dedent

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import Table, func, select

from gateway.app import create_app
from gateway.channels.base import UssdTurn
from gateway.runtime import Runtime
from gateway.store import queries
from gateway.store.models import utcnow
from gateway.text.encoding import encoding_of, screen_length
from tests.dialogue.test_ussd_flows import CERCLES_FR, MAIN_FR
from tests.phone import CON, END, USSD_PATH, Phone, Screen

APOLOGY_FR = END("Service momentanément indisponible. Merci de réessayer plus tard.")
MOPTI_PAGE_1 = CON("""
    Quelle commune?
    1. Bassirou
    2. Borondougou
    3. Dialloubé
    4. Fatoma
    5. Konna
    6. Korombana
    7. Koubaye
    8. Kounari
    9. Suite
    0. Retour
""")
MOPTI_PAGE_2 = dedent("""
    1. Mopti
    2. Ouro Modi
    3. Ouroubé Doudé
    4. Sasalbé
    5. Sio
    6. Socoura
    7. Soye
    8. Autre / je ne sais pas
    0. Retour
""").strip()
CERCLES = CON("Dans quel cercle?\n" + CERCLES_FR)
MAIN = CON(MAIN_FR)


def to_the_communes(phone: Phone) -> Screen:
    phone.dial()
    # French, report, help, army, today, cercle of Mopti
    return phone.press("1", "1", "1", "1", "1", "1")


def count(runtime: Runtime, table: Table) -> int:
    with runtime.db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# --- navigation ----------------------------------------------------------------------


def test_a_long_list_is_paginated_with_next_and_back(phone: Phone) -> None:
    assert to_the_communes(phone) == MOPTI_PAGE_1
    assert phone.press("9") == CON(MOPTI_PAGE_2)
    assert phone.press("0") == MOPTI_PAGE_1  # back: the previous page
    assert phone.press("0") == CERCLES  # back again: the previous step
    assert phone.press("1", "9", "1") == CON("""
        Vous pouvez ajouter un court message. N'écrivez aucun nom.
        1. Écrire un message
        2. Envoyer sans message
        0. Retour
    """)  # the first commune of the second page, Mopti, was taken


def test_00_goes_to_the_main_menu_from_anywhere(phone: Phone) -> None:
    to_the_communes(phone)
    assert phone.press("00") == MAIN


def test_an_invalid_choice_repeats_the_step_with_a_short_error(phone: Phone) -> None:
    to_the_communes(phone)
    assert phone.press("9", "9") == CON("Choix invalide.\n" + MOPTI_PAGE_2)  # no third page
    assert phone.press("abc") == CON("Choix invalide.\n" + MOPTI_PAGE_2)
    assert phone.press("") == CON("Choix invalide.\n" + MOPTI_PAGE_2)


def test_an_invalid_choice_in_bambara(phone: Phone) -> None:
    phone.dial()
    # With the error line the screen would overflow: the title gives way to it.
    assert phone.press("2", "7") == CON("""
        Sugandili man nyi.
        1. Ko dò lase (FDS)
        2. Nyininkali: dannaya
        3. Kunnafoni cikanw
        4. Dannaya ko
        5. N ka kunnafoniw jòsi
        6. Kan / Langue
        0. Segin
    """)


def test_a_deep_dial_answers_several_screens_at_once(phone: Phone) -> None:
    phone.dial()
    phone.press("1")  # the language is now known
    phone.session_id = f"ATUid_{uuid.uuid4().hex}"
    phone.inputs = ["2", "4"]  # *123*2*4#: poll, "a lot" for the army
    assert Screen.parse(phone.post("2*4")) == CON("""
        Faites-vous confiance à la gendarmerie?
        1. Pas du tout
        2. Juste un peu
        3. Partiellement
        4. Beaucoup
        5. Je ne sais pas
        6. Préfère ne pas répondre
        0. Retour
    """)


# --- repeats and resuming -------------------------------------------------------------


def test_a_repeated_hop_gets_the_same_screen_and_saves_once(
        phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1", "1", "1", "1", "1", "7")
    saved = phone.press("2")
    assert saved == END("Merci, message recu.")
    assert phone.repeat() == saved
    assert phone.repeat() == saved
    assert count(runtime, queries.reports) == 1
    before = phone.press("1")  # a hop after the end: the session stays ended
    assert before == saved
    assert count(runtime, queries.reports) == 1


def test_a_repeated_middle_hop_does_not_advance_twice(phone: Phone) -> None:
    phone.dial()
    phone.press("1", "2")  # poll: army
    first = phone.press("1")
    assert phone.repeat() == first  # still the gendarmerie question, not the police one
    assert "gendarmerie" in first.text


def test_copies_of_a_hop_at_the_same_moment_answer_alike_and_act_once(
        phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1", "5")  # French, erase my data: the confirmation
    turn = UssdTurn("africastalking", phone.session_id, phone.number, "*123#", "99999",
                    phone.text + "*1")  # yes, erase
    start = threading.Barrier(8)

    def deliver(_: int) -> str:
        start.wait()
        return runtime.ussd.handle(turn)

    with ThreadPoolExecutor(8) as pool:
        bodies = set(pool.map(deliver, range(8)))
    assert bodies == {"END C'est fait, vos données sont effacées."}
    with runtime.db.transaction() as conn:  # one erasure, one tombstone for the shred
        assert len(conn.execute(select(queries.tombstones)).all()) == 1


def test_a_late_copy_of_an_earlier_hop_gets_its_own_screen_and_changes_nothing(
        phone: Phone) -> None:
    dial = phone.dial()
    main = phone.press("1")
    army = phone.press("2", "1")  # poll: the army question answered, gendarmerie asked
    # Copies of the dial and of the first answer arrive late (a provider retry).
    assert Screen.parse(phone.post("")) == dial
    assert Screen.parse(phone.post("1")) == main
    assert phone.repeat() == army  # the dialogue did not move back
    police = phone.press("1")
    assert "police" in police.text


def test_a_dropped_session_is_offered_again_in_neutral_words(phone: Phone) -> None:
    to_the_communes(phone)  # then the network drops the session
    offer = phone.dial()
    assert offer == CON("""
        Vous n'avez pas terminé.
        1. Continuer
        2. Recommencer
    """)
    assert phone.press("1") == MOPTI_PAGE_1


def test_restarting_instead_shows_the_main_menu(phone: Phone) -> None:
    to_the_communes(phone)
    phone.dial()
    assert phone.press("2") == MAIN


def test_a_finished_session_is_never_offered_again(phone: Phone) -> None:
    phone.dial()
    phone.press("1", "1", "1", "1", "1", "7")
    phone.press("2")
    assert phone.dial() == MAIN


def test_only_the_same_phone_can_resume(phone: Phone, client: TestClient) -> None:
    to_the_communes(phone)
    other = Phone(client, "+22376000002")
    assert other.dial().text.startswith("Langue / Kan")
    # A provider session id replayed from another number is refused, not continued.
    other.session_id = phone.session_id
    assert Screen.parse(other.post("1*1*1*1*1*1*1")) == APOLOGY_FR


def test_resuming_is_only_offered_within_the_window(
        phone: Phone, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    to_the_communes(phone)
    later = utcnow() + timedelta(minutes=6)
    monkeypatch.setattr(runtime.ussd, "clock", lambda: later)
    assert phone.dial() == MAIN


# --- refusals and failures ------------------------------------------------------------


def form(**fields: str) -> dict[str, str]:
    return {"sessionId": f"ATUid_{uuid.uuid4().hex}", "serviceCode": "*123#",
            "phoneNumber": "+22370000001", "networkCode": "99999", "text": "", **fields}


def test_a_body_over_the_cap_gets_413_and_stores_nothing(
        client: TestClient, runtime: Runtime) -> None:
    response = client.post(USSD_PATH, data=form(text="1*" * 8200))
    assert response.status_code == 413
    assert count(runtime, queries.sessions) == 0


def test_a_wrong_or_missing_token_gets_403_and_stores_nothing(
        client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    token_settings = runtime.settings.model_copy(update={"webhook_token": SecretStr("s3cret")})
    app: FastAPI = create_app(token_settings, runtime=runtime)
    with TestClient(app) as guarded:
        assert guarded.post(USSD_PATH, data=form()).status_code == 403
        assert guarded.post(USSD_PATH, params={"token": "guess"}, data=form()).status_code == 403
        # Too large is answered before the token is looked at.
        assert guarded.post(USSD_PATH, data=form(text="1" * 17000)).status_code == 413
        assert count(runtime, queries.sessions) == 0
        ok = guarded.post(USSD_PATH, params={"token": "s3cret"}, data=form())
        assert ok.status_code == 200 and ok.text.startswith("CON ")


@pytest.mark.parametrize("number", ["", "abc", "+1", "0000", "+22370000001CANARY", "٣٣٣"])
def test_an_unreadable_number_gets_a_short_apology(
        client: TestClient, runtime: Runtime, number: str) -> None:
    response = client.post(USSD_PATH, data=form(phoneNumber=number))
    assert (response.status_code, response.text) == (200, "END " + APOLOGY_FR.text)
    assert count(runtime, queries.contacts) == 0


def test_an_internal_error_answers_an_apology_not_a_500(
        phone: Phone, runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    phone.dial()

    def broken(*_args: object) -> None:
        raise RuntimeError("+22370000001 said something")

    monkeypatch.setattr(runtime.ussd.engine, "advance", broken)
    assert phone.press("1") == APOLOGY_FR
    assert "RuntimeError" in caplog.text
    assert "22370000001" not in caplog.text  # the exception's message is not logged


def test_the_end_of_session_notification_is_recorded_once(
        phone: Phone, client: TestClient, runtime: Runtime) -> None:
    phone.dial()
    event = {"sessionId": phone.session_id, "serviceCode": "*123#", "networkCode": "99999",
             "phoneNumber": phone.number, "status": "Incomplete", "hopsCount": "2",
             "durationInMillis": "30000", "input": "1*secret", "lastAppResponse": "CON x",
             "date": "2026-11-24 10:00:00", "cost": "XOF 0.00", "errorMessage": ""}
    for _ in range(2):
        assert client.post(f"{USSD_PATH}/events", data=event).text == "OK"
    with runtime.db.transaction() as conn:
        rows = conn.execute(select(queries.events)).all()
        session = conn.execute(select(queries.sessions)).one()
    assert [(r.session_id, r.status, r.hops, r.duration_ms) for r in rows] == [
        (phone.session_id, "incomplete", 2, 30000)]
    assert (session.end_status, session.end_hops) == ("incomplete", 2)


# --- random input ---------------------------------------------------------------------

TEXTS = st.one_of(
    st.text(alphabet="0123456789*#", max_size=60),
    st.lists(st.text(alphabet="0123456789", max_size=3), max_size=30).map("*".join),
    st.text(max_size=300),
    st.text(alphabet=string.printable + "ɛɔɲŋ😀\u0000\u202e", max_size=16_000),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(texts=st.lists(TEXTS, min_size=1, max_size=6), number=st.sampled_from(
    ["+22370000001", "22376000002", "+223 65 00 00 03", "nonsense"]))
def test_any_text_gets_200_and_a_screen_within_budget(
        client: TestClient, runtime: Runtime, texts: list[str], number: str) -> None:
    session = f"ATUid_{uuid.uuid4().hex}"
    budget = runtime.settings.ussd_budget
    for text in ["", *texts]:
        response = client.post(USSD_PATH, data=form(sessionId=session, phoneNumber=number,
                                                     text=text))
        if len(response.request.content or b"") > runtime.settings.max_body_bytes:
            assert response.status_code == 413
            continue
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        kind, _, screen = response.text.partition(" ")
        assert kind in ("CON", "END")
        assert encoding_of(screen) == "GSM-7"
        assert screen_length(screen) <= budget


def test_random_walks_through_every_menu_stay_well_formed(
        client: TestClient, runtime: Runtime) -> None:
    rng = random.Random(20261203)
    budget = runtime.settings.ussd_budget
    seen: set[str] = set()
    for walk in range(40):
        phone = Phone(client, f"+2237000{walk % 7:04d}")
        screen = phone.dial()
        for _ in range(25):
            assert screen.kind in ("CON", "END")
            assert screen_length(screen.text) <= budget
            assert encoding_of(screen.text) == "GSM-7"
            seen.add(screen.text.splitlines()[0])
            if screen.kind == "END":
                break
            key = rng.choice(["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "00", "x",
                              "Texte libre"])
            screen = phone.press(key)
    assert len(seen) > 25  # the walks did go through many different screens


def test_the_ussd_webhook_only_takes_post(client: TestClient, runtime: Runtime) -> None:
    response = client.get(USSD_PATH, params={"sessionId": "ATUid_1", "text": ""})
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert count(runtime, queries.sessions) == 0
