"""Delivery policies on in-memory queues, for thread and async consumers.

Retries with backoff, RetryLater and Reject, dead letters, delayed messages, bounded
queues (max_pending), stats and hooks, and how stop() drains all of them.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

import tinymq.queue
from tests.conftest import wait_until
from tests.policy_helpers import KINDS, CallLog, consumer, gaps, waited_at_least
from tinymq import (
    MQ,
    DeadLetter,
    Msg,
    QueueClosedError,
    QueueFullError,
    QueueNotFoundError,
    QueueStats,
    Reject,
    Retry,
    RetryLater,
)
from tinymq.retry import JITTER


class Boom(Exception):
    """A consumer failure of the tests' own."""


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fail_until(attempt: int, error: type[BaseException] = Boom) -> CallLog:
    """A log whose calls raise ``error`` before ``attempt`` and succeed from it on."""
    return CallLog(lambda msg: error(f"attempt {msg.attempt}") if msg.attempt < attempt else None)


# -- Retry: the backoff itself ------------------------------------------------


def test_retry_delay_is_backoff_times_factor_power_capped_and_jitter_only_adds() -> None:
    rng = random.Random(7)
    plain = Retry(backoff=0.5, factor=2.0, max_backoff=3.0, jitter=False)
    assert [plain.delay(n, rng) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = Retry(backoff=0.5, factor=2.0, max_backoff=3.0, jitter=True)
    for n in range(1, 6):
        base = plain.delay(n, rng)
        seen = [jittered.delay(n, rng) for _ in range(200)]
        assert all(base <= d <= base * (1 + JITTER) for d in seen), "never shorter than asked"
        assert len(set(seen)) > 100, "jitter spreads the waits"


def test_retry_defaults_are_the_documented_ones() -> None:
    assert Retry() == Retry(max_attempts=5, backoff=0.5, factor=2.0, max_backoff=60.0, jitter=True)


def test_retry_delay_of_a_huge_attempt_is_max_backoff_or_zero_without_backoff() -> None:
    rng = random.Random(1)
    assert Retry(backoff=0.1, max_backoff=9.0, jitter=False).delay(5000, rng) == 9.0
    # factor ** 4999 is past the largest float: a zero backoff must stay zero.
    assert Retry(backoff=0.0, max_backoff=9.0, jitter=False).delay(5000, rng) == 0.0


# -- retries through the MQ -----------------------------------------------------


def test_a_failed_call_is_retried_until_it_succeeds_attempts_counting_from_one(
    kind: str,
) -> None:
    log = fail_until(3)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), retry=Retry(backoff=0.001, jitter=False))
    with mq:
        assert mq.publish("q", "x") == 0
    assert [(c.id, c.attempt, c.data) for c in log.calls] == [(0, 1, "x"), (0, 2, "x"), (0, 3, "x")]
    assert mq.dead_letters("q") == []
    stats = mq.stats()["q"]
    assert (stats.published, stats.delivered, stats.succeeded) == (1, 3, 1)
    assert (stats.failed, stats.retried, stats.dead) == (2, 2, 0)
    assert (stats.pending, stats.delayed, stats.in_flight) == (0, 0, 0)


@pytest.mark.parametrize("jitter", [False, True])
def test_backoff_grows_by_factor_up_to_max_backoff_and_is_never_shorter(
    kind: str, jitter: bool
) -> None:
    log = CallLog(lambda msg: Boom("always"))
    retry = Retry(max_attempts=4, backoff=0.05, factor=4.0, max_backoff=0.1, jitter=jitter)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), retry=retry)
    with mq:
        mq.publish("q", "x")
    assert [c.attempt for c in log.calls] == [1, 2, 3, 4]
    asked = [0.05, 0.1, 0.1]  # 0.05 * 4 ** (n - 1), capped at 0.1
    assert waited_at_least(log.calls, asked), gaps(log.calls)
    # The cap holds: uncapped, the third wait would be 0.8 s.
    assert gaps(log.calls)[2] < 0.7, gaps(log.calls)
    [letter] = mq.dead_letters("q")
    assert (letter.id, letter.attempts, letter.reason) == (0, 4, "exhausted")


def test_without_retry_a_failure_is_one_attempt_then_a_dead_letter(kind: str) -> None:
    log = CallLog(lambda msg: Boom(f"no luck with {msg.data}") if msg.data == "bad" else None)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log))
    before = time.time()
    with mq:
        mq.publish("q", "good")
        mq.publish("q", "bad")
    after = time.time()
    assert [(c.id, c.attempt) for c in log.calls] == [(0, 1), (1, 1)]
    [letter] = mq.dead_letters("q")
    assert isinstance(letter, DeadLetter)
    assert (letter.id, letter.data, letter.queue) == (1, "bad", "q")
    assert (letter.attempts, letter.reason) == (1, "exhausted")
    assert letter.error_type == "tests.test_policies.Boom"
    assert letter.error == "no luck with bad"
    assert letter.traceback.startswith("Traceback")
    assert "tests.test_policies.Boom: no luck with bad" in letter.traceback
    assert "log.end(msg, started)" in letter.traceback  # the frame that raised
    assert before <= letter.dead_at <= after
    stats = mq.stats()["q"]
    assert (stats.succeeded, stats.failed, stats.retried, stats.dead) == (1, 1, 0, 1)


def test_retry_later_waits_its_own_delay_not_the_backoff(kind: str) -> None:
    log = CallLog(lambda msg: RetryLater(0.2) if msg.attempt == 1 else None)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), retry=Retry(backoff=30.0, jitter=False))
    with mq:
        mq.publish("q", "x")
    first, second = log.of(0)
    assert second.attempt == 2
    assert second.started >= first.ended + 0.2
    assert second.started - first.ended < 10, "the 30 s backoff was not used"
    assert mq.dead_letters("q") == []


def test_retry_later_past_max_attempts_is_a_dead_letter_exhausted(kind: str) -> None:
    log = CallLog(lambda msg: RetryLater(0.01))
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), retry=Retry(max_attempts=3, backoff=5.0))
    with mq:
        mq.publish("q", "x")
    assert [c.attempt for c in log.calls] == [1, 2, 3]
    assert waited_at_least(log.calls, [0.01, 0.01]), "RetryLater's delay, not less"
    [letter] = mq.dead_letters("q")
    assert (letter.attempts, letter.reason, letter.error_type) == (
        3,
        "exhausted",
        "tinymq.retry.RetryLater",
    )


def test_retry_later_without_retry_policy_is_one_attempt(kind: str) -> None:
    log = CallLog(lambda msg: RetryLater(0.0))
    mq = MQ()
    mq.register_queue("q", consumer(kind, log))
    with mq:
        mq.publish("q", "x")
    assert [c.attempt for c in log.calls] == [1]
    assert [(d.reason, d.attempts) for d in mq.dead_letters("q")] == [("exhausted", 1)]


def test_reject_is_a_dead_letter_at_once_with_attempts_left(kind: str) -> None:
    log = CallLog(lambda msg: Reject("not a word") if msg.attempt == 2 else Boom("flaky"))
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), retry=Retry(max_attempts=5, backoff=0.001))
    with mq:
        mq.publish("q", "x")
    assert [c.attempt for c in log.calls] == [1, 2]
    [letter] = mq.dead_letters("q")
    assert (letter.attempts, letter.reason, letter.error) == (2, "rejected", "not a word")
    assert letter.error_type == "tinymq.retry.Reject"
    assert mq.stats()["q"].retried == 1


def test_a_waiting_retry_holds_neither_the_worker_nor_the_messages_behind_it(kind: str) -> None:
    log = CallLog(lambda msg: RetryLater(1.0) if msg.id == 0 and msg.attempt == 1 else None)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), concurrency=1, retry=Retry(max_attempts=2))
    with mq:
        for i in range(6):
            mq.publish("q", i)
        log.wait_calls(6)  # all but the retry
        fail = log.first(0).ended
        # One worker: had it slept through the second, these would start after it.
        assert all(log.first(i).started < fail + 0.5 for i in range(1, 6))
    retried = log.of(0)[1]
    assert retried.attempt == 2
    assert retried.started >= fail + 1.0
    assert [c.id for c in log.calls] == [0, 1, 2, 3, 4, 5, 0]


def test_retries_of_many_messages_interleave_with_fresh_ones(kind: str) -> None:
    log = fail_until(2)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), concurrency=3, retry=Retry(backoff=0.005))
    with mq:
        for i in range(50):
            mq.publish("q", i)
    assert Counter(c.id for c in log.calls) == Counter({i: 2 for i in range(50)})
    assert all([c.attempt for c in log.of(i)] == [1, 2] for i in range(50))
    stats = mq.stats()["q"]
    assert (stats.delivered, stats.succeeded, stats.failed, stats.retried) == (100, 50, 50, 50)


# -- stop drains retries and delayed messages --------------------------------


def test_stop_waits_for_the_retry_of_a_call_in_flight(kind: str) -> None:
    go = threading.Event()
    log = CallLog(
        lambda msg: Boom("first") if msg.attempt == 1 else None,
        hold=lambda msg: go if msg.attempt == 1 else None,
    )
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), retry=Retry(backoff=0.1, jitter=False))
    mq.start()
    mq.publish("q", "x")
    log.wait_started(1)
    stopped = threading.Event()

    def stop() -> None:
        mq.stop()
        stopped.set()

    stopper = threading.Thread(target=stop)
    stopper.start()
    wait_until(lambda: not mq.running)  # stop() has closed the queues and waits
    assert not stopped.is_set()
    go.set()  # the call fails now, after stop() began
    assert stopped.wait(5)
    stopper.join(5)
    assert [c.attempt for c in log.calls] == [1, 2], "the retry ran before stop() returned"
    assert log.calls[1].started >= log.calls[0].ended + 0.1


def test_stop_timeout_raises_while_a_retry_waits_and_a_second_stop_drains_it(kind: str) -> None:
    log = CallLog(lambda msg: RetryLater(0.5) if msg.attempt == 1 else None)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), retry=Retry(max_attempts=2))
    mq.start()
    mq.publish("q", "x")
    log.wait_calls(1)
    with pytest.raises(TimeoutError, match="queue 'q'"):
        mq.stop(timeout=0.05)
    assert len(log.calls) == 1
    mq.stop()
    assert [c.attempt for c in log.calls] == [1, 2]


def test_stop_waits_for_delayed_messages_at_their_due_time(kind: str) -> None:
    log = CallLog()
    mq = MQ()
    mq.register_queue("q", consumer(kind, log))
    mq.start()
    published = time.monotonic()
    mq.publish("q", "later", delay=0.3)
    mq.stop()
    [call] = log.calls
    assert call.started >= published + 0.3


def test_stop_timeout_raises_while_a_delayed_message_waits(kind: str) -> None:
    log = CallLog()
    mq = MQ()
    mq.register_queue("q", consumer(kind, log))
    mq.start()
    mq.publish("q", "later", delay=0.4)
    with pytest.raises(TimeoutError):
        mq.stop(timeout=0.05)
    assert log.calls == []
    mq.stop()
    assert [c.data for c in log.calls] == ["later"]


# -- delayed messages -----------------------------------------------------------


def test_delayed_messages_come_out_by_due_time_never_early_and_hold_nothing_back(
    kind: str,
) -> None:
    log = CallLog()
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), concurrency=1)
    published: dict[int, float] = {}
    plan = [("a", 0.6), ("b", 0.2), ("now-1", None), ("c", 0.4), ("now-2", None)]
    with mq:
        for data, delay in plan:
            t = time.monotonic()
            published[mq.publish("q", data, delay=delay)] = t + (delay or 0.0)
    assert [c.data for c in log.calls] == ["now-1", "now-2", "b", "c", "a"]
    for call in log.calls:
        assert call.started >= published[call.id], f"{call.data} came early"
    assert log.first(4).started < published[1], "the ready message waited for a delayed one"


def test_a_delay_published_before_start_counts_from_the_publish(kind: str) -> None:
    log = CallLog()
    mq = MQ()
    mq.register_queue("q", consumer(kind, log))
    published = time.monotonic()
    mq.publish("q", "later", delay=0.2)
    mq.publish("q", "now")
    with mq:
        log.wait_calls(2)
    assert [c.data for c in log.calls] == ["now", "later"]
    assert log.calls[1].started >= published + 0.2
    assert log.calls[1].attempt == 1


def test_apublish_with_a_delay_is_delivered_no_earlier(kind: str) -> None:
    log = CallLog()
    mq = MQ()
    mq.register_queue("q", consumer(kind, log))

    async def main() -> float:
        await mq.astart()
        published = time.monotonic()
        assert await mq.apublish("q", "later", delay=0.2) == 0
        assert await mq.apublish("q", "now") == 1
        await mq.astop()
        return published

    published = asyncio.run(main())
    assert [c.data for c in log.calls] == ["now", "later"]
    assert log.calls[1].started >= published + 0.2


def test_delay_zero_is_delivered_like_a_ready_message(kind: str) -> None:
    log = CallLog()
    mq = MQ()
    mq.register_queue("q", consumer(kind, log))
    with mq:
        mq.publish("q", "x", delay=0)
    assert [c.data for c in log.calls] == ["x"]


CENTURIES = """
import threading
from tinymq import MQ

done = threading.Event()
mq = MQ(exit_timeout=0.2)
mq.register_queue("q", lambda ctx, msg: done.set() if msg.data == "now" else None)
mq.start()
mq.publish("q", "never", delay=1e12)
mq.publish("q", "now")
print("consumed" if done.wait(5) else "stuck", mq.stats()["q"].delayed, flush=True)
"""


def test_a_delay_of_centuries_leaves_the_queue_working() -> None:
    # Such a due time once overflowed the forwarder's sleep and killed it. It runs in a
    # child, whose exit gives up on the message: nothing here could drain it.
    result = subprocess.run(
        [sys.executable, "-c", CENTURIES], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["consumed", "1"], result.stderr
    assert "OverflowError" not in result.stderr
    assert "interpreter exit: MQ not drained" in result.stderr  # the delayed one, said so


# -- bounded queues (max_pending) ----------------------------------------------


def outcome_in_thread(fn: Callable[[], object], timeout: float = 5.0) -> object:
    """Run ``fn`` in a thread; return its result or exception, failing if it blocks."""
    box: list[object] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"call still blocked after {timeout} s")
    return box[0]


def test_publish_blocks_while_the_queue_is_full_and_resumes_when_a_consumer_takes_one(
    kind: str,
) -> None:
    release = {i: threading.Event() for i in range(4)}
    log = CallLog(hold=lambda msg: release[msg.id])
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), max_pending=2)
    mq.start()
    mq.publish("q", 0)
    log.wait_started(1)  # taken by the consumer: it no longer counts
    mq.publish("q", 1, timeout=0)
    mq.publish("q", 2, timeout=0)  # two pending: full
    released, returned = threading.Event(), threading.Event()
    seen: list[tuple[int, bool]] = []

    def publish() -> None:
        seen.append((mq.publish("q", 3), released.is_set()))
        returned.set()

    producer = threading.Thread(target=publish)
    producer.start()
    assert not returned.wait(0.2), "publish returned while the queue was full"
    released.set()
    release[0].set()  # the consumer ends 0 and takes 1: a place comes free
    assert returned.wait(5)
    producer.join(5)
    assert seen == [(3, True)], "the publish returned only after the consumer took one"
    for event in release.values():
        event.set()
    mq.stop()
    assert [c.id for c in log.calls] == [0, 1, 2, 3]


def test_a_full_queue_raises_queue_full_error_at_once_with_zero_and_after_a_timeout(
    kind: str,
) -> None:
    go = threading.Event()
    log = CallLog(hold=lambda msg: go)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), max_pending=1)
    mq.start()
    mq.publish("q", 0)
    log.wait_started(1)
    mq.publish("q", 1)
    began = time.monotonic()
    with pytest.raises(QueueFullError) as exc_info:
        mq.publish("q", "x", timeout=0)
    assert time.monotonic() - began < 0.5
    assert (exc_info.value.queue, exc_info.value.limit) == ("q", 1)
    assert str(exc_info.value).startswith("queue 'q' is full: 1 messages pending (max_pending)")
    began = time.monotonic()
    with pytest.raises(QueueFullError):
        mq.publish("q", "x", timeout=0.2)
    assert time.monotonic() - began >= 0.2
    with pytest.raises(QueueFullError):
        asyncio.run(mq.apublish("q", "x", timeout=0))
    assert mq.stats()["q"].published == 2, "a refused publish is not counted"
    go.set()
    assert mq.publish("q", 2, timeout=5) == 2, "and burns no id"
    mq.stop()
    assert [c.id for c in log.calls] == [0, 1, 2]


@pytest.mark.usefixtures("fast_switching")
def test_many_producers_on_a_bounded_queue_lose_and_duplicate_nothing(kind: str) -> None:
    limit, concurrency, producers, each = 5, 2, 6, 150
    go = threading.Event()
    too_many: list[tuple[int, int]] = []
    mq = MQ()

    def hold(msg: Msg) -> threading.Event:
        # Read published first: the count of calls begun only grows meanwhile.
        published = mq.stats()["q"].published
        begun = len(log.started)
        # Each other consumer may have taken a message it has not begun yet.
        if published > begun + limit + concurrency - 1:
            too_many.append((published, begun))
        return go

    log = CallLog(hold=hold)
    mq.register_queue("q", consumer(kind, log), concurrency=concurrency, max_pending=limit)
    mq.start()
    issued: list[list[int]] = [[] for _ in range(producers)]

    def produce(k: int) -> None:
        for i in range(each):
            issued[k].append(mq.publish("q", [k, i]))

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    wait_until(lambda: mq.stats()["q"].published >= limit + concurrency)
    assert not go.wait(0.1)
    assert mq.stats()["q"].published == limit + concurrency, "publishers ran past the bound"
    go.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    mq.stop()
    assert too_many == []
    total = producers * each
    assert sorted(i for ids in issued for i in ids) == list(range(total))
    assert Counter(c.id for c in log.calls) == Counter(range(total)), "each once"
    assert Counter(tuple(c.data) for c in log.calls) == Counter(  # type: ignore[arg-type]
        (k, i) for k in range(producers) for i in range(each)
    )


def test_retries_neither_take_nor_free_places_in_a_bounded_queue(kind: str) -> None:
    go = threading.Event()
    log = CallLog(
        lambda msg: RetryLater(0.2) if msg.id == 0 and msg.attempt == 1 else None,
        hold=lambda msg: go if msg.id >= 1 else None,
    )
    mq = MQ()
    mq.register_queue(
        "q", consumer(kind, log), concurrency=2, max_pending=1, retry=Retry(max_attempts=2)
    )
    mq.start()
    mq.publish("q", 0)
    log.wait_calls(1)  # failed: its retry waits 0.2 s
    mq.publish("q", 1, timeout=0)  # room: the waiting retry holds no place
    log.wait_calls(2)  # the retry ran, beside 1 which is held
    mq.publish("q", 2, timeout=0)
    log.wait_started(4)  # 0, 1, 0 again, 2: both consumers are held
    mq.publish("q", 3, timeout=0)  # pending: the queue is full again
    # Had the retry freed a place again when it was taken, there would be room here.
    with pytest.raises(QueueFullError):
        mq.publish("q", 4, timeout=0)
    go.set()
    mq.stop()
    assert sorted((c.id, c.attempt) for c in log.calls) == [(0, 1), (0, 2), (1, 1), (2, 1), (3, 1)]


def test_a_publisher_waiting_for_room_gets_queue_closed_error_when_the_mq_stops(
    kind: str,
) -> None:
    go = threading.Event()
    log = CallLog(hold=lambda msg: go)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), max_pending=1)
    mq.start()
    mq.publish("q", 0)
    log.wait_started(1)
    mq.publish("q", 1)
    refused = threading.Event()

    def publish() -> None:
        with pytest.raises(QueueClosedError):
            mq.publish("q", 2)
        refused.set()

    producer = threading.Thread(target=publish)
    producer.start()
    assert not refused.wait(0.1)  # it waits for room
    stopper = threading.Thread(target=mq.stop)
    stopper.start()
    assert refused.wait(5), "stop() did not wake the waiting publisher"
    assert not go.is_set()  # woken by the close, not by a place coming free
    go.set()
    stopper.join(5)
    producer.join(5)
    assert not stopper.is_alive()
    assert [c.id for c in log.calls] == [0, 1]


def test_publish_to_a_full_queue_after_stop_raises_queue_closed_error_at_once() -> None:
    mq = MQ(logger=logging.getLogger("tinymq.test.quiet"))
    mq.register_queue("q", consumer("thread", CallLog()), max_pending=1)
    mq.publish("q", 0)
    mq.stop()  # never started: the message stays, and so does its place
    assert isinstance(outcome_in_thread(lambda: mq.publish("q", 1)), QueueClosedError)
    assert isinstance(outcome_in_thread(lambda: mq.publish("q", 1, timeout=0)), QueueClosedError)
    closed = outcome_in_thread(lambda: asyncio.run(mq.apublish("q", 1)))
    assert isinstance(closed, QueueClosedError)


def test_apublish_waits_for_room_off_the_event_loop() -> None:
    go = threading.Event()
    log = CallLog(hold=lambda msg: go)
    mq = MQ()
    mq.register_queue("q", consumer("thread", log), max_pending=1)
    mq.start()

    async def main() -> None:
        assert await mq.apublish("q", 0) == 0
        await asyncio.to_thread(log.wait_started, 1)
        assert await mq.apublish("q", 1, timeout=0) == 1
        blocked = asyncio.ensure_future(mq.apublish("q", 2))
        ticks = 0
        for _ in range(20):  # the loop runs on while the publish waits
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 20 and not blocked.done()
        go.set()
        assert await asyncio.wait_for(blocked, 5) == 2

    asyncio.run(main())
    mq.stop()
    assert [c.id for c in log.calls] == [0, 1, 2]


# -- bad input: refused at the call, nothing changed ---------------------------


@pytest.mark.parametrize("delay", [-1, -0.001, float("nan"), float("inf"), float("-inf")])
def test_a_bad_delay_is_a_value_error_that_burns_no_id_and_takes_no_place(delay: float) -> None:
    log = CallLog()
    mq = MQ()
    mq.register_queue("q", consumer("thread", log), max_pending=1)
    with pytest.raises(ValueError, match="delay"):
        mq.publish("q", "x", delay=delay)
    with pytest.raises(ValueError, match="delay"):
        asyncio.run(mq.apublish("q", "x", delay=delay))
    with pytest.raises(TypeError, match="delay"):
        mq.publish("q", "x", delay="1")  # type: ignore[arg-type]
    assert mq.stats()["q"].published == 0
    assert mq.publish("q", "ok", timeout=0) == 0
    with mq:
        pass
    assert [(c.id, c.data) for c in log.calls] == [(0, "ok")]


@pytest.mark.parametrize("timeout", [-1, -0.001, float("nan"), float("-inf")])
def test_a_bad_timeout_is_a_value_error_even_on_a_full_queue(timeout: float) -> None:
    log = CallLog()
    mq = MQ()
    mq.register_queue("q", consumer("thread", log), max_pending=1)
    mq.publish("q", 0)  # full
    with pytest.raises(ValueError, match="timeout"):
        mq.publish("q", "x", timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        asyncio.run(mq.apublish("q", "x", timeout=timeout))
    with pytest.raises(ValueError, match="timeout"):
        mq.stop(timeout=timeout)
    assert mq.stats()["q"].published == 1
    with mq:
        pass
    assert [c.id for c in log.calls] == [0]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_attempts": 0}, ValueError),
        ({"max_attempts": -3}, ValueError),
        ({"max_attempts": 1.5}, TypeError),
        ({"max_attempts": True}, TypeError),
        ({"backoff": -0.1}, ValueError),
        ({"backoff": float("nan")}, ValueError),
        ({"backoff": "1"}, TypeError),
        ({"factor": 0.5}, ValueError),
        ({"max_backoff": -1}, ValueError),
        ({"max_backoff": float("inf")}, ValueError),
    ],
)
def test_a_bad_retry_policy_is_refused_when_built(options: dict[str, object], error: type) -> None:
    with pytest.raises(error, match=next(iter(options))):
        Retry(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf")])
def test_retry_later_with_a_bad_delay_is_refused(delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        RetryLater(delay)


@pytest.mark.parametrize(
    ("options", "error", "what"),
    [
        ({"max_pending": 0}, ValueError, "max_pending"),
        ({"max_pending": -1}, ValueError, "max_pending"),
        ({"max_pending": 2.5}, TypeError, "max_pending"),
        ({"max_pending": True}, TypeError, "max_pending"),
        ({"retry": 3}, TypeError, "retry"),
        ({"on_failure": "log"}, TypeError, "on_failure"),
        ({"on_dead": 1}, TypeError, "on_dead"),
    ],
)
def test_bad_policy_options_are_refused_and_register_nothing(
    options: dict[str, object], error: type, what: str
) -> None:
    mq = MQ()
    with pytest.raises(error, match=what):
        mq.register_queue("q", consumer("thread", CallLog()), **options)  # type: ignore[arg-type]
    with pytest.raises(error, match=what):
        mq.consumer("q", **options)  # type: ignore[arg-type]
    assert mq.queue_names == []
    mq.register_queue("q", consumer("thread", CallLog()))  # the name is still free
    mq.stop()


def test_bad_ids_for_requeue_and_purge_are_type_errors_that_change_nothing() -> None:
    log = CallLog(lambda msg: Reject("no"))
    mq = MQ()
    mq.register_queue("q", consumer("thread", log))
    with mq:
        mq.publish("q", "x")
    for bad in ["0", b"0", 0, [0.0], [True]]:
        with pytest.raises(TypeError, match="ids"):
            mq.purge_dead("q", bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="ids"):
            mq.requeue_dead("q", bad)  # type: ignore[arg-type]
    assert [d.id for d in mq.dead_letters("q")] == [0]


def test_dead_letter_calls_on_an_unknown_queue_raise_queue_not_found() -> None:
    mq = MQ()
    for call in (mq.dead_letters, mq.requeue_dead, mq.purge_dead):
        with pytest.raises(QueueNotFoundError):
            call("nope")


# -- dead letters ---------------------------------------------------------------


def test_dead_letters_are_oldest_first_and_requeue_publishes_them_again_with_new_ids(
    kind: str,
) -> None:
    healed = threading.Event()
    log = CallLog(
        lambda msg: None if healed.is_set() or str(msg.data).startswith("ok") else Reject("bad")
    )
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), retry=Retry(max_attempts=3))
    mq.start()
    for data in ["bad-0", "ok-1", "bad-2", "bad-3", "ok-4"]:
        mq.publish("q", data)
    log.wait_calls(5)
    dead = mq.dead_letters("q")
    assert [(d.id, d.data) for d in dead] == [(0, "bad-0"), (2, "bad-2"), (3, "bad-3")]
    assert [d.dead_at for d in dead] == sorted(d.dead_at for d in dead)
    healed.set()
    assert mq.requeue_dead("q", ids=[2]) == 1
    log.wait_calls(6)
    assert (log.calls[5].id, log.calls[5].data, log.calls[5].attempt) == (5, "bad-2", 1)
    assert [d.id for d in mq.dead_letters("q")] == [0, 3]
    assert mq.requeue_dead("q", ids=[42, 1]) == 0  # not dead letters: nothing to do
    assert mq.requeue_dead("q") == 2
    log.wait_calls(8)
    assert [(c.id, c.data, c.attempt) for c in log.calls[6:]] == [(6, "bad-0", 1), (7, "bad-3", 1)]
    assert mq.dead_letters("q") == []
    mq.stop()
    assert mq.stats()["q"].published == 8


def test_purge_dead_drops_the_chosen_letters_or_all_and_counts_them(kind: str) -> None:
    log = CallLog(lambda msg: Reject("no"))
    mq = MQ()
    mq.register_queue("q", consumer(kind, log))
    with mq:
        for i in range(4):
            mq.publish("q", i)
    assert mq.purge_dead("q", ids=[1, 3, 99]) == 2
    assert [d.id for d in mq.dead_letters("q")] == [0, 2]
    assert mq.purge_dead("q") == 2
    assert mq.dead_letters("q") == []
    assert mq.purge_dead("q") == 0
    assert len(log.calls) == 4


def test_requeue_after_stop_raises_queue_closed_error_and_keeps_the_letters() -> None:
    log = CallLog(lambda msg: Reject("no"))
    mq = MQ()
    mq.register_queue("q", consumer("thread", log))
    with mq:
        mq.publish("q", "x")
    with pytest.raises(QueueClosedError):
        mq.requeue_dead("q")
    assert [d.id for d in mq.dead_letters("q")] == [0]


# -- stats ----------------------------------------------------------------------


def test_stats_snapshot_counts_pending_delayed_and_in_flight(kind: str) -> None:
    go = threading.Event()
    log = CallLog(hold=lambda msg: go if msg.id == 0 else None)
    mq = MQ()
    mq.register_queue("q", consumer(kind, log), concurrency=1)
    assert mq.stats() == {"q": QueueStats(0, 0, 0, 0, 0, 0, 0, 0, 0, None, None)}
    mq.start()
    mq.publish("q", 0)
    log.wait_started(1)
    mq.publish("q", 1)
    mq.publish("q", 2)
    mq.publish("q", 3, delay=0.5)
    stats = mq.stats()["q"]
    assert (stats.published, stats.delivered, stats.succeeded, stats.failed) == (4, 1, 0, 0)
    assert (stats.pending, stats.delayed, stats.in_flight) == (2, 1, 1)
    assert stats.latency_p50 is None and stats.latency_p99 is None  # no call has ended
    go.set()
    mq.stop()
    stats = mq.stats()["q"]
    assert (stats.published, stats.delivered, stats.succeeded) == (4, 4, 4)
    assert (stats.pending, stats.delayed, stats.in_flight) == (0, 0, 0)
    assert stats.latency_p50 is not None and stats.latency_p99 is not None
    assert 0 <= stats.latency_p50 <= stats.latency_p99
    held = log.first(0).ended - log.first(0).started
    assert stats.latency_p99 >= held - 1e-3  # the held call is the slowest


def test_stats_are_per_queue() -> None:
    mq = MQ()
    mq.register_queue("a", consumer("thread", CallLog(lambda msg: Boom("x"))))
    mq.register_queue("b", consumer("async", CallLog()))
    with mq:
        mq.publish("a", 1)
        mq.publish("b", 1)
        mq.publish("b", 2)
    stats = mq.stats()
    assert list(stats) == ["a", "b"]
    assert (stats["a"].published, stats["a"].failed, stats["a"].dead) == (1, 1, 1)
    assert (stats["b"].published, stats["b"].succeeded, stats["b"].dead) == (2, 2, 0)


# -- hooks ------------------------------------------------------------------------


def test_on_failure_sees_each_failed_call_and_on_dead_the_letter_in_the_consumers_thread(
    kind: str,
) -> None:
    failures: list[tuple[Msg, BaseException, str]] = []
    deaths: list[tuple[DeadLetter, str]] = []
    log = CallLog(lambda msg: Boom(f"attempt {msg.attempt}") if msg.data == "bad" else None)
    mq = MQ()
    mq.register_queue(
        "q",
        consumer(kind, log),
        retry=Retry(max_attempts=3, backoff=0.001),
        on_failure=lambda msg, exc: failures.append((msg, exc, threading.current_thread().name)),
        on_dead=lambda letter: deaths.append((letter, threading.current_thread().name)),
    )
    with mq:
        mq.publish("q", "bad")
        mq.publish("q", "good")
    assert [(m.id, m.attempt, m.data) for m, _, _ in failures] == [
        (0, 1, "bad"),
        (0, 2, "bad"),
        (0, 3, "bad"),
    ]
    raised = [c.raised for c in log.of(0)]
    assert all(exc is r for (_, exc, _), r in zip(failures, raised, strict=True))
    [(letter, where)] = deaths
    assert mq.dead_letters("q") == [letter]
    assert (letter.id, letter.attempts, letter.error) == (0, 3, "attempt 3")
    consumer_threads = {c.thread for c in log.calls}
    assert {t for _, _, t in failures} | {where} <= consumer_threads
    if kind == "thread":
        assert all(t.startswith("tinymq:q:worker-") for t in consumer_threads)


@pytest.mark.parametrize("error", [RuntimeError, SystemExit])
def test_a_raising_hook_is_logged_and_goes_no_further(
    kind: str, error: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    def hook(*args: object) -> None:
        raise error("hook bug")

    log = CallLog(lambda msg: Boom("x") if msg.data == "bad" else None)
    mq = MQ()
    mq.register_queue(
        "q",
        consumer(kind, log),
        retry=Retry(max_attempts=2, backoff=0.001),
        on_failure=hook,
        on_dead=hook,
    )
    with caplog.at_level(logging.ERROR, logger="tinymq"):
        mq.start()
        mq.publish("q", "bad")
        mq.publish("q", "good")
        mq.stop(timeout=10)  # a worker killed by its hook would never drain
    assert sorted((c.data, c.attempt) for c in log.calls) == [("bad", 1), ("bad", 2), ("good", 1)]
    assert [(d.id, d.attempts) for d in mq.dead_letters("q")] == [(0, 2)]
    stats = mq.stats()["q"]
    assert (stats.succeeded, stats.failed, stats.retried, stats.dead) == (1, 2, 1, 1)
    hooks = [r for r in caplog.records if "hook failed" in r.getMessage()]
    assert sorted(r.getMessage() for r in hooks) == [
        "queue 'q': on_dead hook failed on message 0",
        "queue 'q': on_failure hook failed on message 0",
        "queue 'q': on_failure hook failed on message 0",
    ]
    assert all(r.exc_info is not None and r.exc_info[0] is error for r in hooks)


# -- async consumers on the caller's loop ----------------------------------------


def test_on_the_callers_loop_retries_delays_and_dead_letters_work_alike() -> None:
    log = CallLog(
        lambda msg: (
            Boom("x") if msg.data == "bad" or (msg.data == "flaky" and msg.attempt == 1) else None
        )
    )
    mq = MQ()
    mq.register_queue("q", consumer("async", log), retry=Retry(max_attempts=2, backoff=0.05))

    async def main() -> float:
        await mq.astart()
        published = time.monotonic()
        await mq.apublish("q", "flaky")
        await mq.apublish("q", "bad")
        await mq.apublish("q", "later", delay=0.1)
        await mq.astop()
        return published

    published = asyncio.run(main())
    assert {c.thread for c in log.calls} == {"MainThread"}
    assert [c.attempt for c in log.of(0)] == [1, 2]
    assert waited_at_least(log.of(0), [0.05])
    assert [(d.id, d.attempts, d.reason) for d in mq.dead_letters("q")] == [(1, 2, "exhausted")]
    assert log.first(2).started >= published + 0.1


def test_a_retry_posted_while_the_forwarder_checks_for_the_end_is_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A consumer posts its retry, then counts its call finished. The closing forwarder
    # must not see "no retry posted" before that and "every call finished" after it.
    go, started, counting, finished = (threading.Event() for _ in range(4))
    calls: list[tuple[int, int]] = []

    def consume(ctx: object, msg: Msg) -> None:
        calls.append((msg.id, msg.attempt))
        if msg.attempt == 1:
            started.set()
            assert go.wait(10)
            raise RuntimeError("fails once")

    mq = MQ()
    mq.register_queue("q", consume, retry=Retry(max_attempts=3, backoff=0.0, jitter=False))
    queue = mq._queues["q"].queue
    real_finish = queue.finish

    def finish(slot: int = 0) -> None:
        real_finish(slot)
        finished.set()

    monkeypatch.setattr(queue, "finish", finish)
    armed = threading.Event()

    def paused_sum(items: object) -> int:  # the forwarder's count of finished calls
        if armed.is_set() and threading.current_thread().name == "tinymq:q:forwarder":
            armed.clear()
            counting.set()
            assert finished.wait(10), "the consumer never finished"
        return builtins.sum(items)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(tinymq.queue, "sum", paused_sum, raising=False)
    mq.start()
    mq.publish("q", "x")
    assert started.wait(10)
    armed.set()
    stopper = threading.Thread(target=mq.stop, kwargs={"timeout": 10})
    stopper.start()
    assert counting.wait(10), "the forwarder never checked for the end"
    go.set()  # the call fails: the retry is posted, then the call counted finished
    stopper.join(15)
    assert not stopper.is_alive()
    assert calls == [(0, 1), (0, 2)], "the retry was dropped by the stop"


def test_concurrent_requeues_publish_each_dead_letter_once() -> None:
    release, blocking = threading.Event(), threading.Event()
    calls: list[tuple[int, object]] = []

    def consume(ctx: object, msg: Msg) -> None:
        calls.append((msg.id, msg.data))
        if msg.data == "block":
            blocking.set()
            assert release.wait(10)
        elif msg.data == "bad" and msg.id == 0:
            raise Reject("first time")

    mq = MQ()
    mq.register_queue("q", consume, max_pending=1)
    dead = mq._queues["q"].delivery.dead
    real_all, listed, lists = dead.all, threading.Barrier(2), [0]

    def all_letters() -> list[DeadLetter]:  # lets both requeues list before either publishes
        letters = real_all()
        if threading.current_thread().name.startswith("requeue"):
            lists[0] += 1
            with contextlib.suppress(threading.BrokenBarrierError):
                listed.wait(0.5)  # requeues taking turns never meet here: it breaks
        return letters

    dead.all = all_letters  # type: ignore[method-assign]
    with mq:
        mq.publish("q", "bad")
        wait_until(lambda: mq.dead_letters("q"))
        mq.publish("q", "block")
        assert blocking.wait(10)
        mq.publish("q", "filler")  # the bounded queue is full: a requeue's publish waits
        results: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(mq.requeue_dead("q")), name=f"requeue-{i}"
            )
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: lists[0] == 2 or listed.broken)
        release.set()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
    assert sorted(results) == [0, 1]
    assert [data for _, data in calls].count("bad") == 2, calls  # the first try and one requeue


def test_pending_in_stats_does_not_depend_on_delayed_read_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # delayed changes between two reads while publishers post delayed messages: pending
    # must not be computed as the difference of two reads of it.
    mq = MQ()
    mq.register_queue("q", lambda ctx, msg: None)
    reads = iter([0, 50, 50, 50])
    monkeypatch.setattr(tinymq.queue.Queue, "delayed", property(lambda self: next(reads)))
    stats = mq.stats()["q"]
    assert stats.pending == 0
    mq.stop()
