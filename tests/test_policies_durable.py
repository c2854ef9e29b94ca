"""Delivery policies on durable queues across restarts.

A delayed message or a scheduled retry keeps its due time and attempt when the MQ
is reopened, after a clean stop or a crash (a child process that exits without
closing anything); dead letters, and what requeue and purge do to them, persist.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.policy_helpers import KINDS, CallLog, consumer
from tinymq import MQ, Msg, QueueFullError, Reject, Retry, RetryLater, StateError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


@pytest.fixture(params=["never", "always"])
def fsync(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def reject_bad(msg: Msg) -> BaseException | None:
    return Reject(f"cannot use {msg.data}") if "bad" in str(msg.data) else None


def wall_time(monotonic: float) -> float:
    """The ``time.time()`` of a ``time.monotonic()`` reading (to a few microseconds)."""
    return time.time() - (time.monotonic() - monotonic)


# Due times cross a restart as wall-clock instants; comparing them with converted
# monotonic readings allows this much for the conversion.
CLOCKS = 0.005


def test_dead_letters_survive_a_restart_field_for_field(
    data_dir: Path, fsync: str, kind: str
) -> None:
    log = CallLog(
        lambda msg: RetryLater(0.001) if msg.data == "tired" else reject_bad(msg),
    )
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer(kind, log), durable=True, retry=Retry(max_attempts=2))
    with mq:
        for data in ["bad-0", "ok", "tired", {"word": "bad", "n": [1, 2]}, "bad-4"]:
            mq.publish("q", data)
    before = mq.dead_letters("q")
    assert [d.dead_at for d in before] == sorted(d.dead_at for d in before), "oldest first"
    by_id = {d.id: d for d in before}
    assert sorted((i, d.reason, d.attempts) for i, d in by_id.items()) == [
        (0, "rejected", 1),
        (2, "exhausted", 2),
        (3, "rejected", 1),
        (4, "rejected", 1),
    ]
    assert by_id[3].data == {"word": "bad", "n": [1, 2]}
    assert by_id[2].error_type == "tinymq.retry.RetryLater"
    assert mq.dead_letters("q") == before, "still listed once the MQ has stopped"

    again = MQ(data_dir=data_dir, fsync=fsync)
    again.register_queue("q", consumer(kind, CallLog()), durable=True)
    assert again.dead_letters("q") == before  # every field, the traceback included
    with again:
        pass
    assert again.dead_letters("q") == before, "dead letters are not delivered again"


def test_requeue_and_purge_of_dead_letters_last_across_restarts(data_dir: Path, fsync: str) -> None:
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer("thread", CallLog(reject_bad)), durable=True)
    with mq:
        for i in range(4):
            mq.publish("q", f"bad-{i}")
    assert [d.id for d in mq.dead_letters("q")] == [0, 1, 2, 3]

    # Second run, never started: requeue one, purge one.
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer("thread", CallLog()), durable=True)
    assert mq.requeue_dead("q", ids=[1]) == 1
    assert mq.purge_dead("q", ids=[2]) == 1
    assert [d.id for d in mq.dead_letters("q")] == [0, 3]
    mq.stop()  # never started: the requeued message waits in the log

    # Third run: the requeued message comes, as a new message; the rest stays put.
    log = CallLog()
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer("thread", log), durable=True)
    assert [d.id for d in mq.dead_letters("q")] == [0, 3]
    with mq:
        pass
    assert [(c.id, c.data, c.attempt) for c in log.calls] == [(4, "bad-1", 1)]
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer("thread", CallLog()), durable=True)
    assert mq.purge_dead("q") == 2
    mq.stop()
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer("thread", CallLog()), durable=True)
    assert mq.dead_letters("q") == []
    mq.stop()


def test_purge_after_stop_is_refused_rather_than_forgotten(data_dir: Path) -> None:
    mq = MQ(data_dir=data_dir, fsync="never")
    mq.register_queue("q", consumer("thread", CallLog(reject_bad)), durable=True)
    with mq:
        mq.publish("q", "bad")
    # The log is closed and the directory released: a purge now could not last.
    with pytest.raises(StateError, match="queue 'q'"):
        mq.purge_dead("q")
    assert [d.id for d in mq.dead_letters("q")] == [0]
    mq = MQ(data_dir=data_dir, fsync="never")
    mq.register_queue("q", consumer("thread", CallLog()), durable=True)
    assert [d.id for d in mq.dead_letters("q")] == [0]
    mq.stop()


def test_a_delayed_message_keeps_its_due_time_across_a_restart(
    data_dir: Path, fsync: str, kind: str
) -> None:
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer(kind, CallLog()), durable=True)
    published = time.time()
    mq.publish("q", "later", delay=0.6)
    mq.publish("q", "now")
    mq.stop()  # never started: both stay in the log

    log = CallLog()
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer(kind, log), durable=True)
    with mq:
        pass
    assert [(c.id, c.data, c.attempt, c.redelivered) for c in log.calls] == [
        (1, "now", 1, True),
        (0, "later", 1, True),
    ]
    assert wall_time(log.first(1).started) < published + 0.6, "held back by the delayed one"
    assert wall_time(log.first(0).started) >= published + 0.6 - CLOCKS, "came early"


def test_a_delayed_apublish_keeps_its_due_time_across_a_restart(data_dir: Path) -> None:
    async def publish() -> float:
        mq = MQ(data_dir=data_dir, fsync="always")
        mq.register_queue("q", consumer("async", CallLog()), durable=True)
        published = time.time()
        assert await mq.apublish("q", "later", delay=0.4) == 0
        await mq.astop()
        return published

    published = asyncio.run(publish())
    log = CallLog()
    mq = MQ(data_dir=data_dir, fsync="always")
    mq.register_queue("q", consumer("async", log), durable=True)
    with mq:
        pass
    assert wall_time(log.first(0).started) >= published + 0.4 - CLOCKS
    assert (log.first(0).attempt, log.first(0).redelivered) == (1, True)


CRASH = """
import os, sys, time
from tinymq import MQ, Retry, RetryLater

data_dir, fsync, kind = sys.argv[1:]


def fail(msg):
    print(msg.id, msg.attempt, time.time(), flush=True)
    if msg.data == "later":
        raise RetryLater(0.8)
    raise ValueError("a backoff of 0.8 s")


def consume(ctx, msg):
    fail(msg)


async def aconsume(ctx, msg):
    fail(msg)


mq = MQ(data_dir=data_dir, fsync=fsync)
retry = Retry(max_attempts=3, backoff=0.8, jitter=False)
mq.register_queue("q", consume if kind == "thread" else aconsume, durable=True, retry=retry)
mq.start()
published = time.time()
mq.publish("q", "later")
mq.publish("q", "backoff")
mq.publish("q", "delayed", delay=0.8)
deadline = time.monotonic() + 10
while mq.stats()["q"].retried < 2:  # both retries are in the log once counted
    if time.monotonic() > deadline:
        sys.exit("the retries were never scheduled")
    time.sleep(0.001)
print("published", published, flush=True)
os._exit(0)  # a crash: nothing is closed, nothing more is written
"""


def crash_run(data_dir: Path, fsync: str, kind: str) -> tuple[float, dict[int, float]]:
    """Run CRASH in a child; return its publish time and each first attempt's end time."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", CRASH, str(data_dir), fsync, kind],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    failed: dict[int, float] = {}
    published = None
    for line in result.stdout.splitlines():
        words = line.split()
        if words[0] == "published":
            published = float(words[1])
        else:
            assert words[1] == "1", line  # each failed once in the child
            failed[int(words[0])] = float(words[2])
    assert published is not None and sorted(failed) == [0, 1], result.stdout
    return published, failed


def test_scheduled_retries_and_delays_keep_due_time_and_attempt_across_a_crash(
    data_dir: Path, fsync: str, kind: str
) -> None:
    published, failed = crash_run(data_dir, fsync, kind)
    # Message 1 fails on: its attempts go on from 2, up to max_attempts=3.
    log = CallLog(lambda msg: ValueError("still") if msg.id == 1 else None)
    mq = MQ(data_dir=data_dir, fsync=fsync)
    retry = Retry(max_attempts=3, backoff=0.05, jitter=False)
    mq.register_queue("q", consumer(kind, log), durable=True, retry=retry)
    stats = mq.stats()["q"]
    assert stats.delayed == 3
    with mq:
        pass
    seen = [(c.id, c.data, c.attempt, c.redelivered) for c in log.calls]
    assert sorted(seen) == [
        (0, "later", 2, True),
        (1, "backoff", 2, True),
        (1, "backoff", 3, True),
        (2, "delayed", 1, True),
    ]
    # Each failed in the child before its due time was computed: the due times are later.
    assert wall_time(log.first(0).started) >= failed[0] + 0.8 - CLOCKS
    assert wall_time(log.first(1).started) >= failed[1] + 0.8 - CLOCKS
    assert wall_time(log.first(2).started) >= published + 0.8 - CLOCKS
    [letter] = mq.dead_letters("q")
    assert (letter.id, letter.attempts, letter.reason) == (1, 3, "exhausted")

    # Settled for good: a third run has nothing to deliver.
    log = CallLog()
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer(kind, log), durable=True, retry=retry)
    with mq:
        pass
    assert log.calls == []
    assert [d.id for d in mq.dead_letters("q")] == [1]


def test_retries_on_a_durable_queue_end_in_success_or_a_dead_letter(
    data_dir: Path, fsync: str, kind: str
) -> None:
    log = CallLog(
        lambda msg: (
            ValueError("flaky") if msg.attempt < 3 and msg.data != "bad" else reject_bad(msg)
        )
    )
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue(
        "q", consumer(kind, log), durable=True, retry=Retry(max_attempts=3, backoff=0.01)
    )
    with mq:
        for data in ["a", "bad", "b"]:
            mq.publish("q", data)
    assert sorted((c.data, c.attempt) for c in log.calls) == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
        ("b", 2),
        ("b", 3),
        ("bad", 1),
    ]
    stats = mq.stats()["q"]
    assert (stats.succeeded, stats.failed, stats.retried, stats.dead) == (2, 5, 4, 1)
    log = CallLog()
    mq = MQ(data_dir=data_dir, fsync=fsync)
    mq.register_queue("q", consumer(kind, log), durable=True)
    with mq:
        pass
    assert log.calls == [], "acknowledged after its last attempt, whatever the outcome"
    assert [d.data for d in mq.dead_letters("q")] == ["bad"]


def test_recovered_messages_take_no_place_in_a_bounded_queue(data_dir: Path) -> None:
    mq = MQ(data_dir=data_dir, fsync="never")
    mq.register_queue("q", consumer("thread", CallLog()), durable=True)
    for i in range(3):
        mq.publish("q", i)
    mq.stop()

    log = CallLog()
    mq = MQ(data_dir=data_dir, fsync="never")
    mq.register_queue("q", consumer("thread", log), durable=True, max_pending=2)
    assert mq.publish("q", 3, timeout=0) == 3  # the 3 recovered ones do not count
    assert mq.publish("q", 4, timeout=0) == 4
    with pytest.raises(QueueFullError):
        mq.publish("q", 5, timeout=0)
    with mq:
        pass
    assert [c.id for c in log.calls] == [0, 1, 2, 3, 4]


def test_delayed_messages_due_while_no_mq_ran_come_in_order_of_due_time(data_dir: Path) -> None:
    first = MQ(data_dir=data_dir, fsync="never")
    first.register_queue("q", lambda ctx, msg: None, durable=True)
    first.publish("q", "due second", delay=0.2)  # id 0
    first.publish("q", "due first", delay=0.1)  # id 1
    first.stop()  # never started: both wait on disk with their due times
    due = time.time() + 0.2
    while time.time() < due:  # both due times pass while no MQ runs
        time.sleep(0.01)
    log = CallLog()
    again = MQ(data_dir=data_dir, fsync="never")
    again.register_queue("q", consumer("sync", log), durable=True)
    with again:
        log.wait_calls(2)
    assert [call.data for call in log.calls] == ["due first", "due second"]


def test_a_dead_letter_whose_error_text_utf8_cannot_hold_is_kept(data_dir: Path) -> None:
    name = b"file-\xff".decode("utf-8", "surrogateescape")  # an undecodable file name
    ran = threading.Event()

    def consume(ctx: object, msg: Msg) -> None:
        ran.set()
        raise Reject(f"cannot read {name}")

    mq = MQ(data_dir=data_dir, fsync="never")
    mq.register_queue("q", consume, durable=True)
    with mq:
        mq.publish("q", "x")
        assert ran.wait(10)
    assert mq.stats()["q"].dead == 1
    [letter] = mq.dead_letters("q")
    assert "cannot read file-\\udcff" in letter.error
    again = MQ(data_dir=data_dir, fsync="never")
    again.register_queue("q", consume, durable=True)
    try:
        report = again.recovery_report("q")
        assert report is not None and report.recovered == 0  # acknowledged as dead
        assert [d.error for d in again.dead_letters("q")] == [letter.error]
    finally:
        again.stop()


def test_ids_go_on_past_every_dead_letter_even_when_the_log_lost_its_head(data_dir: Path) -> None:
    from tinymq.wal import HEADER_SIZE  # noqa: PLC0415 - only this test damages a record

    def reject_bad(ctx: object, msg: Msg) -> None:
        if msg.data == "bad":
            raise Reject("never good")

    mq = MQ(data_dir=data_dir, fsync="never")
    mq.register_queue("q", reject_bad, durable=True)
    for data in ["ok", "ok", "ok", "bad", "ok"]:
        mq.publish("q", data)
    with mq:
        pass  # start, then stop: drained; message 3 is a dead letter
    for _ in range(2):  # reopen until the acknowledged segments are gone
        again = MQ(data_dir=data_dir, fsync="never")
        again.register_queue("q", reject_bad, durable=True)
        with again:
            pass
    [segment] = sorted((data_dir / "queues" / "q").glob("*.wal"))
    damaged = bytearray(segment.read_bytes())
    damaged[HEADER_SIZE + 1] ^= 0x01  # in the HEAD record, whose next id is all that is left
    segment.write_bytes(bytes(damaged))
    last = MQ(data_dir=data_dir, fsync="never")
    last.register_queue("q", reject_bad, durable=True)
    try:
        assert last.publish("q", "new") > 3
        assert [letter.id for letter in last.dead_letters("q")] == [3]
    finally:
        last.stop()
