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

Every consumer records what it receives, and the run exits with status 1 if any
contender did not handle every message (exactly once, where the data allows telling).
Missed speed targets are reported as MISS, not failed: they depend on the machine.

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_throughput.py           # full run, about a minute
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
from typing import Any

from tinymq import MQ, Consumer, Context, Msg

QUEUE = "bench"
PLAIN = "queue.Queue"
TINYMQ = "tinymq"
CONTENDERS = (PLAIN, TINYMQ)
JOIN_TIMEOUT = 60.0  # seconds; a contender still busy after this has lost messages
LATENCY_INTERVAL = 0.001  # seconds between publishes in the latency test

THROUGHPUT_TARGETS = {1: 0.8, 4: 0.9}  # minimum tinymq/baseline ratio per consumer count
LATENCY_P99_MAX_RATIO = 2.0
BACKLOG_MAX_RATIO = 1.2
MEMORY_MAX_BYTES = 120.0

_STOP = object()  # the baseline's sentinel

Handler = Callable[[Any], None]


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
        )
    return Config(
        quick=False,
        messages=messages or 200_000,
        rounds=rounds or 5,
        consumers=(1, 2, 4),
        latency_messages=1_000,
        backlog_sizes=(10_000, 1_000_000),
        memory_messages=1_000_000,
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


def finish(stop: Callable[[], None], label: str) -> None:
    """Call ``stop`` (drain and join); a timeout means messages were not handled."""
    try:
        stop()
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
    """Raw seconds per round and contender for one consumer count."""

    consumers: int
    messages: int
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def rates(self, contender: str) -> list[float]:
        """Messages per second of each round."""
        return [self.messages / s for s in self.seconds[contender]]

    def ratio(self) -> float:
        """Median tinymq rate over median baseline rate."""
        return statistics.median(self.rates(TINYMQ)) / statistics.median(self.rates(PLAIN))

    def round_ratios(self) -> list[float]:
        """tinymq rate over baseline rate, round by round."""
        return [t / p for t, p in zip(self.rates(TINYMQ), self.rates(PLAIN), strict=True)]


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


def measure_throughput(config: Config) -> list[ThroughputCase]:
    """Run the interleaved throughput rounds for every consumer count."""
    cases = []
    for workers in config.consumers:
        case = ThroughputCase(workers, config.messages, {c: [] for c in CONTENDERS})
        for r in range(config.rounds):
            for contender in CONTENDERS:
                seconds = throughput_round(contender, config.messages, workers)
                case.seconds[contender].append(seconds)
                progress(
                    f"throughput {workers} consumer(s) round {r + 1}/{config.rounds}: "
                    f"{contender} {config.messages / seconds:,.0f} msgs/s"
                )
        cases.append(case)
    return cases


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


# -- report ----------------------------------------------------------------------


@dataclass
class Verdict:
    """One guarantee-9 target and how the run did against it."""

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
    """Compare the run with every target of guarantee 9."""
    found = [
        _at_least(f"throughput, {case.consumers} consumer(s)", case.ratio(), target)
        for case in res.throughput
        if (target := THROUGHPUT_TARGETS.get(case.consumers)) is not None
    ]
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


def render_throughput(cases: list[ThroughputCase], rounds: int) -> str:
    """The throughput table."""
    rows = []
    for case in cases:
        ratio, per_round = case.ratio(), case.round_ratios()
        rows.append(
            [
                str(case.consumers),
                _rate_cell(case.rates(PLAIN)),
                _rate_cell(case.rates(TINYMQ)),
                f"{ratio:.2f}x",
                f"{statistics.median(per_round):.2f}x [{min(per_round):.2f}-{max(per_round):.2f}]",
                *_target_cells(THROUGHPUT_TARGETS.get(case.consumers), ratio),
            ]
        )
    heading = (
        f"Throughput: 1 publisher, no-op consumer, {cases[0].messages:,} messages; "
        f"msgs/s, median [min-max] of {rounds} interleaved rounds"
    )
    headers = ["consumers", PLAIN, TINYMQ, "ratio", "per-round ratio", "target", "result"]
    return heading + "\n" + table(headers, rows)


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


def render(res: Results) -> str:
    """The whole report."""
    m = res.machine
    mode = "quick" if res.config.quick else "full"
    head = f"tinymq benchmark ({mode}): {m['cpu_count']} CPUs, {m['platform']}, {m['python']}"
    rounds = res.config.rounds
    found = verdicts(res)
    target_rows = [[v.name, f"{v.measured:.2f}{v.unit}", v.target, v.word] for v in found]
    return "\n\n".join(
        [
            head,
            render_throughput(res.throughput, rounds),
            render_latency(res.latency, rounds),
            render_backlog(res.backlog, rounds),
            render_memory(res.memory),
            "Targets (guarantee 9)\n"
            + table(["target", "measured", "goal", "result"], target_rows),
            "Message counts: every contender handled every message.",
        ]
    )


def to_json(res: Results) -> dict[str, Any]:
    """Every raw figure, the summaries and the machine, as JSON-ready data."""
    throughput = []
    for case in res.throughput:
        throughput.append(
            {
                **asdict(case),
                "msgs_per_s": {c: case.rates(c) for c in CONTENDERS},
                "ratio_of_medians": case.ratio(),
                "round_ratios": case.round_ratios(),
            }
        )
    latency_pct = {
        c: {f"p{p}": percentile(res.latency.pooled(c), p) for p in (50, 90, 99, 100)}
        for c in CONTENDERS
    }
    return {
        "machine": res.machine,
        "config": asdict(res.config),
        "throughput": throughput,
        "latency": {**asdict(res.latency), "percentiles_ns": latency_pct},
        "backlog": asdict(res.backlog),
        "memory": {**asdict(res.memory), "traced_bytes_per_message": res.memory.per_message},
        "verdicts": [{**asdict(v), "result": v.word} for v in verdicts(res)],
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
    return Results(config, machine, memory, throughput, latency, backlog)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 1 if a contender lost or duplicated a message."""
    args = parse_args(argv)
    config = make_config(args.quick, args.messages, args.rounds)
    try:
        results = run(config)
    except CountError as exc:
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
