"""The backlog and memory rows of bench_throughput.py: tinymq holding many pending messages.

* Backlog. A tinymq consumer is held on the first message while B more are published
  to the running MQ, the way a backlog forms in service; then it is released and the
  time to consume all B is divided by B; the time to publish them, likewise. The
  ratios compare the large B (1,000,000 in the full run) with B = 10,000.
* Memory. Messages whose payload is one shared object (None) are published to a
  registered queue that is not started, so each one sits in the queue as what a
  publish builds (a ``Msg``, its id and a deque slot). The traced allocation growth
  divided by the count is the cost beyond the payload; growth of the resident set
  is shown as a cross-check that includes allocator rounding.
"""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from bench_contenders import JOIN_TIMEOUT, QUEUE, TINYMQ, check_exactly_once, finish
from bench_report import progress, table

from tinymq import MQ, Context, Msg

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


def measure_backlog(sizes: tuple[int, int], rounds: int) -> BacklogResult:
    """Run interleaved backlog rounds at the small and the large size."""
    result = BacklogResult(sizes)
    for r in range(rounds):
        for size in sizes:
            for gc_paused in (False, True):
                rnd = backlog_round(size, gc_paused)
                result.rounds.append(rnd)
                progress(
                    f"backlog round {r + 1}/{rounds}: {size:,} pending"
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


def traced_now() -> int:
    """Bytes tracemalloc counts as allocated now."""
    return tracemalloc.get_traced_memory()[0]


def measure_memory(messages: int) -> MemoryResult:
    """Measure traced and resident growth per pending message."""
    rss = _fill_unstarted(messages, resident_bytes)
    tracemalloc.start()
    try:
        traced = _fill_unstarted(messages, traced_now)
    finally:
        tracemalloc.stop()
    assert traced is not None
    result = MemoryResult(messages, traced, rss)
    progress(f"memory: {result.per_message:.1f} bytes per pending message (traced)")
    return result


# -- report ----------------------------------------------------------------------


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
