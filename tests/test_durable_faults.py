"""Disk full and I/O errors under a durable store: a failed publish is refused, nothing else.

The sweep drives a DurableStore on a FaultFS (tests/faultfs.py) through a fixed
workload: publishes with 1 KiB segments, so that segments roll, acknowledged ones are
deleted and stragglers are moved forward; acknowledgements a few messages behind; a
reopen halfway. It runs once per call of the operation under test, that call failing.
The store must raise StorageFullError (ENOSPC) or StorageError (EIO), naming the queue,
from the publish or open that met the fault, or absorb it. After a fault that may be
retried (a write, a create, an unlink) it publishes again on the same open store; after
a failed fsync, or a partial record it could not cut off, it refuses every publish until
reopened. Reopened with the real FileOps, the log must hold every acknowledged message
with its exact payload, nothing the store refused, and no damage but the torn tail a
failed store may leave.

Then the same promises through the MQ, and for real: a 256 KiB tmpfs filled to ENOSPC,
and RLIMIT_FSIZE for EFBIG (with the short write the kernel makes at the limit).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.faultfs import Fault, FaultFS
from tests.helpers import Recorder
from tinymq import MQ
from tinymq.durable import DurableOptions, DurableStore
from tinymq.errors import StorageError, StorageFullError, TinyMQError
from tinymq.fileops import REAL, FileOps
from tinymq.message import Msg
from tinymq.recovery import RecoveryReport

QUEUE = "q"
LOG = logging.getLogger("tests.faults")  # the stores' error reports are expected here
LOG.disabled = True
PHASES = 2  # opens of the log per workload; the second recovers what the first left
PER_PHASE = 36  # publishes per phase
LAG = 4  # a message is acknowledged once 4 more are published
STRAGGLER_EVERY = 24  # and every 24th never is: it is moved forward
# A failed sync is never retried, and a partial record that cannot be cut off stays: the
# store refuses publishes from then on. Any other failed call may be retried.
FATAL_OPS = frozenset(("fdatasync", "fsync_dir", "truncate"))
NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # StorageFullError: retry later

FAULTS: dict[str, Callable[[str, int], Fault]] = {
    "ENOSPC": lambda op, at: Fault(op, at, errno.ENOSPC),
    "EIO": lambda op, at: Fault(op, at, errno.EIO),
    "short": lambda op, at: Fault(op, at, errno.ENOSPC, short=True),
    "short-uncut": lambda op, at: Fault(op, at, errno.ENOSPC, short=True, uncut=True),
}
# (operation, fault, fsync policy). Writes and syncs differ between the policies (a roll
# syncs the old segment except with "never"; "always" syncs each publish), so those are
# swept under each; creates, directory syncs and unlinks are the same calls under all.
SWEEPS = [
    *(("write", kind, "always") for kind in ("ENOSPC", "EIO", "short", "short-uncut")),
    *(("write", kind, fsync) for kind in ("ENOSPC", "short") for fsync in ("interval", "never")),
    *(("fdatasync", "EIO", fsync) for fsync in ("always", "interval", "never")),
    ("open", "ENOSPC", "always"),
    ("open", "EIO", "always"),
    ("fsync_dir", "EIO", "always"),
    ("unlink", "EIO", "always"),
    ("allocate", "ENOSPC", "always"),
    ("allocate", "EIO", "always"),
]
SWEPT_OPS = {op for op, _, _ in SWEEPS} | {"truncate"}  # truncate: after a short write


def data_for(msg_id: int, attempt: int) -> list[object]:
    """The payload of ``msg_id``'s ``attempt``-th publish: a retried id gets new data."""
    return [msg_id, attempt, "x" * (msg_id * 7 % 23)]  # so record ends fall anywhere


def options(fsync: str, ops: FileOps) -> DurableOptions:
    # The flusher of "interval" never runs before close, so the calls stay countable.
    return DurableOptions(fsync=fsync, fsync_interval=3600, segment_size=1024, ops=ops)


@dataclass
class Run:
    """What one workload did, and every broken promise it saw on the way."""

    fs: FaultFS
    sent: dict[int, object] = field(default_factory=dict)  # id -> data of its last attempt
    published: set[int] = field(default_factory=set)  # publish returned: acknowledged
    unknown: set[int] = field(default_factory=set)  # written, then its sync failed
    pending: set[int] = field(default_factory=set)  # published, to be consumed later
    acked: set[int] = field(default_factory=set)  # consumed
    unsure_acks: set[int] = field(default_factory=set)  # ACK records that may be missing
    raised: int = 0  # StorageErrors raised by publishes and opens
    fatal: bool = False  # the store failed: a torn tail may be left
    problems: list[str] = field(default_factory=list)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


class Watch:
    """Did the fault layer fail a call (a fatal one) since this watch began?"""

    def __init__(self, fs: FaultFS) -> None:
        self._fs, self._start = fs, len(fs.failed)

    @property
    def met(self) -> bool:
        return len(self._fs.failed) > self._start

    @property
    def fatal(self) -> bool:
        return any(op in FATAL_OPS for op in self._fs.failed[self._start :])


def run_workload(fs: FaultFS, directory: Path, fsync: str) -> Run:
    """Publish, consume and reopen; record what happened and every broken promise."""
    run = Run(fs)
    attempt = 0
    for _ in range(PHASES):
        store = open_store(run, directory, fsync)
        failed = False  # a fault failed this store: it must refuse every publish
        # What the last run left is consumed first, as the forwarder hands it out.
        for msg_id in sorted(run.pending | run.unsure_acks):
            failed = ack(run, store, msg_id, failed)
        run.pending.clear()
        for _ in range(PER_PHASE):
            attempt += 1
            failed = publish(run, store, attempt, failed)
        watch = Watch(fs)
        store.close()  # never raises: its own failures are logged
        run.fatal |= watch.fatal
    return run


def open_store(run: Run, directory: Path, fsync: str) -> DurableStore:
    """Open the log; if the fault fails the open, that is a StorageError and a retry works."""
    watch = Watch(run.fs)
    try:
        store = DurableStore(str(directory), QUEUE, options(fsync, run.fs), LOG)
    except StorageError as exc:
        run.expect(watch.met, f"open raised {exc!r} without a fault")
        check_error(run, exc, "open", watch.fatal)
        run.fatal |= watch.fatal
        return DurableStore(str(directory), QUEUE, options(fsync, run.fs), LOG)
    run.expect(not watch.fatal, "the log was opened although a sync failed on the way")
    return store


def publish(run: Run, store: DurableStore, attempt: int, failed: bool) -> bool:
    """Publish one message, then consume the one LAG behind; True if the store failed."""
    msg_id = store.next_id
    data = run.sent[msg_id] = data_for(msg_id, attempt)
    watch = Watch(run.fs)
    try:
        _, wait = store.append(Msg(msg_id, data, QUEUE))
        try:
            wait()
        except StorageError:
            run.unknown.add(msg_id)  # written; the failed sync may have lost it or not
            raise
    except StorageError as exc:
        run.expect(watch.met or failed, f"publish of {msg_id} raised {exc!r} without a fault")
        check_error(run, exc, f"publish of {msg_id}", failed or watch.fatal)
        run.fatal |= watch.fatal
        return failed or watch.fatal
    run.expect(not failed, f"publish of {msg_id} returned although the store had failed")
    run.published.add(msg_id)
    run.fatal |= watch.fatal
    failed |= watch.fatal
    if msg_id % STRAGGLER_EVERY:
        run.pending.add(msg_id)
    if msg_id - LAG in run.pending:
        run.pending.discard(msg_id - LAG)
        failed = ack(run, store, msg_id - LAG, failed)
    return failed


def ack(run: Run, store: DurableStore, msg_id: int, failed: bool) -> bool:
    """A consumer is done with ``msg_id`` (ack never raises); True if the store failed."""
    watch = Watch(run.fs)
    store.ack(Msg(msg_id, run.sent[msg_id], QUEUE))
    run.acked.add(msg_id)
    if failed or watch.met:
        run.unsure_acks.add(msg_id)  # logged, not written: delivered again after a restart
    run.fatal |= watch.fatal
    return failed or watch.fatal


def check_error(run: Run, exc: StorageError, what: str, failed: bool) -> None:
    """The error names the queue, and its class tells whether a retry can succeed."""
    run.raised += 1
    run.expect(isinstance(exc, OSError) and isinstance(exc, TinyMQError), f"{what}: {exc!r}")
    run.expect(f"queue {QUEUE!r}" in str(exc), f"{what}: the error names no queue: {exc}")
    fault = run.fs.fault
    assert fault is not None
    if failed:
        run.expect(
            not isinstance(exc, StorageFullError),
            f"{what} raised {exc!r} from a failed store: a retry cannot succeed",
        )
        return
    full = fault.errno in NO_ROOM
    run.expect(
        isinstance(exc, StorageFullError) == full and exc.errno == fault.errno,
        f"{what} raised {type(exc).__name__} (errno {exc.errno}) for {fault}",
    )


def recovered(directory: Path) -> tuple[dict[int, object], RecoveryReport]:
    """Every message the log would deliver, opened with the real FileOps, and the report."""
    store = DurableStore(str(directory), QUEUE, options("always", REAL), LOG)
    try:
        backlog, got = store.backlog(), dict[int, object]()
        while backlog.refill():
            got.update((msg.id, msg.data) for msg in backlog.ready)
            backlog.ready.clear()
        return got, store.report
    finally:
        store.close()


def check_log(run: Run, directory: Path) -> None:
    """Reopened for real, the log holds what was acknowledged and nothing refused."""
    got, report = recovered(directory)
    run.expect(not report.corruption, f"the log is corrupt: {report.corruption}")
    run.expect(
        report.torn_tail is None or run.fatal,
        f"a partial record was left behind: {report.torn_tail}",
    )
    lost = run.published - run.acked - got.keys()
    run.expect(not lost, f"acknowledged, never delivered: {sorted(lost)}")
    refused = got.keys() - run.published - run.unknown
    run.expect(not refused, f"delivered, but its publish raised: {sorted(refused)}")
    wrong = sorted(i for i in got.keys() & run.sent.keys() if got[i] != run.sent[i])
    run.expect(not wrong, f"delivered with other data than last published: {wrong}")
    if not run.fatal:  # ACK records are unsynced: only a failed store may lose them
        again = (got.keys() & run.acked) - run.unsure_acks
        run.expect(not again, f"consumed, yet delivered again: {sorted(again)}")


def segment_files(directory: Path) -> int:
    return len(list(directory.glob("*.wal")))


@dataclass(frozen=True)
class Baseline:
    """The workload of one fsync policy without a fault."""

    calls: Counter[str]  # per operation: the sweep fails each of them in turn
    created: int  # segment files
    moved: int  # messages moved forward
    segments: int  # segment files left


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baseline]:
    found = {}
    for fsync in ("always", "interval", "never"):
        fs, directory = FaultFS(), tmp_path_factory.mktemp(fsync) / QUEUE
        run = run_workload(fs, directory, fsync)
        check_log(run, directory)
        assert not run.problems and not fs.failed and run.raised == 0, run.problems
        # Every write is a publish, an ack, a segment's HEAD or a message moved forward.
        moved = fs.calls["write"] - len(run.published) - len(run.acked) - fs.created
        found[fsync] = Baseline(Counter(fs.calls), fs.created, moved, segment_files(directory))
    return found


def test_the_workload_rolls_deletes_and_moves_segments_forward(
    baselines: dict[str, Baseline],
) -> None:
    for baseline in baselines.values():
        assert baseline.created >= 6 and baseline.calls["unlink"] >= 5, baseline
        assert baseline.moved >= 2 and baseline.segments <= 3, baseline


def test_the_sweeps_cover_every_operation_the_store_makes(
    baselines: dict[str, Baseline],
) -> None:
    for baseline in baselines.values():
        made = {op for op, n in baseline.calls.items() if n}
        assert made <= SWEPT_OPS, f"not swept: {made - SWEPT_OPS}"


@pytest.mark.parametrize(("op", "kind", "fsync"), SWEEPS, ids=["-".join(s) for s in SWEEPS])
def test_every_call_failing_in_turn_loses_nothing_acknowledged(
    op: str, kind: str, fsync: str, baselines: dict[str, Baseline], tmp_path: Path
) -> None:
    segments = baselines[fsync].segments
    problems: list[str] = []
    raised = 0
    for at in range(baselines[fsync].calls[op]):
        fault = FAULTS[kind](op, at)
        # A failed sync may lose what it did not write. With "interval" and "never" the
        # store promised no more than that, so the data is dropped only with "always".
        fs = FaultFS(fault, drop_unsynced=fsync == "always")
        directory = tmp_path / str(at)
        try:
            run = run_workload(fs, directory, fsync)
        except Exception as exc:  # noqa: BLE001 - name the fault whatever broke
            problems.append(f"{fault}: {exc!r}")
            continue
        run.expect(fs.fired.is_set(), "the fault was never met")
        if not run.fatal:
            run.expect(
                segment_files(directory) <= segments + 1,
                f"{segment_files(directory)} segments left, {segments} without the fault",
            )
        check_log(run, directory)
        problems += [f"{fault}: {problem}" for problem in run.problems]
        raised += run.raised > 0
        shutil.rmtree(directory)
    assert not problems, f"{len(problems)} broken promises:\n" + "\n".join(problems[:30])
    # unlink: deletion waits; allocate: a segment not allocated grows as it is written.
    assert raised or op in ("unlink", "allocate"), "no fault reached a publish"


# -- through the MQ -------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def faulty_mq(data_dir: Path, fs: FaultFS, **kwargs: Any) -> MQ:
    mq = MQ(data_dir=data_dir, **kwargs)
    mq._durable = dataclasses.replace(mq._durable, ops=fs)
    return mq


def reopen(data_dir: Path) -> tuple[Recorder, RecoveryReport]:
    """Open ``data_dir`` with the real file system and consume what it holds."""
    got = Recorder()
    mq = MQ(data_dir=data_dir)
    mq.register_queue(QUEUE, got, durable=True)
    report = mq.recovery_report(QUEUE)
    assert report is not None
    mq.start()
    mq.stop()
    return got, report


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS])
def test_no_room_is_storage_full_and_other_errors_are_storage_errors(
    code: int, data_dir: Path
) -> None:
    fs = FaultFS()
    mq = faulty_mq(data_dir, fs)
    mq.register_queue(QUEUE, Recorder(), durable=True)
    fs.fault = Fault("write", fs.calls["write"], code)
    with pytest.raises(StorageError, match=f"queue {QUEUE!r}: cannot write segment") as caught:
        mq.publish(QUEUE, "refused")
    assert isinstance(caught.value, StorageFullError) == (code in NO_ROOM)
    assert caught.value.errno == code and isinstance(caught.value, OSError)
    assert mq.publish(QUEUE, "kept") == 0  # the refused publish burned no id
    mq.stop()
    got, report = reopen(data_dir)
    assert got.data == ["kept"] and report.clean


def test_a_full_disk_refuses_publishes_until_there_is_room_without_a_reopen(
    data_dir: Path,
) -> None:
    fs = FaultFS()
    mq = faulty_mq(data_dir, fs, segment_size=1024)
    mq.register_queue(QUEUE, Recorder(), durable=True)
    ids = [mq.publish(QUEUE, [n, "x" * 60]) for n in range(20)]
    fs.full = True
    for _ in range(3):  # also when the record would start a segment
        with pytest.raises(StorageFullError, match=f"queue {QUEUE!r}"):
            mq.publish(QUEUE, "refused" * 20)
    fs.full = False
    ids += [mq.publish(QUEUE, [n, "x" * 60]) for n in range(20, 40)]
    mq.stop()
    got, report = reopen(data_dir)
    assert ids == list(range(40)) and got.ids == ids
    assert got.data == [[n, "x" * 60] for n in range(40)]
    assert report.clean and report.recovered == 40


def test_a_failed_fsync_fails_the_queue_until_the_mq_is_reopened(data_dir: Path) -> None:
    fs = FaultFS(drop_unsynced=True)
    mq = faulty_mq(data_dir, fs)
    mq.register_queue(QUEUE, Recorder(), durable=True)
    fs.fault = Fault("fdatasync", fs.calls["fdatasync"] + 2)  # the third publish's
    assert [mq.publish(QUEUE, n) for n in range(2)] == [0, 1]
    with pytest.raises(StorageError, match=f"queue {QUEUE!r}: fdatasync .* reopened") as first:
        mq.publish(QUEUE, 2)
    assert not isinstance(first.value, StorageFullError) and first.value.errno == errno.EIO
    for n in range(3):  # the fault is lifted; the queue still refuses
        with pytest.raises(StorageError) as later:
            mq.publish(QUEUE, f"after {n}")
        assert later.value is first.value
    mq.stop()
    got, report = reopen(data_dir)
    assert got.data == [0, 1]  # the unsynced record of 2 was dropped, with the failed sync
    assert not report.corruption  # the dropped record is a torn tail, cut off on open


def test_publishers_sharing_a_failed_sync_all_raise_and_so_does_every_later_publish(
    data_dir: Path,
) -> None:
    threads, per_thread = 4, 40
    fs = FaultFS(drop_unsynced=True)
    mq = faulty_mq(data_dir, fs, segment_size=4096)
    mq.register_queue(QUEUE, Recorder(), durable=True)
    fs.fault = Fault("fdatasync", fs.calls["fdatasync"] + 25)
    start = threading.Barrier(threads)
    acked: dict[int, object] = {}
    late_successes: list[int] = []  # publishes begun after the failure that returned

    def publisher(t: int) -> None:
        start.wait(10)
        for n in range(per_thread):
            data, began_after = [t, n], fs.fired.is_set()
            try:
                msg_id = mq.publish(QUEUE, data)
            except StorageError:
                continue
            acked[msg_id] = data
            if began_after:
                late_successes.append(msg_id)

    workers = [threading.Thread(target=publisher, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert not worker.is_alive()
    assert fs.fired.is_set() and not late_successes
    assert 0 < len(acked) < threads * per_thread
    mq.stop()
    got, report = reopen(data_dir)
    delivered = {m.id: m.data for _, m in got.seen}
    assert acked.items() <= delivered.items()  # every acknowledged one, with its data
    # Records written while the failing sync ran outlive the ones it dropped, which then
    # read as corruption; none of them was acknowledged.
    for damage in report.corruption:
        assert not acked.keys() & set(damage.lost_ids), damage


def test_a_queue_opens_on_a_full_disk_and_draining_it_makes_room(data_dir: Path) -> None:
    first = MQ(data_dir=data_dir, segment_size=1024)
    first.register_queue(QUEUE, Recorder(), durable=True)
    ids = [first.publish(QUEUE, [n, "x" * 60]) for n in range(30)]
    first.stop()

    fs = FaultFS()
    fs.full = True
    got = Recorder()
    mq = faulty_mq(data_dir, fs, segment_size=1024)
    mq.register_queue(QUEUE, got, durable=True)  # no room for a new segment: opens anyway
    report = mq.recovery_report(QUEUE)
    assert report is not None and report.recovered == 30 and report.clean
    mq.start()
    got.wait_for(30)
    assert got.ids == ids
    with pytest.raises(StorageFullError, match=f"queue {QUEUE!r}"):
        mq.publish(QUEUE, "refused")
    fs.full = False
    assert mq.publish(QUEUE, "fits") == 30  # no reopen needed
    got.wait_for(31)
    mq.stop()
    assert got.data[-1] == "fits"
    assert len(list((data_dir / "queues" / QUEUE).glob("*.wal"))) <= 2  # drained ones deleted
    again, report = reopen(data_dir)
    assert report.clean and again.ids == []  # unwritten acks: their segments were deleted


# -- for real ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, mounted for the test (Linux, as root); skips where that is refused."""
    mount = shutil.which("mount")
    if sys.platform != "linux" or os.geteuid() != 0 or mount is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8) on Linux")
    point = tmp_path / "small"
    point.mkdir()
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], timeout=30, check=False).returncode:
            subprocess.run(["umount", "--lazy", str(point)], timeout=30, check=True)


@pytest.fixture
def stop_at_end() -> Iterator[list[MQ]]:
    """MQs to stop when the test ends, also when it fails (before its tmpfs is unmounted)."""
    mqs: list[MQ] = []
    yield mqs
    for mq in mqs:
        mq.stop(timeout=10)


def fill(mq: MQ, ids: dict[int, object]) -> StorageFullError:
    """Publish until the disk is full; return the error, adding every acknowledged id."""
    for n in range(10_000):
        data = [n, "y" * 900]
        try:
            ids[mq.publish(QUEUE, data)] = data
        except StorageFullError as exc:
            return exc
    pytest.fail("10,000 publishes of 1 KiB never filled a 256 KiB file system")


def test_a_real_full_disk_refuses_publishes_loses_nothing_and_takes_them_again(
    small_disk: Path, stop_at_end: list[MQ]
) -> None:
    # tmpfs ignores fsync, which does not matter here: ENOSPC comes from write.
    filler = small_disk / "filler"
    filler.write_bytes(bytes(32 << 10))
    data_dir, ids = small_disk / "data", dict[int, object]()
    mq = MQ(data_dir=data_dir, segment_size=16 << 10)
    stop_at_end.append(mq)
    mq.register_queue(QUEUE, Recorder(), durable=True)
    full = fill(mq, ids)
    assert full.errno == errno.ENOSPC and f"queue {QUEUE!r}" in str(full) and len(ids) > 100
    with pytest.raises(StorageFullError):  # as big as the refused one: still no room
        mq.publish(QUEUE, [-1, "y" * 900])
    filler.unlink()
    ids[mq.publish(QUEUE, "room again")] = "room again"  # the same MQ, not reopened
    fill(mq, ids)
    mq.stop()

    got = Recorder()
    mq = MQ(data_dir=data_dir, segment_size=16 << 10)
    stop_at_end.append(mq)
    mq.register_queue(QUEUE, got, durable=True)  # the disk is full: it opens anyway
    report = mq.recovery_report(QUEUE)
    assert report is not None and report.clean and report.recovered == len(ids)
    mq.start()
    got.wait_for(len(ids))
    assert {m.id: m.data for _, m in got.seen} == ids and got.ids == sorted(ids)
    # Consuming made room: the publish deletes the drained segments and fits.
    late = mq.publish(QUEUE, "after draining")
    got.wait_for(len(ids) + 1)
    mq.stop()
    assert got.ids[-1] == late and got.data[-1] == "after draining"


_OVER_THE_LIMIT = """
import json, resource, signal, sys
from tinymq import MQ, StorageFullError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write fails with EFBIG
mq = MQ(data_dir=sys.argv[1], segment_size=64 << 10)
mq.register_queue("q", print, durable=True)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 10, hard))
ids, error = [], None
try:
    while len(ids) < 1000:
        ids.append(mq.publish("q", [len(ids), "z" * 300]))
except StorageFullError as exc:
    error = [exc.errno, str(exc)]
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
ids.append(mq.publish("q", [len(ids), "z" * 300]))
mq.stop()
print(json.dumps({"ids": ids, "error": error}))
"""


def test_a_file_size_limit_is_storage_full_and_its_short_write_leaves_nothing(
    tmp_path: Path,
) -> None:
    if not hasattr(os, "fdatasync") or sys.platform != "linux":
        pytest.skip("RLIMIT_FSIZE short writes are checked on Linux")
    data_dir = tmp_path / "data"
    child = subprocess.run(
        [sys.executable, "-c", _OVER_THE_LIMIT, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(child.stdout.splitlines()[-1])
    code, message = result["error"]
    assert code == errno.EFBIG and f"queue {QUEUE!r}" in message
    # The refused record began below the limit: the kernel wrote part of it, then refused.
    match = re.search(r"cannot write segment \d+ at (\d+)", message)
    assert match is not None and int(match.group(1)) < 8 << 10, message
    ids = result["ids"]
    assert ids == list(range(len(ids))) and len(ids) > 10  # the refused one burned no id
    got, report = reopen(data_dir)
    assert report.clean  # the record cut short at the limit was truncated away
    assert got.ids == ids and got.data == [[n, "z" * 300] for n in ids]


class HeldSyncs(FaultFS):
    """Holds one thread inside its fdatasync; one other thread's next write finds the disk
    full. Records the most fdatasync calls on one file at the same time."""

    def __init__(self) -> None:
        super().__init__(drop_unsynced=True)
        self.hold: threading.Thread | None = None
        self.entered, self.go = threading.Event(), threading.Event()
        self.full_for: threading.Thread | None = None
        self.most_at_once = 0
        self._running: Counter[str] = Counter()  # guarded by self._lock

    def fdatasync(self, fd: int) -> None:
        path = self._path(fd)
        with self._lock:
            self._running[path] += 1
            self.most_at_once = max(self.most_at_once, self._running[path])
        try:
            if threading.current_thread() is self.hold:
                self.entered.set()
                assert self.go.wait(10), "the held sync was never let go"
            super().fdatasync(fd)
        finally:
            with self._lock:
                self._running[path] -= 1

    def write(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if threading.current_thread() is self.full_for:
            self.full_for = None
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return super().write(fd, data, offset)


def test_a_straggler_moved_forward_syncs_only_after_a_publishers_sync_and_loses_nothing(
    tmp_path: Path,
) -> None:
    # A publish finding the disk full collects old segments, which moves their live
    # messages forward and syncs them. Were that sync to run beside a publisher's and
    # fail, Linux could report the failure to it alone and the publisher's sync could
    # succeed without its data.
    fs = HeldSyncs()
    options = DurableOptions(fsync="always", segment_size=1024, ops=fs)
    store = DurableStore(str(tmp_path / QUEUE), QUEUE, options, LOG)
    first, msgs = store._segment, list[Msg]()
    while store._segment == first:  # fill a segment and roll into the next
        msg, wait = store.append(Msg(len(msgs), "x" * 40, QUEUE))
        wait()
        msgs.append(msg)
    for msg in msgs[:-2]:
        store.ack(msg)  # msgs[-2] stays live in the first segment: a straggler
    outcome: dict[str, object] = {}

    def publish(name: str, msg_id: int) -> None:
        try:
            store.append(Msg(msg_id, name, QUEUE))[1]()
            outcome[name] = "returned"
        except StorageError as exc:
            outcome[name] = exc

    p1 = threading.Thread(target=publish, args=("p1", len(msgs)))
    fs.hold = p1
    p1.start()
    assert fs.entered.wait(10), "p1 never synced"
    fs.fault = Fault("fdatasync", fs.calls["fdatasync"] + 1)  # the sync after p1's fails
    p2 = threading.Thread(target=publish, args=("p2", len(msgs) + 1))
    fs.full_for = p2
    p2.start()
    wait_until(lambda: store._commit._waiting or not p2.is_alive())
    fs.go.set()
    for thread in (p1, p2):
        thread.join(10)
        assert not thread.is_alive()
    assert fs.most_at_once == 1, "two syncs of one segment ran at the same time"
    assert outcome["p1"] == "returned" and isinstance(outcome["p2"], StorageFullError)
    store.close()
    reopened = DurableStore(str(tmp_path / QUEUE), QUEUE, DurableOptions(ops=REAL), LOG)
    try:
        assert reopened._state.ledger.get(len(msgs)) is not None, "p1 acknowledged, then lost"
    finally:
        reopened.close()
