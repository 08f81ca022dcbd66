"""Awareness broadcasts on a real database: what the preview says, what is refused, what
goes out, to whom, when, and what the counts show as the fake provider reports deliveries.

Residents subscribe through the real USSD flow where it is cheap (a few phones); volume
is seeded directly with the store's own queries.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from gateway.app import deliver
from gateway.channels.base import DeliveryReport, DeliveryStatus, SendOutcome, SendResult
from gateway.channels.fake import FakeSender
from gateway.dialogue.ussd import data_key
from gateway.operators import broadcasts
from gateway.operators.access import Forbidden, NotFound, OutOfScope, Principal, Role
from gateway.operators.broadcasts import (
    AudienceOutOfScope,
    BroadcastRequest,
    Conflict,
    Invalid,
    Rules,
)
from gateway.outbox import outbox
from gateway.outbox.quiet import QuietHours
from gateway.runtime import Runtime, make_worker
from gateway.store import queries
from gateway.store.models import utcnow
from tests.handset import Handset
from tests.phone import END, Phone

ADMIN = Principal(1, "awa", Role.admin)
MOPTI_KORO = Principal(2, "moussa", Role.operator, frozenset({"mopti", "koro"}))
BANDIAGARA = Principal(3, "fanta", Role.operator, frozenset({"bandiagara"}))
REVIEWER = Principal(4, "issa", Role.reviewer, frozenset({"mopti"}))
HOST = Principal(5, "radio-kaoural", Role.radio)

FR = "Fête de la paix à Konna samedi: venez nombreux, l'entrée est libre."
FR_AIR = "Fete de la paix à Konna samedi: venez nombreux, l'entrée est libre."
BM = "Hɛrɛ ɲɛnajɛ bɛ kɛ Kɔnɔna sibiri, aw ye na caman."
BM_AIR = "Hèrè nyènajè bè kè Kònòna sibiri, aw ye na caman."

_numbers = itertools.count(1)


@pytest.fixture
def rules(runtime: Runtime) -> Rules:
    return Rules.of(runtime.settings, runtime.engine.content)


def request(messages: dict[str, str] | None = None, /, **audience: Any) -> BroadcastRequest:
    body: dict[str, Any] = {"messages": messages if messages is not None else {"fr": FR,
                                                                             "bm": BM}}
    extra = {k: audience.pop(k) for k in ("title", "send_at", "valid_until") if k in audience}
    return BroadcastRequest.model_validate({**body, "audience": audience, **extra})


def seed(rt: Runtime, area: str | None, language: str | None = "fr", count: int = 1, *,
         subscribed: bool = True, stopped: bool = False) -> list[str]:
    """Contacts as the subscription flow leaves them (a number in the vault); their numbers."""
    numbers = [f"+2237{next(_numbers):07d}" for _ in range(count)]
    now = utcnow()
    with rt.db.transaction() as conn:
        for number in numbers:
            pseudonym = rt.keys.pseudonym(number)
            queries.touch_contact(conn, pseudonym=pseudonym,
                                  pseudonym_version=rt.keys.pseudonym_version, now=now)
            queries.update_contact(conn, pseudonym=pseudonym, subscribed=subscribed,
                                   area=area, language=language, stopped=stopped)
            wrapped = data_key(conn, rt.keys, pseudonym=pseudonym)  # as subscribing does
            queries.upsert_vault(conn, pseudonym=pseudonym, now=now, number=rt.keys.seal_number(
                wrapped, number, pseudonym=pseudonym))
    return numbers


def subscribe(phone: Phone, *, language: str = "1", cercle: str = "1",
              commune: str = "5") -> None:
    """A first dial, as a resident does it: language, main menu 3 (information messages),
    1 (receive them), a cercle, a commune (Mopti, Konna by default)."""
    phone.dial()
    phone.press(language, "3", "1", cercle)
    assert phone.press(commune).kind == "END"


def preview(rt: Runtime, rules: Rules, body: BroadcastRequest, who: Principal = MOPTI_KORO,
            now: datetime | None = None) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        return broadcasts.preview(conn, who=who, rules=rules, request=body,
                                  now=now or utcnow()).as_json()


def create(rt: Runtime, rules: Rules, body: BroadcastRequest, key: str = "k1",
           who: Principal = MOPTI_KORO,
           now: datetime | None = None) -> tuple[broadcasts.Broadcast, bool]:
    with rt.db.transaction() as conn:
        return broadcasts.create(conn, who=who, rules=rules, request=body,
                                 idempotency_key=key, now=now or utcnow())


def get(rt: Runtime, broadcast_id: int, who: Principal = MOPTI_KORO) -> broadcasts.Broadcast:
    with rt.db.transaction() as conn:
        return broadcasts.get(conn, who=who, broadcast_id=broadcast_id)


def queue_all(rt: Runtime, rules: Rules, now: datetime | None = None) -> int:
    """Run the background job until it has nothing left to do; messages queued."""
    queued = 0
    for _ in range(1000):
        step = broadcasts.run_due(rt.db, policy=rt.outbox_policy, rules=rules,
                                  now=now or utcnow())
        queued += step.queued
        if not step.more:
            return queued
    raise AssertionError("the job never finished")


def send_due(rt: Runtime, now: datetime | None = None) -> int:
    """Let the outbox worker send what is due (at ``now``, or the real time)."""
    async def run() -> int:
        worker = make_worker(rt, clock=(lambda: now) if now else utcnow)
        total = 0
        for _ in range(200):
            handled, more = await worker.step()
            total += handled
            if not more:
                break
            if not handled:
                await asyncio.sleep(0.01)
        return total

    return asyncio.run(run())


def sent_to(rt: Runtime) -> list[tuple[str, str]]:
    sender = rt.sender
    assert isinstance(sender, FakeSender)
    return [(m.to, m.text) for m in sender.sent]


def outbox_of(rt: Runtime, broadcast_id: int) -> list[Any]:
    with rt.db.transaction() as conn:
        return list(conn.execute(select(outbox.outbox).where(
            outbox.outbox.c.broadcast_id == broadcast_id)).all())


# --- preview -------------------------------------------------------------------------


@pytest.fixture
def residents(runtime: Runtime) -> None:
    """Konna: 3 French, 2 Bambara; Sio: one who never chose a language; Koro: one; and
    those who get nothing: Bandiagara (outside the operator's cercles), stopped,
    unsubscribed, no area."""
    seed(runtime, "mopti-konna", "fr", 3)
    seed(runtime, "mopti-konna", "bm", 2)
    seed(runtime, "mopti-sio", None)
    seed(runtime, "koro", "fr")
    seed(runtime, "bandiagara-borko", "bm")
    seed(runtime, "mopti-konna", "fr", stopped=True)
    seed(runtime, "mopti-konna", "fr", subscribed=False)
    seed(runtime, None, "fr")


@pytest.mark.usefixtures("residents")
@pytest.mark.parametrize(("audience", "fr", "bm"), [
    ({"communes": ["mopti-konna"]}, 3, 2),
    ({"cercles": ["mopti"]}, 4, 2),  # the one with no language reads French
    ({"cercles": ["koro"], "communes": ["mopti-sio"]}, 2, 0),
    ({}, 5, 2),  # the operator's whole scope: Mopti and Koro
    ({"languages": ["bm"]}, 0, 2),
    ({"cercles": ["mopti"], "languages": ["fr"]}, 4, 0),
])
def test_the_preview_counts_recipients_per_language(runtime: Runtime, rules: Rules,
                                                    audience: dict[str, list[str]],
                                                    fr: int, bm: int) -> None:
    found = preview(runtime, rules, request(**audience))
    assert found["recipients"] == fr + bm
    assert {k: v["recipients"] for k, v in found["languages"].items()} == {"fr": fr, "bm": bm}


@pytest.mark.usefixtures("residents")
def test_an_admins_whole_scope_is_every_subscriber(runtime: Runtime, rules: Rules) -> None:
    found = preview(runtime, rules, request(), who=ADMIN)
    # Everyone subscribed and not stopped, Bandiagara and the one with no area included.
    assert {k: v["recipients"] for k, v in found["languages"].items()} == {"fr": 6, "bm": 3}


@pytest.mark.usefixtures("residents")
def test_the_preview_shows_the_text_as_it_goes_over_the_air(runtime: Runtime,
                                                            rules: Rules) -> None:
    found = preview(runtime, replace(rules, price=Decimal(25)),
                    request(communes=["mopti-konna"]))
    assert found["languages"] == {
        "fr": {"recipients": 3, "text": FR_AIR, "encoding": "GSM-7", "segments": 1,
               "length": len(FR_AIR), "as_written": {"encoding": "UCS-2", "segments": 1}},
        "bm": {"recipients": 2, "text": BM_AIR, "encoding": "GSM-7", "segments": 1,
               "length": len(BM_AIR), "as_written": {"encoding": "UCS-2", "segments": 1}},
    }
    assert found["segments"] == 5
    assert found["cost"] == {"currency": "XOF", "per_segment": 25.0, "estimated": 125.0,
                             "as_written": 125.0, "saving": 0.0}


@pytest.mark.usefixtures("residents")
def test_transliteration_saves_segments_and_the_cost_shows_it(runtime: Runtime,
                                                              rules: Rules) -> None:
    long_bm = " ".join([BM] * 3)  # 149 characters: 3 UCS-2 segments, 1 in GSM-7
    body = request({"fr": FR, "bm": long_bm}, communes=["mopti-konna"])
    on = preview(runtime, replace(rules, price=Decimal("20.5")), body)
    assert on["languages"]["bm"]["encoding"] == "GSM-7"
    assert on["languages"]["bm"]["segments"] == 1
    assert on["languages"]["bm"]["as_written"] == {"encoding": "UCS-2", "segments": 3}
    assert (on["segments"], on["segments_as_written"]) == (5, 9)
    assert on["cost"] == {"currency": "XOF", "per_segment": 20.5, "estimated": 102.5,
                          "as_written": 184.5, "saving": 82.0}

    off = preview(runtime, replace(rules, transliterate=False, price=Decimal("20.5")), body)
    assert off["languages"]["bm"]["text"] == long_bm
    assert off["languages"]["bm"]["encoding"] == "UCS-2"
    assert off["languages"]["bm"]["segments"] == 3
    assert off["cost"]["estimated"] == off["cost"]["as_written"] == 184.5


@pytest.mark.usefixtures("residents")
def test_without_a_price_the_cost_is_unknown(runtime: Runtime, rules: Rules) -> None:
    assert preview(runtime, rules, request(communes=["mopti-konna"]))["cost"] is None


def test_the_preview_of_residents_who_subscribed_by_ussd(client: TestClient, runtime: Runtime,
                                                        rules: Rules) -> None:
    subscribe(Phone(client, "+22370000101"))  # French, Konna
    subscribe(Phone(client, "+22370000102"), language="2")  # Bambara, Konna
    subscribe(Phone(client, "+22370000103"), cercle="5", commune="1")  # Koro, first commune
    found = preview(runtime, rules, request(communes=["mopti-konna"]))
    assert {k: v["recipients"] for k, v in found["languages"].items()} == {"fr": 1, "bm": 1}
    assert preview(runtime, rules, request(cercles=["koro"]))["recipients"] == 1


# --- refused -------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "loc"), [
    ({"audience": {"communes": ["mopti-nulle-part"]}}, ["audience", "communes", 0]),
    ({"audience": {"communes": ["mopti"]}}, ["audience", "communes", 0]),  # a cercle
    ({"audience": {"cercles": ["gao"]}}, ["audience", "cercles", 0]),
    ({"audience": {"languages": ["en"]}}, ["audience", "languages", 0]),
    ({"messages": {"fr": FR, "en": "Hello"}}, ["messages", "en"]),
    ({"messages": {"fr": "   ", "bm": BM}}, ["messages", "fr"]),
    ({"messages": {}}, ["messages"]),
    ({"messages": {"fr": "a" * (153 * 6 + 1), "bm": BM}}, ["messages", "fr"]),
    ({"messages": {"fr": "ɛ" * (67 * 6 + 1), "bm": BM}}, ["messages", "fr"]),  # UCS-2 kept
    ({"send_at": "2020-01-01T09:00:00+00:00"}, ["send_at"]),
    ({"send_at": "2099-01-01T09:00:00+00:00", "valid_until": "2099-01-01T08:00:00+00:00"},
     ["valid_until"]),
    ({"messages": {"fr": FR}}, ["messages", "bm"]),  # Bambara readers and no Bambara text
])
def test_a_request_that_does_not_validate_names_the_field(runtime: Runtime, rules: Rules,
                                                          body: dict[str, Any],
                                                          loc: list[Any]) -> None:
    seed(runtime, "mopti-konna", "bm")
    full = BroadcastRequest.model_validate({"messages": {"fr": FR, "bm": BM}, **body})
    if "ɛ" in str(body):
        rules = replace(rules, transliterate=False)
    for call in (preview, create):
        with pytest.raises(Invalid) as raised:
            call(runtime, rules, full)
        assert [p["loc"] for p in raised.value.detail()] == [["body", *loc]]


def test_a_time_without_an_offset_does_not_validate() -> None:
    with pytest.raises(ValueError, match="timezone"):
        BroadcastRequest.model_validate({"messages": {"fr": FR},
                                         "send_at": "2099-01-01T09:00:00"})


@pytest.mark.parametrize(("who", "audience", "error"), [
    (MOPTI_KORO, {"communes": ["bandiagara-borko"]}, AudienceOutOfScope),
    (MOPTI_KORO, {"cercles": ["mopti", "djenne"]}, AudienceOutOfScope),
    (BANDIAGARA, {"cercles": ["koro"]}, AudienceOutOfScope),
    (REVIEWER, {"communes": ["mopti-konna"]}, Forbidden),
    (HOST, {}, Forbidden),
])
def test_an_audience_outside_the_callers_scope_is_refused(
        runtime: Runtime, rules: Rules, who: Principal, audience: dict[str, list[str]],
        error: type[Exception]) -> None:
    seed(runtime, "bandiagara-borko", "fr")
    assert issubclass(error, Forbidden)  # 403, not 404: the caller named it
    for call in (preview, create):
        with pytest.raises(error):
            call(runtime, rules, request(**audience), who=who)


# --- creating, idempotency, scope ----------------------------------------------------


def test_the_same_key_twice_is_one_broadcast_queued_once(runtime: Runtime,
                                                        rules: Rules) -> None:
    numbers = seed(runtime, "mopti-konna", "fr", 3)
    first, created = create(runtime, rules, request(communes=["mopti-konna"]))
    assert created and first.status == "scheduled" and first.expected == 3
    queue_all(runtime, rules)
    again, created = create(runtime, rules, request(communes=["mopti-konna"]))
    assert not created and again.id == first.id
    queue_all(runtime, rules)
    send_due(runtime)
    assert sorted(to for to, _ in sent_to(runtime)) == sorted(numbers)
    assert get(runtime, first.id).counts.recipients == 3


def test_the_same_key_with_another_body_is_a_conflict(runtime: Runtime, rules: Rules) -> None:
    seed(runtime, "mopti-konna", "fr")
    create(runtime, rules, request(communes=["mopti-konna"]))
    with pytest.raises(Conflict):
        create(runtime, rules, request(communes=["mopti-konna"], title="autre"))
    # The key is the account's own: another account may use it.
    _, created = create(runtime, rules, request(communes=["mopti-konna"]), who=ADMIN)
    assert created


def test_a_broadcast_keeps_what_was_asked_and_what_goes_out(runtime: Runtime,
                                                           rules: Rules) -> None:
    seed(runtime, "mopti-konna", "bm")
    now = utcnow()
    made, _ = create(runtime, rules, request(communes=["mopti-konna"], title="Fête"), now=now)
    assert made.messages == {"fr": FR, "bm": BM}
    assert made.texts == {"fr": FR_AIR, "bm": BM_AIR}
    assert made.audience == {"cercles": [], "communes": ["mopti-konna"], "languages": []}
    assert made.cercles == ("mopti",)
    assert made.send_at == now and made.valid_until == now + timedelta(hours=24)
    assert made.as_json()["counts"] == dict.fromkeys(broadcasts.COUNTS, 0)


def test_another_cercles_broadcast_is_not_found(runtime: Runtime, rules: Rules) -> None:
    seed(runtime, "bandiagara-borko", "fr")
    seed(runtime, "mopti-konna", "fr")
    theirs, _ = create(runtime, rules, request(cercles=["bandiagara"]), who=BANDIAGARA)
    ours, _ = create(runtime, rules, request(cercles=["mopti"]))
    everyone, _ = create(runtime, rules, request(), who=ADMIN)
    with pytest.raises(OutOfScope):
        get(runtime, theirs.id)
    with pytest.raises(OutOfScope):
        get(runtime, everyone.id)  # it reaches cercles beyond Mopti and Koro
    with pytest.raises(NotFound):
        get(runtime, 9999)
    with runtime.db.transaction() as conn:
        mine, _ = broadcasts.list_page(conn, who=MOPTI_KORO)
        all_, _ = broadcasts.list_page(conn, who=ADMIN)
        with pytest.raises(OutOfScope):
            broadcasts.cancel(conn, who=MOPTI_KORO, broadcast_id=theirs.id, now=utcnow())
    assert [b.id for b in mine] == [ours.id]
    assert [b.id for b in all_] == [everyone.id, ours.id, theirs.id]


def test_the_list_pages_through_what_the_caller_may_see(runtime: Runtime,
                                                        rules: Rules) -> None:
    seed(runtime, "mopti-konna", "fr")
    seed(runtime, "bandiagara-borko", "fr")
    ours = [create(runtime, rules, request(cercles=["mopti"]), key=f"m{i}")[0].id
            for i in range(5)]
    for i in range(7):
        create(runtime, rules, request(cercles=["bandiagara"]), key=f"b{i}", who=BANDIAGARA)
    seen: list[int] = []
    cursor = None
    with runtime.db.transaction() as conn:
        while True:
            page, cursor = broadcasts.list_page(conn, who=MOPTI_KORO, before=cursor, limit=2)
            seen += [b.id for b in page]
            if cursor is None:
                break
    assert seen == sorted(ours, reverse=True)


# --- sending -------------------------------------------------------------------------


def test_a_broadcast_goes_out_in_each_residents_language(client: TestClient, runtime: Runtime,
                                                        rules: Rules) -> None:
    subscribe(Phone(client, "+22370000201"))
    subscribe(Phone(client, "+22370000202"), language="2")
    subscribe(Phone(client, "+22370000203"), cercle="4", commune="1")  # Bandiagara
    made, _ = create(runtime, rules, request(communes=["mopti-konna"]))
    assert queue_all(runtime, rules) == 2
    assert get(runtime, made.id).status == "sending"
    send_due(runtime)
    assert sorted(sent_to(runtime)) == [("+22370000201", FR_AIR), ("+22370000202", BM_AIR)]
    queue_all(runtime, rules)
    assert get(runtime, made.id).status == "done"


def test_the_job_queues_in_chunks_and_a_repeated_chunk_queues_nothing_twice(
        runtime: Runtime, rules: Rules) -> None:
    seed(runtime, "mopti-konna", "fr", 25)
    seed(runtime, "mopti-konna", "fr", 5, stopped=True)  # interleaved ids, never queued
    seed(runtime, "mopti-konna", "bm", 5)
    small = replace(rules, chunk=10)
    made, _ = create(runtime, small, request(communes=["mopti-konna"]))
    now = utcnow()
    first = broadcasts.run_due(runtime.db, policy=runtime.outbox_policy,
                               rules=small, now=now)
    assert (first.queued, first.more) == (10, True)
    assert get(runtime, made.id).expanded == 10
    # A crash lost the cursor after the first chunks were queued: they are read again.
    queue_all(runtime, small)
    with runtime.db.transaction() as conn:
        conn.execute(update(broadcasts.broadcasts).where(broadcasts.broadcasts.c.id == made.id)
                     .values(cursor=0, expanded=0, expanded_at=None, status="sending"))
    queue_all(runtime, small)
    rows = outbox_of(runtime, made.id)
    assert len(rows) == len({r.pseudonym for r in rows}) == 30
    assert {r.kind for r in rows} == {"broadcast"}
    assert {r.priority for r in rows} == {outbox.PRIORITY["broadcast"]}
    assert get(runtime, made.id).counts.recipients == 30


def test_a_chunk_holds_its_contacts_until_it_commits(runtime: Runtime, rules: Rules) -> None:
    """PostgreSQL: the contacts a chunk took stay locked until its messages are committed,
    so a stop, an unsubscription or an erasure of one of them waits, then finds the message
    queued and cancels it; a contact the chunk did not reach is not held."""
    if runtime.db.sqlite:
        pytest.skip("SQLite has one writer at a time: a stop cannot run during a chunk")
    seed(runtime, "mopti-konna", "fr", 4)
    made, _ = create(runtime, rules, request(communes=["mopti-konna"]))
    c = queries.contacts.c
    with runtime.db.transaction() as conn:
        row = conn.execute(select(broadcasts.broadcasts).where(
            broadcasts.broadcasts.c.id == made.id)).one()
        chunk = broadcasts._chunk_statements(conn, policy=runtime.outbox_policy, rules=rules,
                                             row=row)
        ids = list(conn.execute(select(c.id).where(c.area == "mopti-konna").order_by(c.id))
                   .scalars())
    with runtime.db.engine.connect() as chunking, chunking.begin():
        taken = chunk.run(chunking, now=utcnow(), valid_until=row.valid_until, cursor_=0,
                          n_=3)
        assert taken == outbox.Taken(contacts=3, last=ids[2], queued=3)
        with runtime.db.engine.connect() as stopping:
            for contact_id, held in ((ids[0], True), (ids[3], False)):
                with stopping.begin():
                    stopping.exec_driver_sql("SET LOCAL lock_timeout = '300ms'")
                    stop = update(queries.contacts).where(c.id == contact_id).values(stopped=True)
                    if held:
                        with pytest.raises(OperationalError, match="lock timeout"):
                            stopping.execute(stop)
                    else:
                        stopping.execute(stop)


def test_the_worker_runs_the_job_and_sends(runtime: Runtime, rules: Rules) -> None:
    numbers = seed(runtime, "koro", "fr", 3)
    made, _ = create(runtime, rules, request(cercles=["koro"]))

    async def run() -> None:
        stop = asyncio.Event()
        worker = make_worker(runtime)
        task = asyncio.create_task(worker.run(stop))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if len(sent_to(runtime)) == 3 and (await asyncio.to_thread(
                    get, runtime, made.id)).status == "done":
                break
        stop.set()
        await task

    asyncio.run(run())
    assert sorted(to for to, _ in sent_to(runtime)) == sorted(numbers)
    assert get(runtime, made.id).status == "done"


def test_a_scheduled_broadcast_waits_for_its_time(runtime: Runtime, rules: Rules) -> None:
    seed(runtime, "koro", "fr")
    now = utcnow()
    made, _ = create(runtime, rules, request(cercles=["koro"], send_at=now + timedelta(hours=2)),
                     now=now)
    assert made.valid_until == made.send_at + timedelta(hours=24)
    assert queue_all(runtime, rules, now=now + timedelta(hours=1)) == 0
    assert get(runtime, made.id).status == "scheduled"
    assert queue_all(runtime, rules, now=now + timedelta(hours=2)) == 1
    assert get(runtime, made.id).status == "sending"


def test_a_stop_between_queueing_and_sending_stops_it(client: TestClient, runtime: Runtime,
                                                      rules: Rules, handset: Handset) -> None:
    subscribe(Phone(client, handset.number))
    subscribe(Phone(client, "+22370000301"))
    made, _ = create(runtime, rules, request(communes=["mopti-konna"]))
    assert queue_all(runtime, rules) == 2
    handset.deliver("STOP")
    send_due(runtime)
    assert sorted(sent_to(runtime)) == sorted([
        (handset.number, "Vous ne recevrez plus de SMS. Pour reprendre, envoyez START."),
        ("+22370000301", FR_AIR)])
    counts = get(runtime, made.id).counts
    assert (counts.recipients, counts.sent, counts.cancelled) == (2, 1, 1)


def test_a_stop_the_worker_has_not_tidied_yet_is_still_honoured(runtime: Runtime,
                                                                rules: Rules) -> None:
    [number] = seed(runtime, "koro", "fr")
    create(runtime, rules, request(cercles=["koro"]))
    queue_all(runtime, rules)
    with runtime.db.transaction() as conn:  # stopped, by a path that cancelled nothing
        queries.update_contact(conn, pseudonym=runtime.keys.pseudonym(number), stopped=True)
        assert outbox.claim(conn, policy=runtime.outbox_policy, owner="w", now=utcnow(),
                            tidy=False) == []
    # The worker's sweep finds it without the write lock, then cancels it.
    policy = runtime.outbox_policy
    with runtime.db.reading() as conn:
        assert outbox.any_for_stopped(conn, policy=policy)
    with runtime.db.transaction() as conn:
        assert outbox.cancel_stopped(conn, policy=policy, now=utcnow()) == 1
    with runtime.db.reading() as conn:
        assert not outbox.any_for_stopped(conn, policy=policy)


def test_an_erased_resident_receives_nothing(client: TestClient, runtime: Runtime,
                                            rules: Rules) -> None:
    phone = Phone(client, "+22370000401")
    subscribe(phone)
    subscribe(Phone(client, "+22370000402"))
    made, _ = create(runtime, rules, request(communes=["mopti-konna"]))
    assert queue_all(runtime, rules) == 2
    phone.dial()
    phone.press("5")
    assert phone.press("1").kind == "END"  # erased
    send_due(runtime)
    assert [to for to, _ in sent_to(runtime)] == ["+22370000402"]
    assert {r.pseudonym for r in outbox_of(runtime, made.id)} == {
        runtime.keys.pseudonym("+22370000402")}  # nothing of theirs is kept


def test_a_restored_backup_of_an_erased_resident_loses_their_queued_message_again(
        runtime: Runtime, rules: Rules) -> None:
    """A broadcast's messages are found by contact id (not pseudonym): the erasure of a
    contact a database restore brought back still finds and deletes them."""
    [kept, erased] = seed(runtime, "koro", "fr", 2)
    made, _ = create(runtime, rules, request(cercles=["koro"]))
    assert queue_all(runtime, rules) == 2
    with runtime.db.transaction() as conn:
        assert queries.erase_restored(conn, pseudonym=runtime.keys.pseudonym(erased),
                                      erased_at=utcnow() + timedelta(seconds=1))
    assert {r.pseudonym for r in outbox_of(runtime, made.id)} == {runtime.keys.pseudonym(kept)}
    send_due(runtime)
    assert [to for to, _ in sent_to(runtime)] == [kept]


def test_a_queued_message_holds_the_vaults_sealed_number_not_a_new_copy(
        runtime: Runtime, rules: Rules) -> None:
    """Queueing copies each number from the vault still sealed under the contact's own
    data key: once that key is gone (an erasure's shred, a restored backup), the queued
    copy cannot be read either; the worker fails it rather than retrying it for ever."""
    [kept, lost] = seed(runtime, "koro", "fr", 2)
    made, _ = create(runtime, rules, request(cercles=["koro"]))
    assert queue_all(runtime, rules) == 2
    rows = {r.pseudonym: r for r in outbox_of(runtime, made.id)}
    with runtime.db.transaction() as conn:
        vaulted = {row.pseudonym: row.number for row in conn.execute(
            select(queries.vault.c.pseudonym, queries.vault.c.number))}
        # The key is gone but nothing cancelled the message: a shred that came after the
        # worker had claimed it, say.
        queries.update_contact(conn, pseudonym=runtime.keys.pseudonym(lost), data_key=None)
    assert {p: r.recipient for p, r in rows.items()} == {p: vaulted[p] for p in rows}
    assert all(lost not in r.recipient and kept not in r.recipient for r in rows.values())
    send_due(runtime)
    assert [to for to, _ in sent_to(runtime)] == [kept]
    failed = {r.pseudonym: (r.status, r.last_error) for r in outbox_of(runtime, made.id)}
    assert failed[runtime.keys.pseudonym(lost)] == ("failed", "key-gone")


def test_an_unsubscribed_resident_receives_nothing(client: TestClient, runtime: Runtime,
                                                  rules: Rules) -> None:
    phone = Phone(client, "+22370000501")
    subscribe(phone)
    made, _ = create(runtime, rules, request(communes=["mopti-konna"]))
    assert queue_all(runtime, rules) == 1
    phone.dial()
    phone.press("3")
    assert phone.press("2") == END("C'est noté, vous ne recevrez plus de messages.")
    send_due(runtime)
    assert sent_to(runtime) == []
    assert get(runtime, made.id).counts.cancelled == 1


def test_quiet_hours_hold_broadcasts_but_not_replies(runtime: Runtime, rules: Rules) -> None:
    runtime.outbox_policy = replace(runtime.outbox_policy,
                                    quiet=QuietHours.parse("21:00-07:00", "Africa/Bamako"))
    [number] = seed(runtime, "koro", "fr")
    # Tomorrow 20:30 in Bamako, which is on UTC all year.
    evening = (utcnow() + timedelta(days=1)).replace(hour=20, minute=30, second=0,
                                                    microsecond=0)
    made, _ = create(runtime, rules, request(cercles=["koro"]), now=evening)
    night = evening + timedelta(hours=2)
    assert queue_all(runtime, rules, now=night) == 1  # queued at night, held in the queue
    with runtime.db.transaction() as conn:
        outbox.enqueue(conn, keys=runtime.keys, policy=runtime.outbox_policy,
                       pseudonym=runtime.keys.pseudonym(number), e164=number,
                       text="Merci, message reçu", kind="ack", dedupe_key="ack:1", now=night)
    assert send_due(runtime, now=night) == 1
    assert sent_to(runtime) == [(number, "Merci, message reçu")]
    assert send_due(runtime, now=night + timedelta(hours=8, minutes=29)) == 0  # 06:59
    assert send_due(runtime, now=night + timedelta(hours=8, minutes=30)) == 1  # 07:00
    assert sent_to(runtime)[-1] == (number, FR_AIR)
    assert get(runtime, made.id).counts.sent == 1


def test_a_broadcast_past_its_validity_expires_unsent(runtime: Runtime, rules: Rules) -> None:
    seed(runtime, "koro", "fr", 3)
    now = utcnow()
    made, _ = create(runtime, rules, request(cercles=["koro"],
                                             valid_until=now + timedelta(hours=1)), now=now)
    queue_all(runtime, rules, now=now)
    assert send_due(runtime, now=now + timedelta(hours=2)) == 0  # after an outage
    assert sent_to(runtime) == []
    assert get(runtime, made.id).counts.expired == 3
    queue_all(runtime, rules, now=now + timedelta(hours=2))
    assert get(runtime, made.id).status == "done"


def test_a_broadcast_due_after_its_validity_queues_nothing(runtime: Runtime,
                                                          rules: Rules) -> None:
    seed(runtime, "koro", "fr", 3)
    now = utcnow()
    made, _ = create(runtime, rules, request(cercles=["koro"],
                                             valid_until=now + timedelta(hours=1)), now=now)
    assert queue_all(runtime, rules, now=now + timedelta(hours=2)) == 0
    found = get(runtime, made.id)
    assert (found.status, found.counts.recipients) == ("done", 0)


def test_cancel_mid_send_stops_what_was_not_handed_over(runtime: Runtime,
                                                       rules: Rules) -> None:
    seed(runtime, "koro", "fr", 30)
    small = replace(rules, chunk=10)
    made, _ = create(runtime, small, request(cercles=["koro"]))
    now = utcnow()
    for _ in range(2):  # 20 of 30 queued
        broadcasts.run_due(runtime.db, policy=runtime.outbox_policy,
                           rules=small, now=now)
    policy = runtime.outbox_policy
    with runtime.db.transaction() as conn:
        handed = outbox.claim(conn, policy=policy, owner="w", now=now, limit=5)
        outbox.record(conn, policy=policy, owner="w", now=now, results=[
            (c, SendResult(SendOutcome.accepted, f"p{c.id}")) for c in handed])
        in_flight = outbox.claim(conn, policy=policy, owner="w", now=now, limit=3)
    with runtime.db.transaction() as conn:
        cancelled = broadcasts.cancel(conn, who=MOPTI_KORO, broadcast_id=made.id, now=now)
    assert cancelled.status == "cancelled"
    later = now + timedelta(seconds=1)
    with runtime.db.transaction() as conn:  # the provider said "try again later"
        outbox.record(conn, policy=policy, owner="w", now=later, results=[
            (c, SendResult(SendOutcome.retry, retry_after=1.0))
            for c in in_flight])
    assert queue_all(runtime, small, now=later) == 0  # the rest is never queued
    assert send_due(runtime, now=later + timedelta(minutes=5)) == 0
    counts = get(runtime, made.id).counts
    assert (counts.recipients, counts.sent, counts.cancelled, counts.expired) == (20, 5, 12, 3)
    assert get(runtime, made.id).status == "cancelled"
    with runtime.db.transaction() as conn:  # cancelling twice changes nothing
        assert broadcasts.cancel(conn, who=MOPTI_KORO, broadcast_id=made.id,
                                 now=later).status == "cancelled"


def test_a_scheduled_broadcast_cancelled_never_goes(runtime: Runtime, rules: Rules) -> None:
    seed(runtime, "koro", "fr")
    now = utcnow()
    made, _ = create(runtime, rules, request(cercles=["koro"],
                                             send_at=now + timedelta(minutes=5)), now=now)
    with runtime.db.transaction() as conn:
        broadcasts.cancel(conn, who=MOPTI_KORO, broadcast_id=made.id, now=now)
    assert queue_all(runtime, rules, now=now + timedelta(minutes=10)) == 0
    assert get(runtime, made.id).status == "cancelled"


def test_a_done_broadcast_cannot_be_cancelled(runtime: Runtime, rules: Rules) -> None:
    seed(runtime, "koro", "fr")
    made, _ = create(runtime, rules, request(cercles=["koro"]))
    queue_all(runtime, rules)
    send_due(runtime)
    queue_all(runtime, rules)
    with runtime.db.transaction() as conn, pytest.raises(Conflict):
        broadcasts.cancel(conn, who=MOPTI_KORO, broadcast_id=made.id, now=utcnow())


def test_counts_follow_the_delivery_reports(runtime: Runtime, rules: Rules) -> None:
    seed(runtime, "koro", "fr", 4)
    made, _ = create(runtime, rules, request(cercles=["koro"]))
    queue_all(runtime, rules)
    assert get(runtime, made.id).counts == broadcasts.Counts(recipients=4, queued=4)
    send_due(runtime)
    assert get(runtime, made.id).counts == broadcasts.Counts(recipients=4, sent=4)
    ids = sorted(str(r.provider_message_id) for r in outbox_of(runtime, made.id))
    reports = [DeliveryStatus.delivered] * 3 + [DeliveryStatus.failed]
    for message_id, status in zip(ids, reports, strict=True):
        # What the delivery webhooks do with a provider's report.
        assert deliver(runtime, DeliveryReport("fake", status, status.value,
                                               message_id)) == "matched"
    assert get(runtime, made.id).counts == broadcasts.Counts(recipients=4, delivered=3,
                                                             failed=1)
