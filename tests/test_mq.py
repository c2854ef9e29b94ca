from __future__ import annotations

import logging
import threading
from collections import Counter

import pytest

from tests.conftest import wait_until
from tests.helpers import Recorder
from tinymq import (
    MQ,
    Context,
    Msg,
    QueueClosedError,
    QueueExistsError,
    QueueNotFoundError,
    StateError,
    TinyMQError,
)


def noop(ctx: Context, msg: Msg) -> None:
    pass


# -- ids and order ------------------------------------------------------------


def test_ids_are_per_queue_from_zero_and_consecutive() -> None:
    a, b = Recorder(), Recorder()
    mq = MQ()
    mq.register_queue("a", a)
    mq.register_queue("b", b)
    assert [mq.publish("a", i) for i in range(3)] == [0, 1, 2]
    assert [mq.publish("b", i) for i in range(2)] == [0, 1]
    mq.start()
    mq.stop()
    assert a.ids == [0, 1, 2]
    assert b.ids == [0, 1]
    assert {m.queue for _, m in a.seen} == {"a"}
    assert all(m.attempt == 1 for _, m in a.seen)


@pytest.mark.usefixtures("fast_switching")
def test_ids_follow_entry_order_with_many_publishing_threads() -> None:
    rec = Recorder()
    mq = MQ()
    mq.register_queue("q", rec, concurrency=1)
    mq.start()
    issued: list[list[int]] = [[] for _ in range(8)]

    def publish(k: int) -> None:
        for i in range(500):
            issued[k].append(mq.publish("q", (k, i)))

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    mq.stop()
    all_ids = sorted(i for ids in issued for i in ids)
    assert all_ids == list(range(4000))
    # Delivery order is id order, and each publisher's own messages keep their order.
    assert rec.ids == list(range(4000))
    for k in range(8):
        assert [d[1] for d in rec.data if d[0] == k] == list(range(500))  # type: ignore[index]
    for ids in issued:
        assert ids == sorted(ids)


def test_concurrency_one_sees_publish_order() -> None:
    rec = Recorder()
    mq = MQ()
    mq.register_queue("q", rec)
    mq.start()
    for i in range(1000):
        mq.publish("q", i)
    mq.stop()
    assert rec.data == list(range(1000))


def test_each_message_goes_to_exactly_one_consumer_call() -> None:
    rec = Recorder()
    mq = MQ()
    mq.register_queue("q", rec, concurrency=8)
    mq.start()
    for i in range(5000):
        mq.publish("q", i)
    mq.stop()
    assert Counter(rec.ids) == Counter(range(5000))
    workers = {name for name, _ in rec.seen}
    assert workers <= {f"tinymq:q:worker-{i}" for i in range(8)}


def test_data_is_passed_untouched_including_none() -> None:
    payload = {"word": "serendipity"}
    rec = Recorder()
    mq = MQ()
    mq.register_queue("q", rec)
    mq.publish("q", None)
    mq.publish("q", payload)
    mq.start()
    mq.stop()
    assert rec.data[0] is None
    assert rec.data[1] is payload


def test_publish_before_start_is_delivered_however_many() -> None:
    rec = Recorder()
    mq = MQ()
    mq.register_queue("q", rec, concurrency=2)
    for i in range(20_000):  # far more than the `in` channel holds
        mq.publish("q", i)
    mq.start()
    mq.stop()
    assert sorted(rec.data) == list(range(20_000))  # type: ignore[type-var]


def test_consumers_receive_the_start_context() -> None:
    seen: list[Context] = []
    ctx = Context()
    mq = MQ()
    mq.register_queue("q", lambda c, m: seen.append(c))
    mq.start(ctx)
    mq.publish("q", 1)
    mq.stop()
    assert seen == [ctx]


# -- failures -----------------------------------------------------------------


def test_a_failing_consumer_is_logged_and_its_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail_on_odd(ctx: Context, msg: Msg) -> None:
        if msg.id % 2:
            raise ValueError(f"bad word {msg.data}")

    rec = Recorder(fail_on_odd)
    mq = MQ()
    mq.register_queue("enrich", rec, concurrency=1)
    mq.start()
    with caplog.at_level(logging.ERROR, logger="tinymq"):
        for i in range(10):
            mq.publish("enrich", i)
        mq.stop()
    # One worker handled all ten: the failures did not end it.
    assert rec.ids == list(range(10))
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 5
    assert failures[0].getMessage() == "queue 'enrich' worker 0: consumer failed on message 1"
    assert failures[0].exc_info is not None
    assert "bad word 1" in caplog.text


def test_the_injected_logger_is_used(caplog: pytest.LogCaptureFixture) -> None:
    def boom(ctx: Context, msg: Msg) -> None:
        raise RuntimeError("boom")

    mq = MQ(logger=logging.getLogger("myservice.mq"))
    mq.register_queue("q", boom)
    mq.start()
    with caplog.at_level(logging.ERROR):
        mq.publish("q", 1)
        mq.stop()
    assert [r.name for r in caplog.records if r.levelno == logging.ERROR] == ["myservice.mq"]


def test_even_base_exceptions_do_not_end_a_worker() -> None:
    def exit_once(ctx: Context, msg: Msg) -> None:
        if msg.id == 0:
            raise SystemExit(3)

    rec = Recorder(exit_once)
    mq = MQ(logger=logging.getLogger("tinymq.quiet"))
    mq.register_queue("q", rec)
    mq.start()
    mq.publish("q", 0)
    mq.publish("q", 1)
    mq.stop()
    assert rec.ids == [0, 1]


# -- bad input ----------------------------------------------------------------


def test_publish_to_an_unknown_queue_raises_key_error_naming_it() -> None:
    mq = MQ()
    with pytest.raises(QueueNotFoundError) as info:
        mq.publish("nope", 1)
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, TinyMQError)
    assert str(info.value) == "queue 'nope' is not registered"


def test_register_a_taken_name_raises_and_keeps_the_first() -> None:
    first = Recorder()
    mq = MQ()
    mq.register_queue("q", first)
    with pytest.raises(QueueExistsError, match="'q'"):
        mq.register_queue("q", noop)
    mq.start()
    mq.publish("q", 1)
    mq.stop()
    assert first.ids == [0]


@pytest.mark.parametrize(
    ("name", "consumer", "concurrency", "error", "words"),
    [
        ("", noop, 1, ValueError, "name"),
        (3, noop, 1, TypeError, "name"),
        ("q", "not callable", 1, TypeError, "callable"),
        ("q", noop, 0, ValueError, "concurrency"),
        ("q", noop, -2, ValueError, "concurrency"),
        ("q", noop, 1.5, TypeError, "concurrency"),
        ("q", noop, True, TypeError, "concurrency"),
    ],
)
def test_bad_registration_raises_and_registers_nothing(
    name: object, consumer: object, concurrency: object, error: type[Exception], words: str
) -> None:
    mq = MQ()
    with pytest.raises(error, match=words):
        mq.register_queue(name, consumer, concurrency)  # type: ignore[arg-type]
    assert mq.queue_names == []


def test_register_while_running_or_after_stop_raises_state_error() -> None:
    mq = MQ()
    mq.start()
    with pytest.raises(StateError, match=r"'late'.*running"):
        mq.register_queue("late", noop)
    mq.stop()
    with pytest.raises(StateError, match="stopped"):
        mq.register_queue("later", noop)
    assert mq.queue_names == []


def test_start_twice_or_after_stop_raises_state_error() -> None:
    mq = MQ()
    mq.start()
    with pytest.raises(StateError, match="running"):
        mq.start()
    mq.stop()
    with pytest.raises(StateError, match="stopped"):
        mq.start()


def test_start_rejects_a_context_of_the_wrong_type() -> None:
    mq = MQ()
    with pytest.raises(TypeError, match="Context"):
        mq.start(object())  # type: ignore[arg-type]
    assert not mq.running


def test_publish_after_stop_raises_queue_closed() -> None:
    mq = MQ()
    mq.register_queue("q", noop)
    mq.start()
    mq.stop()
    with pytest.raises(QueueClosedError, match="'q'"):
        mq.publish("q", 1)


def test_decorator_registers_and_returns_the_function() -> None:
    mq = MQ()
    seen: list[object] = []

    @mq.consumer("words", concurrency=2)
    def enrich(ctx: Context, msg: Msg) -> None:
        seen.append(msg.data)

    assert mq.queue_names == ["words"]
    assert enrich.__name__ == "enrich"
    with pytest.raises(ValueError, match="concurrency"):
        mq.consumer("other", concurrency=0)
    mq.start()
    mq.publish("words", "hello")
    mq.stop()
    assert seen == ["hello"]


def test_running_and_repr_follow_the_lifecycle() -> None:
    mq = MQ()
    mq.register_queue("q", noop)
    assert not mq.running
    assert repr(mq) == "<MQ new queues=['q']>"
    mq.start()
    assert mq.running
    assert repr(mq) == "<MQ running queues=['q']>"
    mq.stop()
    assert not mq.running
    assert repr(mq) == "<MQ stopped queues=['q']>"


def test_a_sole_consumer_takes_waiting_messages_in_batches_they_stay_pending_and_in_order() -> None:
    started, release, got = threading.Event(), threading.Event(), []

    def consumer(ctx: Context, msg: Msg) -> None:
        got.append(msg.data)
        started.set()
        release.wait(10)

    mq = MQ()
    mq.register_queue("q", consumer, 1)
    for i in range(10):
        mq.publish("q", i)
    mq.start()
    assert started.wait(5)
    # The worker may hold up to nine of them behind its call: they are still pending.
    wait_until(lambda: mq.stats()["q"].pending == 9)
    assert mq.stats()["q"].in_flight == 1
    release.set()
    mq.stop(10)
    assert got == list(range(10))
    assert mq.stats()["q"].pending == 0
