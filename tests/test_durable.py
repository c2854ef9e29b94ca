"""Durable queues through the MQ API: restart, ids, lock, serializers, segments, read-ahead."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tinymq import MQ, Context, Msg, Reject
from tinymq.durable import READ_AHEAD, DurableOptions, DurableStore
from tinymq.errors import DataDirLockedError, StateError
from tinymq.fileops import FileOps
from tinymq.serializers import PICKLE


class Collector:
    """A consumer that records every message it is given."""

    def __init__(self) -> None:
        self.msgs: list[Msg] = []
        self._lock = threading.Lock()

    def __call__(self, ctx: Context, msg: Msg) -> None:
        with self._lock:
            self.msgs.append(msg)

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.msgs]


def segments(data_dir: Path, queue: str = "q") -> list[str]:
    return sorted(p.name for p in (data_dir / "queues" / queue).glob("*.wal"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def test_durable_queue_without_data_dir_is_a_value_error() -> None:
    mq = MQ()
    with pytest.raises(ValueError, match="durable=True needs MQ\\(data_dir"):
        mq.register_queue("q", Collector(), durable=True)
    assert mq.queue_names == []


def test_bad_options_are_refused_at_construction(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="fsync must be one of"):
        MQ(data_dir=data_dir, fsync="sometimes")
    with pytest.raises(ValueError, match=r"segment_size must be >= 1024"):
        MQ(data_dir=data_dir, segment_size=10)
    with pytest.raises(ValueError, match="on_corruption"):
        MQ(data_dir=data_dir, on_corruption="ignore")
    with pytest.raises(ValueError, match="fsync_interval"):
        MQ(data_dir=data_dir, fsync_interval=float("nan"))
    assert not data_dir.exists()  # refused before anything was created


def test_durable_queue_name_must_be_a_safe_directory_name(data_dir: Path) -> None:
    mq = MQ(data_dir=data_dir)
    with pytest.raises(ValueError, match=r"durable queue name '\.\./x'"):
        mq.register_queue("../x", Collector(), durable=True)
    mq.register_queue("../x", Collector())  # in memory, any name goes
    mq.stop()


def test_restart_redelivers_unacknowledged_messages_in_order_with_their_ids(
    data_dir: Path,
) -> None:
    first = MQ(data_dir=data_dir)
    first.register_queue("q", Collector(), durable=True)
    ids = [first.publish("q", {"n": n}) for n in range(20)]
    first.stop()  # never started: the messages stay in the log

    got = Collector()
    second = MQ(data_dir=data_dir)
    second.register_queue("q", got, durable=True)
    report = second.recovery_report("q")
    assert report is not None and report.recovered == 20 and report.clean
    second.start()
    new_id = second.publish("q", {"n": 20})
    second.stop()

    assert ids == list(range(20)) and new_id == 20
    assert got.ids == list(range(21))
    assert [m.data for m in got.msgs] == [{"n": n} for n in range(21)]
    assert [m.redelivered for m in got.msgs] == [True] * 20 + [False]


def test_ids_continue_after_everything_was_acknowledged_and_deleted(data_dir: Path) -> None:
    for run in range(3):
        got = Collector()
        mq = MQ(data_dir=data_dir, segment_size=1024)
        mq.register_queue("q", got, durable=True)
        mq.start()
        ids = [mq.publish("q", "x" * 50) for _ in range(40)]
        mq.stop()
        assert ids == list(range(run * 40, run * 40 + 40))
        assert got.ids == ids and not any(m.redelivered for m in got.msgs)
        assert len(segments(data_dir)) <= 2  # acknowledged segments are deleted


def test_memory_and_durable_queues_live_side_by_side(data_dir: Path) -> None:
    mem, disk = Collector(), Collector()
    mq = MQ(data_dir=data_dir)
    mq.register_queue("mem", mem)
    mq.register_queue("disk", disk, durable=True)
    assert mq.recovery_report("mem") is None
    for n in range(10):
        mq.publish("mem", (n,))
        mq.publish("disk", (n,))
    mq.start()
    mq.stop()
    assert [m.data for m in mem.msgs] == [(n,) for n in range(10)]  # the object itself
    assert [m.data for m in disk.msgs] == [[n] for n in range(10)]  # what JSON gives back
    assert not (data_dir / "queues" / "mem").exists()


def test_data_json_cannot_encode_is_a_type_error_and_writes_nothing(data_dir: Path) -> None:
    mq = MQ(data_dir=data_dir)
    mq.register_queue("q", Collector(), durable=True)
    size = sum(p.stat().st_size for p in (data_dir / "queues" / "q").glob("*.wal"))
    with pytest.raises(TypeError, match="queue 'q': JSON cannot encode object"):
        mq.publish("q", object())
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(TypeError, match="cannot encode list"):
        mq.publish("q", circular)
    assert sum(p.stat().st_size for p in (data_dir / "queues" / "q").glob("*.wal")) == size
    assert mq.publish("q", "fine") == 0  # no id was burned
    mq.stop()


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


def test_pickle_serializer_is_used_only_when_asked_for(data_dir: Path) -> None:
    mq = MQ(data_dir=data_dir, serializer=PICKLE)
    mq.register_queue("q", Collector(), durable=True)
    mq.publish("q", Point(1, 2))
    mq.stop()
    got = Collector()
    mq = MQ(data_dir=data_dir, serializer=PICKLE)
    mq.register_queue("q", got, durable=True)
    mq.start()
    mq.stop()
    assert [m.data for m in got.msgs] == [Point(1, 2)]


def test_a_second_opener_in_this_process_is_refused_at_once_with_our_pid(data_dir: Path) -> None:
    holder = MQ(data_dir=data_dir)
    with pytest.raises(DataDirLockedError) as caught:
        MQ(data_dir=data_dir)
    assert isinstance(caught.value, StateError)
    assert caught.value.pid == os.getpid()
    assert str(data_dir) in str(caught.value) and str(os.getpid()) in str(caught.value)
    holder.stop()
    MQ(data_dir=data_dir).stop()  # stop() freed it


_HOLDER = """
import sys, time
from tinymq import MQ
mq = MQ(data_dir=sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_another_process_is_refused_and_a_killed_holder_frees_the_directory(
    data_dir: Path,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        with pytest.raises(DataDirLockedError) as caught:
            MQ(data_dir=data_dir)
        assert caught.value.pid == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    MQ(data_dir=data_dir).stop()


def test_a_consumer_failure_still_acknowledges_the_message(data_dir: Path) -> None:
    def fail(ctx: Context, msg: Msg) -> None:
        raise RuntimeError("boom")

    mq = MQ(data_dir=data_dir)
    mq.register_queue("q", fail, durable=True)
    mq.start()
    mq.publish("q", 1)
    mq.stop()
    mq = MQ(data_dir=data_dir)
    mq.register_queue("q", Collector(), durable=True)
    report = mq.recovery_report("q")
    assert report is not None and report.recovered == 0
    mq.stop()


def test_async_consumers_acknowledge_too(data_dir: Path) -> None:
    seen: list[int] = []

    async def consume(ctx: Context, msg: Msg) -> None:
        await asyncio.sleep(0)
        seen.append(msg.id)

    async def main() -> None:
        mq = MQ(data_dir=data_dir)
        mq.register_queue("q", consume, concurrency=4, durable=True)
        await mq.astart()
        ids = [await mq.apublish("q", n) for n in range(50)]
        await mq.astop()
        assert sorted(seen) == ids == list(range(50))

    asyncio.run(main())
    mq = MQ(data_dir=data_dir)
    mq.register_queue("q", Collector(), durable=True)
    report = mq.recovery_report("q")
    assert report is not None and report.recovered == 0 and report.next_id == 50
    mq.stop()


def test_a_backlog_beyond_the_read_ahead_stays_on_disk_and_comes_back_in_order(
    data_dir: Path,
) -> None:
    count = READ_AHEAD * 5
    got = Collector()
    mq = MQ(data_dir=data_dir, segment_size=64 * 1024, fsync="never")
    mq.register_queue("q", got, durable=True)
    for n in range(count):
        mq.publish("q", n)
    pending = mq._queues["q"].queue._pending
    assert len(pending) == count
    assert len(pending.ready) <= READ_AHEAD  # only the read-ahead holds payloads
    mq.start()
    mq.stop()
    assert got.ids == list(range(count))
    assert [m.data for m in got.msgs] == list(range(count))


def test_a_long_unacknowledged_message_does_not_pin_old_segments(data_dir: Path) -> None:
    release, first_held = threading.Event(), threading.Event()
    got = Collector()

    def consume(ctx: Context, msg: Msg) -> None:
        if msg.id == 0:
            first_held.set()
            assert release.wait(30)
        got(ctx, msg)

    mq = MQ(data_dir=data_dir, segment_size=2048, fsync="never")
    mq.register_queue("q", consume, concurrency=2, durable=True)
    mq.start()
    mq.publish("q", "straggler")
    assert first_held.wait(10)
    try:
        for _ in range(1, 2000):
            mq.publish("q", "x" * 40)
        wait_until(lambda: len(got.msgs) == 1999)
        for _ in range(20):  # roll a few more segments now that the rest is acknowledged
            mq.publish("q", "y" * 200)
        wait_until(lambda: len(got.msgs) == 2019)
        assert len(segments(data_dir)) <= 4, segments(data_dir)  # message 0 was moved forward
    finally:
        release.set()
        mq.stop()
    assert sorted(got.ids) == list(range(2020))


def test_a_straggler_moved_forward_is_redelivered_once_after_restart(data_dir: Path) -> None:
    release = threading.Event()

    def hold_first(ctx: Context, msg: Msg) -> None:
        if msg.id == 0:
            release.wait(30)

    mq = MQ(data_dir=data_dir, segment_size=1024, fsync="never")
    mq.register_queue("q", hold_first, concurrency=2, durable=True)
    mq.start()
    for _ in range(300):
        mq.publish("q", "z" * 30)
    wait_until(lambda: mq._queues["q"].queue.backlog == 0)
    # Abandon this run with message 0 unacknowledged, as a crash would.
    store = mq._queues["q"].store
    store.close()
    assert mq._data_dir is not None
    mq._data_dir.close()
    got = Collector()
    second = MQ(data_dir=data_dir)
    second.register_queue("q", got, durable=True)
    second.start()
    second.stop()
    release.set()
    mq.stop()
    assert [(m.id, m.redelivered) for m in got.msgs] == [(0, True)]


class CountingOps(FileOps):
    """The real file system, counting fdatasync calls."""

    def __init__(self) -> None:
        self.syncs = 0
        self.synced = threading.Event()

    def fdatasync(self, fd: int) -> None:
        super().fdatasync(fd)
        self.syncs += 1
        self.synced.set()


def test_interval_policy_syncs_in_the_background(data_dir: Path) -> None:
    ops = CountingOps()
    mq = MQ(data_dir=data_dir, fsync="interval", fsync_interval=0.05)
    mq._durable = dataclasses.replace(mq._durable, ops=ops)
    mq.register_queue("q", Collector(), durable=True)
    ops.synced.clear()
    before = ops.syncs
    mq.publish("q", "x")
    assert ops.syncs == before  # publish returned without syncing
    assert ops.synced.wait(5)  # the flusher did
    mq.stop()


def test_always_policy_syncs_before_publish_returns(data_dir: Path) -> None:
    ops = CountingOps()
    mq = MQ(data_dir=data_dir, fsync="always")
    mq._durable = dataclasses.replace(mq._durable, ops=ops)
    mq.register_queue("q", Collector(), durable=True)
    before = ops.syncs
    for n in range(5):
        mq.publish("q", n)
        assert ops.syncs == before + n + 1  # alone: one sync per publish, no added wait
    mq.stop()


def test_inspect_reports_pending_messages_without_taking_the_lock(data_dir: Path) -> None:
    mq = MQ(data_dir=data_dir)
    mq.register_queue("q", Collector(), durable=True)
    for n in range(7):
        mq.publish("q", n)
    out = subprocess.run(
        [sys.executable, "-m", "tinymq", "inspect", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    mq.stop()  # the MQ held the lock all along
    assert '"pending": 7' in out.stdout and '"next_id": 7' in out.stdout


def test_a_recovered_backlog_holds_only_the_unacknowledged_ids(data_dir: Path) -> None:
    log = logging.getLogger("tinymq")
    directory = str(data_dir / "q")
    data_dir.mkdir()
    options = DurableOptions(fsync="never", segment_size=4096)
    store = DurableStore(directory, "q", options, log)
    for msg_id in range(3000):
        _, wait = store.append(Msg(msg_id, msg_id, "q"))
        wait()
    for msg_id in range(1, 3000):
        if msg_id != 1500:
            store.ack(Msg(msg_id, None, "q"))
    store.close()
    store = DurableStore(directory, "q", options, log)
    backlog = store.backlog()
    assert len(backlog) == 2 and backlog.refill()
    assert [(m.id, m.data, m.redelivered) for m in backlog.ready] == [
        (0, 0, True),
        (1500, 1500, True),
    ]
    backlog.ready.clear()
    assert not backlog.refill() and len(backlog) == 0
    assert store.next_id == 3000
    store.close()


def test_inspect_shows_delayed_messages_and_dead_letters(data_dir: Path) -> None:
    def reject(ctx: Context, msg: Msg) -> None:
        raise Reject("never")

    mq = MQ(data_dir=data_dir, fsync="never")
    mq.register_queue("q", reject, durable=True)
    with mq:
        mq.publish("q", "dies")
    mq = MQ(data_dir=data_dir, fsync="never")
    mq.register_queue("q", reject, durable=True)
    mq.publish("q", "later", delay=3600)
    out = subprocess.run(
        [sys.executable, "-m", "tinymq", "inspect", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    mq.stop()  # never started: the delayed message stays in the log
    header, row = out.stdout.splitlines()[:2]
    assert header.split()[:5] == ["queue", "pending", "oldest", "delayed", "dead"]
    assert row.split()[:5] == ["q", "1", row.split()[2], "1", "1"]


def test_acknowledged_delayed_messages_leave_no_schedule_behind(data_dir: Path) -> None:
    done = threading.Event()
    seen: list[int] = []

    def consume(ctx: Context, msg: Msg) -> None:
        seen.append(msg.id)
        if len(seen) == 20:
            done.set()

    mq = MQ(data_dir=data_dir, fsync="never")
    mq.register_queue("q", consume, durable=True)
    store = mq._queues["q"].store
    assert isinstance(store, DurableStore)
    with mq:
        for n in range(20):
            mq.publish("q", n, delay=0.01)
        assert done.wait(10)
        wait_until(lambda: store.live == 0)
        assert store.scheduled_count == 0


def test_a_segment_is_allocated_whole_while_written_and_trimmed_to_its_records_on_stop(
    data_dir: Path,
) -> None:
    size = 64 * 1024
    mq = MQ(data_dir=data_dir, segment_size=size)
    mq.register_queue("q", Collector(), durable=True)
    for n in range(10):
        mq.publish("q", n)
    (segment,) = (data_dir / "queues" / "q").glob("*.wal")
    assert segment.stat().st_size == size, "the segment was not allocated whole"
    mq.stop()  # never started: the ten stay pending
    records = segment.read_bytes()
    assert len(records) < size and records.endswith(b"9"), "not trimmed to its last record"
    got = Collector()
    mq = MQ(data_dir=data_dir, segment_size=size)
    mq.register_queue("q", got, durable=True)
    with mq:
        pass
    assert got.ids == list(range(10)) and all(m.redelivered for m in got.msgs)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_an_acknowledgement_that_raises_is_logged_and_the_worker_goes_on(
    data_dir: Path,
    concurrency: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_ack = DurableStore.ack

    def ack(store: DurableStore, msg: Msg) -> None:
        if msg.id == 1:
            raise RuntimeError("the ack broke")
        real_ack(store, msg)

    monkeypatch.setattr(DurableStore, "ack", ack)
    got = Collector()
    mq = MQ(data_dir=data_dir)
    mq.register_queue("q", got, concurrency, durable=True)
    for n in range(5):
        mq.publish("q", n)
    mq.start()
    mq.stop(10)  # a worker ended by the ack would leave messages behind: a timeout
    assert sorted(got.ids) == [0, 1, 2, 3, 4]
    assert "cannot acknowledge message 1" in caplog.text
    monkeypatch.undo()
    again = Collector()
    second = MQ(data_dir=data_dir)
    second.register_queue("q", again, durable=True)
    second.start()
    second.stop(10)
    assert again.ids == [1]  # not acknowledged: delivered again


def test_inspect_beside_a_running_mq_skips_a_segment_it_deletes_meanwhile(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse  # noqa: PLC0415 - only this test calls the command's main

    from tinymq import inspect_cmd  # noqa: PLC0415
    from tinymq.fileops import REAL  # noqa: PLC0415

    directory = data_dir / "queues" / "q"
    directory.parent.mkdir(parents=True)
    options = DurableOptions(fsync="never", segment_size=2048)
    store = DurableStore(str(directory), "q", options, logging.getLogger("tinymq"))
    msgs = [store.append(Msg(n, "x" * 60, "q"))[0] for n in range(40)]
    real_listdir = REAL.listdir

    def listdir_then_the_owner_collects(path: str) -> list[str]:
        names = real_listdir(path)
        if path == str(directory):
            for msg in msgs[:30]:
                store.ack(msg)
            store._collect()  # what the running MQ does at its next roll
        return names

    monkeypatch.setattr(REAL, "listdir", listdir_then_the_owner_collects)
    try:
        status = inspect_cmd.main(argparse.Namespace(data_dir=str(data_dir), json=True))
    finally:
        monkeypatch.undo()
        store.close()
    out = capsys.readouterr().out
    assert status == 0, out
    assert '"pending": 10' in out


def test_a_forked_child_does_not_keep_the_data_dir_locked_after_stop(data_dir: Path) -> None:
    mq = MQ(data_dir=data_dir)
    read_end, write_end = os.pipe()
    child = os.fork()  # an unrelated worker, as a fork-started multiprocessing.Process
    if child == 0:
        os.close(write_end)
        os.read(read_end, 1)  # lives until the parent is done
        os._exit(0)
    os.close(read_end)
    try:
        mq.stop()
        MQ(data_dir=data_dir).stop()  # the lock went with the parent's stop
    finally:
        os.close(write_end)
        os.waitpid(child, 0)


def test_a_lock_file_naming_a_dead_process_is_not_reported_as_the_holder(data_dir: Path) -> None:
    from tinymq.datadir import _read_pid  # noqa: PLC0415 - the pid a contender reports

    data_dir.mkdir()
    lock = data_dir / "LOCK"
    lock.write_text("999999\n")  # left by a run long gone; the new holder has not written yet
    fd = os.open(lock, os.O_RDONLY)
    try:
        assert _read_pid(fd) is None
        lock.write_text(f"{os.getpid()}\n")
        assert _read_pid(fd) == os.getpid()
    finally:
        os.close(fd)


def test_a_data_dir_that_cannot_be_made_raises_its_error_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc  # noqa: PLC0415

    from tinymq.datadir import DataDir  # noqa: PLC0415

    (tmp_path / "file").write_text("not a directory")
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(OSError):
        DataDir(tmp_path / "file" / "data")
    gc.collect()
    assert unraisable == []


def test_a_forked_child_exiting_normally_leaves_the_parents_mq_and_lock_alone(
    data_dir: Path,
) -> None:
    import atexit  # noqa: PLC0415 - the child runs the exit handlers a normal exit runs

    go, got = threading.Event(), Collector()

    def consume(ctx: Context, msg: Msg) -> None:
        assert go.wait(10)
        got(ctx, msg)

    mq = MQ(data_dir=data_dir, exit_timeout=1)
    mq.register_queue("q", consume, durable=True)
    mq.start()  # a running MQ: one the exit handlers would stop
    for n in range(5):
        mq.publish("q", n)
    child = os.fork()
    if child == 0:
        atexit._run_exitfuncs()  # what sys.exit() in a forked worker would run
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert status == 0
    with pytest.raises(DataDirLockedError):
        MQ(data_dir=data_dir)  # the child neither stopped the MQ nor freed its lock
    go.set()
    mq.stop()
    assert got.ids == [0, 1, 2, 3, 4]
