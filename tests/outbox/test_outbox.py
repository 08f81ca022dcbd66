"""The outbox's rules, on a real database: what is sent, retried, never resent, expired;
how delivery reports move a message forward and never back.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from gateway.channels.base import DeliveryReport, DeliveryStatus, SendOutcome, SendResult
from gateway.outbox import outbox
from gateway.outbox.outbox import OutboxPolicy
from gateway.runtime import Runtime
from gateway.store import queries
from gateway.store.models import utcnow

NUMBER = "+22370000042"
OWNER = "test-worker"


@pytest.fixture
def policy() -> OutboxPolicy:
    return OutboxPolicy(provider="fake", rate=1000.0, lease_seconds=60, max_attempts=3)


def put(rt: Runtime, policy: OutboxPolicy, key: str, *, kind: str = "ack",
        now: datetime | None = None, valid_for: timedelta | None = None) -> bool:
    now = now or utcnow()
    with rt.db.transaction() as conn:
        return outbox.enqueue(conn, keys=rt.keys, policy=policy, pseudonym="p" * 32, e164=NUMBER,
                       text=f"message {key}", kind=kind, dedupe_key=key, now=now,
                       valid_until=now + valid_for if valid_for else None)


def claim(rt: Runtime, policy: OutboxPolicy, now: datetime | None = None,
          owner: str = OWNER) -> list[outbox.Claimed]:
    with rt.db.transaction() as conn:
        return outbox.claim(conn, policy=policy, owner=owner, now=now or utcnow())


def record(rt: Runtime, policy: OutboxPolicy, claimed: list[outbox.Claimed],
           result: SendResult, now: datetime | None = None) -> None:
    with rt.db.transaction() as conn:
        outbox.record(conn, policy=policy, owner=OWNER, now=now or utcnow(),
                      results=[(c, result) for c in claimed])


def status(rt: Runtime, key: str) -> dict[str, object]:
    with rt.db.transaction() as conn:
        row = conn.execute(select(outbox.outbox).where(outbox.outbox.c.dedupe_key == key)).one()
    return dict(row._mapping)


def deliver(rt: Runtime, report: DeliveryReport) -> str:
    with rt.db.transaction() as conn:
        return outbox.apply_delivery(conn, report=report, now=utcnow())


ACCEPTED = SendResult(SendOutcome.accepted, provider_message_id="prov-1")


def test_a_message_is_queued_once_and_sent(runtime: Runtime, policy: OutboxPolicy) -> None:
    assert put(runtime, policy, "a")
    assert not put(runtime, policy, "a")  # the same cause twice: one row, and it says so
    [claimed] = claim(runtime, policy)
    assert outbox.open_recipient(runtime.keys, claimed) == NUMBER
    assert claim(runtime, policy) == []  # leased
    record(runtime, policy, [claimed], ACCEPTED)
    row = status(runtime, "a")
    assert row["status"] == "sent" and row["provider_message_id"] == "prov-1"
    assert NUMBER not in str(row["recipient"])  # sealed


def test_a_transient_failure_is_retried_later_then_given_up(runtime: Runtime,
                                                             policy: OutboxPolicy) -> None:
    put(runtime, policy, "a")
    now = utcnow()
    for attempt in (1, 2):
        [claimed] = claim(runtime, policy, now)
        record(runtime, policy, [claimed], SendResult(SendOutcome.retry, code="500"), now)
        row = status(runtime, "a")
        assert row["status"] == "queued" and row["attempts"] == attempt
        next_at = row["next_attempt_at"]
        assert isinstance(next_at, datetime) and next_at > now + timedelta(seconds=29)
        assert claim(runtime, policy, now) == []  # not yet due
        now = next_at + timedelta(seconds=1)
    [claimed] = claim(runtime, policy, now)
    record(runtime, policy, [claimed], SendResult(SendOutcome.retry, code="500"), now)
    assert status(runtime, "a")["status"] == "failed"  # third attempt was the last


def test_a_provider_retry_after_is_honoured(runtime: Runtime, policy: OutboxPolicy) -> None:
    put(runtime, policy, "a")
    now = utcnow()
    claimed = claim(runtime, policy, now)
    record(runtime, policy, claimed, SendResult(SendOutcome.retry, retry_after=600.0), now)
    assert status(runtime, "a")["next_attempt_at"] == now + timedelta(seconds=600)


def test_a_permanent_failure_is_not_retried(runtime: Runtime, policy: OutboxPolicy) -> None:
    put(runtime, policy, "a")
    record(runtime, policy, claim(runtime, policy), SendResult(SendOutcome.failed, code="403"))
    row = status(runtime, "a")
    assert row["status"] == "failed" and row["last_error"] == "403"
    assert claim(runtime, policy) == []


def test_an_ambiguous_acknowledgement_is_never_sent_again(runtime: Runtime,
                                                         policy: OutboxPolicy) -> None:
    put(runtime, policy, "ack", kind="ack")
    record(runtime, policy, claim(runtime, policy), SendResult(SendOutcome.ambiguous))
    assert status(runtime, "ack")["status"] == "unknown"
    assert claim(runtime, policy, utcnow() + timedelta(days=1)) == []


def test_an_ambiguous_broadcast_goes_out_at_most_once_more(runtime: Runtime,
                                                          policy: OutboxPolicy) -> None:
    put(runtime, policy, "b", kind="broadcast")
    record(runtime, policy, claim(runtime, policy), SendResult(SendOutcome.ambiguous))
    assert status(runtime, "b")["status"] == "queued"
    record(runtime, policy, claim(runtime, policy), SendResult(SendOutcome.ambiguous))
    assert status(runtime, "b")["status"] == "unknown"


def test_a_dead_workers_messages_follow_the_same_rules(runtime: Runtime,
                                                      policy: OutboxPolicy) -> None:
    put(runtime, policy, "ack", kind="ack")
    put(runtime, policy, "reply", kind="reply")
    put(runtime, policy, "b", kind="broadcast")
    now = utcnow()
    assert len(claim(runtime, policy, now, owner="dead")) == 3  # then the worker dies
    later = now + timedelta(seconds=61)
    [again] = claim(runtime, policy, later)
    assert again.dedupe_key == "b"
    assert status(runtime, "ack")["status"] == "unknown"
    assert status(runtime, "reply")["status"] == "unknown"


def test_a_released_message_was_never_sent_and_goes_out_later(runtime: Runtime,
                                                             policy: OutboxPolicy) -> None:
    put(runtime, policy, "ack")
    claimed = claim(runtime, policy)
    with runtime.db.transaction() as conn:
        outbox.release(conn, ids=[c.id for c in claimed], owner=OWNER, now=utcnow())
    row = status(runtime, "ack")
    assert row["status"] == "queued" and row["attempts"] == 0
    assert len(claim(runtime, policy)) == 1


def test_a_message_past_its_validity_is_expired_not_sent(runtime: Runtime,
                                                        policy: OutboxPolicy) -> None:
    now = utcnow()
    put(runtime, policy, "old", kind="broadcast", now=now, valid_for=timedelta(hours=1))
    put(runtime, policy, "fresh", kind="broadcast", now=now, valid_for=timedelta(hours=3))
    [claimed] = claim(runtime, policy, now + timedelta(hours=2))  # after an outage
    assert claimed.dedupe_key == "fresh"
    assert status(runtime, "old")["status"] == "expired"


def test_replies_go_before_broadcasts(runtime: Runtime, policy: OutboxPolicy) -> None:
    for i in range(3):
        put(runtime, policy, f"b{i}", kind="broadcast")
    put(runtime, policy, "reply", kind="reply")
    put(runtime, policy, "stop", kind="control")
    keys = [c.dedupe_key for c in claim(runtime, policy)]
    assert keys[:2] == ["stop", "reply"]


def test_claims_respect_the_rate(runtime: Runtime) -> None:
    slow = OutboxPolicy(provider="fake", rate=10.0)  # burst: one message
    for i in range(50):
        put(runtime, slow, f"m{i}", kind="broadcast")
    start = utcnow()
    claimed = 0
    for tick in range(101):  # one simulated second, in 10 ms steps
        claimed += len(claim(runtime, slow, start + timedelta(milliseconds=10 * tick)))
    assert 10 <= claimed <= 11  # rate x 1 s, plus the one-message burst


def test_delivery_reports_only_move_forward(runtime: Runtime, policy: OutboxPolicy) -> None:
    put(runtime, policy, "a")
    record(runtime, policy, claim(runtime, policy), ACCEPTED)

    def report(state: DeliveryStatus) -> str:
        return deliver(runtime, DeliveryReport("fake", state, state.value, "prov-1"))

    assert report(DeliveryStatus.delivered) == "matched"
    assert report(DeliveryStatus.sent) == "stale"  # late, out of order
    assert report(DeliveryStatus.delivered) == "stale"  # duplicate
    assert report(DeliveryStatus.failed) == "stale"  # a final status stays
    assert status(runtime, "a")["status"] == "delivered"


def test_a_report_before_its_send_is_kept_and_reconciled(runtime: Runtime,
                                                        policy: OutboxPolicy) -> None:
    put(runtime, policy, "a")
    claimed = claim(runtime, policy)
    early = DeliveryReport("fake", DeliveryStatus.delivered, "Success", "prov-1")
    assert deliver(runtime, early) == "parked"
    record(runtime, policy, claimed, ACCEPTED)
    assert status(runtime, "a")["status"] == "delivered"
    with runtime.db.transaction() as conn:
        assert conn.execute(select(outbox.pending)).all() == []


def test_reports_for_unknown_ids_expire_and_are_counted(runtime: Runtime) -> None:
    for i in range(3):
        report = DeliveryReport("fake", DeliveryStatus.delivered, "Success", f"nobody-{i}")
        assert deliver(runtime, report) == "parked"
    with runtime.db.transaction() as conn:
        now = utcnow()
        assert outbox.expire_pending(conn, older_than=now - timedelta(hours=1), now=now) == 0
        assert outbox.expire_pending(conn, older_than=now + timedelta(hours=1), now=now) == 3
        [counter] = conn.execute(select(outbox.counters)).all()
    assert (counter.name, counter.value) == ("delivery_reports_unmatched", 3)


def test_a_report_can_name_our_own_id(runtime: Runtime, policy: OutboxPolicy) -> None:
    put(runtime, policy, "a")
    [claimed] = claim(runtime, policy)
    # Kannel calls the dlr-url we built, with our id, possibly before we record the send.
    assert deliver(runtime, DeliveryReport("fake", DeliveryStatus.sent, "8",
                                           outbox_id=claimed.id)) == "matched"
    record(runtime, policy, [claimed], SendResult(SendOutcome.accepted, str(claimed.id)))
    assert deliver(runtime, DeliveryReport("fake", DeliveryStatus.delivered, "1",
                                           outbox_id=claimed.id)) == "matched"
    assert status(runtime, "a")["status"] == "delivered"


def test_two_workers_never_claim_the_same_message(runtime: Runtime,
                                                  policy: OutboxPolicy) -> None:
    for i in range(200):
        put(runtime, policy, f"m{i}", kind="broadcast")
    taken: list[list[int]] = [[], []]

    def work(slot: int) -> None:
        for _ in range(40):
            taken[slot] += [c.id for c in claim(runtime, policy, owner=f"w{slot}")]

    threads = [threading.Thread(target=work, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(taken[0]) & set(taken[1])
    assert len(taken[0]) + len(taken[1]) == 200


def test_a_429_pauses_the_route_for_every_worker_then_it_climbs_back(
        runtime: Runtime) -> None:
    route = OutboxPolicy(provider="fake", rate=10.0)  # burst: one message
    for i in range(200):
        put(runtime, route, f"m{i}", kind="broadcast")
    start = utcnow()
    with runtime.db.transaction() as conn:
        rate = outbox.throttle(conn, policy=route, now=start, sent_at=start, retry_after=2.0)
    assert rate == pytest.approx(7.0)

    def claimed(owner: str, begin: datetime, seconds: float) -> int:
        count = 0
        for tick in range(int(seconds * 100) + 1):  # simulated time, in 10 ms steps
            count += len(claim(runtime, route, begin + timedelta(milliseconds=10 * tick),
                               owner=owner))
        return count

    assert claimed("w1", start, 1.9) == claimed("w2", start, 1.9) == 0  # Retry-After: 2
    after = claimed("w1", start + timedelta(seconds=2), 1.0)
    assert 6 <= after <= 8  # the lowered rate (7/s, in 10 ms steps), not the configured 10
    with runtime.db.transaction() as conn:
        later, paused = outbox.route(conn, policy=route, now=start + timedelta(seconds=62))
    assert (later, paused) == (10.0, 0.0)  # a hundredth of the rate a second: back in 30 s


def test_answers_to_sends_older_than_the_last_429_do_not_lower_the_rate_again(
        runtime: Runtime) -> None:
    route = OutboxPolicy(provider="fake", rate=10.0)
    now = utcnow()
    with runtime.db.transaction() as conn:
        first = outbox.throttle(conn, policy=route, now=now, sent_at=now, retry_after=1.0)
        late = outbox.throttle(conn, policy=route, now=now + timedelta(milliseconds=50),
                               sent_at=now - timedelta(milliseconds=10), retry_after=1.0)
        again = outbox.throttle(conn, policy=route, now=now + timedelta(seconds=3),
                                sent_at=now + timedelta(seconds=2), retry_after=None)
    assert first == late == pytest.approx(7.0)  # one lowering for one round of sends
    assert again < first  # a send at the lowered rate was refused too
    with runtime.db.transaction() as conn:
        assert queries.get_counter(conn, name=outbox.THROTTLED) == 3


def test_a_refusal_for_the_rate_is_not_an_attempt(runtime: Runtime,
                                                  policy: OutboxPolicy) -> None:
    put(runtime, policy, "a")
    now = utcnow()
    for _ in range(policy.max_attempts + 2):  # more refusals than attempts allowed
        [claimed] = claim(runtime, policy, now)
        record(runtime, policy, [claimed], SendResult(SendOutcome.retry, code="http-429",
                                                      retry_after=5.0, throttled=True), now)
        row = status(runtime, "a")
        assert (row["status"], row["attempts"]) == ("queued", 0)
        assert row["next_attempt_at"] == now + timedelta(seconds=5)
        now += timedelta(seconds=6)
