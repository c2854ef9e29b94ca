"""The durable-queue rows of bench_throughput.py: tinymq's log against the disk and persist-queue.

Every figure depends on how fast the disk flushes, so the report opens with the file
system of the benchmark directory and the fdatasync and fsync latency measured there,
and the targets are ratios to contenders run in the same directory in the same run:

* Raw loop. ``os.write`` of one 200-byte record then ``os.fdatasync``, per record, on a
  new file: the physical limit of ``fsync="always"`` for one thread. Also one
  fdatasync per 100 records, as a reference for what batching can reach.
* Raw loop, allocated file. ``os.pwrite`` of the same record in place into a file
  allocated beforehand (``posix_fallocate``), then ``os.fdatasync``, per record: the
  layout of tinymq's segments, whose syncs have no file size to commit; the limit of
  ``fsync="always"`` for one thread with that layout.
* tinymq. ``publish`` of a JSON payload that makes the same 200-byte record, to a
  durable queue whose consumer is not started: each fsync policy from 1 and 8
  threads (with ``"always"``, 8 threads share syncs: group commit). Then the
  backlog is drained through one consumer thread: ``start()`` until ``stop()``
  returned (each message read back from the log, handed out and acknowledged).
* persist-queue (the ``bench`` extra; reported as skipped when not installed).
  ``SQLiteAckQueue``: ``put``, then ``get`` + ``ack`` until empty. ``Queue`` (files,
  ``autosave=True``): ``put``, then ``get`` + ``task_done`` until empty. Both with
  persist-queue's JSON serializer and the same payload, in one thread.
* Recovery. A backlog of pending 1 KiB messages is written with ``fsync="never"`` in
  a child process; fresh child processes then time ``register_queue`` (which is
  recovery) at two sizes, interleaved; the ratio of the times shows how recovery
  grows. A last child opens the larger backlog and drains it through one consumer;
  its peak resident set is the memory figure: VmHWM from /proc/self/status where
  there is one, since on Linux ``ru_maxrss`` carries the parent's resident set over
  fork and exec (a child of a 90 MB parent reports at least 90 MB); else ``ru_maxrss``.

Rows are interleaved round by round; the table shows the median rate and the min-max
range. Rows bound by one flush (or one file rename) per message run fewer messages than
the page-cache rows, so that each round takes about a second; rates are per message.
On a disk whose measured fdatasync is slow (another process flushing, a spinning
disk), those rows take fewer messages still, down to 100, so that a round stays near
``SYNC_ROUND_S`` seconds: the sizes used are in the report and the JSON.
Every round checks that each message was published once and handled once, and
raises CountError otherwise. The directory is a new one under ``$TMPDIR`` (or
/tmp), removed afterwards; point ``TMPDIR`` at another disk to measure that one.

Run alone from the repository root::

    PYTHONPATH=. python benchmarks/bench_durable.py --quick [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from bench_report import progress  # beside this script, which Python puts first on sys.path

import tinymq
from tinymq import MQ, Context, Msg
from tinymq.wal import HEADER_SIZE

QUEUE = "bench-durable"
RECORD_BYTES = 200
PAYLOAD = "x" * (RECORD_BYTES - HEADER_SIZE - 2)  # JSON adds two quotes: a 200-byte record
RECORD = b"x" * RECORD_BYTES  # what the raw loop appends
BACKLOG_PAYLOAD = "x" * (1024 - 2)  # 1 KiB once serialized
JOIN_TIMEOUT = 60.0  # seconds a drain may take before messages count as lost
CHILD_TIMEOUT = 1800.0  # seconds a recovery child may take (a 1 GB backlog)
THREADS = 8
PER_SYNC = 100  # records per fdatasync in the batched raw row
SYNC_ROUND_S = {True: 0.15, False: 0.6}  # quick, full: seconds of fdatasync per sync-row round

RAW = "raw write+fdatasync, 1 thread"
RAW_BATCH = f"raw write, 1 fdatasync per {PER_SYNC}"
RAW_ALLOCATED = "raw pwrite+fdatasync, allocated file"
ALWAYS_1 = 'tinymq "always", 1 thread'
ALWAYS_N = f'tinymq "always", {THREADS} threads'
INTERVAL = 'tinymq "interval", 1 thread'
INTERVAL_N = f'tinymq "interval", {THREADS} threads'
NEVER = 'tinymq "never", 1 thread'
NEVER_N = f'tinymq "never", {THREADS} threads'
SQLITE = "persist-queue SQLiteAckQueue"
FILE_QUEUE = "persist-queue Queue (files)"
NOT_INSTALLED = "skipped (not installed)"

ALWAYS_VS_RAW = 0.5  # minimum "always" 1 thread / raw loop
ALWAYS_VS_SQLITE = 1.0  # minimum "always" 1 thread / SQLiteAckQueue, publish
GROUP_COMMIT = 2.0  # minimum "always" 8 threads / 1 thread
INTERVAL_VS_SQLITE = 10.0  # minimum "interval" / SQLiteAckQueue, publish and get+ack
RECOVERY_RATIO = (5.0, 15.0)  # open time at 10x the backlog: about linear
PEAK_RSS_MAX_MB = 150.0  # a process that opens and drains the large backlog


class CountError(Exception):
    """A contender did not publish or handle every message exactly once."""


def optional_module(name: str) -> ModuleType | None:
    """Import ``name`` if it is installed (imported by name: it is an optional dependency)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class DurableConfig:
    """Sizes and repetitions of the durable rows."""

    quick: bool
    rounds: int
    sync_messages: int  # rows paying one flush (or file rename) per message
    fast_messages: int  # rows at page-cache speed
    probe_samples: int  # timed fdatasync and fsync calls each
    backlog_sizes: tuple[int, int]  # pending 1 KiB messages in the recovery rows


def make_config(quick: bool, rounds: int | None = None) -> DurableConfig:
    """Return the quick (CI: about 10 s) or the full configuration."""
    if quick:
        return DurableConfig(True, rounds or 3, 1_000, 10_000, 200, (5_000, 50_000))
    return DurableConfig(False, rounds or 5, 5_000, 50_000, 1_000, (100_000, 1_000_000))


# -- the machine's disk ----------------------------------------------------------


def describe_disk(directory: str) -> dict[str, Any]:
    """File system, device, mount options and free space of ``directory``."""
    path = os.path.realpath(directory)
    found = {"device": "?", "mount_point": "?", "fstype": "?", "options": "?"}
    longest = -1  # the mount point holding ``path`` is the longest one that prefixes it
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                device, mount, fstype, options = line.split()[:4]
                mount = mount.replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > longest:
                    longest = len(mount)
                    found = {
                        "device": device,
                        "mount_point": mount,
                        "fstype": fstype,
                        "options": options,
                    }
    except OSError:
        pass
    st = os.statvfs(directory)
    return {
        "directory": directory,
        **found,
        "write_cache": _write_cache(found["device"]),
        "free_bytes": st.f_bavail * st.f_frsize,
        "total_bytes": st.f_blocks * st.f_frsize,
    }


def _write_cache(device: str) -> str | None:
    """The block device's write cache mode ("write back" or "write through"), if known."""
    block = Path("/sys/class/block") / os.path.basename(device)
    try:
        if (block / "partition").exists():
            block = block.resolve().parent
        return (block / "queue" / "write_cache").read_text().strip()
    except OSError:
        return None


def probe_sync(directory: str, samples: int) -> dict[str, list[int]]:
    """Nanoseconds of each fdatasync and fsync after a 200-byte append to a new file."""
    found: dict[str, list[int]] = {}
    for name, sync in (("fdatasync", os.fdatasync), ("fsync", os.fsync)):
        path = os.path.join(directory, f"probe-{name}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        clock, times = time.perf_counter_ns, []
        try:
            for _ in range(samples):
                os.write(fd, RECORD)
                start = clock()
                sync(fd)
                times.append(clock() - start)
        finally:
            os.close(fd)
            os.unlink(path)
        found[name] = times
    return found


def load_average() -> float | None:
    """The one-minute load average, where the platform has one: the box may be shared."""
    getloadavg = getattr(os, "getloadavg", None)
    return None if getloadavg is None else float(getloadavg()[0])


def percentile(values: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


# -- one round of each contender -------------------------------------------------


@dataclass
class Timed:
    """Seconds of one round: publishing every message, then handling them all (if timed)."""

    put_s: float
    drain_s: float | None = None


def check(label: str, what: str, got: int, expected: int) -> None:
    """Raise CountError unless ``got == expected``."""
    if got != expected:
        raise CountError(f"{label}: {what} {got:,}, expected {expected:,}")


def raw_round(directory: str, messages: int, per_sync: int) -> Timed:
    """Append ``messages`` records to a new file, one fdatasync per ``per_sync`` records."""
    path = os.path.join(directory, "raw.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    write, sync, record = os.write, os.fdatasync, RECORD
    try:
        gc.collect()
        start = time.perf_counter()
        for done in range(0, messages, per_sync):
            for _ in range(min(per_sync, messages - done)):
                write(fd, record)
            sync(fd)
        elapsed = time.perf_counter() - start
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    check(f"raw loop, {per_sync} per sync", "records on disk", size // len(record), messages)
    return Timed(elapsed)


def raw_allocated_round(directory: str, messages: int) -> Timed:
    """Write ``messages`` records in place into a file allocated first, one fdatasync each.

    The layout of tinymq's segments: the file's size does not change with a record, so
    its fdatasync has only data to flush.
    """
    path = os.path.join(directory, "raw-allocated.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    pwrite, sync, record = os.pwrite, os.fdatasync, RECORD
    try:
        os.posix_fallocate(fd, 0, messages * len(record))
        os.fsync(fd)
        gc.collect()
        start = time.perf_counter()
        for offset in range(0, messages * len(record), len(record)):
            pwrite(fd, record, offset)
            sync(fd)
        elapsed = time.perf_counter() - start
        with open(path, "rb") as f:
            written = f.read().count(record)
    finally:
        os.close(fd)
    check("raw allocated loop", "records on disk", written, messages)
    return Timed(elapsed)


def publish_threads(
    threads: int, messages: int, publish: Callable[[], int]
) -> tuple[float, list[int]]:
    """Call ``publish`` ``messages`` times from ``threads`` threads started together.

    Returns the seconds from the start until the last thread is done, and the ids.
    """
    shares = [messages // threads + (i < messages % threads) for i in range(threads)]
    ids: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        add = ids[i].append
        barrier.wait()
        try:
            for _ in range(shares[i]):
                add(publish())
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            errors.append(exc)

    workers = [
        threading.Thread(target=work, args=(i,), name=f"bench:publisher-{i}", daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    gc.collect()
    start = time.perf_counter()
    barrier.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, [i for share in ids for i in share]


def tinymq_round(directory: str, messages: int, fsync: str, threads: int) -> Timed:
    """Publish to a durable queue whose consumer is not started, then drain it."""
    label = f"tinymq fsync={fsync!r}, {threads} thread(s)"
    seen: list[int] = []
    append = seen.append

    def consume(ctx: Context, msg: Msg) -> None:
        append(msg.id)

    mq = MQ(data_dir=directory, fsync=fsync)
    mq.register_queue(QUEUE, consume, durable=True)
    put_s, ids = publish_threads(threads, messages, partial(mq.publish, QUEUE, PAYLOAD))
    check(label, "distinct ids published", len(set(ids)), messages)
    gc.collect()
    start = time.perf_counter()
    mq.start()
    try:
        mq.stop(JOIN_TIMEOUT)
    except TimeoutError as exc:
        raise CountError(f"{label}: not drained: {exc}") from exc
    drain_s = time.perf_counter() - start
    check(label, "messages handled", len(seen), messages)
    check(label, "published ids handled", len(set(seen) & set(ids)), messages)
    return Timed(put_s, drain_s)


def sqlite_round(directory: str, messages: int) -> Timed:
    """persist-queue SQLiteAckQueue: ``put`` each message, then ``get`` + ``ack`` until empty."""
    pq = importlib.import_module("persistqueue")
    serializer = importlib.import_module("persistqueue.serializers.json")
    q = pq.SQLiteAckQueue(os.path.join(directory, "sqlite"), serializer=serializer)
    try:
        put_s = _timed_puts(q.put, messages)
        get, ack, handled = q.get, q.ack, 0
        gc.collect()
        start = time.perf_counter()
        while True:
            try:
                item = get(block=False, raw=True)
            except pq.Empty:
                break
            ack(id=item["pqid"])
            handled += 1
        drain_s = time.perf_counter() - start
        acked = q.acked_count()
    finally:
        q.close()
    check(SQLITE, "messages handled", handled, messages)
    check(SQLITE, "messages acked", acked, messages)
    return Timed(put_s, drain_s)


def file_queue_round(directory: str, messages: int) -> Timed:
    """persist-queue Queue (autosave): ``put`` each message, then ``get`` + ``task_done``."""
    pq = importlib.import_module("persistqueue")
    serializer = importlib.import_module("persistqueue.serializers.json")
    path = os.path.join(directory, "files")
    q = pq.Queue(path, autosave=True, serializer=serializer, tempdir=path)
    put_s = _timed_puts(q.put, messages)
    get, done, handled = q.get, q.task_done, 0
    gc.collect()
    start = time.perf_counter()
    while True:
        try:
            get(block=False)
        except pq.Empty:
            break
        done()
        handled += 1
    drain_s = time.perf_counter() - start
    check(FILE_QUEUE, "messages handled", handled, messages)
    check(FILE_QUEUE, "messages left", q.qsize(), 0)
    return Timed(put_s, drain_s)


def _timed_puts(put: Callable[[Any], object], messages: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for _ in range(messages):
        put(PAYLOAD)
    return time.perf_counter() - start


@dataclass(frozen=True)
class Contender:
    """One row: how to run a round in a fresh directory, and how many messages it takes."""

    name: str
    run: Callable[[str, int], Timed]
    fast: bool  # sized with fast_messages rather than sync_messages
    needs: str | None = None  # a module that must be installed
    full_only: bool = False  # left out of the quick run, which CI times


CONTENDERS = (
    Contender(RAW, partial(raw_round, per_sync=1), fast=False),
    Contender(RAW_BATCH, partial(raw_round, per_sync=PER_SYNC), fast=True),
    Contender(RAW_ALLOCATED, raw_allocated_round, fast=False),
    Contender(ALWAYS_1, partial(tinymq_round, fsync="always", threads=1), fast=False),
    Contender(ALWAYS_N, partial(tinymq_round, fsync="always", threads=THREADS), fast=False),
    Contender(INTERVAL, partial(tinymq_round, fsync="interval", threads=1), fast=True),
    Contender(
        INTERVAL_N,
        partial(tinymq_round, fsync="interval", threads=THREADS),
        fast=True,
        full_only=True,
    ),
    Contender(NEVER, partial(tinymq_round, fsync="never", threads=1), fast=True, full_only=True),
    Contender(
        NEVER_N, partial(tinymq_round, fsync="never", threads=THREADS), fast=True, full_only=True
    ),
    Contender(SQLITE, sqlite_round, fast=False, needs="persistqueue"),
    Contender(FILE_QUEUE, file_queue_round, fast=False, needs="persistqueue", full_only=True),
)


# -- the throughput rows ---------------------------------------------------------


@dataclass
class RowResult:
    """Every round of one contender; ``skipped`` says why it did not run."""

    name: str
    messages: int
    put_s: list[float] = field(default_factory=list)
    drain_s: list[float] = field(default_factory=list)
    skipped: str | None = None

    def put_rates(self) -> list[float]:
        """Messages published per second, per round."""
        return [self.messages / s for s in self.put_s]

    def drain_rates(self) -> list[float]:
        """Messages handled (get + ack) per second, per round."""
        return [self.messages / s for s in self.drain_s]


def measure_rows(config: DurableConfig, directory: str) -> dict[str, RowResult]:
    """Run every installed contender, interleaved round by round, each in a new directory."""
    rows: dict[str, RowResult] = {}
    for contender in CONTENDERS:
        messages = config.fast_messages if contender.fast else config.sync_messages
        missing = contender.needs is not None and optional_module(contender.needs) is None
        skipped = NOT_INSTALLED if missing else None
        if contender.full_only and config.quick:
            skipped = "skipped (full run only)"
        rows[contender.name] = RowResult(contender.name, messages, skipped=skipped)
    for r in range(config.rounds):
        for contender in CONTENDERS:
            row = rows[contender.name]
            if row.skipped:
                continue
            where = tempfile.mkdtemp(prefix="round-", dir=directory)
            try:
                timed = contender.run(where, row.messages)
            finally:
                shutil.rmtree(where, ignore_errors=True)
            row.put_s.append(timed.put_s)
            drained = ""
            if timed.drain_s is not None:
                row.drain_s.append(timed.drain_s)
                drained = f", get+ack {row.messages / timed.drain_s:,.0f}/s"
            progress(
                f"durable round {r + 1}/{config.rounds}: {row.name} "
                f"{row.messages / timed.put_s:,.0f}/s{drained}"
            )
    return rows


# -- recovery and memory (child processes) ---------------------------------------


def _never_called(ctx: Context, msg: Msg) -> None:
    raise AssertionError("the backlog's consumer is never started")


def child_build(directory: str, count: int) -> dict[str, Any]:
    """Publish ``count`` 1 KiB messages with fsync="never" and stop, leaving them pending."""
    mq = MQ(data_dir=directory, fsync="never")
    mq.register_queue(QUEUE, _never_called, durable=True)
    publish = partial(mq.publish, QUEUE, BACKLOG_PAYLOAD)
    start = time.perf_counter()
    ids = {publish() for _ in range(count)}
    mq.stop()
    return {"seconds": time.perf_counter() - start, "distinct_ids": len(ids)}


def child_open(directory: str, count: int) -> dict[str, Any]:
    """Time ``register_queue`` of the backlog (recovery), then stop without consuming."""
    mq = MQ(data_dir=directory)
    gc.collect()
    start = time.perf_counter()
    mq.register_queue(QUEUE, _never_called, durable=True)
    seconds = time.perf_counter() - start
    report = mq.recovery_report(QUEUE)
    mq.stop()
    assert report is not None
    return {
        "open_s": seconds,
        "scan_s": report.seconds,
        "recovered": report.recovered,
        "records": report.records,
        "segments": report.segments,
        "clean": report.clean,
    }


def child_drain(directory: str, count: int) -> dict[str, Any]:
    """Open the backlog, drain it through one consumer; report time and resident memory."""
    seen = bytearray(count)  # one byte per id: the check itself stays small
    odd = [0]  # ids outside the backlog, or handled twice

    def consume(ctx: Context, msg: Msg) -> None:
        if msg.id >= count or seen[msg.id]:
            odd[0] += 1
        else:
            seen[msg.id] = 1

    baseline, (baseline_peak, _) = current_rss(), peak_rss()
    mq = MQ(data_dir=directory)
    start = time.perf_counter()
    mq.register_queue(QUEUE, consume, durable=True)
    open_s = time.perf_counter() - start
    after_open = current_rss()
    start = time.perf_counter()
    mq.start()
    mq.stop(CHILD_TIMEOUT)
    drain_s = time.perf_counter() - start
    peak, peak_source = peak_rss()
    return {
        "open_s": open_s,
        "drain_s": drain_s,
        "handled": sum(seen),
        "odd": odd[0],
        "rss_before_open": baseline,
        "peak_rss_before_open": baseline_peak,
        "rss_after_open": after_open,
        "peak_rss": peak,
        "peak_rss_source": peak_source,
        "rss_source": "psutil" if optional_module("psutil") else "/proc/self/statm",
    }


CHILDREN: dict[str, Callable[[str, int], dict[str, Any]]] = {
    "build": child_build,
    "open": child_open,
    "drain": child_drain,
}


def peak_rss() -> tuple[int, str]:
    """Peak resident set of this process so far, in bytes, and where it was read."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"


def current_rss() -> int | None:
    """Resident set of this process now, in bytes (psutil if installed, else /proc)."""
    psutil = optional_module("psutil")
    if psutil is not None:
        return int(psutil.Process().memory_info().rss)
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def run_child(kind: str, directory: str, count: int) -> dict[str, Any]:
    """Run ``CHILDREN[kind]`` in a fresh interpreter; return what it printed (JSON)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(tinymq.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, os.path.abspath(__file__), "--child", kind, directory, str(count)]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} child failed ({done.returncode}): {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass
class RecoveryResult:
    """Backlog build and open times per size, and the drain of the larger backlog."""

    sizes: tuple[int, int]
    message_bytes: int = 1024
    skipped: str | None = None
    build_s: dict[int, float] = field(default_factory=dict)
    log_bytes: dict[int, int] = field(default_factory=dict)
    open_s: dict[int, list[float]] = field(default_factory=dict)
    scan_s: dict[int, list[float]] = field(default_factory=dict)
    segments: dict[int, int] = field(default_factory=dict)
    drain: dict[str, Any] = field(default_factory=dict)  # what child_drain reported

    def ratio(self) -> float:
        """Median open time at the larger size over the median at the smaller."""
        small, large = self.sizes
        return statistics.median(self.open_s[large]) / statistics.median(self.open_s[small])


def _tree_bytes(directory: str) -> int:
    return sum(
        os.path.getsize(os.path.join(where, name))
        for where, _dirs, names in os.walk(directory)
        for name in names
    )


def measure_recovery(config: DurableConfig, directory: str) -> RecoveryResult:
    """Build both backlogs, time interleaved opens, then drain the larger one in a child."""
    result = RecoveryResult(config.backlog_sizes)
    need = sum(result.sizes) * (result.message_bytes + HEADER_SIZE) * 2  # data + ack headroom
    free = describe_disk(directory)["free_bytes"]
    if free < need:
        result.skipped = f"skipped (needs {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free)"
        return result
    where = {size: os.path.join(directory, f"backlog-{size}") for size in result.sizes}
    for size in result.sizes:
        built = run_child("build", where[size], size)
        check(f"backlog of {size:,}", "distinct ids published", built["distinct_ids"], size)
        result.build_s[size] = built["seconds"]
        result.log_bytes[size] = _tree_bytes(where[size])
        progress(f"recovery: built {size:,} pending messages in {built['seconds']:.1f} s")
    for r in range(config.rounds):
        for size in result.sizes:
            opened = run_child("open", where[size], size)
            check(f"recovery of {size:,}", "messages recovered", opened["recovered"], size)
            result.open_s.setdefault(size, []).append(opened["open_s"])
            result.scan_s.setdefault(size, []).append(opened["scan_s"])
            result.segments[size] = opened["segments"]
            seconds = opened["open_s"]
            progress(f"recovery round {r + 1}/{config.rounds}: {size:,} opened in {seconds:.3f} s")
    large = result.sizes[1]
    result.drain = run_child("drain", where[large], large)
    check(f"drain of {large:,}", "messages handled", result.drain["handled"], large)
    check(f"drain of {large:,}", "unexpected or repeated messages", result.drain["odd"], 0)
    progress(f"recovery: drained {large:,}, peak RSS {result.drain['peak_rss'] / 1e6:.0f} MB")
    for path in where.values():
        shutil.rmtree(path, ignore_errors=True)
    return result


# -- the whole measurement -------------------------------------------------------


@dataclass
class DurableResult:
    """Everything the durable rows measured."""

    config: DurableConfig
    disk: dict[str, Any]
    sync_ns: dict[str, list[int]]
    rows: dict[str, RowResult]
    recovery: RecoveryResult
    load: tuple[float | None, float | None] = (None, None)  # at the start and at the end


def fit_to_disk(config: DurableConfig, sync_s: float) -> DurableConfig:
    """Fewer messages in the sync-bound rows where one fdatasync takes ``sync_s`` or more."""
    fits = int(SYNC_ROUND_S[config.quick] / max(sync_s, 1e-6))
    return replace(config, sync_messages=min(config.sync_messages, max(100, fits)))


def measure(quick: bool, rounds: int | None = None) -> DurableResult:
    """Run the durable rows in a new directory under $TMPDIR, removed afterwards.

    Raises:
        CountError: a contender lost or repeated a message.
    """
    config = make_config(quick, rounds)
    directory = tempfile.mkdtemp(prefix="tinymq-bench-durable-")
    load_before = load_average()
    try:
        disk = describe_disk(directory)
        sync_ns = probe_sync(directory, config.probe_samples)
        p50 = percentile(sync_ns["fdatasync"], 50)
        config = fit_to_disk(config, p50 / 1e9)
        progress(
            f"durable: {disk['fstype']} on {disk['device']}, fdatasync p50 {p50 / 1000:.0f} us; "
            f"{config.sync_messages:,} messages per sync-bound round"
        )
        rows = measure_rows(config, directory)
        recovery = measure_recovery(config, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return DurableResult(config, disk, sync_ns, rows, recovery, (load_before, load_average()))


# -- targets -----------------------------------------------------------------------


@dataclass
class Target:
    """One durable target and how the run did; ``measured`` is None when it was skipped."""

    name: str
    measured: float | None
    unit: str
    target: str
    ok: bool | None
    per_round: list[float] = field(default_factory=list)
    skipped: str | None = None

    @property
    def word(self) -> str:
        """PASS, MISS, or why it was not measured."""
        if self.skipped is not None:
            return self.skipped
        return "PASS" if self.ok else "MISS"


def _ratio(name: str, top: RowResult, bottom: RowResult, drain: bool, least: float) -> Target:
    goal = f">= {least:g}x"
    skipped = top.skipped or bottom.skipped
    if skipped:
        return Target(name, None, "x", goal, None, skipped=skipped)
    pick = RowResult.drain_rates if drain else RowResult.put_rates
    highs, lows = pick(top), pick(bottom)
    ratio = statistics.median(highs) / statistics.median(lows)
    per_round = [h / low for h, low in zip(highs, lows, strict=True)]
    return Target(name, ratio, "x", goal, ratio >= least, per_round)


def targets(res: DurableResult) -> list[Target]:
    """Compare the run with the durable targets."""
    rows = res.rows
    found = [
        _ratio(
            'durable "always" 1 thread / SQLiteAckQueue, publish',
            rows[ALWAYS_1],
            rows[SQLITE],
            False,
            ALWAYS_VS_SQLITE,
        ),
        _ratio(
            'durable "always" 1 thread / raw fdatasync loop',
            rows[ALWAYS_1],
            rows[RAW],
            False,
            ALWAYS_VS_RAW,
        ),
        _ratio(
            'durable "always" 1 thread / raw loop, allocated file',
            rows[ALWAYS_1],
            rows[RAW_ALLOCATED],
            False,
            ALWAYS_VS_RAW,
        ),
        _ratio(
            f'durable "always" {THREADS} threads / 1 thread',
            rows[ALWAYS_N],
            rows[ALWAYS_1],
            False,
            GROUP_COMMIT,
        ),
        _ratio(
            'durable "interval" / SQLiteAckQueue, publish',
            rows[INTERVAL],
            rows[SQLITE],
            False,
            INTERVAL_VS_SQLITE,
        ),
        _ratio(
            'durable "interval" / SQLiteAckQueue, get+ack',
            rows[INTERVAL],
            rows[SQLITE],
            True,
            INTERVAL_VS_SQLITE,
        ),
    ]
    rec = res.recovery
    small, large = rec.sizes
    low, high = RECOVERY_RATIO
    name = f"durable recovery time, {large:,} / {small:,} pending"
    memory = f"durable peak RSS, open + drain {large:,} pending"
    rss_goal = f"< {PEAK_RSS_MAX_MB:g} MB"
    if rec.skipped:
        found.append(Target(name, None, "x", f"{low:g}-{high:g}x", None, skipped=rec.skipped))
        found.append(Target(memory, None, " MB", rss_goal, None, skipped=rec.skipped))
        return found
    ratio = rec.ratio()
    per_round = [b / a for a, b in zip(rec.open_s[small], rec.open_s[large], strict=True)]
    found.append(Target(name, ratio, "x", f"{low:g}-{high:g}x", low <= ratio <= high, per_round))
    peak = rec.drain["peak_rss"] / 1e6
    found.append(Target(memory, peak, " MB", rss_goal, peak < PEAK_RSS_MAX_MB))
    return found


def target_rows(res: DurableResult) -> list[list[str]]:
    """Rows for bench_throughput's targets table: name, measured, goal, result."""
    return [
        [t.name, "-" if t.measured is None else f"{t.measured:.2f}{t.unit}", t.target, t.word]
        for t in targets(res)
    ]


# -- report ------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align ``rows`` under ``headers``: first column left, the others right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def spread(values: Sequence[float], fmt: str) -> str:
    """Median [min-max], or the one value of a single round."""
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:{fmt}}"
    return f"{mid:{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def _disk_lines(res: DurableResult) -> list[str]:
    d, lat = res.disk, res.sync_ns
    cache = f", write cache: {d['write_cache']}" if d["write_cache"] else ""
    sync = "; ".join(
        f"{name} p50 {percentile(lat[name], 50) / 1000:,.0f} us, p99 "
        f"{percentile(lat[name], 99) / 1000:,.0f} us, max {max(lat[name]) / 1000:,.0f} us"
        for name in ("fdatasync", "fsync")
    )
    before, after = res.load
    load = (
        "n/a"
        if before is None or after is None
        else f"{before:.2f} at the start, {after:.2f} at the end"
    )
    return [
        f"  directory {d['directory']}: {d['fstype']} on {d['device']} (mounted at "
        f"{d['mount_point']}, {d['options']}{cache}), {d['free_bytes'] / 1e9:.1f} GB free",
        f"  after a {RECORD_BYTES}-byte append, {len(lat['fdatasync'])} samples each: {sync}",
        f"  one-minute load average {load}, {os.cpu_count()} CPUs",
    ]


def _row_cells(row: RowResult) -> list[str]:
    if row.skipped:
        return [row.name, f"{row.messages:,}", row.skipped, ""]
    drain = _rate(row.drain_rates()) if row.drain_s else "-"
    return [row.name, f"{row.messages:,}", _rate(row.put_rates()), drain]


def _rate(rates: list[float]) -> str:
    return spread(rates, ",.0f")


def render_rows(res: DurableResult) -> str:
    """The durable throughput table, with the disk it ran on and the ratios."""
    heading = (
        f"Durable queues: {RECORD_BYTES}-byte records (tinymq: {len(PAYLOAD) + 2}-byte JSON "
        f"payload + {HEADER_SIZE}-byte header); msgs/s, median [min-max] of "
        f"{res.config.rounds} interleaved rounds"
    )
    headers = ["contender", "messages", "publish (put) msgs/s", "get+ack msgs/s"]
    rows = [_row_cells(row) for row in res.rows.values()]
    ratio_rows = [
        [
            t.name,
            "-" if t.measured is None else f"{t.measured:.2f}x",
            spread(t.per_round, ".2f") + "x" if t.per_round else "-",
            t.target,
            t.word,
        ]
        for t in targets(res)[:5]
    ]
    notes = (
        "  publish: publishers until the last returned, consumer not started; get+ack: tinymq\n"
        "  start() until stop() returned, 1 consumer thread; persist-queue: get + ack/task_done"
    )
    return "\n".join(
        [
            heading,
            *_disk_lines(res),
            table(headers, rows),
            notes,
            table(["ratio", "of medians", "per round", "target", "result"], ratio_rows),
        ]
    )


def render_recovery(res: DurableResult) -> str:
    """The recovery table and the memory of the drain."""
    rec = res.recovery
    large = rec.sizes[1]
    heading = (
        f"Durable recovery: pending {rec.message_bytes}-byte messages, register_queue (= "
        f"recovery) timed in a fresh process; median [min-max] of {res.config.rounds} rounds"
    )
    if rec.skipped:
        return f"{heading}\n  {rec.skipped}"
    rows = [
        [
            f"{size:,}",
            f"{rec.log_bytes[size] / 1e6:,.0f}",
            str(rec.segments[size]),
            f"{rec.build_s[size]:.1f}",
            spread(rec.open_s[size], ".3f"),
            spread(rec.scan_s[size], ".3f"),
            f"{size / statistics.median(rec.open_s[size]):,.0f}",
        ]
        for size in rec.sizes
    ]
    rows.append(["ratio", "", "", "", f"{rec.ratio():.2f}x", "", ""])
    headers = ["pending", "log MB", "segments", "build s", "open s", "scan s", "msgs/s"]
    d = rec.drain
    memory = (
        f"  fresh process opening the {large:,} backlog and draining it through 1 consumer: "
        f"peak RSS {_mb(d['peak_rss'])} MB\n"
        f"  resident before open {_mb(d['rss_before_open'])} MB (peak so far "
        f"{_mb(d['peak_rss_before_open'])} MB: interpreter and imports), after open "
        f"{_mb(d['rss_after_open'])} MB ({d['rss_source']})\n"
        f"  open {d['open_s']:.2f} s, drain {d['drain_s']:.2f} s = "
        f"{large / d['drain_s']:,.0f} msgs/s (start() until stop() returned)\n"
        f'  build: fsync="never", in a child; scan s: RecoveryReport.seconds; '
        f"peak RSS: {d['peak_rss_source']}"
    )
    return "\n".join([heading, table(headers, rows), memory])


def _mb(size: int | None) -> str:
    return "n/a" if size is None else f"{size / 1e6:,.0f}"


def render(res: DurableResult) -> str:
    """The durable section of the report."""
    return render_rows(res) + "\n\n" + render_recovery(res)


def to_json(res: DurableResult) -> dict[str, Any]:
    """Every raw figure of the durable rows, their summaries and targets."""
    return {
        "config": asdict(res.config),
        "disk": res.disk,
        "load_average": {"start": res.load[0], "end": res.load[1]},
        "sync_ns": res.sync_ns,
        "rows": {
            name: {**asdict(row), "put_rates": row.put_rates(), "drain_rates": row.drain_rates()}
            for name, row in res.rows.items()
        },
        "recovery": asdict(res.recovery),
        "targets": verdicts_json(res),
    }


def verdicts_json(res: DurableResult) -> list[dict[str, Any]]:
    """The targets, shaped like bench_throughput's verdicts."""
    return [{**asdict(t), "result": t.word} for t in targets(res)]


# -- main ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the durable rows alone; return 1 if a contender lost or repeated a message."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        kind, directory, count = args[1], args[2], int(args[3])
        print(json.dumps(CHILDREN[kind](directory, count)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per measurement")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure here")
    parsed = parser.parse_args(args)
    try:
        res = measure(parsed.quick, parsed.rounds)
    except CountError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    rows = target_rows(res)
    print(render(res) + "\n\nTargets\n" + table(["target", "measured", "goal", "result"], rows))
    if parsed.json is not None:
        parsed.json.parent.mkdir(parents=True, exist_ok=True)
        parsed.json.write_text(json.dumps(to_json(res), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
