"""Simulated power loss under a durable store: no acknowledged publish is ever lost.

Each seed drives a DurableStore on a CrashFS (tests/crashfs.py) through publishes,
acknowledgements and reopens with small segments, so that rolls, deletions of
acknowledged segments and moves of stragglers all happen; the power fails at a
random modifying call; a state the disk could then hold is written out and opened
with the real FileOps. The oracle is Jepsen's total-queue checker: with
fsync="always" every message whose publish returned and which was not acknowledged
by a consumer is recovered with its exact data; no id that was never appended
appears, with any other data, or twice; ids never go back below an acknowledged
publish; recovery never raises (on_corruption="skip"), leaves a log that takes new
publishes, and a second open finds the same messages and no new damage.

``TINYMQ_POWERLOSS_SEEDS=N`` runs N seeds instead of the 1,000 CI runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import mmap
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.crashfs import CrashFS, ObservedMapping
from tinymq.durable import DurableOptions, DurableStore
from tinymq.fileops import FileOps, Mapping
from tinymq.message import Msg
from tinymq.recovery import RecoveryReport

QUEUE = "q"
SEEDS = int(os.environ.get("TINYMQ_POWERLOSS_SEEDS", "1000"))
SNAPSHOTS = 4  # crash states per seed
LOG = logging.getLogger("tests.powerloss")  # the stores' error reports are expected here
LOG.disabled = True


@dataclass
class History:
    """What a workload did, as a total-queue checker sees it."""

    sent: dict[int, object] = field(default_factory=dict)  # id -> data, every append tried
    published: set[int] = field(default_factory=set)  # publish returned: acknowledged
    acked: set[int] = field(default_factory=set)  # consumer ack returned before the loss

    def copy(self) -> History:
        return History(dict(self.sent), set(self.published), set(self.acked))


@dataclass
class Outcome:
    """What one crash state gave on recovery, for the coverage counts."""

    report: RecoveryReport
    recovered: int


MAPPED_STORES = [0]  # records the workloads copied into mapped segments


def run_workload(
    fs: CrashFS,
    directory: str,
    *,
    options: DurableOptions,
    rng: random.Random,
    steps: int,
    history: History,
) -> None:
    """Publish, ack and reopen as ``rng`` says until ``steps`` are done or the power fails.

    With fsync="always", asserts at every publish return that the record is durable.
    """
    live: list[int] = []  # published, not acked, in id order
    store: DurableStore | None = None
    try:
        store = DurableStore(directory, QUEUE, options, LOG)
        for _ in range(steps):
            action = rng.random()
            if action < 0.5 or not live:
                live.append(publish(fs, store, rng, history, options.fsync == "always"))
            elif action < 0.96:  # mostly the oldest; sometimes any, leaving stragglers
                msg_id = live.pop(0 if rng.random() < 0.7 else rng.randrange(len(live)))
                store.ack(Msg(msg_id, history.sent[msg_id], QUEUE))
                if not fs.crashed:
                    history.acked.add(msg_id)
            else:
                store.close()
                store = None
                store = DurableStore(directory, QUEUE, options, LOG)
            if fs.crashed:
                break
    except OSError:
        if not fs.crashed:
            raise
    finally:
        if store is not None:
            with contextlib.suppress(OSError):
                store.close()


def publish(
    fs: CrashFS, store: DurableStore, rng: random.Random, history: History, check_durable: bool
) -> int:
    msg_id = store.next_id
    data = history.sent[msg_id] = {"id": msg_id, "pad": "p" * rng.randrange(300)}
    _, wait = store.append(Msg(msg_id, data, QUEUE))
    wait()
    history.published.add(msg_id)
    if check_durable:
        path, _, end = fs.last_write
        durable = fs.durable_size(path)
        assert durable is not None and durable >= end, (
            f"publish of {msg_id} returned, but only {durable} bytes of {path} are durable; "
            f"its record ends at {end}"
        )
    fs.mark("published", str(msg_id))
    return msg_id


def drain(store: DurableStore) -> list[Msg]:
    """Everything the store would deliver, as its forwarder reads it."""
    backlog, msgs = store.backlog(), list[Msg]()
    while backlog.refill():
        msgs.extend(backlog.ready)
        backlog.ready.clear()
    return msgs


def crash_states(seed: int, fsync: str, work: Path) -> list[tuple[Path, History]]:
    """Run seed ``seed``'s workload; return its crash states, each with the history then.

    The power fails at a random call, or at the end; on the way, crash states are also
    taken before a few random earlier calls (the run goes on past them).
    """
    rng, crash_rng = random.Random(seed), random.Random(f"crash {seed}")
    steps = rng.randrange(10, 100)
    root = work / "root"
    root.mkdir()
    options = DurableOptions(
        fsync=fsync,
        fsync_interval=0.001,
        segment_size=rng.choice((1024, 2048, 4096)),
        on_corruption="skip",
    )
    crash_at = crash_rng.randrange(12 * steps // 5 + 10)  # about the calls it makes
    snapshots = set(crash_rng.sample(range(crash_at), min(crash_at, SNAPSHOTS - 1)))
    fs, history = CrashFS(str(root), crash_at), History()
    states: list[tuple[Path, History]] = []

    def snapshot(number: int, call: str, path: str) -> None:
        if number in snapshots:
            states.append((work / f"state{len(states)}", history.copy()))
            fs.build_crash_state(str(states[-1][0]), crash_rng)

    fs.before_call = snapshot
    options_on_fs = dataclasses.replace(options, ops=fs)
    run_workload(
        fs, str(root / QUEUE), options=options_on_fs, rng=rng, steps=steps, history=history
    )
    MAPPED_STORES[0] += fs.mapped_stores
    fs.crashed = True  # a workload that finished loses power at its end
    states.append((work / f"state{len(states)}", history))
    fs.build_crash_state(str(states[-1][0]), crash_rng)
    return states


def recover(state: Path, history: History, fsync: str) -> Outcome:
    """Open a crash state with the real FileOps and check the oracle against ``history``."""
    options = DurableOptions(
        fsync=fsync, fsync_interval=0.001, segment_size=4096, on_corruption="skip"
    )
    store = DurableStore(str(state / QUEUE), QUEUE, options, LOG)
    try:
        report, msgs = store.report, drain(store)
        ids = [m.id for m in msgs]
        assert len(ids) == len(set(ids)), f"ids delivered twice: {ids}"
        for msg in msgs:
            assert msg.id in history.sent, f"id {msg.id} was never appended"
            assert msg.data == history.sent[msg.id], f"id {msg.id} came back as {msg.data!r}"
        if fsync == "always":
            lost = history.published - history.acked - set(ids)
            assert not lost, f"acknowledged publishes lost: {sorted(lost)}"
            assert store.next_id > max(history.published, default=-1), "ids went back"
        new_id = store.next_id
        _, wait = store.append(Msg(new_id, "after", QUEUE))
        wait()
    finally:
        store.close()

    again = DurableStore(str(state / QUEUE), QUEUE, options, LOG)
    try:
        assert [m.id for m in drain(again)] == [*ids, new_id], "a second open disagrees"
        assert again.report.torn_tail is None, f"torn tail again: {again.report.torn_tail}"
        seen = {(d.segment, d.offset, d.length) for d in report.corruption}
        new_damage = [
            d for d in again.report.corruption if (d.segment, d.offset, d.length) not in seen
        ]
        assert not new_damage, f"a second open sees new damage: {new_damage}"
    finally:
        again.close()
    return Outcome(report, len(ids))


def run_seeds(seeds: range, fsync: str, scratch: Path) -> list[Outcome]:
    outcomes = []
    for seed in seeds:
        work = scratch / str(seed)
        work.mkdir()
        try:
            for number, (state, history) in enumerate(crash_states(seed, fsync, work)):
                try:
                    outcomes.append(recover(state, history, fsync))
                except Exception as exc:  # noqa: BLE001 - name the seed whatever broke
                    where = f"seed {seed}, crash state {number}, fsync={fsync!r}"
                    pytest.fail(f"{where}: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(work)
    return outcomes


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs where there is one: crash states need no real fsync to be tested."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="tinymq-powerloss-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_every_acknowledged_publish_survives_a_power_loss_at_any_call(scratch: Path) -> None:
    MAPPED_STORES[0] = 0
    outcomes = run_seeds(range(SEEDS), "always", scratch)
    assert MAPPED_STORES[0] > 0, "no record was copied into a mapped segment"
    # The crash states must include the cases worth testing, or passing proves little.
    torn = sum(o.report.torn_tail is not None for o in outcomes)
    damaged = sum(bool(o.report.corruption) for o in outcomes)
    recovered = sum(o.recovered > 0 for o in outcomes)
    assert torn > len(outcomes) // 10 and recovered > len(outcomes) // 2 and damaged > 0


def test_interval_fsync_never_recovers_unknown_ids_or_wrong_data(scratch: Path) -> None:
    run_seeds(range(max(SEEDS // 5, 1)), "interval", scratch)


def test_a_segment_create_or_delete_is_dir_synced_before_the_next_publish_returns(
    tmp_path: Path,
) -> None:
    for seed in range(20):
        root = tmp_path / str(seed)
        root.mkdir()
        fs = CrashFS(str(root))
        options = DurableOptions(segment_size=1024, ops=fs)
        run_workload(
            fs,
            str(root / QUEUE),
            options=options,
            rng=random.Random(seed),
            steps=200,
            history=History(),
        )
        unsynced: set[str] = set()  # directories with an entry change not yet fsynced
        for op, path in fs.trace:
            if op in ("create", "unlink", "rename") and path.endswith(".wal"):
                unsynced.add(os.path.dirname(path))
            elif op == "fsync_dir":
                unsynced.discard(path)
            elif op == "published":
                assert not unsynced, f"seed {seed}: publish {path} returned before fsync_dir"
        assert sum(op == "unlink" for op, _ in fs.trace) > 0, "no segment was deleted"


class SyncProbe(FileOps):
    """Real FileOps that records, per file, how many bytes the last fdatasync covered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards paths, ends, synced, syncs
        self.paths: dict[int, str] = {}
        self.ends: dict[str, int] = {}  # path -> end of the bytes written to it
        self.synced: dict[str, int] = {}
        self.syncs = 0
        self.last_write = threading.local()  # .end: (path, end offset) of this thread's write

    def open(self, path: str, flags: int) -> int:
        fd = super().open(path, flags)
        with self.lock:
            self.paths[fd] = path
        return fd

    def write(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        done = super().write(fd, data, offset)
        self._wrote(self.paths[fd], offset + done)
        return done

    def map(self, fd: int, size: int) -> Mapping | None:
        return ObservedMapping(mmap.mmap(fd, size), self.paths[fd], self._store)

    def _store(self, path: str, offset: int, data: bytes, store: Callable[[], None]) -> None:
        store()
        self._wrote(path, offset + len(data))

    def _wrote(self, path: str, end: int) -> None:
        with self.lock:
            self.ends[path] = max(self.ends.get(path, 0), end)
        self.last_write.end = (path, end)

    def fdatasync(self, fd: int) -> None:
        with self.lock:
            path = self.paths[fd]
            size = self.ends.get(path, 0)  # what this sync is sure to cover
        super().fdatasync(fd)
        with self.lock:
            self.syncs += 1
            self.synced[path] = max(self.synced.get(path, 0), size)


def test_concurrent_publishers_share_fdatasyncs_and_return_only_once_synced(
    tmp_path: Path,
) -> None:
    probe, threads, per_thread = SyncProbe(), 8, 40
    options = DurableOptions(fsync="always", segment_size=4096, ops=probe)
    store = DurableStore(str(tmp_path / QUEUE), QUEUE, options, LOG)
    id_lock, start = threading.Lock(), threading.Barrier(threads, timeout=10)
    late: list[str] = []
    syncs_before = probe.syncs

    def publisher() -> None:
        start.wait()
        for n in range(per_thread):
            with id_lock:  # appends go in id order, as under the MQ's id lock
                _, wait = store.append(Msg(store.next_id, "x" * (n % 50), QUEUE))
                path, end = probe.last_write.end
            wait()
            with probe.lock:
                if probe.synced.get(path, 0) < end:
                    late.append(f"{path}: returned at {probe.synced.get(path)} < {end}")

    workers = [threading.Thread(target=publisher) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not any(w.is_alive() for w in workers), "a publisher hung"
    store.close()
    assert not late
    assert store.next_id == threads * per_thread
    assert probe.syncs - syncs_before < threads * per_thread, "no fdatasync was shared"


def test_a_restart_after_a_kill_makes_what_the_dead_run_left_durable_before_writing_on(
    tmp_path: Path,
) -> None:
    # A run killed before syncing leaves records the OS holds but never wrote. The next
    # run reads them, delivers them and starts its own segment; if the power then fails,
    # they must not come back as damage in the middle of the log (refused to open with
    # on_corruption="fail") or be lost.
    root = tmp_path / "root"
    root.mkdir()
    fs = CrashFS(str(root))
    directory = str(root / QUEUE)
    killed = DurableStore(directory, QUEUE, DurableOptions(fsync="never", ops=fs), LOG)
    for i in range(20):
        killed.append(Msg(i, f"message {i}", QUEUE))
    killed._close_files()  # the process dies: descriptors closed, nothing synced
    restarted = DurableStore(directory, QUEUE, DurableOptions(fsync="always", ops=fs), LOG)
    assert restarted._state.ledger.live == 20
    for seed in range(20):  # the power fails right after the restart
        state = tmp_path / f"state{seed}"
        fs.build_crash_state(str(state), random.Random(seed))
        options = DurableOptions(on_corruption="fail")
        after = DurableStore(str(state / QUEUE), QUEUE, options, LOG)
        try:
            assert after._state.ledger.live == 20, f"seed {seed}: lost what the restart read"
        finally:
            after.close()
    restarted.close()


def test_a_clean_stop_with_fsync_never_leaves_every_segment_durable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    fs = CrashFS(str(root))
    directory = str(root / QUEUE)
    store = DurableStore(
        directory, QUEUE, DurableOptions(fsync="never", segment_size=1024, ops=fs), LOG
    )
    for i in range(60):  # rolls past several segments, none synced at its roll
        store.append(Msg(i, f"message {i}", QUEUE))
    assert store._segment > 2
    store.close()
    for seed in range(10):  # the power fails right after the stop
        state = tmp_path / f"state{seed}"
        fs.build_crash_state(str(state), random.Random(seed))
        after = DurableStore(str(state / QUEUE), QUEUE, DurableOptions(on_corruption="fail"), LOG)
        try:
            assert after._state.ledger.live == 60, f"seed {seed}: a clean stop kept less"
        finally:
            after.close()
