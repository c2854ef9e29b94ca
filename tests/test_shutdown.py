from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import tinymq_threads, wait_until
from tests.helpers import Recorder
from tinymq import MQ, Context, Msg, QueueClosedError, StateError


def gated(gate: threading.Event) -> Recorder:
    """A recorder whose consumer calls block until ``gate`` is set."""
    return Recorder(lambda ctx, msg: None if gate.wait(30) else pytest.fail("gate"))


def test_stop_consumes_everything_accepted_before_returning() -> None:
    gate = threading.Event()
    rec = gated(gate)
    mq = MQ()
    mq.register_queue("q", rec, concurrency=2)
    mq.start()
    for i in range(100):
        mq.publish("q", i)
    stopped = threading.Event()

    def stop() -> None:
        mq.stop()
        stopped.set()

    stopper = threading.Thread(target=stop)
    stopper.start()
    wait_until(lambda: not mq.running)
    assert not stopped.wait(0.05), "stop returned before the drain"
    with pytest.raises(QueueClosedError):
        mq.publish("q", "late")
    gate.set()
    assert stopped.wait(10)
    stopper.join()
    assert sorted(rec.ids) == list(range(100))
    assert not tinymq_threads()


def test_stop_twice_is_harmless() -> None:
    mq = MQ()
    mq.register_queue("q", Recorder())
    mq.start()
    mq.stop()
    mq.stop()
    assert not mq.running


def test_stop_with_timeout_raises_then_a_second_stop_finishes_the_drain() -> None:
    gate = threading.Event()
    rec = gated(gate)
    mq = MQ()
    mq.register_queue("slow", rec)
    mq.start()
    for i in range(3):
        mq.publish("slow", i)
    wait_until(lambda: mq._queues["slow"].busy[0] is not None)
    with pytest.raises(TimeoutError, match=r"queue 'slow': 2 waiting, 1 in consumer calls"):
        mq.stop(timeout=0.05)
    gate.set()
    mq.stop()
    assert rec.ids == [0, 1, 2]


def test_stop_rejects_a_negative_timeout_and_changes_nothing() -> None:
    mq = MQ()
    mq.register_queue("q", Recorder())
    mq.start()
    with pytest.raises(ValueError, match="timeout"):
        mq.stop(timeout=-1)
    assert mq.running
    mq.stop()


def test_publish_racing_with_stop_is_either_consumed_or_refused() -> None:
    rec = Recorder()
    mq = MQ()
    mq.register_queue("q", rec, concurrency=3)
    mq.start()
    accepted: list[list[int]] = [[] for _ in range(4)]
    refused = [0] * 4
    go = threading.Barrier(5)

    def publish(k: int) -> None:
        go.wait()
        while True:
            try:
                accepted[k].append(mq.publish("q", k))
            except QueueClosedError:
                refused[k] += 1
                return

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    go.wait()
    wait_until(lambda: sum(map(len, accepted)) > 1000)
    mq.stop()
    for t in threads:
        t.join(10)
    ids = [i for a in accepted for i in a]
    assert refused == [1, 1, 1, 1]
    assert sorted(ids) == list(range(len(ids)))
    assert mq._queues["q"].next_id == len(ids)  # no id burnt by a refused publish
    assert Counter(rec.ids) == Counter(ids)


def test_cancelling_the_context_drains_and_ends_the_workers_without_stop() -> None:
    gate = threading.Event()
    rec = gated(gate)
    ctx = Context()
    mq = MQ()
    mq.register_queue("q", rec, concurrency=2)
    mq.start(ctx)
    for i in range(50):
        mq.publish("q", i)
    ctx.cancel()
    assert not mq.running
    with pytest.raises(QueueClosedError):
        mq.publish("q", "late")
    gate.set()
    wait_until(lambda: not tinymq_threads())  # workers ended on their own
    assert sorted(rec.ids) == list(range(50))
    mq.stop()  # nothing left to do, and nothing closed twice
    ctx.cancel()


def test_a_cancelled_context_costs_no_cpu_while_consumers_finish() -> None:
    # The article's workers spin on a done context; here nothing polls it.
    gate = threading.Event()
    rec = gated(gate)
    ctx = Context()
    mq = MQ()
    mq.register_queue("q", rec, concurrency=4)
    mq.start(ctx)
    for i in range(4):
        mq.publish("q", i)
    wait_until(lambda: all(b is not None for b in mq._queues["q"].busy))
    ctx.cancel()
    cpu, wall = time.process_time(), time.monotonic()
    assert not gate.wait(0.3)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    assert cpu < wall / 3, f"{cpu:.3f} s of CPU in {wall:.3f} s idle: something spins"
    gate.set()
    mq.stop()
    assert sorted(rec.ids) == [0, 1, 2, 3]


def test_consumers_can_read_the_context_to_cut_work_short() -> None:
    ctx = Context()
    started = threading.Event()

    def long_call(c: Context, msg: Msg) -> None:
        started.set()
        assert c.wait(30), "never cancelled"

    rec = Recorder(long_call)
    mq = MQ()
    mq.register_queue("q", rec)
    mq.start(ctx)
    mq.publish("q", 1)
    assert started.wait(5)
    ctx.cancel()
    mq.stop(timeout=10)
    assert rec.ids == [0]


def test_stop_from_a_consumer_raises_and_cancel_from_a_consumer_works() -> None:
    errors: list[BaseException] = []
    ctx = Context()

    def consumer(c: Context, msg: Msg) -> None:
        if msg.data == "stop":
            try:
                mq.stop()
            except StateError as exc:
                errors.append(exc)
        else:
            c.cancel()

    rec = Recorder(consumer)
    mq = MQ()
    mq.register_queue("q", rec)
    mq.start(ctx)
    mq.publish("q", "stop")
    mq.publish("q", "cancel")
    rec.wait_for(2)
    wait_until(lambda: not mq.running)
    mq.stop(timeout=10)
    assert len(errors) == 1
    assert "cancel the context" in str(errors[0])


def test_with_block_drains_on_exit_even_when_the_body_raises() -> None:
    rec = Recorder()
    mq = MQ()
    mq.register_queue("q", rec)
    with pytest.raises(RuntimeError, match="body"), mq:
        for i in range(100):
            mq.publish("q", i)
        raise RuntimeError("body")
    assert rec.ids == list(range(100))
    assert not mq.running


@pytest.mark.usefixtures("fast_switching")
def test_stop_before_start_racing_a_publisher_reports_exactly_what_was_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for _ in range(50):
        mq = MQ()
        mq.register_queue("q", Recorder())
        accepted: list[int] = []
        go = threading.Event()

        def publish(mq: MQ = mq, accepted: list[int] = accepted, go: threading.Event = go) -> None:
            go.set()
            while True:
                try:
                    accepted.append(mq.publish("q", None))
                except QueueClosedError:
                    return

        thread = threading.Thread(target=publish)
        thread.start()
        assert go.wait(5)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="tinymq"):
            mq.stop()
        thread.join(10)
        assert not thread.is_alive()
        if accepted:
            assert f"never consumed {{'q': {len(accepted)}}}" in caplog.text


def test_stop_before_start_refuses_new_messages_and_reports_the_accepted_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mq = MQ()
    mq.register_queue("q", Recorder())
    mq.publish("q", 1)
    with caplog.at_level(logging.ERROR, logger="tinymq"):
        mq.stop()
    assert "never consumed {'q': 1}" in caplog.text
    with pytest.raises(QueueClosedError):
        mq.publish("q", 2)
    with pytest.raises(StateError):
        mq.start()


EXIT_SCRIPT = """
import sys, threading, time
from tinymq import MQ
out = open(sys.argv[1], "a", buffering=1)
block = sys.argv[2] == "block"
def consumer(ctx, msg):
    if block:
        threading.Event().wait()
    time.sleep(0.002)
    out.write(f"{msg.id}\\n")
mq = MQ(exit_timeout=float(sys.argv[3]))
mq.register_queue("q", consumer, concurrency=2)
mq.start()
for i in range(200):
    mq.publish("q", i)
print("main done", flush=True)
"""


def run_exit_script(tmp_path: Path, mode: str, exit_timeout: float) -> tuple[str, list[int]]:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT))
    out = tmp_path / "consumed.txt"
    proc = subprocess.run(
        [sys.executable, str(script), str(out), mode, str(exit_timeout)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "main done" in proc.stdout
    ids = [int(x) for x in out.read_text().split()] if out.exists() else []
    return proc.stderr, ids


def test_process_exit_with_a_running_mq_drains_it_first(tmp_path: Path) -> None:
    stderr, ids = run_exit_script(tmp_path, "ok", 20)
    assert sorted(ids) == list(range(200))
    assert "not drained" not in stderr


def test_process_exit_with_a_stuck_consumer_exits_and_says_what_was_lost(
    tmp_path: Path,
) -> None:
    stderr, ids = run_exit_script(tmp_path, "block", 0.2)
    assert ids == []
    assert "interpreter exit: MQ not drained, messages lost" in stderr
    assert "queue 'q': 198 waiting, 2 in consumer calls" in stderr


def test_a_second_stop_waits_for_the_owned_loop_to_shut_down_instead_of_cutting_it_short() -> None:
    import asyncio  # noqa: PLC0415 - only this test runs a coroutine here

    release, cleanup_started, cleanup_done = (threading.Event() for _ in range(3))
    errors: list[BaseException | None] = []
    old_hook = threading.excepthook

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # a task left behind that takes a while to clean up
            cleanup_started.set()
            await asyncio.to_thread(release.wait, 10)
            cleanup_done.set()
            raise

    async def spawns(ctx: Context, msg: Msg) -> None:
        asyncio.get_running_loop().create_task(background())

    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        mq = MQ()
        mq.register_queue("q", spawns)
        mq.start()
        mq.publish("q", 1)
        with pytest.raises(TimeoutError):
            mq.stop(timeout=0.5)  # the loop thread is still cancelling what was left
        assert cleanup_started.wait(5)
        releaser = threading.Timer(0.5, release.set)  # whenever it comes, nothing breaks
        releaser.start()
        mq.stop(timeout=10)  # a second stop waits again
        releaser.join()
        assert errors == [] and cleanup_done.is_set()
    finally:
        release.set()
        threading.excepthook = old_hook
