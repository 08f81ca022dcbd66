"""The SMS channel, as a resident uses it: text a keyword, answer one question per
message, stop and erase at any time. Each test is a transcript of messages both ways.
"""

from __future__ import annotations

import json
from datetime import timedelta
from textwrap import dedent

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.app import create_app
from gateway.channels.fake import FakeSender
from gateway.outbox import outbox
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.models import utcnow
from gateway.text.encoding import encoding_of
from tests.handset import Handset
from tests.phone import Phone

HELP_FR = "Dannaya: envoyez DANNAYA, SONDAGE, D1, INFO. Pour arreter: STOP."
WARNING_FR = (
    "Attention: les SMS restent dans le téléphone. Le menu *123# ne laisse aucune trace. "
    "Continuer par SMS? 1 Oui, 2 Non"
)
WARNING_BM = (
    "Aw ye a lajè: SMS bè to telefòni kònò. *123# tè foyi to a la. Ka taa a fè SMS fè? "
    "1 Owò, 2 Ayi"
)
WARNING_FF = (
    "Reentu: SMS ina heddoo e telefon. *123# accataa hay huunde. Jokkude e SMS? 1 Eey, 2 Alaa"
)
MENU_FR = """\
Dannaya, service anonyme
1. Raconter un fait
2. Sondage: confiance
3. Messages d'info
4. A propos
5. Effacer mes données
6. Langue / Kan"""
ARMY_FR = """\
Faites-vous confiance à l'armée (FAMa)?
1. Pas du tout
2. Juste un peu
3. Partiellement
4. Beaucoup
5. Je ne sais pas
6. Préfère ne pas répondre"""


def lines(text: str) -> str:
    return dedent(text).strip("\n")


def reports(runtime: Runtime) -> list[dict[str, object]]:
    with runtime.db.transaction() as conn:
        return [dict(r._mapping) for r in conn.execute(select(queries.reports)).all()]


def poll_answers(runtime: Runtime) -> dict[str, str]:
    with runtime.db.transaction() as conn:
        rows = conn.execute(select(queries.poll_answers)).all()
    return {r.question: r.answer for r in rows}


def outbox_rows(runtime: Runtime) -> list[dict[str, object]]:
    with runtime.db.transaction() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(outbox.outbox).order_by(outbox.outbox.c.id)).all()]


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):  # type: ignore[no-untyped-def]
        return self.now


@pytest.fixture
def clock(runtime: Runtime) -> Clock:
    clock = Clock()
    runtime.sms.clock = clock
    return clock


def test_a_report_by_sms_starts_with_the_no_trace_warning(handset: Handset,
                                                          runtime: Runtime) -> None:
    assert handset.send("D1") == [WARNING_FR]
    assert handset.send("1") == [lines("""
        Qu'avez-vous vécu avec les FDS?
        1. Aide ou protection
        2. Comportement respectueux
        3. Argent exigé
        4. Arrestation abusive
        5. Violence, mauvais traitement
        6. Menace ou insulte
        7. Vol ou confiscation
        8. Personne disparue
        9. Suite
    """)]
    assert handset.send("3")[0].startswith("Quelle force?\n1. Armée (FAMa)\n")
    assert handset.send("6")[0].startswith("Quand?\n")
    assert handset.send("3")[0].startswith("Dans quel cercle?\n")
    assert handset.send("7") == [lines("""
        Vous pouvez ajouter un court message. N'écrivez aucun nom.
        1. Écrire un message
        2. Envoyer sans message
        0. Retour
    """)]
    assert handset.send("1") == [
        "Votre message, 120 signes au plus. Aucun nom, aucun numéro:\n0. Retour"
    ]
    assert handset.send("On m'a pris 2000F au barrage") == ["Merci, message recu."]

    [report] = reports(runtime)
    assert report["channel"] == "sms"
    assert json.loads(str(report["answers"])) == {
        "category": "extortion", "force": "unknown", "when": "this_month", "cercle": "other"}
    assert "barrage" not in str(report["text"])
    kinds = [row["kind"] for row in outbox_rows(runtime)]
    assert kinds[-1] == "ack" and set(kinds[:-1]) == {"reply"}


def test_declining_the_warning_starts_nothing(handset: Handset, runtime: Runtime) -> None:
    assert handset.send("d1") == [WARNING_FR]
    assert handset.send("2") == ["C'est noté."]
    assert handset.send("1") == [HELP_FR]  # no conversation: "1" is not a keyword
    assert reports(runtime) == []


def test_a_poll_by_sms_in_bambara_with_any_spelling_of_the_keyword(
        handset: Handset, runtime: Runtime) -> None:
    first = lines("""
        I da bè sòròdasiw (FAMa) la wa?
        1. Abada
        2. Dòònin
        3. A dò la
        4. Kosèbè
        5. N t'a dòn
        6. N t'a fè ka jaabi
    """)
    for spelling in ("Ɲininkali", "nyininkali", "GNININKALI", "ñininkali"):
        assert handset.send(spelling) == [WARNING_BM], spelling  # each starts again
    assert handset.send("Ɔwɔ") == [first]
    assert handset.send("4")[0].startswith("I da bè zandaramuw la wa?\n")
    handset.send("4")
    handset.send("4")
    assert handset.send("4") == [lines("""
        Jaabi tè wajibi ye. I ye muso ye wa, cè ye wa?
        1. Muso
        2. Cè
        3. N t'a fè ka jaabi
        0. Segin
    """)]
    assert handset.send("1") == [lines("""
        I si ye san joli ye?
        1. San 15 ka se 24 ma
        2. San 25 ka se 34 ma
        3. San 35 ka se 49 ma
        4. San 50 walima ka tèmè
        5. N t'a fè ka jaabi
        0. Segin
    """)]
    assert handset.send("3") == [lines("""
        I bòra i ka so la basigibaliya kosòn wa?
        1. Owò
        2. Ayi
        3. N t'a fè ka jaabi
        0. Segin
    """)]
    assert handset.send("1")[0].startswith("I sigilen bè sèrikili jumèn na?\n")
    assert handset.send("7") == ["I ni ce, jaabi sòròla."]
    assert poll_answers(runtime) == {
        "army": "a_lot", "gendarmerie": "a_lot", "police": "a_lot",
        "national_guard": "a_lot", "gender": "woman", "age_band": "35-49",
        "displaced": "yes", "cercle": "other",
    }


def test_a_poll_by_sms_in_fulfulde(handset: Handset, runtime: Runtime) -> None:
    first = lines("""
        Ada hoolii sordaasiibe (FAMa)?
        1. Hay sedda
        2. Sedda tan
        3. Feccere
        4. Sanne
        5. Mi anndaa
        6. Mi yidaa jaabaade
    """)
    for spelling in ("NAAMNAL", "naamnal", "Naamnal "):
        assert handset.send(spelling) == [WARNING_FF], spelling
    assert handset.send("Eey") == [first]
    assert handset.send("3")[0].startswith("Ada hoolii sanndarmaaji?\n")
    handset.send("3")
    handset.send("3")
    assert handset.send("3")[0].startswith("Naamnal ngal wadaa doole. Ada debbo walla gorko?\n")
    handset.send("3")  # who answered: prefer not to say, three times
    handset.send("5")
    assert handset.send("3")[0].startswith("Ko e serkil hondum hod-daa?\n")
    assert handset.send("7") == ["A jaraama, jaabawol hebaama."]
    assert poll_answers(runtime)["army"] == "somewhat"


def test_the_fulfulde_keyword_for_information_messages(handset: Handset) -> None:
    assert handset.send("Kabaaru") == [lines("""
        Kabaruuji e SMS:
        1. Hebude di
        2. Tayude di
    """)]


def test_an_invalid_answer_repeats_the_question_with_the_error(handset: Handset) -> None:
    assert handset.send("SONDAGE") == [WARNING_FR]
    assert handset.send("1") == [ARMY_FR]
    [again] = handset.send("12")
    assert again.startswith("Choix invalide.\nFaites-vous confiance à l'armée (FAMa)?\n")


def test_a_keyword_interrupts_a_question_but_not_typed_text(handset: Handset,
                                                          runtime: Runtime) -> None:
    assert handset.send("sondage") == [WARNING_FR]
    assert handset.send("1") == [ARMY_FR]
    assert handset.send("D1") == [WARNING_FR]  # a keyword restarts, warned again
    handset.send("1")
    for answer in ("1", "1", "1", "7", "1"):
        handset.send(answer)
    assert handset.send("SONDAGE") == ["Merci, message recu."]  # typed text, not a keyword
    [report] = reports(runtime)
    assert report["text"] is not None


def test_unknown_text_gets_the_help_once_an_hour(handset: Handset, clock: Clock) -> None:
    assert handset.send("bonjour") == [HELP_FR]
    assert handset.send("allo?") == []
    clock.now += timedelta(minutes=59)
    assert handset.send("allo?") == []
    clock.now += timedelta(minutes=2)
    assert handset.send("allo?") == [HELP_FR]


def test_an_expired_conversation_is_dropped_silently(handset: Handset, clock: Clock,
                                                     runtime: Runtime) -> None:
    handset.send("SONDAGE")
    clock.now += timedelta(minutes=61)
    assert handset.send("4") == [HELP_FR]  # "4" no longer answers anything
    assert poll_answers(runtime) == {}


def test_stop_is_handled_before_any_flow_and_silences_everything(
        handset: Handset, runtime: Runtime) -> None:
    handset.send("SONDAGE")
    assert handset.send("Arrêt") == [
        "Vous ne recevrez plus de SMS. Pour reprendre, envoyez START."
    ]
    assert handset.send("SONDAGE") == []
    assert handset.send("bonjour") == []
    assert handset.send("start") == [
        "Vous recevrez de nouveau nos SMS. Pour arreter, envoyez STOP."
    ]
    assert handset.send("SONDAGE") == [WARNING_FR]


@pytest.mark.parametrize("word", ["STOP", "stop", "ARRET", "arrêt", "Dabila", "DABILA."])
def test_every_stop_word_stops(word: str, handset: Handset, runtime: Runtime) -> None:
    [answer] = handset.send(word)
    assert "STOP" not in answer or "START" in answer
    contact = queries.get_contact(runtime.db.engine.connect(),
                                pseudonym=runtime.keys.pseudonym(handset.number))
    assert contact is not None and contact.stopped


def test_a_stopped_contact_gets_no_broadcast(handset: Handset, runtime: Runtime) -> None:
    with runtime.db.transaction() as conn:
        outbox.enqueue(conn, keys=runtime.keys, policy=runtime.outbox_policy,
                       pseudonym=runtime.keys.pseudonym(handset.number), e164=handset.number,
                       text="Information", kind="broadcast", dedupe_key="b:1", now=utcnow())
    handset.deliver("STOP")
    assert handset.inbox() == ["Vous ne recevrez plus de SMS. Pour reprendre, envoyez START."]
    statuses = {row["kind"]: row["status"] for row in outbox_rows(runtime)}
    assert statuses == {"broadcast": "cancelled", "control": "sent"}


def test_erase_by_sms_asks_first_then_erases(handset: Handset, runtime: Runtime) -> None:
    handset.send("SONDAGE")
    for answer in ("oui", "1", "1", "1", "1", "3", "5", "3", "7"):
        handset.send(answer)
    assert poll_answers(runtime) != {}
    assert handset.send("supprimer") == [
        "Effacer toutes vos données? Répondez OUI pour confirmer."
    ]
    assert handset.send("non") == ["Rien n'a été effacé."]
    assert poll_answers(runtime) != {}
    handset.send("SUPPRIMER")
    assert handset.send("Oui") == ["C'est fait, vos données sont effacées."]
    assert poll_answers(runtime) == {}
    with runtime.db.transaction() as conn:
        pseudonym = runtime.keys.pseudonym(handset.number)
        assert queries.get_contact(conn, pseudonym=pseudonym) is None
        assert queries.is_tombstoned(conn, pseudonym=pseudonym)
    # What was kept for them is gone too, but the answer to SUPPRIMER itself.
    assert [row["kind"] for row in outbox_rows(runtime)] == ["control"]


def test_a_stopped_contact_can_still_erase(handset: Handset) -> None:
    handset.send("STOP")
    assert handset.send("SUPPRIMER") == [
        "Effacer toutes vos données? Répondez OUI pour confirmer."
    ]
    assert handset.send("OUI") == ["C'est fait, vos données sont effacées."]


def test_a_repeated_message_is_handled_once(handset: Handset, runtime: Runtime) -> None:
    assert handset.deliver("SONDAGE", message_id="ATXid_same") == "accepted"
    assert handset.deliver("SONDAGE", message_id="ATXid_same") == "duplicate"
    assert len(handset.inbox()) == 1
    handset.deliver("1", message_id="ATXid_yes")
    assert handset.deliver("1", message_id="ATXid_yes") == "duplicate"  # not a second answer
    assert handset.inbox() == [ARMY_FR]
    assert handset.send("4")[0].startswith("Faites-vous confiance à la gendarmerie?")
    assert len(outbox_rows(runtime)) == 3


def test_bambara_stop_answers_in_bambara(handset: Handset) -> None:
    assert handset.send("dabila") == ["SMS si tèna ci i ma tugun. Ka segin a ma, START ci."]


def test_an_africastalking_opt_out_stops_everything_silently(
        handset: Handset, client: TestClient, runtime: Runtime) -> None:
    handset.send("SONDAGE")  # a conversation in progress
    with runtime.db.transaction() as conn:
        outbox.enqueue(conn, keys=runtime.keys, policy=runtime.outbox_policy,
                       pseudonym=runtime.keys.pseudonym(handset.number), e164=handset.number,
                       text="Information", kind="broadcast", dedupe_key="b:2", now=utcnow())
    response = client.post("/webhooks/africastalking/optout", data={
        "senderId": "DANNAYA", "phoneNumber": handset.number})
    assert (response.status_code, response.text) == (200, "OK")
    assert handset.inbox() == []  # no reply to an opt-out, and the broadcast is cancelled
    assert {row["kind"]: row["status"] for row in outbox_rows(runtime)}["broadcast"] == \
        "cancelled"
    assert handset.send("1") == []  # the conversation is gone; no help to a stopped contact
    assert handset.send("START") == [
        "Vous recevrez de nouveau nos SMS. Pour arreter, envoyez STOP."]


def test_an_opt_out_without_a_readable_number_is_ignored(client: TestClient) -> None:
    response = client.post("/webhooks/africastalking/optout", data={"phoneNumber": "n/a"})
    assert (response.status_code, response.text) == (200, "ignored: unreadable phoneNumber")


def test_with_transliteration_off_sms_goes_out_as_written_and_ussd_stays_gsm7(
        settings: Settings) -> None:
    unchanged = settings.model_copy(update={"transliterate": False})
    runtime = build_runtime(unchanged)  # the shipped content still fits every screen
    try:
        with TestClient(create_app(unchanged, runtime=runtime)) as client:
            handset = Handset(client, runtime, "+22370000009")
            assert handset.send("ɲininkali")[0].startswith("Aw ye a lajɛ: SMS bɛ to")
            question = handset.send("1")[0]
            assert question.startswith("I da bɛ sɔrɔdasiw (FAMa) la wa?\n")
            sender = runtime.sender
            assert isinstance(sender, FakeSender)
            assert sender.sent[-1].encoding == "UCS-2"
            phone = Phone(client, "+22370000009")
            phone.dial()
            screen = phone.press("2")
            assert screen.text.startswith("Dannaya, i tògò tè fò\n")
            assert encoding_of(screen.text) == "GSM-7"
    finally:
        runtime.db.dispose()


# --- nothing in the inbox names a force before the warning (issue 17, item 4) -----------


def test_the_sms_menu_names_nothing_and_its_report_entry_warns_first(
        handset: Handset, runtime: Runtime) -> None:
    assert handset.send("MENU") == [MENU_FR]
    assert handset.send("1") == [WARNING_FR]
    assert handset.send("1")[0].startswith(
        "Qu'avez-vous vécu avec les FDS?\n1. Aide ou protection\n")
    assert handset.send("0") == [MENU_FR]  # back to the menu
    # This conversation confirmed the warning: the poll's question comes at once.
    assert handset.send("2") == [ARMY_FR + "\n0. Retour"]


def test_the_poll_from_the_sms_menu_warns_first_and_no_starts_nothing(
        handset: Handset, runtime: Runtime) -> None:
    assert handset.send("Dannaya") == [MENU_FR]
    assert handset.send("2") == [WARNING_FR]
    assert handset.send("2") == ["C'est noté."]
    assert handset.send("1") == [HELP_FR]  # the conversation is over
    assert poll_answers(runtime) == {}


def test_the_sms_menu_in_bambara_and_fulfulde_names_nothing(handset: Handset) -> None:
    handset.send("MENU")
    assert handset.send("6") == ["Langue / Kan / Demngal:\n1. Francais\n2. Bamanankan\n"
                                 "3. Fulfulde\n0. Retour"]
    assert handset.send("2") == [lines("""
        Dannaya, i tògò tè fò
        1. Ko dò lakali
        2. Nyininkali: dannaya
        3. Kunnafoni cikanw
        4. Dannaya ko
        5. N ka kunnafoniw jòsi
        6. Kan / Langue
        0. Segin
    """)]
    assert handset.send("1") == [WARNING_BM]
    assert handset.send("MENU")[0].startswith("Dannaya, i tògò tè fò\n1. Ko dò lakali\n")
    handset.send("6")
    assert handset.send("3") == [lines("""
        Dannaya, innde maa wiyetaake
        1. Humpito huunde
        2. Naamnal: hoolaare
        3. Kabaruuji SMS
        4. Badte Dannaya
        5. Momtu kabaruuji am
        6. Demngal / Langue
        0. Rutto
    """)]
    assert handset.send("2") == [WARNING_FF]


def test_help_in_the_middle_of_a_dialogue_is_answered_and_the_question_waits(
        handset: Handset) -> None:
    handset.send("SONDAGE")
    handset.send("1")
    assert handset.send("AIDE") == [HELP_FR]  # not "Choix invalide."
    assert handset.send("4")[0].startswith("Faites-vous confiance à la gendarmerie?\n")


def test_help_at_the_warning_is_answered_and_the_warning_waits(handset: Handset) -> None:
    assert handset.send("D1") == [WARNING_FR]
    assert handset.send("help") == [HELP_FR]
    assert handset.send("1")[0].startswith("Qu'avez-vous vécu avec les FDS?\n")


def test_help_in_bambara_answers_in_bambara(handset: Handset) -> None:
    assert handset.send("dèmè") == ["Dannaya: DANNAYA, NYININKALI, D1, KUNNAFONI ci. "
                                    "Ka dabila: STOP."]


def to_typed_text(handset: Handset) -> None:
    """A report by SMS, up to the question that waits for typed text."""
    assert handset.send("D1") == [WARNING_FR]
    for answer in ("1", "3", "6", "3", "7"):
        handset.send(answer)
    assert handset.send("1") == [
        "Votre message, 120 signes au plus. Aucun nom, aucun numéro:\n0. Retour"]


@pytest.mark.parametrize("word, answer", [
    ("MENU", MENU_FR),
    ("Dannaya", MENU_FR),
    ("INFO", "Messages d'information par SMS:\n1. Les recevoir\n2. Ne plus les recevoir"),
    ("Aide", HELP_FR),
    ("STOP", "Vous ne recevrez plus de SMS. Pour reprendre, envoyez START."),
])
def test_global_words_are_honoured_even_where_typed_text_is_awaited(
        word: str, answer: str, handset: Handset, runtime: Runtime) -> None:
    to_typed_text(handset)
    assert handset.send(word) == [answer]
    assert reports(runtime) == []  # the word was not taken for the report's text


def test_a_keyword_while_erasure_waits_for_its_yes_erases_nothing(
        handset: Handset, runtime: Runtime) -> None:
    handset.send("SONDAGE")
    for answer in ("1", "1", "1", "1", "1", "3", "5", "3", "7"):
        handset.send(answer)
    assert handset.send("SUPPRIMER") == [
        "Effacer toutes vos données? Répondez OUI pour confirmer."]
    assert handset.send("menu") == [MENU_FR]
    assert handset.send("oui") == ["Choix invalide.\n" + MENU_FR]  # not a yes to erasing
    assert poll_answers(runtime) != {}


def test_stop_at_the_warning_stops(handset: Handset, runtime: Runtime) -> None:
    assert handset.send("SONDAGE") == [WARNING_FR]
    assert handset.send("Dabila") == ["SMS si tèna ci i ma tugun. Ka segin a ma, START ci."]
    assert handset.send("1") == []
    assert poll_answers(runtime) == {}
