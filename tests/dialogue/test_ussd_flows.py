"""Every default flow, dialled through the real webhook, in French and in Bambara.

Each test is a transcript: dial, press digits, and assert the whole screen and whether
it is CON or END.
"""

from __future__ import annotations

import json
from textwrap import dedent
from typing import Any

from sqlalchemy import select

from gateway.runtime import Runtime
from gateway.store import queries
from tests.phone import CON, END, Phone

LANGUAGE = CON("""
    Langue / Kan / Demngal:
    1. Francais
    2. Bamanankan
    3. Fulfulde
""")
MAIN_FR = dedent("""
    Dannaya, service anonyme
    1. Signaler un fait (FDS)
    2. Sondage: confiance
    3. Messages d'info
    4. A propos
    5. Effacer mes données
    6. Langue / Kan
""").strip()
MAIN_BM = dedent("""
    Dannaya, i tògò tè fò
    1. Ko dò lase (FDS)
    2. Nyininkali: dannaya
    3. Kunnafoni cikanw
    4. Dannaya ko
    5. N ka kunnafoniw jòsi
    6. Kan / Langue
""").strip()
MAIN_FF = dedent("""
    Dannaya, innde maa wiyetaake
    1. Humpito huunde (FDS)
    2. Naamnal: hoolaare
    3. Kabaruuji SMS
    4. Badte Dannaya
    5. Momtu kabaruuji am
    6. Demngal / Langue
""").strip()
CERCLES_FR = dedent("""
    1. Mopti
    2. Youwarou
    3. Djenné
    4. Bandiagara
    5. Koro
    6. Bankass
    7. Autre / je ne sais pas
    0. Retour
""").strip()
CERCLES_BM = dedent("""
    1. Mopti
    2. Youwarou
    3. Djenné
    4. Bandiagara
    5. Koro
    6. Bankass
    7. Wèrè / n t'a dòn
    0. Segin
""").strip()


def reports(runtime: Runtime) -> list[dict[str, object]]:
    with runtime.db.transaction() as conn:
        rows = conn.execute(select(queries.reports)).all()
    return [dict(row._mapping) for row in rows]


def poll_answers(runtime: Runtime) -> dict[str, str]:
    with runtime.db.transaction() as conn:
        rows = conn.execute(select(queries.poll_answers)).all()
    return {row.question: row.answer for row in rows}


def answer_rows(runtime: Runtime, question: str) -> list[Any]:
    t = queries.poll_answers
    with runtime.db.transaction() as conn:
        return list(conn.execute(select(t).where(t.c.question == question)))


def contact(runtime: Runtime, phone: Phone) -> Any:
    pseudonym = runtime.keys.pseudonym(phone.number)
    with runtime.db.transaction() as conn:
        return queries.get_contact(conn, pseudonym=pseudonym)


# --- French ---------------------------------------------------------------------------


def test_first_dial_asks_the_language_then_shows_the_main_menu(phone: Phone) -> None:
    assert phone.dial() == LANGUAGE
    assert phone.press("1") == CON(MAIN_FR + "\n0. Retour")


def test_report_in_french_with_a_message(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1")
    assert phone.press("1") == CON("""
        Qu'avez-vous vécu avec les FDS?
        1. Aide ou protection
        2. Comportement respectueux
        3. Argent exigé
        4. Arrestation abusive
        9. Suite
        0. Retour
    """)
    assert phone.press("9") == CON("""
        1. Violence, mauvais traitement
        2. Menace ou insulte
        3. Vol ou confiscation
        4. Personne disparue
        5. Autre
        0. Retour
    """)
    assert phone.press("3") == CON("""
        Quelle force?
        1. Armée (FAMa)
        2. Gendarmerie
        3. Police
        4. Garde nationale
        5. Autre
        6. Je ne sais pas
        0. Retour
    """)
    assert phone.press("2") == CON("""
        Quand?
        1. Aujourd'hui
        2. Cette semaine
        3. Ce mois-ci
        4. Plus ancien
        0. Retour
    """)
    assert phone.press("2") == CON("Dans quel cercle?\n" + CERCLES_FR)
    assert phone.press("5") == CON("""
        Quelle commune?
        1. Bamba
        2. Barapiréli
        3. Bondo
        4. Diankabou
        5. Dinangourou
        6. Dioungani
        7. Dougouténé I
        8. Dougouténé II
        9. Suite
        0. Retour
    """)
    assert phone.press("9") == CON("""
        1. Kassa
        2. Koporo Pen
        3. Koporokendié Na
        4. Koro
        5. Madougou
        6. Pel Maoudé
        7. Yoro
        8. Youdiou
        9. Suite
        0. Retour
    """)
    assert phone.press("4") == CON("""
        Vous pouvez ajouter un court message. N'écrivez aucun nom.
        1. Écrire un message
        2. Envoyer sans message
        0. Retour
    """)
    assert phone.press("1") == CON("""
        Votre message, 120 signes au plus. Aucun nom, aucun numéro:
        0. Retour
    """)
    assert phone.press("Barrage*route 5000F") == END("Merci, message recu.")

    [report] = reports(runtime)
    assert json.loads(str(report["answers"])) == {
        "category": "theft", "force": "gendarmerie", "when": "this_week",
        "cercle": "koro", "commune": "koro-koro",
    }
    assert report["channel"] == "ussd" and report["flow"] == "report"
    assert "Barrage" not in str(report["text"])  # sealed with the contact's data key
    row = contact(runtime, phone)
    assert row is not None
    typed = runtime.keys.decrypt_for(
        row.data_key, str(report["text"]), pseudonym=str(report["pseudonym"]),
        aad=str(report["source"]),
    )
    assert json.loads(typed) == {"text": "Barrage*route 5000F"}


def test_report_without_a_message_and_unknown_place(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1", "1", "1", "6", "1")
    assert phone.press("7") == CON("""
        Vous pouvez ajouter un court message. N'écrivez aucun nom.
        1. Écrire un message
        2. Envoyer sans message
        0. Retour
    """)
    assert phone.press("2") == END("Merci, message recu.")
    [report] = reports(runtime)
    assert json.loads(str(report["answers"])) == {
        "category": "help", "force": "unknown", "when": "today", "cercle": "other",
    }
    assert report["text"] is None


def test_trust_poll_in_french(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1")
    assert phone.press("2") == CON("""
        Faites-vous confiance à l'armée (FAMa)?
        1. Pas du tout
        2. Juste un peu
        3. Partiellement
        4. Beaucoup
        5. Je ne sais pas
        6. Préfère ne pas répondre
        0. Retour
    """)
    assert phone.press("4").text.startswith("Faites-vous confiance à la gendarmerie?\n")
    assert phone.press("3").text.startswith("Faites-vous confiance à la police?\n")
    assert phone.press("2") == CON("""
        Faites-vous confiance à la garde nationale?
        1. Pas du tout
        2. Juste un peu
        3. Partiellement
        4. Beaucoup
        5. Je ne sais pas
        6. Préfère ne pas répondre
        0. Retour
    """)
    assert phone.press("6") == CON("""
        Question facultative. Vous etes:
        1. Une femme
        2. Un homme
        3. Préfère ne pas répondre
        0. Retour
    """)
    assert phone.press("1") == CON("""
        Quel age avez-vous?
        1. 15 à 24 ans
        2. 25 à 34 ans
        3. 35 à 49 ans
        4. 50 ans ou plus
        5. Préfère ne pas répondre
        0. Retour
    """)
    assert phone.press("2") == CON("""
        Avez-vous du quitter votre foyer à cause de l'insécurité?
        1. Oui
        2. Non
        3. Préfère ne pas répondre
        0. Retour
    """)
    assert phone.press("1") == CON("Dans quel cercle vivez-vous?\n" + CERCLES_FR)
    assert phone.press("1").text.startswith("Quelle commune?\n1. Bassirou\n")
    assert phone.press("5") == END("Merci, réponse recue.")
    assert poll_answers(runtime) == {
        "army": "a_lot", "gendarmerie": "somewhat", "police": "just_a_little",
        "national_guard": "refused", "gender": "woman", "age_band": "25-34",
        "displaced": "yes", "cercle": "mopti", "commune": "mopti-konna",
    }
    [row] = answer_rows(runtime, "army")  # who answered and where, with every answer
    assert (row.area, row.gender, row.age_band, row.displaced, row.campaign) == (
        "mopti-konna", "woman", "25-34", "yes", None)


def test_who_answered_may_be_left_unsaid(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1", "2", "4", "4", "4", "4")
    phone.press("3", "5", "3")  # prefer not to say, three times
    assert phone.press("1").text.startswith("Quelle commune?\n1. Bassirou\n")
    assert phone.press("9") == CON("""
        1. Mopti
        2. Ouro Modi
        3. Ouroubé Doudé
        4. Sasalbé
        5. Sio
        6. Socoura
        7. Soye
        8. Autre / je ne sais pas
        0. Retour
    """)
    assert phone.press("8") == END("Merci, réponse recue.")
    assert poll_answers(runtime) == {
        "army": "a_lot", "gendarmerie": "a_lot", "police": "a_lot", "national_guard": "a_lot",
        "gender": "refused", "age_band": "refused", "displaced": "refused",
        "cercle": "mopti", "commune": "other",
    }
    [row] = answer_rows(runtime, "army")  # the commune unknown: the cercle is the area
    assert (row.area, row.gender, row.age_band, row.displaced) == (
        "mopti", "refused", "refused", "refused")


def test_a_new_poll_answer_replaces_the_old_one(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1", "2", "1", "1", "1", "1", "1", "1", "1")
    assert phone.press("7") == END("Merci, réponse recue.")
    phone.dial()
    phone.press("2", "4", "4", "4", "4", "2", "4", "2")
    assert phone.press("7") == END("Merci, réponse recue.")
    assert poll_answers(runtime) == {
        "army": "a_lot", "gendarmerie": "a_lot", "police": "a_lot",
        "national_guard": "a_lot", "gender": "man", "age_band": "50+", "displaced": "no",
        "cercle": "other",
    }
    [row] = answer_rows(runtime, "army")
    assert (row.area, row.gender, row.age_band, row.displaced) == (None, "man", "50+", "no")


def test_subscribe_for_an_area_then_unsubscribe(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1")
    assert phone.press("3") == CON("""
        Messages d'information par SMS:
        1. Les recevoir
        2. Ne plus les recevoir
        0. Retour
    """)
    assert phone.press("1") == CON("Pour des messages de votre zone, quel cercle?\n" + CERCLES_FR)
    phone.press("2")
    assert phone.press("6") == END("C'est noté. Pour arreter, envoyez STOP par SMS.")
    row = contact(runtime, phone)
    assert row is not None and row.subscribed and row.area == "youwarou-farimake"

    phone.dial()
    phone.press("3")
    assert phone.press("2") == END("C'est noté, vous ne recevrez plus de messages.")
    row = contact(runtime, phone)
    assert row is not None and not row.subscribed and row.area is None


def test_information_screens(phone: Phone) -> None:
    phone.dial()
    phone.press("1")
    assert phone.press("4") == CON("""
        A propos de Dannaya
        1. Qu'est-ce que Dannaya?
        2. Confidentialité
        3. Arreter, effacer
        0. Retour
    """)
    assert phone.press("1") == END(
        "Dannaya recueille l'avis des habitants sur la sécurité. C'est anonyme: votre "
        "numéro n'est jamais montré ni partagé."
    )


def test_erase_needs_confirmation(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("1", "2", "1", "1", "1", "1", "1", "1", "1", "7")  # a poll answer to erase
    phone.dial()
    assert phone.press("5") == CON("""
        Effacer toutes vos données (réponses, abonnement, langue)?
        1. Oui, effacer
        2. Non
        0. Retour
    """)
    assert phone.press("2") == END("Rien n'a été effacé.")
    assert poll_answers(runtime) != {}

    phone.dial()
    phone.press("5")
    assert phone.press("1") == END("C'est fait, vos données sont effacées.")
    assert poll_answers(runtime) == {}
    assert contact(runtime, phone) is None
    assert phone.dial() == LANGUAGE  # even the language is forgotten


# --- Bambara --------------------------------------------------------------------------


def test_report_in_bambara(phone: Phone, runtime: Runtime) -> None:
    assert phone.dial() == LANGUAGE
    assert phone.press("2") == CON(MAIN_BM + "\n0. Segin")
    assert phone.press("1") == CON("""
        Mun kèra i ni FDS cè?
        1. Dèmè walima lakana
        2. Bonya
        3. Wari nyininen
        4. Minèni tilenbaliya la
        5. Gosili, tòòrò
        6. Jiji walima neni
        9. Nata
        0. Segin
    """)
    assert phone.press("3") == CON("""
        Kèlèbolo jumèn?
        1. Sòròdasiw (FAMa)
        2. Zandaramuw
        3. Polisiw
        4. Garadiw
        5. Wèrè
        6. N t'a dòn
        0. Segin
    """)
    assert phone.press("3") == CON("""
        Tuma jumèn?
        1. Bi
        2. Nin dògòkun in na
        3. Nin kalo in na
        4. A mèèna
        0. Segin
    """)
    assert phone.press("1") == CON("Sèrikili jumèn?\n" + CERCLES_BM)
    assert phone.press("1") == CON("""
        Komini jumèn?
        1. Bassirou
        2. Borondougou
        3. Dialloubé
        4. Fatoma
        5. Konna
        6. Korombana
        7. Koubaye
        8. Kounari
        9. Nata
        0. Segin
    """)
    assert phone.press("5") == CON("""
        I bè se ka cikan surun sèbèn. Mògò si tògò kana sèbèn.
        1. Cikan sèbèn
        2. A ci, cikan tè
        0. Segin
    """)
    assert phone.press("1") == CON("""
        I ka cikan, sèbènni 120 dòròn. Tògò ni nimòrò kana sèbèn:
        0. Segin
    """)
    assert phone.press("Barazi la") == END("I ni ce, cikan sòròla.")
    [report] = reports(runtime)
    assert json.loads(str(report["answers"])) == {
        "category": "extortion", "force": "police", "when": "today",
        "cercle": "mopti", "commune": "mopti-konna",
    }


def test_trust_poll_in_bambara(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("2")
    assert phone.press("2") == CON("""
        I da bè sòròdasiw (FAMa) la wa?
        1. Abada
        2. Dòònin
        3. A dò la
        4. Kosèbè
        5. N t'a dòn
        6. N t'a fè ka jaabi
        0. Segin
    """)
    assert phone.press("1").text.startswith("I da bè zandaramuw la wa?\n")
    assert phone.press("5").text.startswith("I da bè polisiw la wa?\n")
    assert phone.press("2").text.startswith("I da bè garadiw la wa?\n")
    assert phone.press("3") == CON("""
        Jaabi tè wajibi ye. I ye muso ye wa, cè ye wa?
        1. Muso
        2. Cè
        3. N t'a fè ka jaabi
        0. Segin
    """)
    assert phone.press("2") == CON("""
        I si ye san joli ye?
        1. San 15 ka se 24 ma
        2. San 25 ka se 34 ma
        3. San 35 ka se 49 ma
        4. San 50 walima ka tèmè
        5. N t'a fè ka jaabi
        0. Segin
    """)
    assert phone.press("1") == CON("""
        I bòra i ka so la basigibaliya kosòn wa?
        1. Owò
        2. Ayi
        3. N t'a fè ka jaabi
        0. Segin
    """)
    assert phone.press("2") == CON("I sigilen bè sèrikili jumèn na?\n" + CERCLES_BM)
    assert phone.press("7") == END("I ni ce, jaabi sòròla.")
    assert poll_answers(runtime) == {
        "army": "not_at_all", "gendarmerie": "dont_know", "police": "just_a_little",
        "national_guard": "somewhat", "gender": "man", "age_band": "15-24",
        "displaced": "no", "cercle": "other",
    }


def test_subscribe_info_and_erase_in_bambara(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("2")
    assert phone.press("3") == CON("""
        Kunnafoni cikanw SMS fè:
        1. Ka u sòrò
        2. Ka u dabila
        0. Segin
    """)
    assert phone.press("1") == CON("I ka mara cikanw kama, sèrikili jumèn?\n" + CERCLES_BM)
    assert phone.press("7") == END("A sèbènna. Ka u dabila, STOP walima DABILA ci SMS fè.")

    assert phone.dial() == CON(MAIN_BM)  # the language is remembered
    assert phone.press("4") == CON("""
        Dannaya ko
        1. Dannaya ye mun ye?
        2. Gundo
        3. Dabili, jòsili
        0. Segin
    """)
    assert phone.press("2") == END(
        "Nin tè cikan si to i ka telefòni kònò. Mògò tògò kana sèbèn abada. "
        "I bè se ka i ka kunnafoniw jòsi waati bèè."
    )

    phone.dial()
    assert phone.press("5") == CON("""
        I ka kunnafoniw bèè jòsi (jaabiw, cikanw, kan)?
        1. Owò, a jòsi
        2. Ayi
        0. Segin
    """)
    assert phone.press("1") == END("A kèra, i ka kunnafoniw jòsira.")
    assert contact(runtime, phone) is None


def test_the_language_can_be_changed_in_any_session(phone: Phone) -> None:
    phone.dial()
    phone.press("2", "4")  # Bambara, then the information menu
    assert phone.press("1").kind == "END"
    assert phone.dial() == CON(MAIN_BM)  # remembered
    assert phone.press("6") == CON("""
        Langue / Kan / Demngal:
        1. Francais
        2. Bamanankan
        3. Fulfulde
        0. Segin
    """)
    assert phone.press("1") == CON(MAIN_FR + "\n0. Retour")
    assert phone.press("4", "1").kind == "END"
    assert phone.dial() == CON(MAIN_FR)


# --- Fulfulde (every screen in its GSM-safe form: ɓ ɗ ƴ ŋ ɲ as b d y ng ny) --------------

CERCLES_FF = CERCLES_BM.replace("Wèrè / n t'a dòn", "Goddum / mi anndaa").replace(
    "0. Segin", "0. Rutto")


def test_trust_poll_in_fulfulde(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    assert phone.press("3") == CON(MAIN_FF + "\n0. Rutto")
    assert phone.press("2") == CON("""
        Ada hoolii sordaasiibe (FAMa)?
        1. Hay sedda
        2. Sedda tan
        3. Feccere
        4. Sanne
        5. Mi anndaa
        6. Mi yidaa jaabaade
        0. Rutto
    """)
    assert phone.press("4").text.startswith("Ada hoolii sanndarmaaji?\n")
    assert phone.press("4").text.startswith("Ada hoolii poliis?\n")
    assert phone.press("6").text.startswith("Ada hoolii garde nasiyonal?\n")
    assert phone.press("1").text.startswith("Naamnal ngal wadaa doole. Ada debbo walla gorko?\n")
    assert phone.press("1").text.startswith("Duubi noy njogidaa?\n")
    assert phone.press("2").text.startswith("Ada ummii galle maa sabu hulbii?\n")
    assert phone.press("2") == CON("Ko e serkil hondum hod-daa?\n" + CERCLES_FF)
    assert phone.press("7") == END("A jaraama, jaabawol hebaama.")
    assert poll_answers(runtime) == {
        "army": "a_lot", "gendarmerie": "a_lot", "police": "refused",
        "national_guard": "not_at_all", "gender": "woman", "age_band": "25-34",
        "displaced": "no", "cercle": "other",
    }
    assert contact(runtime, phone).language == "ff"


def test_report_in_fulfulde_ends_with_a_neutral_acknowledgement(
        phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("3")
    assert phone.press("1") == CON("""
        Ko hondum wadi hakkunde maa e FDS?
        1. Ballal walla kisal
        2. Teddungal
        3. Kaalis dabbaama
        4. Nanngol ngol fotaani
        5. Piyol, torra
        9. Yeeso
        0. Rutto
    """)
    assert phone.press("9") == CON("""
        1. Huli walla kuddi
        2. Wujjo walla yettugol kuuje
        3. Neddo majjudo
        4. Goddum
        0. Rutto
    """)
    assert phone.press("1").text.startswith("Fedde honde?\n1. Sordaasiibe (FAMa)\n")
    assert phone.press("6").text.startswith("Ndey?\n1. Hannde\n")
    phone.press("2", "7")  # this week, cercle: other
    assert phone.press("2") == END("A jaraama, bataake hebaama.")
    [report] = reports(runtime)
    assert json.loads(str(report["answers"])) == {
        "category": "threat", "force": "unknown", "when": "this_week", "cercle": "other"}


def test_subscribe_and_erase_in_fulfulde(phone: Phone, runtime: Runtime) -> None:
    phone.dial()
    phone.press("3")
    assert phone.press("3") == CON("""
        Kabaruuji e SMS:
        1. Hebude di
        2. Tayude di
        0. Rutto
    """)
    phone.press("1")
    assert phone.press("7") == END("Dum winndaama. Ngam tayude, neldu STOP e SMS.")
    assert phone.dial() == CON(MAIN_FF)  # the language is remembered
    assert phone.press("5") == CON("""
        Momtu kabaruuji maa fof (jaabawoli, bataakeeji, demngal)?
        1. Eey, momtu
        2. Alaa
        0. Rutto
    """)
    assert phone.press("1") == END("Gasii, kabaruuji maa momtaama.")
    assert contact(runtime, phone) is None
