"""Throughput, latency, backlog and memory of tinymq, next to a plain ``queue.Queue``.

Absolute numbers on a shared machine mean little, so each tinymq figure is set
against what a plain unbounded ``queue.Queue`` with the same number of threads does
in the same run, and the targets are ratios:

* Throughput. The main thread publishes N ints; W threads (1, 2, 4) hand each one to
  a no-op consumer. The baseline's workers ``get()`` until a sentinel that each of
  them re-posts; tinymq is one queue with concurrency W, ended by ``stop()``. The
  clock runs from the first publish until every message is consumed and every thread
  joined. Rounds alternate baseline and tinymq; the table shows the median rate, the
  min-max range, the ratio of the medians and the median of the per-round ratios.
* Latency. About one message per millisecond, stamped with ``perf_counter_ns()`` just
  before publishing; the single consumer records how long it took to arrive.
  Percentiles are taken over the samples of all rounds.
* Backlog. A tinymq consumer is held on the first message while B more are published
  to the running MQ, the way a backlog forms in service; then it is released and the
  time to consume all B is divided by B; the time to publish them, likewise. The
  ratios compare B = 1,000,000 with B = 10,000, for both sides.
* Memory. Messages whose payload is one shared object (None) are published to a
  registered queue that is not started, so each one sits in the queue as what a
  publish builds (a ``Msg``, its id and a deque slot). The traced allocation growth
  divided by the count is the cost beyond the payload; growth of the resident set
  is shown as a cross-check that includes allocator rounding.
* Async throughput (bench_async.py). A publisher thread puts N ints and W asyncio tasks
  (1, 4; 16 in the full run) hand each one to a no-op async handler: a raw
  ``janus.Queue`` against tinymq async consumers on ``astart()``'s loop, interleaved
  and reported like the thread throughput.
* I/O-bound (bench_async.py). 1,000 messages whose consumer waits 50 ms, concurrency
  100: tinymq async consumers (100 tasks on one loop thread) against tinymq thread
  consumers (100 threads). Wall time from start to drained, against the ideal
  1,000 x 50 ms / 100 = 0.5 s; the tracemalloc peak of a separate traced run; the
  threads alive and the resident growth once everything is published.
* Delivery policies (bench_policies.py). The cost of an armed, never triggered retry
  policy and of reading ``stats()`` every 10 ms, as ratios to the same queue without.
* Durable queues (bench_durable.py). tinymq's log with each fsync policy against a raw
  write+fdatasync loop and persist-queue, recovery time and memory of a large backlog;
  printed with the file system and fsync latency of the directory they ran in.

Every consumer records what it receives, and the run exits with status 1 if any
contender did not handle every message (exactly once, where the data allows telling).
Missed speed targets are reported as MISS, not failed: they depend on the machine.

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_throughput.py           # full run, about 4 min
    PYTHONPATH=. python benchmarks/bench_throughput.py --quick   # smoke run, seconds
    PYTHONPATH=. python benchmarks/bench_throughput.py --json bench-results/run.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import queue
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import bench_async  # beside this script, which Python puts first on sys.path
import bench_durable
import bench_policies
from bench_async import ASYNC_CONTENDERS, IO_CONTENDERS, JANUS, TINYMQ_ASYNC, TINYMQ_THREADS

from tinymq import MQ, Consumer, Context, Msg

QUEUE = "bench"
PLAIN = "queue.Queue"
TINYMQ = "tinymq"
CONTENDERS = (PLAIN, TINYMQ)
JOIN_TIMEOUT = 60.0  # seconds; a contender still busy after this has lost messages
LATENCY_INTERVAL = 0.001  # seconds between publishes in the latency test

THROUGHPUT_TARGETS = {1: 0.8, 4: 0.9}  # minimum tinymq/baseline ratio per consumer count
ASYNC_THROUGHPUT_TARGETS = {1: 1.0, 4: 1.0}  # minimum tinymq async/janus ratio per task count
LATENCY_P99_MAX_RATIO = 2.0
BACKLOG_MAX_RATIO = 1.2
MEMORY_MAX_BYTES = 120.0

_STOP = object()  # the baseline's sentinel

Handler = Callable[[Any], None]
T = TypeVar("T")


class CountError(Exception):
    """A contender did not handle every message it was given exactly once."""


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one run."""

    quick: bool
    messages: int
    rounds: int
    consumers: tuple[int, ...]
    latency_messages: int
    backlog_sizes: tuple[int, int]
    memory_messages: int
    async_messages: int
    async_tasks: tuple[int, ...]
    io_messages: int
    io_concurrency: int
    io_delay: float  # seconds each I/O-bound consumer call waits
    io_rounds: int


def make_config(quick: bool, messages: int | None, rounds: int | None) -> Config:
    """Return the quick or full configuration, with ``-n`` and ``--rounds`` applied."""
    if quick:
        return Config(
            quick=True,
            messages=messages or 20_000,
            rounds=rounds or 3,
            consumers=(1, 2, 4),
            latency_messages=200,
            backlog_sizes=(10_000, 200_000),
            memory_messages=100_000,
            async_messages=messages or 20_000,
            async_tasks=(1, 4),
            io_messages=1_000,
            io_concurrency=100,
            io_delay=0.05,
            io_rounds=rounds or 1,
        )
    return Config(
        quick=False,
        messages=messages or 200_000,
        rounds=rounds or 5,
        consumers=(1, 2, 4),
        latency_messages=1_000,
        backlog_sizes=(10_000, 1_000_000),
        memory_messages=1_000_000,
        async_messages=messages or 50_000,
        async_tasks=(1, 4, 16),
        io_messages=1_000,
        io_concurrency=100,
        io_delay=0.05,
        io_rounds=rounds or 3,
    )


def positive_int(text: str) -> int:
    """Parse a command-line integer >= 1 (underscores allowed)."""
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("-n", "--messages", type=positive_int, help="messages per throughput run")
    parser.add_argument("--rounds", type=positive_int, help="interleaved rounds per measurement")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure here")
    return parser.parse_args(argv)


def progress(text: str) -> None:
    """Report progress on stderr, so a long run does not look hung."""
    print(text, file=sys.stderr, flush=True)


# -- contenders ------------------------------------------------------------------


@dataclass
class Sink:
    """What consumers record, in the call shape of each contender."""

    values: list[Any]
    handle: Handler  # called by the baseline's workers with the item
    consume: Consumer  # called by tinymq's workers with the message


def record_items() -> Sink:
    """A sink appending each item; ``list.append`` is atomic, so no lock is needed."""
    values: list[Any] = []
    append = values.append

    def handle(item: Any) -> None:
        append(item)

    def consume(ctx: Context, msg: Msg) -> None:
        append(msg.data)

    return Sink(values, handle, consume)


def record_latency() -> Sink:
    """A sink appending, per item, the nanoseconds since the publish stamp it carries."""
    values: list[int] = []
    append = values.append
    clock = time.perf_counter_ns

    def handle(item: int) -> None:
        append(clock() - item)

    def consume(ctx: Context, msg: Msg) -> None:
        append(clock() - msg.data)

    return Sink(values, handle, consume)


@dataclass
class Running:
    """A started contender: ``put`` publishes one item, ``finish`` drains and joins."""

    put: Callable[[Any], object]
    finish: Callable[[], None]


def _plain_worker(q: queue.Queue[Any], handle: Handler) -> None:
    """Hand items to ``handle`` until the sentinel, which is put back for the others."""
    get = q.get
    while True:
        item = get()
        if item is _STOP:
            q.put(_STOP)
            return
        handle(item)


def start_plain(workers: int, sink: Sink) -> Running:
    """Start ``workers`` threads on a plain unbounded ``queue.Queue``."""
    q: queue.Queue[Any] = queue.Queue()
    threads = [
        threading.Thread(target=_plain_worker, args=(q, sink.handle), daemon=True)
        for _ in range(workers)
    ]
    for thread in threads:
        thread.start()

    def finish() -> None:
        q.put(_STOP)
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError(f"{PLAIN} workers still running after {JOIN_TIMEOUT} s")

    return Running(q.put, finish)


def start_tinymq(workers: int, sink: Sink) -> Running:
    """Start an MQ with one queue of concurrency ``workers``."""
    mq = MQ()
    mq.register_queue(QUEUE, sink.consume, workers)
    mq.start()
    return Running(partial(mq.publish, QUEUE), partial(mq.stop, JOIN_TIMEOUT))


STARTERS: dict[str, Callable[[int, Sink], Running]] = {PLAIN: start_plain, TINYMQ: start_tinymq}


def finish(stop: Callable[[], T], label: str) -> T:
    """Call ``stop`` (drain and join); a timeout means messages were not handled."""
    try:
        return stop()
    except TimeoutError as exc:
        raise CountError(f"{label}: not drained: {exc}") from exc


def check_count(label: str, values: Sequence[Any], expected: int) -> None:
    """Raise CountError unless ``values`` holds ``expected`` entries."""
    if len(values) != expected:
        raise CountError(f"{label}: handled {len(values)} messages, expected {expected}")


def check_exactly_once(label: str, values: Sequence[Any], expected: int) -> None:
    """Raise CountError unless ``values`` holds ``expected`` distinct entries."""
    check_count(label, values, expected)
    distinct = len(set(values))
    if distinct != expected:
        raise CountError(f"{label}: handled {expected} messages but only {distinct} distinct")


# -- throughput ------------------------------------------------------------------


@dataclass
class ThroughputCase:
    """Raw seconds per round and contender for one consumer (or task) count."""

    consumers: int
    messages: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    baseline: str = PLAIN
    contender: str = TINYMQ

    def rates(self, contender: str) -> list[float]:
        """Messages per second of each round."""
        return [self.messages / s for s in self.seconds[contender]]

    def ratio(self) -> float:
        """Median tinymq rate over median baseline rate."""
        tinymq, baseline = self.rates(self.contender), self.rates(self.baseline)
        return statistics.median(tinymq) / statistics.median(baseline)

    def round_ratios(self) -> list[float]:
        """tinymq rate over baseline rate, round by round."""
        pairs = zip(self.rates(self.contender), self.rates(self.baseline), strict=True)
        return [t / b for t, b in pairs]


def throughput_round(contender: str, messages: int, workers: int) -> float:
    """Publish ``messages`` ints; return seconds until all are consumed and threads joined."""
    label = f"{contender} throughput, {workers} consumer(s)"
    sink = record_items()
    running = STARTERS[contender](workers, sink)
    put = running.put
    gc.collect()
    start = time.perf_counter()
    for i in range(messages):
        put(i)
    finish(running.finish, label)
    elapsed = time.perf_counter() - start
    check_exactly_once(label, sink.values, messages)
    return elapsed


def run_rounds(
    case: ThroughputCase,
    contenders: Sequence[str],
    rounds: int,
    one_round: Callable[[str], float],
    what: str,
) -> ThroughputCase:
    """Fill ``case`` with ``rounds`` interleaved rounds of every contender."""
    for r in range(rounds):
        for contender in contenders:
            seconds = one_round(contender)
            case.seconds[contender].append(seconds)
            progress(
                f"{what} round {r + 1}/{rounds}: {contender} {case.messages / seconds:,.0f} msgs/s"
            )
    return case


def measure_throughput(config: Config) -> list[ThroughputCase]:
    """Run the interleaved throughput rounds for every consumer count."""
    return [
        run_rounds(
            ThroughputCase(workers, config.messages, {c: [] for c in CONTENDERS}),
            CONTENDERS,
            config.rounds,
            partial(throughput_round, messages=config.messages, workers=workers),
            f"throughput {workers} consumer(s)",
        )
        for workers in config.consumers
    ]


def async_throughput_round(contender: str, messages: int, tasks: int) -> float:
    """Publish ``messages`` ints from a thread; return seconds until the tasks consumed all."""
    label = f"{contender} async throughput, {tasks} task(s)"
    timed = finish(
        partial(bench_async.throughput_round, contender, messages, tasks, JOIN_TIMEOUT), label
    )
    check_exactly_once(label, timed.values, messages)
    return timed.seconds


def measure_async_throughput(config: Config) -> list[ThroughputCase]:
    """Run the interleaved sync-to-async rounds for every task count."""
    return [
        run_rounds(
            ThroughputCase(
                tasks,
                config.async_messages,
                {c: [] for c in ASYNC_CONTENDERS},
                JANUS,
                TINYMQ_ASYNC,
            ),
            ASYNC_CONTENDERS,
            config.rounds,
            partial(async_throughput_round, messages=config.async_messages, tasks=tasks),
            f"async throughput {tasks} task(s)",
        )
        for tasks in config.async_tasks
    ]


# -- latency ---------------------------------------------------------------------


@dataclass
class LatencyResult:
    """Raw publish-to-consumer latencies (ns) per contender and round."""

    messages: int
    interval_s: float
    samples_ns: dict[str, list[list[int]]]
    publish_rate: dict[str, list[float]]

    def pooled(self, contender: str) -> list[int]:
        """Every sample of ``contender``, sorted."""
        return sorted(s for rnd in self.samples_ns[contender] for s in rnd)


def percentile(ordered: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile of a sorted, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def publish_paced(put: Callable[[Any], object], messages: int, interval: float) -> float:
    """Publish ``perf_counter_ns()`` stamps at least ``interval`` s apart; return the rate.

    Sleeps rather than spins: a spinning publisher would hold the GIL the consumer
    needs and measure the interpreter's switch interval instead of the queue.
    """
    clock, sleep, stamp = time.perf_counter, time.sleep, time.perf_counter_ns
    start = due = clock()
    for _ in range(messages):
        delay = due - clock()
        if delay > 0:
            sleep(delay)
        put(stamp())
        due = clock() + interval
    return messages / (clock() - start)


def latency_round(contender: str, messages: int) -> tuple[list[int], float]:
    """Run one paced round with one consumer; return the latencies and the publish rate."""
    sink = record_latency()
    running = STARTERS[contender](1, sink)
    rate = publish_paced(running.put, messages, LATENCY_INTERVAL)
    finish(running.finish, f"{contender} latency")
    check_count(f"{contender} latency", sink.values, messages)
    return sink.values, rate


def measure_latency(config: Config) -> LatencyResult:
    """Run the interleaved latency rounds."""
    result = LatencyResult(
        config.latency_messages,
        LATENCY_INTERVAL,
        {c: [] for c in CONTENDERS},
        {c: [] for c in CONTENDERS},
    )
    for r in range(config.rounds):
        for contender in CONTENDERS:
            samples, rate = latency_round(contender, config.latency_messages)
            result.samples_ns[contender].append(samples)
            result.publish_rate[contender].append(rate)
            p99 = percentile(sorted(samples), 99) / 1000
            progress(f"latency round {r + 1}/{config.rounds}: {contender} p99 {p99:,.0f} us")
    return result


# -- backlog ---------------------------------------------------------------------


@dataclass
class BacklogRound:
    """Per-message costs (ns) of one backlog round."""

    pending: int
    publish_ns: float
    drain_ns: float
    gen2_collections: int  # full cyclic-GC passes while the backlog was published
    gc_paused: bool  # the cyclic GC was disabled while publishing


@dataclass
class BacklogResult:
    """Every backlog round, at the small and the large size."""

    sizes: tuple[int, int]
    rounds: list[BacklogRound] = field(default_factory=list)

    def median(self, size: int, figure: str, gc_paused: bool = False) -> float:
        """Median of ``figure`` (an attribute of BacklogRound) over the rounds at ``size``."""
        return float(
            statistics.median(
                getattr(r, figure)
                for r in self.rounds
                if r.pending == size and r.gc_paused == gc_paused
            )
        )

    def ratio(self, figure: str, gc_paused: bool = False) -> float:
        """Median ``figure`` at the large size over the median at the small size."""
        small, large = self.sizes
        return self.median(large, figure, gc_paused) / self.median(small, figure, gc_paused)


def backlog_round(size: int, gc_paused: bool) -> BacklogRound:
    """Build a backlog of ``size`` behind a held consumer, then time publishing and draining.

    Holding the consumer on message 0 of a running MQ is how a backlog forms in
    service: every later message goes through ``in`` and the forwarder into the
    pending deque. Releasing it and timing the whole drain gives the average cost per
    message while up to ``size`` are pending, which also exposes any per-message work
    that grows with the backlog.

    Publishing allocates one GC-tracked ``Msg`` per message, and CPython's full
    cyclic-GC passes walk every tracked object, so with a million pending each pass
    is longer: a cost of the runtime that any Python queue holding a million objects
    pays. ``gc_paused`` times the publish loop with the collector disabled, which
    isolates tinymq's own per-message work; both figures are reported.
    """
    label = f"{TINYMQ} backlog of {size:,}"
    gate = threading.Event()
    seen: list[int] = []
    append = seen.append

    def consume(ctx: Context, msg: Msg) -> None:
        if msg.id == 0:
            gate.wait()
        append(msg.id)

    mq = MQ()
    mq.register_queue(QUEUE, consume, 1)
    mq.start()
    publish = mq.publish
    gc.collect()
    gen2 = gc.get_stats()[2]["collections"]
    if gc_paused:
        gc.disable()
    start = time.perf_counter_ns()
    for _ in range(size):
        publish(QUEUE, None)
    published = time.perf_counter_ns()
    gc.enable()
    gen2 = gc.get_stats()[2]["collections"] - gen2
    gate.set()
    finish(partial(mq.stop, JOIN_TIMEOUT), label)
    drained = time.perf_counter_ns()
    check_exactly_once(label, seen, size)
    return BacklogRound(
        size, (published - start) / size, (drained - published) / size, gen2, gc_paused
    )


def measure_backlog(config: Config) -> BacklogResult:
    """Run interleaved backlog rounds at the small and the large size."""
    result = BacklogResult(config.backlog_sizes)
    for r in range(config.rounds):
        for size in config.backlog_sizes:
            for gc_paused in (False, True):
                rnd = backlog_round(size, gc_paused)
                result.rounds.append(rnd)
                progress(
                    f"backlog round {r + 1}/{config.rounds}: {size:,} pending"
                    f"{', GC paused' if gc_paused else ''}, publish {rnd.publish_ns:,.0f} "
                    f"ns/msg, drain {rnd.drain_ns:,.0f} ns/msg"
                )
    return result


# -- memory ----------------------------------------------------------------------


@dataclass
class MemoryResult:
    """Memory growth while ``messages`` messages with a shared payload are pending."""

    messages: int
    traced_bytes: int
    rss_bytes: int | None

    @property
    def per_message(self) -> float:
        """Traced bytes per pending message."""
        return self.traced_bytes / self.messages


def resident_bytes() -> int | None:
    """Resident set size of this process, or None where /proc is not available."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _fill_unstarted(messages: int, measure: Callable[[], int | None]) -> int | None:
    """Publish ``messages`` None payloads to an unstarted MQ; return ``measure()``'s growth.

    The MQ is then started and drained, which checks that every message is handled.
    """
    seen: list[int] = []
    append = seen.append

    def consume(ctx: Context, msg: Msg) -> None:
        append(msg.id)

    mq = MQ()
    mq.register_queue(QUEUE, consume, 1)
    publish = mq.publish
    gc.collect()
    before = measure()
    for _ in range(messages):
        publish(QUEUE, None)
    after = measure()
    mq.start()
    finish(partial(mq.stop, JOIN_TIMEOUT), f"{TINYMQ} memory")
    check_exactly_once(f"{TINYMQ} memory", seen, messages)
    return None if before is None or after is None else after - before


def _traced() -> int:
    return tracemalloc.get_traced_memory()[0]


def measure_memory(config: Config) -> MemoryResult:
    """Measure traced and resident growth per pending message."""
    rss = _fill_unstarted(config.memory_messages, resident_bytes)
    tracemalloc.start()
    try:
        traced = _fill_unstarted(config.memory_messages, _traced)
    finally:
        tracemalloc.stop()
    assert traced is not None
    result = MemoryResult(config.memory_messages, traced, rss)
    progress(f"memory: {result.per_message:.1f} bytes per pending message (traced)")
    return result


# -- I/O-bound -------------------------------------------------------------------


@dataclass
class IoBoundRound:
    """One contender's I/O-bound round: a timed run, then a traced one."""

    contender: str
    seconds: float
    threads: int  # alive once every message was published, main thread included
    resident_growth: int | None  # bytes, from before start to that moment
    traced_peak: int  # bytes, tracemalloc's peak over the traced run
    traced_seconds: float  # wall time of the traced run


@dataclass
class IoBoundResult:
    """Every I/O-bound round."""

    messages: int
    concurrency: int
    delay_s: float
    rounds: list[IoBoundRound] = field(default_factory=list)

    @property
    def ideal_s(self) -> float:
        """Wall time with every consumer always waiting and nothing else taking time."""
        return self.messages * self.delay_s / self.concurrency

    def figures(self, contender: str, figure: str) -> list[float]:
        """``figure`` (an attribute of IoBoundRound) of ``contender``'s rounds."""
        return [float(getattr(r, figure)) for r in self.rounds if r.contender == contender]


def io_bound_round(contender: str, config: Config) -> IoBoundRound:
    """Time one untraced run of ``contender``, then take the tracemalloc peak of another."""
    label = f"{contender} I/O-bound"
    one_run = partial(
        bench_async.io_round,
        contender,
        config.io_messages,
        config.io_concurrency,
        config.io_delay,
        timeout=JOIN_TIMEOUT,
    )
    timed = finish(partial(one_run, measure=resident_bytes), label)
    check_exactly_once(label, timed.values, config.io_messages)
    gc.collect()
    tracemalloc.start()
    try:
        traced = finish(partial(one_run, measure=_traced), label)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    check_exactly_once(label, traced.values, config.io_messages)
    return IoBoundRound(contender, timed.seconds, timed.threads, timed.growth, peak, traced.seconds)


def measure_io_bound(config: Config) -> IoBoundResult:
    """Run the interleaved I/O-bound rounds."""
    result = IoBoundResult(config.io_messages, config.io_concurrency, config.io_delay)
    for r in range(config.io_rounds):
        for contender in IO_CONTENDERS:
            rnd = io_bound_round(contender, config)
            result.rounds.append(rnd)
            progress(
                f"I/O-bound round {r + 1}/{config.io_rounds}: {contender} {rnd.seconds:.3f} s, "
                f"{rnd.threads} threads, traced peak {rnd.traced_peak / 1e6:.2f} MB"
            )
    return result


# -- report ----------------------------------------------------------------------


@dataclass
class Verdict:
    """One target (guarantee 9, issue 6) and how the run did against it."""

    name: str
    measured: float
    unit: str  # "x" for a ratio to the baseline or between sizes, " B" for bytes
    target: str
    ok: bool

    @property
    def word(self) -> str:
        """PASS or MISS."""
        return "PASS" if self.ok else "MISS"


@dataclass
class Results:
    """Everything one run measured."""

    config: Config
    machine: dict[str, Any]
    memory: MemoryResult
    throughput: list[ThroughputCase]
    latency: LatencyResult
    backlog: BacklogResult
    async_throughput: list[ThroughputCase]
    io_bound: IoBoundResult
    durable: bench_durable.DurableResult
    policies: bench_policies.PolicyResult


def describe_machine() -> dict[str, Any]:
    """What the figures depend on: CPUs, OS, interpreter, load."""
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity is not None else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": sys.version,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _at_least(name: str, measured: float, target: float) -> Verdict:
    return Verdict(name, measured, "x", f">= {target:g}x", measured >= target)


def _at_most(name: str, measured: float, target: float, unit: str = "x") -> Verdict:
    return Verdict(name, measured, unit, f"<= {target:g}{unit}", measured <= target)


def verdicts(res: Results) -> list[Verdict]:
    """Compare the run with every target of guarantee 9 and of issue 6 (asyncio)."""
    found = [
        _at_least(f"throughput, {case.consumers} consumer(s)", case.ratio(), target)
        for case in res.throughput
        if (target := THROUGHPUT_TARGETS.get(case.consumers)) is not None
    ]
    found.extend(
        _at_least(f"async throughput vs janus, {case.consumers} task(s)", case.ratio(), target)
        for case in res.async_throughput
        if (target := ASYNC_THROUGHPUT_TARGETS.get(case.consumers)) is not None
    )
    p99 = {c: percentile(res.latency.pooled(c), 99) for c in CONTENDERS}
    found.append(_at_most("latency p99", p99[TINYMQ] / p99[PLAIN], LATENCY_P99_MAX_RATIO))
    backlog = res.backlog
    found.append(_at_most("backlog drain cost", backlog.ratio("drain_ns"), BACKLOG_MAX_RATIO))
    found.append(
        _at_most(
            "backlog publish cost, GC paused",
            backlog.ratio("publish_ns", gc_paused=True),
            BACKLOG_MAX_RATIO,
        )
    )
    mem = res.memory.per_message
    found.append(_at_most("memory per pending message", mem, MEMORY_MAX_BYTES, " B"))
    return found


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align ``rows`` under ``headers``: first column left, the others right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _rate_cell(rates: list[float]) -> str:
    return f"{statistics.median(rates):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]"


def _target_cells(target: float | None, ratio: float) -> list[str]:
    if target is None:
        return ["-", "-"]
    return [f">= {target:g}x", "PASS" if ratio >= target else "MISS"]


def _throughput_rows(cases: list[ThroughputCase], targets: dict[int, float]) -> list[list[str]]:
    rows = []
    for case in cases:
        ratio, per_round = case.ratio(), case.round_ratios()
        rows.append(
            [
                str(case.consumers),
                _rate_cell(case.rates(case.baseline)),
                _rate_cell(case.rates(case.contender)),
                f"{ratio:.2f}x",
                f"{statistics.median(per_round):.2f}x [{min(per_round):.2f}-{max(per_round):.2f}]",
                *_target_cells(targets.get(case.consumers), ratio),
            ]
        )
    return rows


def render_throughput(cases: list[ThroughputCase], rounds: int) -> str:
    """The throughput table."""
    heading = (
        f"Throughput: 1 publisher, no-op consumer, {cases[0].messages:,} messages; "
        f"msgs/s, median [min-max] of {rounds} interleaved rounds"
    )
    headers = ["consumers", PLAIN, TINYMQ, "ratio", "per-round ratio", "target", "result"]
    return heading + "\n" + table(headers, _throughput_rows(cases, THROUGHPUT_TARGETS))


def render_async_throughput(cases: list[ThroughputCase], rounds: int) -> str:
    """The sync-to-async throughput table."""
    heading = (
        f"Async throughput: 1 publisher thread, no-op async consumer tasks, "
        f"{cases[0].messages:,} messages; msgs/s, median [min-max] of {rounds} interleaved rounds"
    )
    headers = ["tasks", JANUS, TINYMQ_ASYNC, "ratio", "per-round ratio", "target", "result"]
    return heading + "\n" + table(headers, _throughput_rows(cases, ASYNC_THROUGHPUT_TARGETS))


def render_latency(lat: LatencyResult, rounds: int) -> str:
    """The latency table."""
    rows = []
    for contender in CONTENDERS:
        ordered = lat.pooled(contender)
        cells = [f"{percentile(ordered, p) / 1000:,.0f}" for p in (50, 90, 99, 100)]
        rate = statistics.median(lat.publish_rate[contender])
        rows.append([contender, *cells, f"{rate:,.0f}"])
    heading = (
        f"Latency, publish to consumer: 1 consumer, {lat.messages:,} messages per round "
        f"x {rounds} rounds, >= {lat.interval_s * 1000:g} ms apart; microseconds"
    )
    headers = ["contender", "p50", "p90", "p99", "max", "msgs/s sent"]
    return heading + "\n" + table(headers, rows)


def render_backlog(res: BacklogResult, rounds: int) -> str:
    """The backlog table: per-message cost at each size and the large/small ratio."""
    figures = ("publish_ns", "drain_ns", "gen2_collections")
    rows = [
        [
            f"{size:,}",
            *(f"{res.median(size, f):,.0f}" for f in figures),
            f"{res.median(size, 'publish_ns', gc_paused=True):,.0f}",
        ]
        for size in res.sizes
    ]
    rows.append(
        [
            "ratio",
            f"{res.ratio('publish_ns'):.2f}x",
            f"{res.ratio('drain_ns'):.2f}x",
            "",
            f"{res.ratio('publish_ns', gc_paused=True):.2f}x",
        ]
    )
    heading = (
        f"Backlog: tinymq, 1 consumer held while the backlog is published, then released; "
        f"median of {rounds} rounds"
    )
    headers = [
        "pending",
        "publish ns/msg",
        "drain ns/msg",
        "full GCs in publish",
        "publish ns/msg, GC paused",
    ]
    return heading + "\n" + table(headers, rows)


def render_memory(mem: MemoryResult) -> str:
    """The memory line."""
    rss = "n/a" if mem.rss_bytes is None else f"{mem.rss_bytes / mem.messages:.1f}"
    return (
        f"Memory: {mem.messages:,} pending messages, payload None (shared)\n"
        f"  traced allocations: {mem.per_message:.1f} bytes/message\n"
        f"  resident set growth: {rss} bytes/message (includes allocator rounding)"
    )


def _spread(values: list[float], fmt: str) -> str:
    """Median [min-max], or the one value of a single round."""
    low, mid, high = min(values), statistics.median(values), max(values)
    if len(values) == 1:
        return f"{mid:{fmt}}"
    return f"{mid:{fmt}} [{low:{fmt}}-{high:{fmt}}]"


def _io_bound_row(io: IoBoundResult, contender: str) -> list[str]:
    seconds = io.figures(contender, "seconds")
    growth = [
        r.resident_growth / 1e6
        for r in io.rounds
        if r.contender == contender and r.resident_growth is not None
    ]
    kind = "tasks" if contender == TINYMQ_ASYNC else "threads"
    return [
        contender,
        f"{io.concurrency} {kind}",
        _spread(seconds, ".3f"),
        f"{statistics.median(seconds) / io.ideal_s:.2f}x",
        _spread([b / 1e6 for b in io.figures(contender, "traced_peak")], ".2f"),
        _spread(growth, ".2f") if growth else "n/a",
        f"{statistics.median(io.figures(contender, 'threads')):.0f}",
    ]


def render_io_bound(io: IoBoundResult, rounds: int) -> str:
    """The I/O-bound table: wall time against the ideal, memory and threads."""
    wall, peak = (
        statistics.median(io.figures(TINYMQ_ASYNC, f))
        / statistics.median(io.figures(TINYMQ_THREADS, f))
        for f in ("seconds", "traced_peak")
    )
    heading = (
        f"I/O-bound: {io.messages:,} messages, consumer waits {io.delay_s * 1000:g} ms, "
        f"concurrency {io.concurrency}; ideal wall time {io.ideal_s:.2f} s; "
        f"median [min-max] of {rounds} interleaved round(s)"
    )
    headers = [
        "contender",
        "consumers",
        "wall s",
        "vs ideal",
        "traced peak MB",
        "resident growth MB",
        "threads",
    ]
    rows = [_io_bound_row(io, c) for c in IO_CONTENDERS]
    notes = (
        f"  async/threads: wall {wall:.2f}x, traced peak {peak:.2f}x\n"
        "  wall: start()/astart() until stop()/astop() returned; traced peak: tracemalloc, in a\n"
        "  separate run (thread stacks are not traced); resident growth and threads (main and\n"
        "  forwarder included): once every message is published, all consumers busy"
    )
    return heading + "\n" + table(headers, rows) + "\n" + notes


def render(res: Results) -> str:
    """The whole report."""
    m = res.machine
    mode = "quick" if res.config.quick else "full"
    head = f"tinymq benchmark ({mode}): {m['cpu_count']} CPUs, {m['platform']}, {m['python']}"
    rounds = res.config.rounds
    found = verdicts(res)
    target_rows = [[v.name, f"{v.measured:.2f}{v.unit}", v.target, v.word] for v in found]
    target_rows += bench_durable.target_rows(res.durable)
    target_rows += bench_policies.target_rows(res.policies)
    return "\n\n".join(
        [
            head,
            render_throughput(res.throughput, rounds),
            render_async_throughput(res.async_throughput, rounds),
            render_latency(res.latency, rounds),
            render_backlog(res.backlog, rounds),
            render_memory(res.memory),
            render_io_bound(res.io_bound, res.config.io_rounds),
            bench_durable.render(res.durable),
            bench_policies.render(res.policies),
            "Targets (guarantee 9; async throughput: issue 6)\n"
            + table(["target", "measured", "goal", "result"], target_rows),
            "Message counts: every contender handled every message.",
        ]
    )


def _throughput_json(case: ThroughputCase) -> dict[str, Any]:
    return {
        **asdict(case),
        "msgs_per_s": {c: case.rates(c) for c in (case.baseline, case.contender)},
        "ratio_of_medians": case.ratio(),
        "round_ratios": case.round_ratios(),
    }


def to_json(res: Results) -> dict[str, Any]:
    """Every raw figure, the summaries and the machine, as JSON-ready data."""
    latency_pct = {
        c: {f"p{p}": percentile(res.latency.pooled(c), p) for p in (50, 90, 99, 100)}
        for c in CONTENDERS
    }
    return {
        "machine": res.machine,
        "config": asdict(res.config),
        "throughput": [_throughput_json(case) for case in res.throughput],
        "async_throughput": [_throughput_json(case) for case in res.async_throughput],
        "latency": {**asdict(res.latency), "percentiles_ns": latency_pct},
        "backlog": asdict(res.backlog),
        "memory": {**asdict(res.memory), "traced_bytes_per_message": res.memory.per_message},
        "io_bound": {**asdict(res.io_bound), "ideal_s": res.io_bound.ideal_s},
        "verdicts": [{**asdict(v), "result": v.word} for v in verdicts(res)]
        + bench_durable.verdicts_json(res.durable),
        "durable": bench_durable.to_json(res.durable),
        "policies": bench_policies.to_json(res.policies),
        "counts_ok": True,
    }


# -- main ------------------------------------------------------------------------


def run(config: Config) -> Results:
    """Measure everything; memory first, while little freed memory can be reused."""
    machine = describe_machine()
    memory = measure_memory(config)
    throughput = measure_throughput(config)
    latency = measure_latency(config)
    backlog = measure_backlog(config)
    async_throughput = measure_async_throughput(config)
    io_bound = measure_io_bound(config)
    durable = bench_durable.measure(config.quick, config.rounds)
    policies = bench_policies.measure(config.quick, config.rounds)
    return Results(
        config,
        machine,
        memory,
        throughput,
        latency,
        backlog,
        async_throughput,
        io_bound,
        durable,
        policies,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 1 if a contender lost or duplicated a message."""
    args = parse_args(argv)
    config = make_config(args.quick, args.messages, args.rounds)
    try:
        results = run(config)
    except (CountError, bench_durable.CountError, bench_policies.CountError) as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    print(render(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(results), indent=1) + "\n")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
