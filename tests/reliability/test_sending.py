"""Sending when the provider misbehaves, against a real HTTP stand-in on loopback: a hung
request costs one slot, not the route; an answer past the deadline is ambiguous and follows
the kind rules; a 429 pauses the whole route for its Retry-After, every worker with it, then
sending resumes; a send waiting on its answer keeps its lease; nothing goes out twice.

Figures (the rate with 10 % of answers hanging, the share refused by a provider at half
the cap) are measured by ``bench/outbox_faults.py``, not asserted here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from gateway.channels.fake import FakeSender
from gateway.outbox import outbox
from gateway.outbox.outbox import OutboxPolicy
from gateway.outbox.worker import Worker
from gateway.runtime import Runtime
from gateway.store import queries
from gateway.store.models import utcnow
from tests.flaky_smsc import Answer, FlakySmsc

POLICY = OutboxPolicy(provider="fake", rate=50.0, lease_seconds=60, send_timeout=10.0)


def enqueue(rt: Runtime, texts: dict[str, str]) -> dict[str, int]:
    """Queue one message per text (text -> kind), in order; their outbox ids by text."""
    with rt.db.transaction() as conn:
        for n, (text, kind) in enumerate(texts.items()):
            outbox.enqueue(conn, keys=rt.keys, policy=POLICY, pseudonym=f"{n:032d}",
                           e164=f"+2237000{n:04d}", text=text, kind=kind,
                           dedupe_key=f"test:{text}", now=utcnow())
    return {text: i for i, text in rows(rt)}


def rows(rt: Runtime) -> list[tuple[int, str]]:
    with rt.db.transaction() as conn:
        return [(int(r.id), str(r.text)) for r in conn.execute(
            select(outbox.outbox.c.id, outbox.outbox.c.text).order_by(outbox.outbox.c.id))]


def statuses(rt: Runtime) -> dict[str, tuple[str, int]]:
    """Each message's (status, attempts), by text."""
    with rt.db.transaction() as conn:
        return {str(r.text): (str(r.status), int(r.attempts)) for r in conn.execute(
            select(outbox.outbox.c.text, outbox.outbox.c.status, outbox.outbox.c.attempts))}


def worker(rt: Runtime, smsc: FlakySmsc, policy: OutboxPolicy) -> Worker:
    sender = FakeSender(url=smsc.url, timeout=policy.send_timeout, connections=policy.slots)
    wake = asyncio.Event()
    return Worker(db=rt.db, keys=rt.keys, sender=sender, policy=policy, wake=lambda: wake)


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def running(*workers: Worker) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    stop = asyncio.Event()
    return stop, [asyncio.create_task(w.run(stop)) for w in workers]


async def stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]],
                  *workers: Worker) -> None:
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    for w in workers:
        await w.sender.close()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let held answers finish before the server closes


def test_a_hung_request_costs_one_slot_and_the_rest_keep_sending(
        runtime: Runtime, release: threading.Event) -> None:
    policy = replace(POLICY, max_in_flight=2)
    smsc = FlakySmsc(lambda m: Answer(hold=release) if m["text"] == "hang" else Answer())
    texts = {"hang": "reply", **{f"m{i}": "broadcast" for i in range(20)}}
    ids = enqueue(runtime, texts)

    async def scenario() -> None:
        w = worker(runtime, smsc, policy)
        stop, tasks = running(w)
        await until(lambda: len(smsc.taken()) == 21, "every message at the provider")
        await until(lambda: sum(s == "sent" for s, _ in statuses(runtime).values()) == 20,
                    "the others recorded as sent")
        assert statuses(runtime)["hang"] == ("sending", 1)  # still waiting, one slot held
        release.set()
        await until(lambda: statuses(runtime)["hang"] == ("sent", 1), "the hung one")
        await stopped(stop, tasks, w)

    with smsc.running():
        asyncio.run(scenario())
    assert set(smsc.taken().values()) == {1}  # each exactly once
    assert smsc.most_active <= 2  # never more in flight than the slots
    first = [a.id for a in smsc.seen()[:2]]
    assert ids["hang"] in first  # it left among the first, and held nobody up


def test_an_answer_past_the_timeout_is_ambiguous_and_follows_the_kind_rules(
        runtime: Runtime, release: threading.Event) -> None:
    policy = replace(POLICY, send_timeout=2.0, max_in_flight=4)
    held: set[str] = set()

    def script(message: dict[str, Any]) -> Answer:
        if message["text"].startswith("hang") and message["text"] not in held:
            held.add(message["text"])
            return Answer(hold=release)  # past the client's timeout
        return Answer()

    smsc = FlakySmsc(script)
    texts = {"hang-ack": "ack", "hang-broadcast": "broadcast",
             **{f"m{i}": "reply" for i in range(10)}}
    ids = enqueue(runtime, texts)

    async def scenario() -> None:
        w = worker(runtime, smsc, policy)
        stop, tasks = running(w)
        await until(lambda: all(s in ("sent", "unknown") for s, _ in
                                statuses(runtime).values()), "every message settled")
        await stopped(stop, tasks, w)

    with smsc.running():
        asyncio.run(scenario())
    final = statuses(runtime)
    taken = smsc.taken()
    # The acknowledgement may have reached the phone: never sent again.
    assert final["hang-ack"][0] == "unknown" and taken[ids["hang-ack"]] == 1
    # A broadcast may go out once more, as the rule allows.
    assert final["hang-broadcast"] == ("sent", 2) and taken[ids["hang-broadcast"]] == 2
    assert all(final[f"m{i}"][0] == "sent" and taken[ids[f"m{i}"]] == 1 for i in range(10))


def test_a_429_pauses_the_whole_route_for_retry_after_then_sending_resumes(
        runtime: Runtime) -> None:
    policy = replace(POLICY, rate=20.0, max_in_flight=2)
    refused: list[int] = []

    def script(message: dict[str, Any]) -> Answer:
        if not refused and message["text"] == "m3":
            refused.append(int(message["id"]))
            return Answer(429, retry_after="1")
        return Answer()

    smsc = FlakySmsc(script)
    texts = {f"m{i}": "broadcast" for i in range(30)}
    enqueue(runtime, texts)

    async def scenario() -> None:
        workers = [worker(runtime, smsc, policy), worker(runtime, smsc, policy)]
        stop, tasks = running(*workers)
        await until(lambda: all(s == "sent" for s, _ in statuses(runtime).values()),
                    "everything sent")
        await stopped(stop, tasks, *workers)

    with smsc.running():
        asyncio.run(scenario())
    arrivals = smsc.seen()
    [throttled] = [a for a in arrivals if a.status == 429]
    during = [a for a in arrivals if throttled.at < a.at < throttled.at + 1.0]
    # Both workers waited out the Retry-After; only sends already on their way (at most
    # one per other slot) could arrive meanwhile.
    assert len(during) <= 2 * policy.slots - 1, during
    assert [a for a in arrivals if a.at >= throttled.at + 1.0], "sending resumed"
    assert set(smsc.taken().values()) == {1}  # nothing twice
    final = statuses(runtime)
    assert final["m3"] == ("sent", 1)  # the refusal did not count as an attempt
    with runtime.db.transaction() as conn:
        rate, paused = outbox.route(conn, policy=policy, now=utcnow())
        counted = queries.get_counter(conn, name=outbox.THROTTLED)
    assert rate < policy.rate and paused == 0  # slower now, climbing back
    assert counted == 1


def test_a_send_waiting_on_its_answer_keeps_its_lease(runtime: Runtime,
                                                      release: threading.Event) -> None:
    policy = replace(POLICY, lease_seconds=1, max_in_flight=2)
    smsc = FlakySmsc(lambda m: Answer(hold=release) if m["text"] == "slow" else Answer())
    enqueue(runtime, {"slow": "ack"})

    async def scenario() -> None:
        w = worker(runtime, smsc, policy)
        stop, tasks = running(w)
        await until(lambda: len(smsc.taken()) == 1, "the send at the provider")
        for _ in range(6):  # another worker's housekeeping, past the first lease
            await asyncio.sleep(0.3)
            with runtime.db.transaction() as conn:
                outbox.housekeeping(conn, policy=policy, now=utcnow())
            assert statuses(runtime)["slow"][0] == "sending"  # not taken for dead
        release.set()
        await until(lambda: statuses(runtime)["slow"][0] == "sent", "the answer recorded")
        await stopped(stop, tasks, w)

    with smsc.running():
        asyncio.run(scenario())
    assert smsc.taken() == {1: 1}


def test_stopping_finishes_the_sends_in_flight_and_claims_nothing_more(
        runtime: Runtime) -> None:
    policy = replace(POLICY, rate=10.0, max_in_flight=4)
    smsc = FlakySmsc(lambda m: Answer(hold=0.5))
    enqueue(runtime, {f"m{i}": "ack" for i in range(40)})

    async def scenario() -> None:
        w = worker(runtime, smsc, policy)
        stop, tasks = running(w)
        await until(lambda: len(smsc.taken()) >= 3, "some sends in flight")
        await stopped(stop, tasks, w)

    with smsc.running():
        asyncio.run(scenario())
    final = statuses(runtime)
    assert not [t for t, (s, _) in final.items() if s == "sending"]
    sent = {t for t, (s, _) in final.items() if s == "sent"}
    assert len(sent) == len(smsc.taken()) < 40  # all it handed over recorded, then it stopped
