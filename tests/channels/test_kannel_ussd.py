"""USSD over SMPP through a real Kannel: a fake operator's USSD gateway (an SMPP 3.4
server, tests/kannel.py ``Operator``) <-> Kannel's bearerbox and smsbox with the README's
USSD groups <-> the gateway. Each test is a transcript of what phones on the operator's
network dial and see; every screen is checked for its operation (2 or 17) and for its
``its_session_info`` echoed byte for byte.

The gateway runs in this process (uvicorn on a loopback port), so a test can read its
database; ``gateway serve`` itself is what tests/channels/test_kannel.py runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.dialogue.engine import Engine
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.store import queries
from tests.dialogue.test_ussd_flows import LANGUAGE, MAIN_BM, MAIN_FF, MAIN_FR
from tests.dialogue.test_ussd_webhook import APOLOGY_FR, MOPTI_PAGE_1
from tests.kannel import (
    Binaries,
    Kannel,
    LosingProxy,
    Operator,
    SmppPhone,
    app_serving,
    free_port,
    require_kannel,
)
from tests.phone import CON, END

PHONE, PHONE2, PHONE3 = "+22370000111", "+22370000112", "+22370000113"
NUMBER_FORMS = tuple(form for n in (PHONE, PHONE2, PHONE3) for form in (n[1:], n[4:]))
OFFER = CON("""
    Vous n'avez pas terminé.
    1. Continuer
    2. Recommencer
""")
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
pytestmark = [pytest.mark.kannel, pytest.mark.slow]


@dataclass
class Line:
    """Everything between a phone and the gateway's database."""

    operator: Operator
    kannel: Kannel
    runtime: Runtime
    proxy: LosingProxy | None

    def phone(self, number: str, session: int | None = 0x0A) -> SmppPhone:
        return SmppPhone(self.operator, number, session=session)

    def count(self, table: Any) -> int:
        with self.runtime.db.transaction() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def answers(self, number: str) -> dict[str, str]:
        pseudonym = self.runtime.keys.pseudonym(number)
        with self.runtime.db.transaction() as conn:
            rows = conn.execute(select(queries.poll_answers).where(
                queries.poll_answers.c.pseudonym == pseudonym)).all()
        return {row.question: row.answer for row in rows}


@pytest.fixture
def binaries() -> Binaries:
    return require_kannel()


@contextmanager
def line(binaries: Binaries, settings: Settings, tmp_path: Path,
         caplog: pytest.LogCaptureFixture, *, session_tlv: bool = True,
         lose: Any = None, **values: Any) -> Iterator[Line]:
    """The fake operator, the gateway (``settings`` with ``values``) and Kannel between
    them; with ``lose``, a proxy in front of the gateway loses the answers it picks."""
    if not session_tlv:
        values["kannel_ussd_session_tlv"] = ""
    settings = settings.model_copy(update=values)
    runtime = build_runtime(settings)
    port = free_port()
    with ExitStack() as stack:
        stack.callback(runtime.db.dispose)
        operator = stack.enter_context(Operator().running())
        base = stack.enter_context(app_serving(create_app(settings, runtime=runtime), port))
        proxy = None
        if lose is not None:
            proxy = stack.enter_context(LosingProxy(port, lose).running())
        kannel = Kannel(tmp_path / "kannel", gateway_url=base, binaries=binaries,
                        ussd_port=operator.port, ussd_session_tlv=session_tlv,
                        ussd_url=f"http://127.0.0.1:{proxy.port}" if proxy else None)
        stack.enter_context(kannel.running())
        operator.run(operator.smpp.bound(30), 35)
        yield Line(operator, kannel, runtime, proxy)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [f for f in NUMBER_FORMS if f in logged], "a phone number in the log"


def test_residents_answer_the_poll_in_french_bambara_and_fulfulde(
        binaries: Binaries, settings: Settings, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with line(binaries, settings, tmp_path, caplog) as net:
        fr, bm = net.phone(PHONE), net.phone(PHONE2, session=0x0B)
        ff = net.phone(PHONE3, session=0x0A)
        assert fr.dial() == LANGUAGE
        assert fr.press("1") == CON(MAIN_FR + "\n0. Retour")
        assert fr.press("2").text.startswith("Faites-vous confiance à l'armée (FAMa)?")
        fr.press("1", "2", "3", "4")
        fr.press("3", "5", "3")  # who answered: prefer not to say
        assert fr.press("7") == END("Merci, réponse recue.")

        assert bm.dial() == LANGUAGE
        assert bm.press("2") == CON(MAIN_BM + "\n0. Segin")  # è and ò, in GSM-7
        assert bm.press("2").text.startswith("I da bè sòròdasiw (FAMa) la wa?")
        bm.press("4", "4", "4", "4")
        bm.press("3", "5", "3")  # who answered: prefer not to say
        assert bm.press("7").kind == "END"

        assert ff.dial() == LANGUAGE
        assert ff.press("3") == CON(MAIN_FF + "\n0. Rutto")  # ɓ ɗ as b d
        assert ff.press("2").text.startswith("Ada hoolii sordaasiibe (FAMa)?")
        ff.press("3", "3", "3", "3")
        ff.press("3", "5", "3")  # who answered: prefer not to say
        assert ff.press("7") == END("A jaraama, jaabawol hebaama.")

        for screen in fr.screens + bm.screens + ff.screens:
            assert screen.data_coding == 0  # every screen in GSM-7
        assert [s.op for s in fr.screens] == [2] * 10 + [17]
        assert net.answers(PHONE) == {"army": "not_at_all", "gendarmerie": "just_a_little",
                                      "police": "somewhat", "national_guard": "a_lot",
                                      "gender": "refused", "age_band": "refused",
                                      "displaced": "refused", "cercle": "other"}
        assert net.answers(PHONE2)["army"] == "a_lot"
        assert net.answers(PHONE3)["army"] == "somewhat"


def test_an_abort_then_a_new_dial_is_offered_to_resume(
        binaries: Binaries, settings: Settings, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with line(binaries, settings, tmp_path, caplog) as net:
        phone = net.phone(PHONE)
        phone.dial()
        phone.press("1", "1", "1", "1", "1")
        assert phone.press("1") == MOPTI_PAGE_1
        phone.abort()  # the resident hung up: nothing is sent back
        assert phone.dial(session=0x0B) == OFFER
        assert phone.press("1") == MOPTI_PAGE_1
        assert phone.press("5").text.startswith("Vous pouvez ajouter un court message")
        assert phone.press("2") == END("Merci, message recu.")
        assert net.count(queries.reports) == 1


def test_two_phones_on_one_session_number_never_see_each_others_screens(
        binaries: Binaries, settings: Settings, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with line(binaries, settings, tmp_path, caplog) as net:
        one, two = net.phone(PHONE), net.phone(PHONE2)  # both session number 0x0A
        assert one.dial() == LANGUAGE
        assert two.dial() == LANGUAGE
        assert one.press("1") == CON(MAIN_FR + "\n0. Retour")
        assert two.press("2") == CON(MAIN_BM + "\n0. Segin")
        for key_one, key_two in (("2", "2"), ("1", "4"), ("1", "4")):
            french, bambara = one.press(key_one), two.press(key_two)
            assert "?" in french.text and "wa?" in bambara.text
            assert not set(french.text.splitlines()) & set(bambara.text.splitlines()[:1])
        assert net.answers(PHONE) == {} and net.answers(PHONE2) == {}  # nothing saved yet
        one.press("1", "1", "3", "5", "3")
        two.press("4", "4", "3", "5", "3")
        assert one.press("7").kind == two.press("7").kind == "END"
        assert set(net.answers(PHONE).values()) == {"not_at_all", "refused", "other"}
        assert set(net.answers(PHONE2).values()) == {"a_lot", "refused", "other"}


@SQLITE_ONLY
def test_a_screen_gsm7_cannot_carry_goes_as_ucs2_with_its_session(
        binaries: Binaries, settings: Settings, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with line(binaries, settings, tmp_path, caplog) as net:
        # The shipped content always fits GSM-7 once transliterated (the validator sees
        # to it); here the screens are sent as the catalogs write them.
        ussd = net.runtime.ussd
        shipped = ussd.engine
        ussd.engine = Engine(shipped.content, replace(shipped.rules, transliterate=False))
        phone = net.phone(PHONE)
        assert phone.dial() == CON("Langue / Kan / Demngal:\n1. Français\n2. Bamanankan\n"
                                   "3. Fulfulde")
        assert phone.press("2").text.startswith("Dannaya, i tɔgɔ tɛ fɔ\n1. Ko dɔ lase (FDS)")
        assert [s.data_coding for s in phone.screens] == [8, 8]  # UCS-2, parameters intact
        # Back to GSM-7 screens; the phone's own UCS-2 text arrives whole.
        ussd.engine = shipped
        phone.press("1", "1", "1", "1", "1", "1")
        assert phone.press("1").text.startswith("I ka cikan, sèbènni 120 dòròn.")
        assert phone.press("Sɔrɔdasiw bɛ yen", ucs2=True).kind == "END"
        keys = net.runtime.keys
        with net.runtime.db.transaction() as conn:
            [report] = conn.execute(select(queries.reports)).all()
            contact = queries.get_contact(conn, pseudonym=keys.pseudonym(PHONE))
        assert contact is not None
        assert keys.decrypt_for(contact.data_key, report.text, pseudonym=report.pseudonym,
                                aad=report.source) == '{"text": "Sɔrɔdasiw bɛ yen"}'


@SQLITE_ONLY
def test_an_operator_that_sends_no_session_parameter(
        binaries: Binaries, settings: Settings, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with line(binaries, settings, tmp_path, caplog, session_tlv=False) as net:
        one, two = net.phone(PHONE, session=None), net.phone(PHONE2, session=None)
        assert one.dial() == LANGUAGE
        assert two.dial() == LANGUAGE
        assert one.press("1") == CON(MAIN_FR + "\n0. Retour")
        assert two.press("2") == CON(MAIN_BM + "\n0. Segin")
        assert {s.session for s in one.screens + two.screens} == {None}
        one.press("2", "1", "1", "1", "1", "3", "5", "3")
        assert one.press("7").kind == "END"
        assert len(net.answers(PHONE)) == 8 and net.answers(PHONE2) == {}


@SQLITE_ONLY
def test_a_call_made_again_with_the_same_id_gets_one_screen_and_acts_once(
        binaries: Binaries, settings: Settings, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    lost: set[bytes] = set()

    def lose_once(head: bytes) -> bool:  # the answer to the poll's last answer, once
        if b"text=7&" not in head:
            return False
        key = head.split(b"id=", 1)[1].split(b"&", 1)[0]
        if key in lost:
            return False
        lost.add(key)
        return True

    with line(binaries, settings, tmp_path, caplog, lose=lose_once) as net:
        phone = net.phone(PHONE)
        phone.dial()
        phone.press("1", "2", "1", "1", "1", "1", "3", "5", "3")
        assert phone.press("7") == END("Merci, réponse recue.")  # from smsbox's retry
        assert net.proxy is not None and len(net.proxy.lost) == 1
        time.sleep(1.5)
        assert net.operator.screen(PHONE, 0.5) is None  # one screen, not two
        assert len(net.answers(PHONE)) == 8
        with net.runtime.db.transaction() as conn:
            [session] = conn.execute(select(queries.sessions)).all()
        assert (session.hops, session.status) == (11, "ended")  # the repeat saved nothing


@SQLITE_ONLY
def test_the_operators_timeout(binaries: Binaries, settings: Settings, tmp_path: Path,
                               caplog: pytest.LogCaptureFixture) -> None:
    with line(binaries, settings, tmp_path, caplog, kannel_ussd_timeout=2) as net:
        phone = net.phone(PHONE)
        phone.dial()
        phone.press("1", "1", "1", "1", "1")
        assert phone.press("1") == MOPTI_PAGE_1
        time.sleep(2.5)  # the resident did not answer in time; the operator gave up...
        phone.abort(0x22)  # ... and said so, with its own code: a dropped session
        assert phone.press("5") == APOLOGY_FR  # a late answer is never applied
        assert phone.dial(session=0x0C) == OFFER  # the same phone dials again
        assert phone.press("1") == MOPTI_PAGE_1
