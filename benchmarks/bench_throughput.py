"""tinymq against what a user would pick instead: one command, the same work, one run.

Absolute numbers on a shared machine mean little, so every contender runs the same
work in interleaved rounds of one run, and each figure is set against what a plain
unbounded ``queue.Queue`` with the same number of threads does in the same round.
The targets are ratios:

* In-memory throughput (contenders in bench_contenders.py). The main thread publishes
  N ints; W threads (1, 4, 16) hand each one to a consumer that does nothing, or that
  spins the CPU for 50 us first. Contenders: ``queue.Queue`` (the baseline; workers
  ``get()`` until a sentinel), tinymq (one queue of concurrency W, ended by
  ``stop()``), ``ThreadPoolExecutor.submit``, janus sync to sync, huey's MemoryHuey and
  dramatiq's StubBroker with its in-process Worker. The clock runs from the first
  publish until every message is handled (and, but for dramatiq, every thread
  joined). The table shows the median rate, the min-max range, the ratio of the
  medians to ``queue.Queue`` and the median of the same-round ratios, and how far
  tinymq leads each contender (its median over the contender's).
* Latency (bench_latency.py). Stamps published at about 1,000 msgs/s (one per ms)
  and 20,000 msgs/s (bursts of 20 per ms) to one consumer; percentiles over all rounds.
* Backlog and memory (bench_backlog.py). The cost per message of publishing and
  draining 10,000 and 1,000,000 pending messages, and the bytes each pending message
  takes beyond its payload.
* Async throughput (bench_async.py). A publisher thread puts N ints and W asyncio tasks
  (1, 4, 16) hand each one to a no-op async handler: a raw ``janus.Queue`` against
  tinymq async consumers on ``astart()``'s loop, interleaved and reported like the
  thread throughput.
* I/O-bound (bench_async.py). 1,000 messages whose consumer waits 50 ms, concurrency
  100: tinymq async consumers (100 tasks on one loop thread) against tinymq thread
  consumers (100 threads). Wall time from start to drained, against the ideal
  1,000 x 50 ms / 100 = 0.5 s; the tracemalloc peak of a separate traced run; the
  threads alive and the resident growth once everything is published.
* Durable queues (bench_durable.py). tinymq's log with each fsync policy from 1 and 8
  publishers against a raw write+fdatasync loop (the limit) and persist-queue,
  recovery time and memory of a large backlog; printed with the file system and the
  fsync latency of the directory they ran in.
* Delivery policies (bench_policies.py). The cost of an armed, never triggered retry
  policy and of reading ``stats()`` every 10 ms, as ratios to the same queue without.
* Redis, when benchmarks/bench_redis.py exists (it brings its own rows and targets).

Contenders from the ``bench`` extra (``pip install -e '.[bench]'``) that are not
installed are reported as skipped. Every consumer records what it receives, and the
run exits with status 1 if any contender did not handle every message exactly once
(and, with one consumer, in publish order where the contender promises it). Missed
speed targets are reported as MISS, not failed: they depend on the machine.

Run from the repository root::

    python benchmarks/bench_throughput.py            # full run, about 15 min
    python benchmarks/bench_throughput.py --quick    # smoke run (CI), under a minute
    python benchmarks/bench_throughput.py --json bench-results/full.json --plot docs/img
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import bench_async  # beside this script, which Python puts first on sys.path
import bench_backlog
import bench_durable
import bench_latency
import bench_plot
import bench_policies
from bench_async import ASYNC_CONTENDERS, IO_CONTENDERS, JANUS, TINYMQ_ASYNC, TINYMQ_THREADS
from bench_backlog import BacklogResult, MemoryResult, resident_bytes
from bench_contenders import (
    BY_NAME,
    CONTENDERS,
    CPU_WORK,
    DRAMATIQ,
    EXECUTOR,
    HUEY,
    JOIN_TIMEOUT,
    PLAIN,
    TINYMQ,
    CountError,
    check_exactly_once,
    check_order,
    finish,
    missing,
    record_items,
    version,
)
from bench_latency import HIGH, LOW, LatencyResult, percentile
from bench_report import Verdict, at_least, at_most, progress, spread, table

THROUGHPUT_TARGETS = {1: 0.8, 4: 0.9}  # minimum tinymq / queue.Queue, no-op consumer
LEAD_TARGETS = {HUEY: 4.0, DRAMATIQ: 10.0, EXECUTOR: 2.0}  # minimum tinymq / contender, no-op
ASYNC_THROUGHPUT_TARGETS = {1: 1.0, 4: 1.0, 16: 1.0}  # minimum tinymq async / janus
LATENCY_P99_MAX_RATIO = 2.0  # tinymq / queue.Queue at the low rate
BACKLOG_MAX_RATIO = 1.2
MEMORY_MAX_BYTES = 120.0
BENCH_DISTRIBUTIONS = ("janus", "huey", "dramatiq", "persist-queue", "matplotlib")

# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What each consumer call does besides recording the message."""

    name: str
    cpu_s: float  # seconds of CPU spun per call


NOOP = Workload("no-op", 0.0)
CPU = Workload(f"{CPU_WORK * 1e6:g} us CPU", CPU_WORK)


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one run."""

    quick: bool
    messages: int  # per in-memory throughput round, no-op consumer
    cpu_messages: int  # per in-memory throughput round, CPU consumer
    rounds: int
    throughput_rounds: int  # in-memory throughput rounds of queue.Queue and tinymq
    contender_rounds: int  # rounds the other contenders take part in (the first ones)
    consumers: tuple[int, ...]
    latency_messages: tuple[int, int]  # per round at the low and at the high rate
    latency_contenders: tuple[str, ...]
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
            messages=messages or 6_000,
            cpu_messages=1_000,
            rounds=rounds or 3,
            throughput_rounds=rounds or 5,
            contender_rounds=1,
            consumers=(1, 4, 16),
            latency_messages=(200, 2_000),
            latency_contenders=(PLAIN, TINYMQ),
            backlog_sizes=(5_000, 50_000),
            memory_messages=50_000,
            async_messages=messages or 10_000,
            async_tasks=(1, 4),
            io_messages=1_000,
            io_concurrency=100,
            io_delay=0.05,
            io_rounds=rounds or 1,
        )
    return Config(
        quick=False,
        messages=messages or 100_000,
        cpu_messages=10_000,
        rounds=rounds or 5,
        throughput_rounds=rounds or 5,
        contender_rounds=rounds or 5,
        consumers=(1, 4, 16),
        latency_messages=(1_000, 10_000),
        latency_contenders=tuple(c.name for c in CONTENDERS),
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
    parser.add_argument(
        "--plot", type=Path, metavar="DIR", help="also draw PNG charts here (needs matplotlib)"
    )
    return parser.parse_args(argv)


# -- throughput ------------------------------------------------------------------


@dataclass
class ThroughputCase:
    """Raw seconds per round and contender for one consumer (or task) count."""

    consumers: int
    messages: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    baseline: str = PLAIN
    contender: str = TINYMQ
    workload: str = NOOP.name
    skipped: dict[str, str] = field(default_factory=dict)  # contender: why it did not run

    def rates(self, name: str) -> list[float]:
        """Messages per second of each round of ``name``."""
        return [self.messages / s for s in self.seconds[name]]

    def ratio(self, name: str | None = None) -> float:
        """Median rate of ``name`` (tinymq by default) over the baseline's median rate."""
        mine = self.rates(name or self.contender)
        return statistics.median(mine) / statistics.median(self.rates(self.baseline))

    def round_ratios(self, name: str | None = None) -> list[float]:
        """Rate of ``name`` (tinymq by default) over the baseline's, round by round."""
        pairs = zip(self.rates(name or self.contender), self.rates(self.baseline), strict=False)
        return [mine / base for mine, base in pairs]

    def lead(self, name: str) -> float:
        """tinymq's median rate over the median rate of ``name``."""
        return statistics.median(self.rates(self.contender)) / statistics.median(self.rates(name))


def throughput_round(contender: str, messages: int, workers: int, cpu_s: float) -> float:
    """Publish ``messages`` ints; return seconds until all are handled."""
    label = f"{contender} throughput, {workers} consumer(s)"
    sink = record_items(cpu_s)
    running = BY_NAME[contender].start(workers, sink)
    put = running.put
    gc.collect()
    start = time.perf_counter()
    for i in range(messages):
        put(i)
    finish(running.finish, label)
    elapsed = time.perf_counter() - start
    running.close()
    check_exactly_once(label, sink.values, messages)
    if workers == 1 and BY_NAME[contender].ordered:
        check_order(label, sink.values)
    return elapsed


def run_rounds(
    case: ThroughputCase,
    rounds: int,
    one_round: Callable[[str], float],
    what: str,
    limited: tuple[int, Sequence[str]] = (0, ()),
) -> ThroughputCase:
    """Fill ``case`` with ``rounds`` interleaved rounds of every contender in it.

    ``limited`` is (n, names): those contenders take part in the first n rounds only.
    """
    few, names = limited
    for r in range(rounds):
        for contender in case.seconds:
            if contender in names and r >= few:
                continue
            seconds = one_round(contender)
            case.seconds[contender].append(seconds)
            progress(
                f"{what} round {r + 1}/{rounds}: {contender} {case.messages / seconds:,.0f} msgs/s"
            )
    return case


def measure_throughput(config: Config, workload: Workload) -> list[ThroughputCase]:
    """Run the interleaved in-memory rounds of every contender for every consumer count."""
    messages = config.cpu_messages if workload.cpu_s else config.messages
    skipped = {c.name: why for c in CONTENDERS if (why := missing(c)) is not None}
    names = [c.name for c in CONTENDERS if c.name not in skipped]
    third_party = [n for n in names if n not in (PLAIN, TINYMQ)]
    return [
        run_rounds(
            ThroughputCase(
                workers, messages, {n: [] for n in names}, workload=workload.name, skipped=skipped
            ),
            config.throughput_rounds,
            partial(throughput_round, messages=messages, workers=workers, cpu_s=workload.cpu_s),
            f"throughput, {workload.name}, {workers} consumer(s),",
            (config.contender_rounds, third_party),
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
            config.rounds,
            partial(async_throughput_round, messages=config.async_messages, tasks=tasks),
            f"async throughput, {tasks} task(s),",
        )
        for tasks in config.async_tasks
    ]


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
        traced = finish(partial(one_run, measure=bench_backlog.traced_now), label)
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
class Results:
    """Everything one run measured."""

    config: Config
    machine: dict[str, Any]
    memory: MemoryResult
    throughput: dict[str, list[ThroughputCase]]  # workload name: one case per consumer count
    latency: list[LatencyResult]  # the low rate, then the high rate
    backlog: BacklogResult
    async_throughput: list[ThroughputCase]
    io_bound: IoBoundResult
    durable: bench_durable.DurableResult
    policies: bench_policies.PolicyResult
    redis: Any = None  # what bench_redis.measure returned, if that module exists
    redis_skipped: str | None = None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def describe_machine() -> dict[str, Any]:
    """What the figures depend on: CPUs, OS, interpreter, load, contender versions."""
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity is not None else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": sys.version,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {name: version(name) for name in ("tinymq", *BENCH_DISTRIBUTIONS)},
    }


def machine_json(res: Results) -> dict[str, Any]:
    """The machine, with the disk and the sync latency the durable rows measured."""
    sync_us = {
        name: {f"p{p}": percentile(sorted(ns), p) / 1000 for p in (50, 99, 100)}
        for name, ns in res.durable.sync_ns.items()
    }
    return {**res.machine, "disk": res.durable.disk, "sync_latency_us": sync_us}


def verdicts(res: Results) -> list[Verdict]:
    """Compare the run with the in-memory, async, latency, backlog and memory targets."""
    noop = res.throughput[NOOP.name]
    found = [
        at_least(f"throughput vs queue.Queue, {case.consumers} consumer(s)", case.ratio(), target)
        for case in noop
        if (target := THROUGHPUT_TARGETS.get(case.consumers)) is not None
    ]
    found.extend(
        at_least(f"throughput lead over {name}, {case.consumers} consumer(s)", case.lead(name), t)
        for name, t in LEAD_TARGETS.items()
        for case in noop
        if name in case.seconds
    )
    found.extend(
        at_least(f"async throughput vs janus, {case.consumers} task(s)", case.ratio(), target)
        for case in res.async_throughput
        if (target := ASYNC_THROUGHPUT_TARGETS.get(case.consumers)) is not None
    )
    low = res.latency[0]
    p99 = {c: percentile(low.pooled(c), 99) for c in (PLAIN, TINYMQ)}
    found.append(
        at_most(
            "latency p99 vs queue.Queue, low rate", p99[TINYMQ] / p99[PLAIN], LATENCY_P99_MAX_RATIO
        )
    )
    backlog = res.backlog
    found.append(at_most("backlog drain cost", backlog.ratio("drain_ns"), BACKLOG_MAX_RATIO))
    found.append(
        at_most(
            "backlog publish cost, GC paused",
            backlog.ratio("publish_ns", gc_paused=True),
            BACKLOG_MAX_RATIO,
        )
    )
    mem = res.memory.per_message
    found.append(at_most("memory per pending message", mem, MEMORY_MAX_BYTES, " B"))
    return found


def skipped_targets(res: Results) -> list[list[str]]:
    """Target rows of contenders that were not installed."""
    skipped = res.throughput[NOOP.name][0].skipped
    return [
        [f"throughput lead over {name}", "-", f">= {target:g}x", skipped[name]]
        for name, target in LEAD_TARGETS.items()
        if name in skipped
    ]


def _rate_cell(rates: list[float]) -> str:
    return spread(rates, ",.0f")


def _ratio_cell(ratios: list[float]) -> str:
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}x"
    return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"


def _verdict_cells(target: float | None, measured: float, what: str = "") -> list[str]:
    if target is None:
        return ["", ""]
    return [f"{what}>= {target:g}x", "PASS" if measured >= target else "MISS"]


def _case_rows(case: ThroughputCase, targets: bool) -> list[list[str]]:
    """One row per contender of ``case``; ``targets``: judge the no-op targets."""
    rows = []
    for name in case.seconds:
        first = [str(case.consumers), name, _rate_cell(case.rates(name))]
        if name == case.baseline:
            rows.append([*first, "1.00x", "", "", "", ""])
            continue
        ratio = case.ratio(name)
        cells = [*first, f"{ratio:.2f}x", _ratio_cell(case.round_ratios(name))]
        if name == case.contender:
            target = THROUGHPUT_TARGETS.get(case.consumers) if targets else None
            rows.append([*cells, "", *_verdict_cells(target, ratio)])
        else:
            lead = case.lead(name)
            target = LEAD_TARGETS.get(name) if targets else None
            rows.append([*cells, f"{lead:.1f}x", *_verdict_cells(target, lead, "lead ")])
    rows += [
        [str(case.consumers), name, why, "", "", "", "", ""] for name, why in case.skipped.items()
    ]
    return rows


def render_throughput(cases: list[ThroughputCase], config: Config) -> str:
    """The in-memory throughput table of one workload, all contenders."""
    workload = cases[0].workload
    rounds = f"{config.throughput_rounds} interleaved rounds"
    if config.contender_rounds < config.throughput_rounds:
        rounds += f" (the other contenders: the first {config.contender_rounds})"
    heading = (
        f"In-memory throughput, {workload} consumer: 1 publisher, {cases[0].messages:,} "
        f"messages per round; msgs/s, median [min-max] of {rounds}"
    )
    headers = [
        "consumers",
        "contender",
        "msgs/s",
        "vs queue.Queue",
        "per round",
        "tinymq lead",
        "target",
        "result",
    ]
    rows = [row for case in cases for row in _case_rows(case, workload == NOOP.name)]
    return heading + "\n" + table(headers, rows, left=2)


def render_async_throughput(cases: list[ThroughputCase], rounds: int) -> str:
    """The sync-to-async throughput table."""
    heading = (
        f"Async throughput: 1 publisher thread, no-op async consumer tasks, "
        f"{cases[0].messages:,} messages; msgs/s, median [min-max] of {rounds} interleaved rounds"
    )
    headers = ["tasks", JANUS, TINYMQ_ASYNC, "ratio", "per-round ratio", "target", "result"]
    rows = [
        [
            str(case.consumers),
            _rate_cell(case.rates(case.baseline)),
            _rate_cell(case.rates(case.contender)),
            f"{case.ratio():.2f}x",
            _ratio_cell(case.round_ratios()),
            *_verdict_cells(ASYNC_THROUGHPUT_TARGETS.get(case.consumers), case.ratio()),
        ]
        for case in cases
    ]
    return heading + "\n" + table(headers, rows)


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
        spread(seconds, ".3f"),
        f"{statistics.median(seconds) / io.ideal_s:.2f}x",
        spread([b / 1e6 for b in io.figures(contender, "traced_peak")], ".2f"),
        spread(growth, ".2f") if growth else "n/a",
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


def render_redis(res: Results) -> str:
    """The Redis rows, or why there are none."""
    if res.redis is None:
        return f"Redis: {res.redis_skipped}"
    text: str = bench_redis_module().render(res.redis)
    return text


def target_rows(res: Results) -> list[list[str]]:
    """Every target of the run: name, measured, goal, result."""
    rows = [v.row() for v in verdicts(res)] + skipped_targets(res)
    rows += bench_durable.target_rows(res.durable)
    rows += bench_policies.target_rows(res.policies)
    if res.redis is not None:
        rows += bench_redis_module().target_rows(res.redis)
    return rows


def render(res: Results) -> str:
    """The whole report."""
    m = res.machine
    mode = "quick" if res.config.quick else "full"
    head = (
        f"tinymq benchmark ({mode}): {m['cpu_count']} CPUs ({m['cpu_model']}), "
        f"{m['platform']}, {m['python']}"
    )
    rounds = res.config.rounds
    return "\n\n".join(
        [
            head,
            *(render_throughput(cases, res.config) for cases in res.throughput.values()),
            *(bench_latency.render(lat, rounds, table) for lat in res.latency),
            render_async_throughput(res.async_throughput, rounds),
            render_io_bound(res.io_bound, res.config.io_rounds),
            bench_backlog.render_backlog(res.backlog, rounds),
            bench_backlog.render_memory(res.memory),
            bench_durable.render(res.durable),
            bench_policies.render(res.policies),
            render_redis(res),
            "Targets\n" + table(["target", "measured", "goal", "result"], target_rows(res)),
            "Message counts: every contender handled every message.",
        ]
    )


def _throughput_json(case: ThroughputCase) -> dict[str, Any]:
    others = [n for n in case.seconds if n != case.baseline]
    return {
        **asdict(case),
        "msgs_per_s": {n: case.rates(n) for n in case.seconds},
        "ratio_to_baseline": {n: case.ratio(n) for n in others},
        "round_ratios": {n: case.round_ratios(n) for n in others},
        "tinymq_lead": {n: case.lead(n) for n in others if n != case.contender},
    }


def to_json(res: Results) -> dict[str, Any]:
    """Every raw figure, the summaries and the machine, as JSON-ready data."""
    rows = target_rows(res)
    return {
        "machine": machine_json(res),
        "config": asdict(res.config),
        "throughput": {
            workload: [_throughput_json(case) for case in cases]
            for workload, cases in res.throughput.items()
        },
        "async_throughput": [_throughput_json(case) for case in res.async_throughput],
        "latency": [bench_latency.to_json(lat) for lat in res.latency],
        "backlog": asdict(res.backlog),
        "memory": {**asdict(res.memory), "traced_bytes_per_message": res.memory.per_message},
        "io_bound": {**asdict(res.io_bound), "ideal_s": res.io_bound.ideal_s},
        "verdicts": [{**asdict(v), "result": v.word} for v in verdicts(res)]
        + bench_durable.verdicts_json(res.durable),
        "targets": [
            dict(zip(("target", "measured", "goal", "result"), r, strict=True)) for r in rows
        ],
        "durable": bench_durable.to_json(res.durable),
        "policies": bench_policies.to_json(res.policies),
        "redis": bench_redis_module().to_json(res.redis) if res.redis is not None else None,
        "redis_skipped": res.redis_skipped,
        "counts_ok": True,
    }


# -- main ------------------------------------------------------------------------


def bench_redis_module() -> ModuleType:
    """benchmarks/bench_redis.py, which run() found and imported."""
    return sys.modules["bench_redis"]


def find_redis() -> tuple[ModuleType | None, str | None]:
    """Import benchmarks/bench_redis.py if it exists; else say why its rows are skipped.

    It exposes measure(quick, rounds), render(result), target_rows(result),
    to_json(result) and CountError, as bench_durable and bench_policies do.
    """
    if importlib.util.find_spec("bench_redis") is None:
        return None, "skipped (no Redis backend benchmark: benchmarks/bench_redis.py)"
    try:
        return importlib.import_module("bench_redis"), None
    except ImportError as exc:
        return None, f"skipped ({exc})"


SECTIONS = 11


def section(n: int, what: str) -> None:
    """Announce section ``n`` of the run."""
    progress(f"== {n}/{SECTIONS}: {what}")


def run(config: Config, redis: ModuleType | None, redis_skipped: str | None) -> Results:
    """Measure everything; memory first, while little freed memory can be reused."""
    machine = describe_machine()
    section(1, "memory per pending message")
    memory = bench_backlog.measure_memory(config.memory_messages)
    section(2, "in-memory throughput, no-op consumer")
    throughput = {NOOP.name: measure_throughput(config, NOOP)}
    section(3, f"in-memory throughput, {CPU.name} consumer")
    throughput[CPU.name] = measure_throughput(config, CPU)
    section(4, "latency at a low and a high rate")
    latency = [
        bench_latency.measure(rate, messages, config.latency_contenders, config.rounds, progress)
        for rate, messages in zip((LOW, HIGH), config.latency_messages, strict=True)
    ]
    section(5, "backlog")
    backlog = bench_backlog.measure_backlog(config.backlog_sizes, config.rounds)
    section(6, "async throughput")
    async_throughput = measure_async_throughput(config)
    section(7, "I/O-bound")
    io_bound = measure_io_bound(config)
    section(8, "durable queues")
    durable = bench_durable.measure(config.quick, config.rounds)
    section(9, "delivery policies")
    policies = bench_policies.measure(config.quick, config.rounds)
    section(10, "Redis")
    redis_result = None
    if redis is not None:
        # Quick: one round; each row starts its processes, which is most of its time.
        redis_result = redis.measure(config.quick, None if config.quick else config.rounds)
    else:
        progress(f"Redis: {redis_skipped}")
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
        redis_result,
        redis_skipped,
    )


def write_outputs(results: Results, json_path: Path | None, plot_dir: Path | None) -> None:
    """Write the JSON file and the charts that were asked for."""
    section(SECTIONS, "writing results")
    data = to_json(results)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(data, indent=1) + "\n")
        progress(f"wrote {json_path}")
    if plot_dir is None:
        return
    why = bench_plot.unavailable()
    if why is not None:
        print(f"Charts: {why}")
        return
    written = bench_plot.plot_all(data, plot_dir)
    print("Charts: " + ", ".join(str(p) for p in written))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 1 if a contender lost, repeated or reordered a message."""
    args = parse_args(argv)
    config = make_config(args.quick, args.messages, args.rounds)
    redis, redis_skipped = find_redis()
    count_errors: tuple[type[Exception], ...] = (
        CountError,
        bench_durable.CountError,
        bench_policies.CountError,
    )
    if redis is not None:
        count_errors += (redis.CountError,)
    started = time.monotonic()
    try:
        results = run(config, redis, redis_skipped)
    except count_errors as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    print(render(results))
    write_outputs(results, args.json, args.plot)
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
