"""The Redis backend against a real server: the MQ's API, shared by several MQs.

Each MQ here stands for a process of its own (its own RedisBackend, consumer name and
connections); tests/test_redis_processes.py runs real processes. Fixtures and the
skip-or-fail rule are in tests/redis_support.py.
"""

# ruff: noqa: F811 - the fixtures imported from tests.redis_support are parameters here

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import wait_until
from tests.helpers import Recorder
from tests.redis_support import (  # noqa: F401 - mqs, prefix, redis_url: fixtures
    MakeMQ,
    client,
    mqs,
    prefix,
    redis_url,
    scratch_prefix,
)
from tinymq import MQ, PICKLE, Context, Msg, Reject, Retry, StorageError
from tinymq.redis_streams import RedisBackend  # after redis_support, which skips without it


def stream_state(url: str, prefix: str, queue: str = "q") -> tuple[int, int]:
    """(entries in the queue's stream, entries in flight in its group)."""
    db = client(url)
    try:
        key = f"{prefix}:{queue}:stream"
        length = int(db.xlen(key))
        groups = db.xinfo_groups(key) if db.exists(key) else []
        return length, sum(int(g["pending"]) for g in groups)
    finally:
        db.close()


def test_a_publish_only_mq_hands_each_message_to_a_consumer_mq_exactly_once(
    mqs: MakeMQ, redis_url: str, prefix: str
) -> None:
    publisher, worker, rec = mqs(), mqs(), Recorder()
    publisher.register_queue("q", None)
    worker.register_queue("q", rec, 4)
    publisher.start()
    worker.start()
    ids = [publisher.publish("q", {"n": n}) for n in range(200)]
    rec.wait_for(200)
    publisher.stop()
    worker.stop()
    assert ids == list(range(ids[0], ids[0] + 200)), "ids are issued by Redis, one by one"
    assert Counter(rec.ids) == Counter(ids), "each message exactly once"
    assert {m.id: m.data for _, m in rec.seen} == {i: {"n": n} for n, i in enumerate(ids)}
    assert all(m.attempt == 1 and not m.redelivered for _, m in rec.seen)
    assert stream_state(redis_url, prefix) == (0, 0), "every entry acknowledged and deleted"


def test_a_publish_only_queue_never_calls_a_consumer_in_its_own_mq(mqs: MakeMQ) -> None:
    publisher = mqs()
    publisher.register_queue("q", None)
    publisher.start()
    publisher.publish("q", 1)
    publisher.stop()
    assert publisher.stats()["q"].delivered == 0
    assert publisher.stats()["q"].published == 1


def test_concurrency_one_consumes_in_publish_order(mqs: MakeMQ) -> None:
    publisher, worker, rec = mqs(), mqs(), Recorder()
    publisher.register_queue("q", None)
    worker.register_queue("q", rec, 1)
    ids = [publisher.publish("q", n) for n in range(150)]  # before any consumer starts
    worker.start()
    ids += [publisher.publish("q", n) for n in range(150, 300)]
    rec.wait_for(300)
    worker.stop()
    assert rec.ids == ids
    assert rec.data == list(range(300))


def test_async_consumers_get_each_message_once(mqs: MakeMQ) -> None:
    seen: list[Msg] = []

    async def consume(ctx: Context, msg: Msg) -> None:
        await asyncio.sleep(0)
        seen.append(msg)

    async def main() -> list[int]:
        publisher, worker = mqs(), mqs()
        publisher.register_queue("q", None)
        worker.register_queue("q", consume, 8)
        await worker.astart()
        ids = [await publisher.apublish("q", n) for n in range(100)]
        deadline = time.monotonic() + 10
        while len(seen) < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await worker.astop()
        publisher.stop()
        return ids

    ids = asyncio.run(main())
    assert Counter(m.id for m in seen) == Counter(ids)


@dataclass
class Flaky:
    """Fails ``data == "fail"`` until ``healed``; rejects ``"reject"``; records every call."""

    healed: bool = False

    def __post_init__(self) -> None:
        self.calls: list[tuple[Msg, float]] = []
        self.lock = threading.Lock()  # guards calls

    def __call__(self, ctx: Context, msg: Msg) -> None:
        with self.lock:
            self.calls.append((msg, time.monotonic()))
        if self.healed:
            return
        if msg.data == "fail":
            raise ValueError("always fails")
        if msg.data == "reject":
            raise Reject("not for us")

    def of(self, data: object) -> list[tuple[Msg, float]]:
        with self.lock:
            return [(m, t) for m, t in self.calls if m.data == data]


def test_retries_wait_their_backoff_and_dead_letters_are_shared_through_redis(
    mqs: MakeMQ, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="tinymq")  # the failures are expected
    flaky = Flaky()
    worker = mqs()
    worker.register_queue("q", flaky, 2, retry=Retry(max_attempts=3, backoff=0.2, jitter=False))
    worker.start()
    failing, rejected = worker.publish("q", "fail"), worker.publish("q", "reject")
    wait_until(lambda: len(worker.dead_letters("q")) == 2)
    calls = flaky.of("fail")
    assert [m.attempt for m, _ in calls] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(calls)]
    assert all(gap >= 0.2 for gap in gaps), f"retried before the backoff: {gaps}"
    # The retry wakes this process's intake from its read (up to a second otherwise);
    # what is left is Redis's timer resolution for blocked reads (0.1 s at hz 10).
    assert all(gap < 0.2 + 0.5 for gap in gaps), f"retried long after the backoff: {gaps}"
    assert [m.attempt for m, _ in flaky.of("reject")] == [1], "Reject is never retried"

    other = mqs()  # another process on the same Redis sees and requeues them
    other.register_queue("q", None)
    letters = {d.id: d for d in other.dead_letters("q")}
    assert set(letters) == {failing, rejected}
    assert (letters[failing].reason, letters[failing].attempts) == ("exhausted", 3)
    assert (letters[rejected].reason, letters[rejected].attempts) == ("rejected", 1)
    assert letters[failing].error_type == "builtins.ValueError"
    flaky.healed = True
    assert other.requeue_dead("q") == 2
    assert other.dead_letters("q") == [] == worker.dead_letters("q")
    wait_until(lambda: len(flaky.calls) == 6)
    requeued = [m for m, _ in flaky.calls[4:]]
    assert sorted(m.data for m in requeued) == ["fail", "reject"]
    assert all(m.id not in (failing, rejected) and m.attempt == 1 for m in requeued)
    stats = worker.stats()["q"]
    assert (stats.delivered, stats.failed, stats.retried, stats.dead) == (6, 4, 2, 2)
    assert (stats.succeeded, stats.published) == (2, 2)
    assert other.stats()["q"].published == 2
    worker.stop()
    other.stop()


def test_a_delayed_publish_is_delivered_no_earlier_than_its_delay(mqs: MakeMQ) -> None:
    publisher, worker = mqs(), mqs()
    arrived: dict[object, float] = {}

    def consume(ctx: Context, msg: Msg) -> None:
        arrived[msg.data] = time.monotonic()

    publisher.register_queue("q", None)
    worker.register_queue("q", consume)
    worker.start()
    sent = time.monotonic()
    publisher.publish("q", "remote", delay=0.6)  # another process's delayed message
    worker.publish("q", "local", delay=0.3)
    publisher.publish("q", "now")
    wait_until(lambda: len(arrived) == 3)
    assert arrived["now"] - sent < 0.3, "a delayed message holds back nothing behind it"
    assert arrived["local"] - sent >= 0.3
    assert arrived["remote"] - sent >= 0.6
    assert arrived["local"] - sent < 1.5 and arrived["remote"] - sent < 2.0
    worker.stop()


def test_a_delayed_publish_waits_in_redis_while_no_consumer_runs(
    mqs: MakeMQ, redis_url: str, prefix: str
) -> None:
    publisher = mqs()
    publisher.register_queue("q", None)
    msg_id = publisher.publish("q", "later", delay=0.05)
    assert client(redis_url).zcard(f"{prefix}:q:delayed") == 1
    worker, rec = mqs(), Recorder()
    worker.register_queue("q", rec)
    time.sleep(0.1)
    worker.start()
    rec.wait_for(1)
    worker.stop()
    assert rec.ids == [msg_id]


def test_stats_count_publishes_here_and_calls_here(mqs: MakeMQ) -> None:
    publisher, worker, rec = mqs(), mqs(), Recorder()
    publisher.register_queue("q", None)
    worker.register_queue("q", rec, 2)
    worker.start()
    for n in range(10):
        publisher.publish("q", n)
    rec.wait_for(10)
    wait_until(lambda: worker.stats()["q"].in_flight == 0)  # the last calls have ended
    mine, theirs = publisher.stats()["q"], worker.stats()["q"]
    assert (mine.published, mine.delivered) == (10, 0)
    assert (theirs.published, theirs.delivered, theirs.failed) == (0, 10, 0)
    assert (theirs.pending, theirs.in_flight) == (0, 0)
    assert theirs.latency_p50 is not None
    worker.stop()


def test_max_pending_is_refused_at_registration(mqs: MakeMQ) -> None:
    mq = mqs()
    with pytest.raises(ValueError, match="max_pending is not supported"):
        mq.register_queue("q", Recorder(), max_pending=10)
    assert mq.queue_names == []


def test_bad_backend_options_are_refused() -> None:
    with pytest.raises(ValueError, match="scheme"):
        RedisBackend("http://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="claim_idle"):
        RedisBackend(claim_idle=0)
    with pytest.raises(ValueError, match="prefetch"):
        RedisBackend(prefetch=0)
    with pytest.raises(ValueError, match="group"):
        RedisBackend(group="")


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0", "redis://no-such-host.invalid:6379/0"], ids=["refused", "dns"]
)
def test_publish_to_an_unreachable_redis_raises_storage_error_naming_queue_and_url(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinymq")
    mq = MQ(backend=RedisBackend(url))
    mq.register_queue("orders", Recorder())  # registering needs no server
    mq.start()  # consumers wait for Redis: start does not fail
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        mq.publish("orders", {"n": 1})
    assert time.monotonic() - started < 5
    assert "'orders'" in str(caught.value) and url in str(caught.value)
    wait_until(lambda: any("unavailable" in r.getMessage() for r in caplog.records))
    mq.stop(timeout=5)
    assert all(r.exc_info is None for r in caplog.records), "no traceback for a lost server"


def test_json_is_the_default_and_unencodable_data_publishes_nothing(
    mqs: MakeMQ, redis_url: str, prefix: str
) -> None:
    worker, rec = mqs(), Recorder()
    worker.register_queue("q", rec)
    with pytest.raises(TypeError, match=r"'q'.*JSON cannot encode set"):
        worker.publish("q", {1, 2})
    db = client(redis_url)
    assert db.get(f"{prefix}:q:seq") is None, "no id was issued"
    assert stream_state(redis_url, prefix) == (0, 0)
    worker.publish("q", (1, "a", None))
    entries: Any = db.xrange(f"{prefix}:q:stream")
    ((_, fields),) = entries
    assert fields[b"data"] == b'[1,"a",null]'
    worker.start()
    rec.wait_for(1)
    worker.stop()
    assert rec.data == [[1, "a", None]], "JSON: a tuple comes back as a list"


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def test_pickle_is_used_when_chosen(mqs: MakeMQ) -> None:
    worker, rec = mqs(serializer=PICKLE), Recorder()
    worker.register_queue("q", rec)
    worker.publish("q", {Point(1, 2), (3, 4)})
    worker.start()
    rec.wait_for(1)
    worker.stop()
    assert rec.data == [{Point(1, 2), (3, 4)}]


def test_an_entry_that_cannot_be_decoded_becomes_a_dead_letter_and_intake_goes_on(
    mqs: MakeMQ, redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="tinymq")
    worker, rec = mqs(), Recorder()
    worker.register_queue("q", rec)
    client(redis_url).xadd(f"{prefix}:q:stream", {"id": 77, "attempt": 1, "data": b"\x80no json"})
    worker.start()
    after = worker.publish("q", "fine")
    rec.wait_for(1)
    wait_until(lambda: len(worker.dead_letters("q")) == 1)
    worker.stop()
    (letter,) = worker.dead_letters("q")
    assert (letter.id, letter.reason, letter.attempts) == (77, "undecodable", 0)
    assert rec.ids == [after]
    assert stream_state(redis_url, prefix) == (0, 0)


def test_a_message_held_by_a_dead_consumer_is_claimed_and_redelivered(
    mqs: MakeMQ, redis_url: str, prefix: str
) -> None:
    publisher, rec = mqs(), Recorder()
    publisher.register_queue("q", None)
    msg_id = publisher.publish("q", "orphan")
    worker = mqs(claim_idle=0.3)
    worker.register_queue("q", rec)
    db = client(redis_url)  # a consumer that reads the entry and dies
    db.xgroup_create(f"{prefix}:q:stream", "default", id="0")
    db.xreadgroup("default", "dead-process", {f"{prefix}:q:stream": ">"})
    worker.start()
    rec.wait_for(1)
    worker.stop()
    (_, msg), *_ = rec.seen
    assert (msg.id, msg.data, msg.redelivered, msg.attempt) == (msg_id, "orphan", True, 2)
    assert stream_state(redis_url, prefix) == (0, 0)


def test_a_live_consumers_long_call_is_not_claimed_by_another(mqs: MakeMQ) -> None:
    release = threading.Event()

    def hold(ctx: Context, msg: Msg) -> None:
        release.wait(10)

    slow = Recorder(hold)
    other = Recorder()
    first, second = mqs(claim_idle=0.3), mqs(claim_idle=0.3)
    first.register_queue("q", slow)
    second.register_queue("q", other)
    first.start()
    msg_id = first.publish("q", "long")
    wait_until(lambda: first.stats()["q"].in_flight == 1)
    second.start()
    time.sleep(1.0)  # more than three times claim_idle: the first renews its claim
    release.set()
    slow.wait_for(1)
    first.stop()
    second.stop()
    assert slow.ids == [msg_id] and other.ids == []


def test_stop_consumes_what_was_read_and_leaves_the_rest_in_redis(
    mqs: MakeMQ, redis_url: str, prefix: str
) -> None:
    first = mqs(prefetch=5)
    rec = Recorder(lambda ctx, msg: time.sleep(0.002))
    first.register_queue("q", rec)
    ids = [first.publish("q", n) for n in range(100)]
    first.start()
    rec.wait_for(10)
    first.stop()
    taken = len(rec.ids)
    assert taken < 100
    assert stream_state(redis_url, prefix) == (100 - taken, 0), "the rest was never read"
    second, rest = mqs(), Recorder()
    second.register_queue("q", rest)
    second.start()
    rest.wait_for(100 - taken)
    second.stop()
    assert Counter(rec.ids + rest.ids) == Counter(ids)


def test_prefetch_lets_several_consumers_share_a_backlog(mqs: MakeMQ) -> None:
    recs = [Recorder(lambda ctx, msg: time.sleep(0.005)) for _ in range(2)]
    workers = [mqs(prefetch=4) for _ in recs]
    for mq, rec in zip(workers, recs, strict=True):
        mq.register_queue("q", rec)
    ids = [workers[0].publish("q", n) for n in range(60)]
    for mq in workers:
        mq.start()
    wait_until(lambda: sum(len(r.ids) for r in recs) == 60)
    for mq in workers:
        mq.stop()
    assert all(r.ids for r in recs), [len(r.ids) for r in recs]
    assert Counter(recs[0].ids + recs[1].ids) == Counter(ids)


# -- properties -------------------------------------------------------------------

plans = st.fixed_dictionaries(
    {
        "consumers": st.lists(st.integers(1, 3), min_size=1, max_size=3),
        "publishers": st.integers(1, 3),
        "per_publisher": st.integers(0, 60),
        "stop_one_after": st.one_of(st.none(), st.integers(0, 100)),
    }
)


@settings(max_examples=12, deadline=None)
@given(plan=plans)
def test_every_message_goes_to_exactly_one_live_consumer_across_mqs(
    redis_url: str, plan: dict[str, object]
) -> None:
    consumers: list[int] = plan["consumers"]  # type: ignore[assignment]
    publishers: int = plan["publishers"]  # type: ignore[assignment]
    per_publisher: int = plan["per_publisher"]  # type: ignore[assignment]
    stop_one_after: int | None = plan["stop_one_after"]  # type: ignore[assignment]
    with scratch_prefix(redis_url) as prefix, contextlib.ExitStack() as stopping:
        recs = [Recorder() for _ in consumers]
        workers = [MQ(backend=RedisBackend(redis_url, prefix=prefix)) for _ in consumers]
        for mq, rec, n in zip(workers, recs, consumers, strict=True):
            mq.register_queue("q", rec, n)
            mq.start()
            stopping.callback(mq.stop, 10)  # also when an assertion fails
        publisher = MQ(backend=RedisBackend(redis_url, prefix=prefix))
        publisher.register_queue("q", None)
        ids = publish_from_threads(publisher, publishers, per_publisher)

        def total() -> int:
            return sum(len(r.ids) for r in recs)

        if stop_one_after is not None and len(workers) > 1:
            wait_until(lambda: total() >= min(stop_one_after, len(ids)))
            workers[0].stop()  # drains what it read; the others take the rest
        wait_until(lambda: total() >= len(ids))
        for mq in workers:
            mq.stop(timeout=10)
        publisher.stop()
        consumed = [m.id for r in recs for m in (msg for _, msg in r.seen)]
        assert Counter(consumed) == Counter(ids), "each message handed out exactly once"
        assert sorted(ids) == list(range(min(ids, default=1), min(ids, default=1) + len(ids)))
        assert stream_state(redis_url, prefix) == (0, 0)


def publish_from_threads(mq: MQ, publishers: int, count: int) -> list[int]:
    """Publish ``(k, i)`` for i < count from each of ``publishers`` threads; return the ids."""
    ids: list[int] = []
    lock = threading.Lock()  # guards ids

    def publish(k: int) -> None:
        for i in range(count):
            msg_id = mq.publish("q", [k, i])
            with lock:
                ids.append(msg_id)

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(publishers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return ids


@settings(max_examples=10, deadline=None)
@given(publishers=st.integers(1, 4), per_publisher=st.integers(0, 80))
def test_concurrency_one_keeps_id_order_and_each_publishers_order(
    redis_url: str, publishers: int, per_publisher: int
) -> None:
    with scratch_prefix(redis_url) as prefix, contextlib.ExitStack() as stopping:
        rec = Recorder()
        worker = MQ(backend=RedisBackend(redis_url, prefix=prefix))
        worker.register_queue("q", rec, 1)
        publisher = MQ(backend=RedisBackend(redis_url, prefix=prefix))
        publisher.register_queue("q", None)
        worker.start()
        stopping.callback(worker.stop, 10)
        ids = publish_from_threads(publisher, publishers, per_publisher)
        rec.wait_for(len(ids))
        worker.stop()
        publisher.stop()
        assert rec.ids == sorted(ids), "concurrency 1 hands out in id order"
        for k in range(publishers):
            mine = [m.data[1] for _, m in rec.seen if m.data[0] == k]
            assert mine == list(range(per_publisher)), "a publisher's messages keep their order"


def test_a_call_still_draining_in_stop_is_renewed_not_taken_by_a_live_peer(
    mqs: MakeMQ,
) -> None:
    a, b = mqs(claim_idle=0.6), mqs(claim_idle=0.6)
    started, release = threading.Event(), threading.Event()
    taken: list[tuple[int, int]] = []

    def slow(ctx: Context, msg: Msg) -> None:
        started.set()
        assert release.wait(10)

    a.register_queue("q", slow)
    b.register_queue("q", lambda ctx, msg: taken.append((msg.id, msg.attempt)))
    a.start()
    a.publish("q", "long call")
    assert started.wait(10)
    b.start()
    stopper = threading.Thread(target=a.stop)  # a graceful stop: a still lives, and drains
    stopper.start()
    waited = threading.Event()
    waited.wait(4 * 0.6)  # four times claim_idle: b would have claimed it by now
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert taken == [], "a call still running in a stopping process was taken by a peer"


def test_a_dead_letter_that_cannot_be_written_lets_its_message_be_claimed_again(
    mqs: MakeMQ,
) -> None:
    mq = mqs(claim_idle=0.5, prefetch=2)
    seen: list[tuple[int, int]] = []

    def consume(ctx: Context, msg: Msg) -> None:
        seen.append((msg.id, msg.attempt))
        if msg.data == "bad":
            raise Reject("never good")

    mq.register_queue("q", consume)
    dead = mq._queues["q"].delivery.dead
    real_add, failures = dead.add, [2]

    def flaky_add(letter: Any) -> None:  # Redis blips while the first two letters are kept
        if failures[0] > 0:
            failures[0] -= 1
            raise StorageError("Redis unavailable (injected)")
        real_add(letter)

    dead.add = flaky_add  # type: ignore[method-assign]
    mq.start()
    bad = [mq.publish("q", "bad") for _ in range(2)]
    wait_until(lambda: failures[0] == 0)
    good = mq.publish("q", "good")
    wait_until(lambda: sorted(d.id for d in mq.dead_letters("q")) == bad)  # claimed again
    wait_until(lambda: (good, 1) in seen)  # and the queue did not wedge behind them
    mq.stop(10)


def test_an_entry_that_cannot_be_buried_holds_back_nothing_after_it(
    mqs: MakeMQ, redis_url: str, prefix: str
) -> None:
    mq = mqs(claim_idle=30.0)  # far beyond the test: anything held back shows
    seen: list[tuple[int, int, bool]] = []
    mq.register_queue("q", lambda ctx, msg: seen.append((msg.id, msg.attempt, msg.redelivered)))
    dead = mq._queues["q"].delivery.dead
    real_add, fail = dead.add, [1]

    def flaky_add(letter: Any) -> None:
        if fail[0]:
            fail[0] -= 1
            raise StorageError("Redis unavailable (injected)")
        real_add(letter)

    dead.add = flaky_add  # type: ignore[method-assign]
    db, stream = client(redis_url), f"{prefix}:q:stream"
    try:
        db.xgroup_create(stream, "default", id="0", mkstream=True)
        db.xadd(stream, {"id": 1, "attempt": 1, "data": b"\xff not json"})  # one batch
        for i in (2, 3, 4):
            db.xadd(stream, {"id": i, "attempt": 1, "data": b'"ok"'})
    finally:
        db.close()
    mq.start()
    wait_until(lambda: len(seen) == 3, timeout=5)
    assert seen == [(2, 1, False), (3, 1, False), (4, 1, False)]
    mq.stop(10)


def test_stop_closes_the_intakes_connections(mqs: MakeMQ, redis_url: str) -> None:
    mq = mqs()
    mq.register_queue("q", lambda ctx, msg: None)
    mq.register_queue("r", lambda ctx, msg: None)
    mq.start()
    name, db = mq._backend.client_name, client(redis_url)  # type: ignore[union-attr]
    try:

        def ours() -> int:
            return sum(c.get("name") == name for c in db.client_list())

        wait_until(lambda: ours() >= 2)  # the two intakes' own connections
        mq.stop(10)
        wait_until(lambda: ours() == 0, timeout=3)
    finally:
        db.close()


def test_stop_keeps_its_timeout_while_redis_stops_answering() -> None:
    import socket  # noqa: PLC0415 - only this test listens

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])  # and never answers

    threading.Thread(target=accept, daemon=True).start()
    port = server.getsockname()[1]
    mq = MQ(backend=RedisBackend(f"redis://127.0.0.1:{port}/0", prefix="never-answers"))
    mq.register_queue("q", lambda ctx, msg: None)
    try:
        mq.start()
        wait_until(lambda: accepted)  # the intake connected and waits for a reply
        started = time.monotonic()
        mq.stop(timeout=0.5)
        assert time.monotonic() - started < 3.0  # the socket timeout is 10 s
    finally:
        server.close()
        for conn in accepted:
            conn.close()
