"""Crash tests with real SIGKILLs: no acknowledged publish is ever lost, nothing is invented.

A child process (tests/durable_child.py) publishes to and consumes one durable queue
and reports every event through a pipe; the parent kills it (SIGKILL, at random
moments or at the named failpoints of tinymq.failpoints), restarts it on the same
data directory, and at the end drains the queue and asks the total-queue oracle
(tests/oracle.py): every acknowledged id delivered, no delivered id unattempted, every
payload matching its id and checksum. Every reopen must succeed with no corruption in
its recovery report (a torn tail is allowed). A process crash keeps the page cache, so
fsync="interval" must pass exactly as "always" does.

TINYMQ_KILLS=N sets the random kills per fsync policy (default 50); TINYMQ_SEED
replays a run (each test prints its seed).
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.oracle import History, Verdict, complete_lines, payload
from tinymq import wal

ROOT = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("TINYMQ_KILLS", "50"))
SEED = int(os.environ.get("TINYMQ_SEED", str(random.randrange(1 << 32))))
CHILD_TIMEOUT = 20.0  # seconds any one child may take before the test fails
KILLED = -signal.SIGKILL

# The kill loop: about half of what is published is consumed before the kill.
LOOP_ARGS = ("--segment-size", "8192", "--pace", "0.002", "--consume-delay", "0.001")
LOOP_KILL_AFTER = (0.02, 0.3)  # seconds after "ready"
# A failpoint run publishes 400 messages over ~20 segments, consuming at once, so each
# of the publish and segment points passes at least 10 times.
FAILPOINT_ARGS = ("--segment-size", "4096", "--count", "100", "--pace", "0.001")
RESTART_ARGS = ("--segment-size", "4096", "--count", "25")  # publishes, then drains
DRAIN_ARGS = ("--publishers", "0")


@dataclass
class Run:
    """One child process: how it ended, and its lines besides the oracle's events."""

    returncode: int
    lines: list[str]
    stderr: str
    seconds: float

    @property
    def report(self) -> dict[str, Any] | None:
        """The recovery report it printed (None if it died before opening the queue)."""
        for line in self.lines:
            if line.startswith("report "):
                report: dict[str, Any] = json.loads(line.removeprefix("report "))
                return report
        return None

    def describe(self) -> str:
        return f"returncode {self.returncode}, lines {self.lines[:5]}, stderr:\n{self.stderr}"


@dataclass
class Crasher:
    """Runs the child again and again on one data directory; one History for all runs."""

    tmp_path: Path
    rng: random.Random
    fsync: str = "always"
    history: History = field(default_factory=History)
    runs: list[Run] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def queue_dir(self) -> Path:
        return self.tmp_path / "data" / "queues" / "q"

    def segments(self) -> list[str]:
        return sorted(p.name for p in self.queue_dir.glob("*.wal"))

    def run(
        self, *args: str, failpoints: str | None = None, kill_after: float | None = None
    ) -> Run:
        """Run the child to its end, or SIGKILL it ``kill_after`` s after it is ready."""
        env = {k: v for k, v in os.environ.items() if k != "TINYMQ_FAILPOINTS"}
        if failpoints is not None:
            env["TINYMQ_FAILPOINTS"] = failpoints
        label = str(len(self.runs))
        command = [sys.executable, "-m", "tests.durable_child", str(self.tmp_path / "data")]
        command += ["--fsync", self.fsync, "--label", label, *args]
        log = self.tmp_path / f"child-{label}.stderr"
        started = time.monotonic()
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr
            )
        self._procs.append(proc)
        raw = self._read(proc, kill_after)
        run = Run(proc.wait(CHILD_TIMEOUT), [], log.read_text(), time.monotonic() - started)
        run.lines = self.history.feed(complete_lines(raw))
        self.runs.append(run)
        errors = [line for line in run.lines if line.startswith("error ")]
        assert not errors, f"run {label}: {errors}\n{run.describe()}"
        report = run.report
        assert report is None or not report["corruption"], f"run {label}: {run.describe()}"
        return run

    def _read(self, proc: subprocess.Popen[bytes], kill_after: float | None) -> bytes:
        """Everything the child writes until it exits; kill it once ready if asked."""
        assert proc.stdout is not None
        fd, chunks, ready = proc.stdout.fileno(), bytearray(), False
        deadline, kill_at = time.monotonic() + CHILD_TIMEOUT, float("inf")
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if now >= kill_at:
                    proc.send_signal(signal.SIGKILL)
                    kill_at = float("inf")
                if now >= deadline:
                    proc.send_signal(signal.SIGKILL)
                    pytest.fail(f"child still running after {CHILD_TIMEOUT} s: {proc.args!r}")
                if selector.select(min(deadline, kill_at) - now):
                    data = os.read(fd, 1 << 16)
                    if not data:
                        break
                    chunks += data
                    if kill_after is not None and not ready and b"\nready\n" in chunks:
                        ready, kill_at = True, time.monotonic() + kill_after
        proc.stdout.close()
        return bytes(chunks)

    def kill_run(self, *args: str, kill_after: float) -> Run:
        """A run killed ``kill_after`` s after it opened the queue and started."""
        run = self.run(*args, kill_after=kill_after)
        assert run.returncode == KILLED and "ready" in run.lines, run.describe()
        return run

    def failpoint_run(self, *args: str, point: str) -> Run:
        """A run that must kill itself at failpoint ``point`` ("name:hit")."""
        run = self.run(*args, failpoints=point)
        assert run.returncode == KILLED, f"{point} was not reached: {run.describe()}"
        return run

    def finish(self, *args: str) -> Verdict:
        """Run the child to its end (it drains the queue), then judge the whole history."""
        run = self.run(*args)
        assert run.returncode == 0 and "done" in run.lines, run.describe()
        assert run.report is not None
        verdict = self.history.check()
        print(f"seed={SEED} fsync={self.fsync} runs={len(self.runs)}: {verdict.summary()}")
        assert verdict.ok, f"seed={SEED}: {verdict.summary()}"
        assert verdict.acknowledged, "nothing was acknowledged: the test tested nothing"
        return verdict

    def kill_leftovers(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


@pytest.fixture
def crasher(tmp_path: Path) -> Iterator[Crasher]:
    rng = random.Random(SEED)
    crash = Crasher(tmp_path, rng)
    yield crash
    crash.kill_leftovers()


def tear_tail(queue_dir: Path, kind: str, rng: random.Random) -> bytes:
    """Write a torn record of ``kind`` after the newest segment's last record, as a cut
    write leaves one (in the segment's allocated zeros)."""
    newest = max(queue_dir.glob("*.wal"))
    data = newest.read_bytes()
    items = wal.scan(data, 1 << 24)
    end = max((r.end for r in items if isinstance(r, wal.Record)), default=0)
    record = wal.encode(wal.MSG, 1 << 40, json.dumps(payload("torn", 0)).encode(), time.time())
    if kind == "zeros":
        junk = bytes(rng.randint(1, 200))
    elif kind == "garbage":
        junk = rng.randbytes(rng.randint(1, 200)).replace(wal.MAGIC, b"")
    elif kind == "half-record":  # header and part of the payload of a never-published id
        junk = record[: rng.randint(wal.HEADER_SIZE, len(record) - 1)]
    else:  # "bad-checksum": a whole record whose crc does not match
        crc = (zlib.crc32(record[8:]) ^ 1).to_bytes(4, "little")
        junk = record[:4] + crc + record[8:]
    with newest.open("r+b") as f:
        f.seek(end)
        f.write(junk)
    return junk


# -- the oracle itself ---------------------------------------------------------


def test_the_oracle_flags_lost_unexpected_and_garbled_messages() -> None:
    def got(msg_id: int, data: object) -> str:
        return f"got {msg_id} {json.dumps(data, separators=(',', ':'))}"

    garbled = dict(payload("a", 2), pad="y")
    lines = ["try a 0", "ack 0 a 0"]  # acknowledged, never delivered: lost
    lines += ["try a 1", "ack 1 a 1", got(1, payload("a", 1)), got(1, payload("a", 1))]
    lines += [got(2, payload("b", 0))]  # never attempted: unexpected
    lines += ["try a 2", "ack 3 a 2", got(3, garbled)]  # checksum fails: mismatch
    lines += ["try a 3", got(4, payload("a", 3))]  # outcome unknown at a crash: recovered
    lines += ["try a 4", "ack 5 a 4", got(5, payload("a", 3))]  # another message's payload
    history = History()
    raw = "\n".join([*lines, "ready", "ack 6 a"]).encode()  # the last line was cut
    assert history.feed(complete_lines(raw)) == ["ready"]
    verdict = history.check()
    assert (verdict.lost, verdict.unexpected, verdict.duplicates) == ([0], [2], 1)
    assert len(verdict.mismatches) == 3, verdict.mismatches  # garbage, 5 is not "a 4", a 3 twice
    assert verdict.recovered == 1
    assert not verdict.ok


def test_the_crash_test_notices_messages_the_queue_loses(crasher: Crasher) -> None:
    crasher.kill_run(*LOOP_ARGS, kill_after=0.2)
    for segment in crasher.queue_dir.glob("*.wal"):  # what a broken queue might do
        segment.unlink()
    crasher.run(*DRAIN_ARGS)
    verdict = crasher.history.check()
    assert verdict.lost and not verdict.ok, verdict.summary()


# -- random kills -------------------------------------------------------------


@pytest.mark.timeout(max(60, KILLS))
@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_sigkill_at_random_moments_loses_no_acknowledged_message(
    crasher: Crasher, fsync: str
) -> None:
    crasher.fsync = fsync
    started = time.monotonic()
    for _ in range(KILLS):
        crasher.kill_run(*LOOP_ARGS, kill_after=crasher.rng.uniform(*LOOP_KILL_AFTER))
    consumed = len(crasher.history.delivered) / max(1, len(crasher.history.acked))
    drained = crasher.finish(*DRAIN_ARGS)
    torn = sum(1 for run in crasher.runs if (run.report or {}).get("torn_tail"))
    print(
        f"{KILLS} kills in {time.monotonic() - started:.1f} s; share of acknowledged ids "
        f"consumed before the final drain: {consumed:.2f}; torn tails: {torn}; "
        f"segments left after the drain: {len(crasher.segments())}"
    )
    assert drained.delivered >= drained.acknowledged
    left = crasher.segments()
    assert len(left) <= 2, f"the drained queue holds {len(left)} segments: {left[0]}..{left[-1]}"


# -- failpoints ---------------------------------------------------------------

RUNTIME_POINTS = [
    (fsync, f"{name}:{hit}")
    for fsync, names in (
        ("always", ("publish.after_write", "publish.after_sync")),
        ("interval", ("publish.after_write",)),  # interval never waits: no after_sync
        ("always", ("segment.after_create", "segment.before_dir_fsync", "segment.after_delete")),
        ("interval", ("segment.after_create", "segment.before_dir_fsync", "segment.after_delete")),
    )
    for name in names
    for hit in (1, 3, 10)
]


@pytest.mark.parametrize(("fsync", "point"), RUNTIME_POINTS)
def test_a_kill_at_a_failpoint_loses_no_acknowledged_message(
    crasher: Crasher, fsync: str, point: str
) -> None:
    crasher.fsync = fsync
    crasher.kill_run(*LOOP_ARGS, kill_after=crasher.rng.uniform(0.02, 0.1))  # a backlog
    crasher.failpoint_run(*FAILPOINT_ARGS, point=point)
    crasher.finish(*RESTART_ARGS)


@pytest.mark.parametrize("before", ["fresh", "backlog", "torn-tail"])
def test_a_kill_right_after_the_recovery_scan_loses_nothing(crasher: Crasher, before: str) -> None:
    if before != "fresh":
        crasher.kill_run(*LOOP_ARGS, kill_after=crasher.rng.uniform(0.02, 0.1))
    if before == "torn-tail":
        tear_tail(crasher.queue_dir, "half-record", crasher.rng)
    crasher.failpoint_run(*RESTART_ARGS, point="recovery.after_scan:1")
    run = crasher.run(*DRAIN_ARGS)  # the scan changed nothing: the same tail is found
    report = run.report
    assert report is not None and (report["torn_tail"] is not None) == (before == "torn-tail")
    crasher.finish(*RESTART_ARGS)


@pytest.mark.parametrize("kind", ["garbage", "half-record", "bad-checksum"])
def test_a_kill_right_after_cutting_a_torn_tail_loses_nothing(crasher: Crasher, kind: str) -> None:
    crasher.kill_run(*LOOP_ARGS, kill_after=crasher.rng.uniform(0.02, 0.1))
    junk = tear_tail(crasher.queue_dir, kind, crasher.rng)
    crasher.failpoint_run(*RESTART_ARGS, point="recovery.after_truncate:1")
    quarantined = list((crasher.queue_dir / "quarantine").glob("*.tail"))
    assert [p.read_bytes() for p in quarantined] == [junk.rstrip(b"\0")]  # zeros: unused
    run = crasher.run(*RESTART_ARGS)  # the cut survived the kill: nothing torn is left
    report = run.report
    assert report is not None and report["torn_tail"] is None, run.describe()
    crasher.finish(*DRAIN_ARGS)


def test_zeros_written_after_the_last_record_are_unused_space_not_a_torn_tail(
    crasher: Crasher,
) -> None:
    crasher.kill_run(*LOOP_ARGS, kill_after=crasher.rng.uniform(0.02, 0.1))
    tear_tail(crasher.queue_dir, "zeros", crasher.rng)
    run = crasher.run(*RESTART_ARGS)
    report = run.report
    assert report is not None and report["torn_tail"] is None, run.describe()
    assert report["corruption"] == [], run.describe()
    assert not (crasher.queue_dir / "quarantine").exists()
    crasher.finish(*DRAIN_ARGS)


def test_kills_during_recovery_then_a_third_open_keep_every_acknowledged_message(
    crasher: Crasher,
) -> None:
    crasher.kill_run(*LOOP_ARGS, kill_after=crasher.rng.uniform(0.1, 0.3))
    tear_tail(crasher.queue_dir, "half-record", crasher.rng)
    crasher.failpoint_run(*RESTART_ARGS, point="recovery.after_scan:1")
    crasher.failpoint_run(*RESTART_ARGS, point="recovery.after_truncate:1")
    crasher.failpoint_run(*RESTART_ARGS, point="segment.after_create:1")  # leaves it empty
    tear_tail(crasher.queue_dir, "garbage", crasher.rng)  # the newest segment is all torn
    crasher.failpoint_run(*RESTART_ARGS, point="segment.before_dir_fsync:1")
    crasher.kill_run(*LOOP_ARGS, kill_after=crasher.rng.uniform(0.02, 0.1))
    crasher.finish(*DRAIN_ARGS)
    assert len(list((crasher.queue_dir / "quarantine").glob("*.tail"))) == 2  # both were cut
