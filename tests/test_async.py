"""Async consumers and publishers: the core's guarantees on the asyncio side."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import tinymq_threads, wait_until
from tinymq import MQ, Context, Msg, QueueClosedError, StateError
from tinymq.store import Wait

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def no_asyncio_complaints(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail on "Task was destroyed but it is pending" and other loop errors."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    yield
    complaints = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not complaints


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the loop until ``predicate()``; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.001)


class AsyncRecorder:
    """An async consumer recording messages; may await ``pause`` seconds first."""

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause
        self.seen: list[Msg] = []  # appended on the loop thread only
        self.threads: set[str] = set()

    async def __call__(self, ctx: Context, msg: Msg) -> None:
        if self.pause:
            await asyncio.sleep(self.pause)
        self.threads.add(threading.current_thread().name)
        self.seen.append(msg)

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.seen]


def test_astart_runs_async_consumers_on_the_callers_loop_in_order() -> None:
    rec = AsyncRecorder()

    async def main() -> None:
        mq = MQ()
        mq.register_queue("q", rec)
        await mq.astart()
        for i in range(500):
            assert await mq.apublish("q", i) == i
        await mq.astop()

    asyncio.run(main())
    assert rec.ids == list(range(500))
    assert rec.threads == {"MainThread"}
    assert not tinymq_threads()


def test_start_runs_async_consumers_on_a_loop_thread_the_mq_owns() -> None:
    rec = AsyncRecorder()
    mq = MQ()
    mq.register_queue("q", rec, concurrency=4)
    for i in range(100):
        mq.publish("q", i)  # before start
    mq.start()
    for i in range(100, 300):
        mq.publish("q", i)
    mq.stop()
    assert Counter(rec.ids) == Counter(range(300))
    assert rec.threads == {"tinymq:loop"}
    assert not tinymq_threads()


def test_sync_and_async_consumers_mix_on_one_mq_and_async_with_drains() -> None:
    threaded: list[int] = []
    rec = AsyncRecorder()

    async def main() -> None:
        mq = MQ()
        mq.register_queue("t", lambda ctx, msg: threaded.append(msg.id))
        mq.register_queue("a", rec, concurrency=3)
        async with mq:
            for i in range(200):
                await mq.apublish("a", i)
                mq.publish("t", i)

    asyncio.run(main())
    assert sorted(rec.ids) == list(range(200))
    assert threaded == list(range(200))


def test_io_bound_async_consumers_overlap_on_one_thread() -> None:
    rec = AsyncRecorder(pause=0.05)

    async def main() -> None:
        mq = MQ()
        mq.register_queue("llm", rec, concurrency=100)
        await mq.astart()
        for i in range(1000):
            await mq.apublish("llm", i)
        await mq.astop(timeout=20)

    asyncio.run(main())
    # 1,000 awaits of 50 ms would take 50 s one at a time; they overlapped.
    assert Counter(rec.ids) == Counter(range(1000))
    assert rec.threads == {"MainThread"}


def test_an_async_consumer_that_raises_is_logged_and_its_task_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []

    async def flaky(ctx: Context, msg: Msg) -> None:
        seen.append(msg.id)
        if msg.id % 2:
            raise ValueError(f"bad {msg.id}")

    async def main() -> None:
        mq = MQ()
        mq.register_queue("q", flaky)
        async with mq:
            for i in range(6):
                await mq.apublish("q", i)

    with caplog.at_level(logging.ERROR, logger="tinymq"):
        asyncio.run(main())
    assert seen == list(range(6))
    failures = [r.getMessage() for r in caplog.records if r.name == "tinymq"]
    assert failures == [f"queue 'q' task 0: consumer failed on message {i}" for i in (1, 3, 5)]


def test_stop_waits_for_consumers_mid_await_and_cancels_nothing() -> None:
    started = asyncio.Event()
    finished: list[int] = []

    async def slow(ctx: Context, msg: Msg) -> None:
        started.set()
        await asyncio.sleep(0.05)
        finished.append(msg.id)

    async def main() -> None:
        mq = MQ()
        mq.register_queue("q", slow, concurrency=2)
        await mq.astart()
        for i in range(10):
            await mq.apublish("q", i)
        await asyncio.wait_for(started.wait(), 5)
        await mq.astop()
        with pytest.raises(QueueClosedError):
            await mq.apublish("q", "late")

    asyncio.run(main())
    assert sorted(finished) == list(range(10))


class Gated:
    """An async consumer that records each message once ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()  # bound to the loop of its first wait
        self.done: list[int] = []

    async def __call__(self, ctx: Context, msg: Msg) -> None:
        await self.gate.wait()
        self.done.append(msg.id)


def test_astop_timeout_raises_counts_what_is_left_and_a_second_astop_drains() -> None:
    gated = Gated()

    async def main() -> None:
        mq = MQ()
        mq.register_queue("slow", gated)
        await mq.astart()
        for i in range(3):
            await mq.apublish("slow", i)
        with pytest.raises(TimeoutError, match=r"queue 'slow': 2 waiting, 1 in consumer calls"):
            await mq.astop(timeout=0.05)
        gated.gate.set()
        await mq.astop()

    asyncio.run(main())
    assert gated.done == [0, 1, 2]


def test_a_sole_task_counts_the_rest_of_its_batch_as_waiting_and_runs_it_in_order() -> None:
    gated = Gated()

    async def main() -> None:
        mq = MQ()
        mq.register_queue("slow", gated)
        for i in range(10):  # before start: the forwarder hands them over as one batch
            mq.publish("slow", i)
        await mq.astart()
        await until(lambda: mq.stats()["slow"].in_flight == 1)
        stats = mq.stats()["slow"]
        assert (stats.pending, stats.in_flight) == (9, 1)
        with pytest.raises(TimeoutError, match=r"queue 'slow': 9 waiting, 1 in consumer calls"):
            await mq.astop(timeout=0.05)
        gated.gate.set()
        await mq.astop()

    asyncio.run(main())
    assert gated.done == list(range(10))


def test_cancelling_the_context_is_seen_by_async_consumers() -> None:
    ctx = Context()
    woke: list[bool] = []

    waiting = asyncio.Event()

    async def waits(c: Context, msg: Msg) -> None:
        wait = asyncio.ensure_future(c.wait_async(30))
        await asyncio.sleep(0)  # wait_async is now parked on the cancel callback
        waiting.set()
        woke.append(await wait)

    async def main() -> None:
        mq = MQ()
        mq.register_queue("q", waits)
        await mq.astart(ctx)
        await mq.apublish("q", 1)
        await asyncio.wait_for(waiting.wait(), 5)
        assert not ctx.cancelled
        threading.Thread(target=ctx.cancel).start()  # from another thread, as a timer would
        await mq.astop(timeout=10)
        assert not mq.running

    asyncio.run(main())
    assert woke == [True]


def test_wait_async_times_out_without_cancelling() -> None:
    async def main() -> bool:
        return await Context().wait_async(0.01)

    assert asyncio.run(main()) is False


def test_sync_stop_on_the_mqs_own_loop_is_refused_not_deadlocked() -> None:
    errors: list[str] = []

    async def main() -> None:
        mq = MQ()
        mq.register_queue("q", AsyncRecorder())
        await mq.astart()
        with pytest.raises(StateError, match="own event loop") as info:
            mq.stop()
        errors.append(str(info.value))
        assert mq.running
        await mq.astop()

    asyncio.run(main())
    assert errors


def test_stop_or_astop_from_an_async_consumer_is_refused() -> None:
    errors: list[BaseException] = []

    async def consumer(ctx: Context, msg: Msg) -> None:
        try:
            await mq.astop()
        except StateError as exc:
            errors.append(exc)
        try:
            mq.stop()
        except StateError as exc:
            errors.append(exc)

    mq = MQ()
    mq.register_queue("q", consumer)
    mq.start()
    mq.publish("q", 1)
    wait_until(lambda: len(errors) == 2)
    mq.stop()
    assert all("would" in str(e) for e in errors)


def test_astop_on_another_loop_than_astart_is_refused() -> None:
    mq = MQ()
    mq.register_queue("q", AsyncRecorder())
    loop = asyncio.new_event_loop()
    other = asyncio.new_event_loop()
    try:
        loop.run_until_complete(mq.astart())
        with pytest.raises(StateError, match="loop that ran astart"):
            other.run_until_complete(mq.astop())
        loop.run_until_complete(mq.astop())
    finally:
        loop.close()
        other.close()


def test_sync_publish_works_inside_an_async_consumer() -> None:
    forwarded: list[int] = []

    async def first(ctx: Context, msg: Msg) -> None:
        mq.publish("second", msg.data)

    async def second(ctx: Context, msg: Msg) -> None:
        forwarded.append(msg.data)

    mq = MQ()
    mq.register_queue("first", first)
    mq.register_queue("second", second)
    mq.start()
    for i in range(50):
        mq.publish("first", i)
    wait_until(lambda: len(forwarded) == 50)
    mq.stop()
    assert forwarded == list(range(50))


def test_apublish_waits_off_the_loop_when_the_id_lock_is_held() -> None:
    # A thread blocked in publish() on a full `in` holds the queue's id lock.
    rec = AsyncRecorder()

    async def main() -> None:
        mq = MQ()
        mq.register_queue("q", rec)
        await mq.astart()
        reg = mq._queues["q"]
        ticks = 0
        with reg.seq_lock:
            publish = asyncio.ensure_future(mq.apublish("q", "x"))
            while not publish.done() and ticks < 5:
                await asyncio.sleep(0)  # the loop keeps running
                ticks += 1
            assert not publish.done()
        assert await asyncio.wait_for(publish, 5) == 0
        await mq.astop()

    asyncio.run(main())
    assert rec.ids == [0]


def test_apublish_waits_off_the_loop_when_in_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = AsyncRecorder()
    mq = MQ()
    mq.register_queue("q", rec)
    queue = mq._queues["q"].queue
    enqueue = queue.enqueue
    blocked = threading.Event()
    release = threading.Event()

    def full_in(msg: Msg, timeout: float | None = None, delay: float | None = None) -> Wait:
        if timeout == 0:
            raise TimeoutError("in is full")  # what Channel.send says when full
        blocked.set()
        assert release.wait(10)
        return enqueue(msg, timeout, delay)

    monkeypatch.setattr(queue, "enqueue", full_in)

    async def main() -> None:
        await mq.astart()
        publish = asyncio.ensure_future(mq.apublish("q", "x"))
        await until(blocked.is_set)  # publish() blocks in the executor, not on the loop
        assert not publish.done()
        release.set()
        assert await asyncio.wait_for(publish, 5) == 0
        await mq.astop()

    asyncio.run(main())
    assert rec.ids == [0]


def test_event_loop_closed_under_the_mq_closes_its_queue_and_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()

    async def stuck(ctx: Context, msg: Msg) -> None:
        await gate.wait()

    mq = MQ()
    mq.register_queue("q", stuck, concurrency=2)

    async def main() -> None:
        await mq.astart()
        for i in range(5):
            await mq.apublish("q", i)
        await until(lambda: mq._queues["q"].busy == [0, 1])
        # returns without astop(): asyncio.run cancels the tasks and closes the loop

    with caplog.at_level(logging.ERROR, logger="tinymq"):
        asyncio.run(main())
        with pytest.raises(QueueClosedError):
            mq.publish("q", "late")
        mq.stop(timeout=10)
    text = caplog.text
    assert "cancelled while consuming message 0" in text
    assert "consumer tasks were cancelled or their event loop closed; the queue is closed" in text
    assert "3 accepted messages were never consumed" in text


def test_sync_stop_drains_async_consumers_mid_await_on_the_owned_loop() -> None:
    rec = AsyncRecorder(pause=0.02)
    ctx = Context()
    mq = MQ()
    mq.register_queue("q", rec, concurrency=5)
    mq.start(ctx)
    for i in range(50):
        mq.publish("q", i)
    wait_until(lambda: any(b is not None for b in mq._queues["q"].busy))
    ctx.cancel()  # the same graceful stop as stop(): nothing half-done is cancelled
    with pytest.raises(QueueClosedError):
        mq.publish("q", "late")
    mq.stop(timeout=20)
    assert sorted(rec.ids) == list(range(50))
    assert not tinymq_threads()


def test_astop_of_an_mq_started_with_start_works_from_any_loop() -> None:
    rec = AsyncRecorder()
    mq = MQ()
    mq.register_queue("q", rec)
    mq.start()

    async def main() -> None:
        for i in range(20):
            await mq.apublish("q", i)
        await mq.astop(timeout=10)

    asyncio.run(main())
    assert rec.ids == list(range(20))


def test_astop_from_a_helper_task_on_the_owned_loop_is_refused_not_hung() -> None:
    errors: list[BaseException] = []

    async def consumer(ctx: Context, msg: Msg) -> None:
        async def helper() -> None:
            try:
                await mq.astop()
            except StateError as exc:
                errors.append(exc)

        await asyncio.create_task(helper())

    mq = MQ()
    mq.register_queue("q", consumer)
    mq.start()
    mq.publish("q", 1)
    wait_until(lambda: errors)
    mq.stop(timeout=10)
    assert "own event loop" in str(errors[0])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is 3.11+")
def test_a_consumer_raising_cancelled_error_itself_is_a_failure_not_the_end() -> None:
    seen: list[int] = []

    async def consumer(ctx: Context, msg: Msg) -> None:
        seen.append(msg.id)
        if msg.id == 0:
            raise asyncio.CancelledError  # e.g. it awaited a future someone cancelled

    async def main() -> None:
        mq = MQ(logger=logging.getLogger("tinymq.test.quiet"))
        mq.register_queue("q", consumer)
        async with mq:
            for i in range(3):
                await mq.apublish("q", i)

    asyncio.run(main())
    assert seen == [0, 1, 2]


def test_base_exceptions_in_async_consumers_do_not_end_a_task() -> None:
    seen: list[int] = []

    async def consumer(ctx: Context, msg: Msg) -> None:
        seen.append(msg.id)
        if msg.id == 0:
            raise SystemExit(3)

    mq = MQ(logger=logging.getLogger("tinymq.test.quiet"))
    mq.register_queue("q", consumer)
    mq.start()
    mq.publish("q", 0)
    mq.publish("q", 1)
    mq.stop(timeout=10)
    assert seen == [0, 1]


def test_stop_timeout_on_the_owned_loop_then_a_second_stop_drains() -> None:
    gate = threading.Event()
    done: list[int] = []

    async def gated(ctx: Context, msg: Msg) -> None:
        await asyncio.to_thread(gate.wait, 30)
        done.append(msg.id)

    mq = MQ()
    mq.register_queue("q", gated)
    mq.start()
    for i in range(3):
        mq.publish("q", i)
    with pytest.raises(TimeoutError, match=r"queue 'q': \d+ waiting, 1 in consumer calls"):
        mq.stop(timeout=0.05)
    gate.set()
    mq.stop(timeout=10)
    assert done == [0, 1, 2]


def test_tasks_a_consumer_leaves_behind_are_cancelled_when_the_owned_loop_ends() -> None:
    async def spawns(ctx: Context, msg: Msg) -> None:
        asyncio.get_running_loop().create_task(asyncio.sleep(3600))

    mq = MQ()
    mq.register_queue("q", spawns)
    mq.start()
    loop = mq._async.loop
    assert loop is not None
    mq.publish("q", 1)
    mq.stop(timeout=10)
    assert not asyncio.all_tasks(loop), "a pending task would be destroyed, not cancelled"


def test_stop_on_an_astart_loop_that_is_not_running_is_refused() -> None:
    mq = MQ()
    mq.register_queue("q", AsyncRecorder())
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(mq.astart())
        with pytest.raises(StateError, match="not running"):
            mq.stop()
        loop.run_until_complete(mq.astop())
    finally:
        loop.close()


def test_astop_on_a_new_loop_after_the_astart_loop_closed_reports_and_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mq = MQ()
    mq.register_queue("q", AsyncRecorder(pause=3600), concurrency=1)

    async def first() -> None:
        await mq.astart()
        await mq.apublish("q", 0)
        await mq.apublish("q", 1)
        await until(lambda: mq._queues["q"].busy == [0])

    async def second() -> None:
        await mq.astop(timeout=10)

    with caplog.at_level(logging.ERROR, logger="tinymq"):
        asyncio.run(first())
        asyncio.run(second())
    assert "1 accepted messages were never consumed" in caplog.text


def test_an_async_consumer_failure_is_logged_with_its_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def bad(ctx: Context, msg: Msg) -> None:
        raise ValueError("the consumer's own words")

    async def main() -> None:
        mq = MQ()
        mq.register_queue("q", bad)
        await mq.astart()
        await mq.apublish("q", 1)
        await mq.astop()

    with caplog.at_level(logging.ERROR, logger="tinymq"):
        asyncio.run(main())
    [record] = [r for r in caplog.records if "consumer failed" in r.getMessage()]
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    assert "the consumer's own words" in caplog.text


def test_cancelling_one_of_several_tasks_mid_call_lets_the_queue_stop() -> None:
    async def slow(ctx: Context, msg: Msg) -> None:
        if msg.id == 0:
            await asyncio.Event().wait()  # until cancelled

    async def main() -> None:
        mq = MQ()
        mq.register_queue("q", slow, concurrency=2)
        await mq.astart()
        for i in range(4):
            await mq.apublish("q", i)
        await until(lambda: 0 in mq._queues["q"].busy)
        [victim] = [
            t
            for t in mq._async.groups[0].tasks
            if t.get_name().endswith(f"task-{mq._queues['q'].busy.index(0)}")
        ]
        victim.cancel()  # a framework cancelling one task
        await mq.astop(timeout=5)  # the cut call does not hold the queue open
        stats = mq.stats()["q"]
        assert (stats.succeeded, stats.in_flight, stats.pending) == (3, 0, 0)

    asyncio.run(main())


def test_a_loop_closed_without_astop_closes_its_queues_and_stop_does_not_wait_on_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stuck(ctx: Context, msg: Msg) -> None:
        await asyncio.Event().wait()

    mq = MQ()
    mq.register_queue("q", stuck)
    loop = asyncio.new_event_loop()

    async def main() -> None:
        await mq.astart()
        for i in range(3):
            await mq.apublish("q", i)
        await until(lambda: mq._queues["q"].busy == [0])

    loop.run_until_complete(main())
    loop.close()  # the run_until_complete pattern: no astop(), no task cancelled
    with pytest.raises(QueueClosedError):
        mq.publish("q", "late")  # nothing would ever consume it
    mq.stop(timeout=5)  # waits for no call of a task that will never run again
    assert "its consumer tasks were cancelled or their event loop closed" in caplog.text
    assert "3 accepted messages were never consumed" in caplog.text
