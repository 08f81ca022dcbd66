"""USSD through Kannel's get-url, as a resident uses it: the same flows, screens, pages
and resume rules as over Africa's Talking, one input per operation, each screen answered
with its operation and the session parameter echoed. Transcripts, on SQLite and
PostgreSQL; tests/channels/test_kannel_ussd.py runs them through a real Kannel.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Table, func, select

from gateway.app import create_app
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.models import utcnow
from tests.dialogue.test_ussd_flows import LANGUAGE, MAIN_BM, MAIN_FR
from tests.dialogue.test_ussd_webhook import APOLOGY_FR, MOPTI_PAGE_1
from tests.phone import ABORT, CON, END, LAST, WAIT, KannelPhone

PHONE, PHONE2 = "+22370000001", "+22370000002"
OFFER = CON("""
    Vous n'avez pas terminé.
    1. Continuer
    2. Recommencer
""")


def count(runtime: Runtime, table: Table) -> int:
    with runtime.db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def poll_answers(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.db.transaction() as conn:
        rows = conn.execute(select(queries.poll_answers)).all()
    return sorted((row.question, row.answer) for row in rows)


@pytest.fixture
def kphone(client: TestClient) -> KannelPhone:
    return KannelPhone(client, PHONE)


def to_the_communes(phone: KannelPhone) -> None:
    phone.dial()
    phone.press("1", "1", "1", "1", "1")  # French, report, help, army, today
    assert phone.press("1") == MOPTI_PAGE_1  # cercle of Mopti


# --- begin, continue, end --------------------------------------------------------------


def test_a_poll_begins_continues_and_ends_with_the_session_echoed(
        kphone: KannelPhone, runtime: Runtime) -> None:
    assert kphone.dial() == LANGUAGE
    assert kphone.press("1") == CON(MAIN_FR + "\n0. Retour")
    assert kphone.press("2").text.startswith("Faites-vous confiance à l'armée")
    kphone.press("3", "3", "3", "3")  # somewhat, for each of the four forces
    kphone.press("3", "5", "3")  # who answered: prefer not to say
    assert kphone.press("7") == END("Merci, réponse recue.")  # cercle: other
    assert [a.op for a in kphone.answers] == [WAIT] * 10 + [LAST]
    assert {a.coding for a in kphone.answers} == {None}  # every screen in GSM-7
    assert {a.session_info[:1] for a in kphone.answers if a.session_info} == {b"\x0a"}
    assert poll_answers(runtime) == [
        ("age_band", "refused"), ("army", "somewhat"), ("cercle", "other"),
        ("displaced", "refused"), ("gendarmerie", "somewhat"), ("gender", "refused"),
        ("national_guard", "somewhat"), ("police", "somewhat")]


def test_bambara_screens_are_the_same_as_over_africas_talking(kphone: KannelPhone) -> None:
    kphone.dial()
    assert kphone.press("2") == CON(MAIN_BM + "\n0. Segin")
    assert kphone.press("00") == CON(MAIN_BM)  # the main menu digits work the same


def test_a_longer_code_begins_a_session_too(kphone: KannelPhone, runtime: Runtime) -> None:
    assert kphone.dial("*123*5#") == LANGUAGE
    with runtime.db.transaction() as conn:
        [session] = conn.execute(select(queries.sessions)).all()
    assert session.provider == "kannel"
    assert session.session_id == f"0a/{kphone.last_id}"  # the line, then the first hop


# --- repeats ---------------------------------------------------------------------------


def test_a_repeated_deliver_gets_the_same_screen_and_acts_once(
        kphone: KannelPhone, runtime: Runtime) -> None:
    assert kphone.dial() == LANGUAGE
    assert kphone.repeat() == LANGUAGE  # the dial again: one session
    kphone.press("1", "2", "1", "1", "1", "1", "3", "5", "3")  # French, poll, forces, who
    last = kphone.press("7")
    assert last == END("Merci, réponse recue.")
    assert kphone.repeat() == last
    assert count(runtime, queries.sessions) == 1
    assert len(poll_answers(runtime)) == 8
    with runtime.db.transaction() as conn:
        [answer] = conn.execute(select(queries.poll_answers).where(
            queries.poll_answers.c.question == "cercle")).all()
    first_saved = answer.updated_at
    assert kphone.repeat() == last
    with runtime.db.transaction() as conn:
        [answer] = conn.execute(select(queries.poll_answers).where(
            queries.poll_answers.c.question == "cercle")).all()
    assert answer.updated_at == first_saved  # not saved again


def test_the_same_digit_twice_is_two_answers_not_a_repeat(kphone: KannelPhone) -> None:
    kphone.dial()
    kphone.press("1", "2")  # French, the poll: the army question
    gendarmerie = kphone.press("1")
    assert "gendarmerie" in gendarmerie.text
    assert "police" in kphone.press("1").text  # a new Kannel id: a new answer


def test_a_late_copy_of_an_earlier_operation_gets_its_own_screen(
        kphone: KannelPhone) -> None:
    kphone.dial()
    main = kphone.press("1")
    early = dict(kphone.last_params)
    kphone.press("2")
    assert kphone.send(early).screen == main  # smsbox retried an old call
    assert "gendarmerie" in kphone.press("1").text  # the dialogue did not move back


# --- dropped sessions ------------------------------------------------------------------


def test_an_abort_then_a_new_dial_offers_to_resume(
        kphone: KannelPhone, runtime: Runtime) -> None:
    to_the_communes(kphone)
    assert kphone.abort().screen is None  # nothing goes back to a phone that hung up
    assert kphone.dial(session=0x0B) == OFFER
    assert kphone.press("1") == MOPTI_PAGE_1
    with runtime.db.transaction() as conn:
        events = conn.execute(select(queries.events)).all()
    assert [(e.provider, e.status) for e in events] == [("kannel", "incomplete")]


def test_a_new_dial_on_the_same_session_number_after_a_drop(kphone: KannelPhone) -> None:
    to_the_communes(kphone)  # the network lost the session without a word
    assert kphone.dial() == OFFER
    assert kphone.press("2") == CON(MAIN_FR)


def test_an_answer_after_the_operators_timeout_is_never_applied(
        kphone: KannelPhone, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    to_the_communes(kphone)
    later = utcnow() + timedelta(seconds=runtime.settings.kannel_ussd_timeout + 1)
    monkeypatch.setattr(runtime.ussd, "clock", lambda: later)
    assert kphone.press("5") == APOLOGY_FR  # that session is over at the operator
    assert kphone.abort().screen is None  # its end, late, is still noted
    assert count(runtime, queries.events) == 1
    assert kphone.dial() == OFFER  # still within the resume window
    assert kphone.press("1") == MOPTI_PAGE_1


def test_an_answer_with_no_session_gets_the_apology(kphone: KannelPhone,
                                                     runtime: Runtime) -> None:
    assert kphone.press("1") == APOLOGY_FR
    assert count(runtime, queries.sessions) == 0


# --- two phones ------------------------------------------------------------------------


def test_two_phones_on_the_same_session_number_never_see_each_others_screens(
        client: TestClient, runtime: Runtime) -> None:
    one, two = KannelPhone(client, PHONE), KannelPhone(client, PHONE2)
    assert one.dial() == LANGUAGE
    assert two.dial() == LANGUAGE
    assert one.press("1") == CON(MAIN_FR + "\n0. Retour")
    assert two.press("2") == CON(MAIN_BM + "\n0. Segin")
    assert "armée" in one.press("2").text
    assert two.press("2").text.startswith("I da bè sòròdasiw")
    one.press("1", "1", "1", "1")
    one.press("3", "5", "3")  # who answered: prefer not to say
    two.press("4", "4", "4", "4")
    two.press("3", "5", "3")  # who answered: prefer not to say
    assert one.press("7") == END("Merci, réponse recue.")
    assert two.press("7").kind == "END"
    with runtime.db.transaction() as conn:
        rows = conn.execute(select(queries.poll_answers)).all()
    by_phone = {runtime.keys.pseudonym(PHONE): "not_at_all", runtime.keys.pseudonym(PHONE2):
                "a_lot"}
    assert {(r.pseudonym, r.answer) for r in rows if r.question == "army"} == set(
        by_phone.items())


# --- a gateway that sends no session parameter -------------------------------------------


@pytest.fixture
def no_session_client(settings: Settings) -> Iterator[tuple[TestClient, Runtime]]:
    plain = settings.model_copy(update={"kannel_ussd_session_tlv": ""})
    runtime = build_runtime(plain)
    try:
        with TestClient(create_app(plain, runtime=runtime)) as client:
            yield client, runtime
    finally:
        runtime.db.dispose()


def test_without_a_session_parameter_sessions_key_on_the_phone(
        no_session_client: tuple[TestClient, Runtime]) -> None:
    client, runtime = no_session_client
    one = KannelPhone(client, PHONE, session=None)
    two = KannelPhone(client, PHONE2, session=None)
    assert one.dial() == LANGUAGE
    assert two.dial() == LANGUAGE
    assert one.press("1") == CON(MAIN_FR + "\n0. Retour")
    assert two.press("2") == CON(MAIN_BM + "\n0. Segin")
    assert {a.session_info for a in one.answers + two.answers} == {None}
    to_the_communes(one)
    assert one.abort().screen is None
    assert one.dial() == OFFER
    with runtime.db.transaction() as conn:
        ids = [row.session_id for row in conn.execute(select(queries.sessions)).all()]
    assert len(ids) == 4 and all(i.startswith("/") for i in ids)  # no session number


# --- what the phone types ----------------------------------------------------------------


def test_text_typed_in_ucs2_arrives_whole(kphone: KannelPhone, runtime: Runtime) -> None:
    kphone.dial()
    kphone.press("1", "1", "1", "1", "1", "1", "1")  # a report from Mopti, first commune
    kphone.press("1")  # write a message
    assert kphone.press("Sɔrɔdasiw bɛ yen", ucs2=True) == END("Merci, message recu.")
    with runtime.db.transaction() as conn:
        [report] = conn.execute(select(queries.reports)).all()
        contact = queries.get_contact(conn, pseudonym=runtime.keys.pseudonym(PHONE))
    assert contact is not None
    typed = runtime.keys.decrypt_for(contact.data_key, report.text,
                                     pseudonym=report.pseudonym, aad=report.source)
    assert json.loads(typed) == {"text": "Sɔrɔdasiw bɛ yen"}


# --- refusals ----------------------------------------------------------------------------


def test_calls_that_are_not_a_ussd_operation_are_not_answered(
        kphone: KannelPhone, runtime: Runtime) -> None:
    kphone.dial()
    params = kphone.last_params
    for changed in ({"meta": "%3Fsmpp%3F"},  # no smpp-tlv groups declared
                    {"smsc": "FAKE"},  # the SMS bind, not the USSD one
                    {"id": "k-other", "meta": ""}, {"id": ""}, {"from": ""}):
        assert kphone.send({**params, **changed}).screen is None
    assert count(runtime, queries.sessions) == 1  # the first call only


def test_with_a_token_the_get_url_must_carry_it(client: TestClient, runtime: Runtime) -> None:
    guarded_settings = runtime.settings.model_copy(
        update={"webhook_token": SecretStr("s3cret")})
    with TestClient(create_app(guarded_settings, runtime=runtime)) as guarded:
        assert guarded.get("/webhooks/kannel/ussd?from=%2B22370000001&id=x").status_code == 403
        assert count(runtime, queries.sessions) == 0
        assert KannelPhone(guarded, PHONE, token="s3cret").dial() == LANGUAGE


def test_an_abort_on_no_session_changes_nothing(kphone: KannelPhone,
                                                runtime: Runtime) -> None:
    assert kphone.abort(ABORT).screen is None
    assert count(runtime, queries.events) == 0
