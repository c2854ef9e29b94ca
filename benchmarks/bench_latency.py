"""The latency rows of bench_throughput.py: publish to consumer, at a low and a high rate.

Each message is the ``perf_counter_ns()`` stamp taken just before it is published;
the single consumer records how long it took to arrive. The publisher sleeps
between ticks rather than spinning, since a spinning publisher would hold the GIL
the consumer needs and measure the interpreter's switch interval instead of the
queue:

* low: one message per millisecond (about 1,000 msgs/s), every message meets an
  idle consumer, so the figure is the cost of one wake-up;
* high: a burst of 20 messages per millisecond (about 20,000 msgs/s), where a
  message may queue behind the earlier ones of its burst.

Contenders run in interleaved rounds; percentiles are taken over the samples of all
rounds. A contender slower than the rate falls behind, and its latency grows with
the round: that is what the rate would do to it in service.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench_contenders import BY_NAME, check_count, finish, missing, record_latency

TICK = 0.001  # seconds between the starts of two bursts
PERCENTILES = (50, 90, 99, 100)


@dataclass(frozen=True)
class Rate:
    """A publishing pace: ``burst`` messages every ``TICK`` seconds."""

    name: str
    burst: int

    @property
    def nominal(self) -> float:
        """Messages per second the pace aims at."""
        return self.burst / TICK


LOW = Rate("low", 1)
HIGH = Rate("high", 20)
RATES = (LOW, HIGH)


@dataclass
class LatencyResult:
    """Raw publish-to-consumer latencies (ns) per contender and round, at one rate."""

    rate: Rate
    messages: int
    samples_ns: dict[str, list[list[int]]] = field(default_factory=dict)
    publish_rate: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def pooled(self, contender: str) -> list[int]:
        """Every sample of ``contender``, sorted."""
        return sorted(s for rnd in self.samples_ns[contender] for s in rnd)

    def percentiles(self, contender: str) -> dict[str, int]:
        """p50, p90, p99 and p100 (the maximum) in ns over all rounds."""
        ordered = self.pooled(contender)
        return {f"p{p}": percentile(ordered, p) for p in PERCENTILES}


def percentile(ordered: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile of a sorted, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def publish_paced(put: Callable[[Any], object], messages: int, burst: int) -> float:
    """Publish ``messages`` stamps, ``burst`` per ``TICK``; return the achieved rate."""
    clock, sleep, stamp = time.perf_counter, time.sleep, time.perf_counter_ns
    start = due = clock()
    sent = 0
    while sent < messages:
        delay = due - clock()
        if delay > 0:
            sleep(delay)
        due += TICK
        for _ in range(min(burst, messages - sent)):
            put(stamp())
        sent += burst
    return messages / (clock() - start)


def latency_round(contender: str, messages: int, burst: int) -> tuple[list[int], float]:
    """Run one paced round with one consumer; return the latencies and the publish rate."""
    label = f"{contender} latency"
    sink = record_latency()
    running = BY_NAME[contender].start(1, sink)
    rate = publish_paced(running.put, messages, burst)
    finish(running.finish, label)
    running.close()
    check_count(label, sink.values, messages)
    return sink.values, rate


def measure(
    rate: Rate,
    messages: int,
    contenders: Sequence[str],
    rounds: int,
    progress: Callable[[str], None],
) -> LatencyResult:
    """Run the interleaved latency rounds of ``contenders`` at ``rate``."""
    result = LatencyResult(rate, messages)
    for name in contenders:
        why = missing(BY_NAME[name])
        if why is not None:
            result.skipped[name] = why
            continue
        result.samples_ns[name], result.publish_rate[name] = [], []
    for r in range(rounds):
        for name in result.samples_ns:
            samples, sent = latency_round(name, messages, rate.burst)
            result.samples_ns[name].append(samples)
            result.publish_rate[name].append(sent)
            p99 = percentile(sorted(samples), 99) / 1000
            progress(f"latency, {rate.name} rate, round {r + 1}/{rounds}: {name} p99 {p99:,.0f} us")
    return result


def render(lat: LatencyResult, rounds: int, table: Callable[..., str]) -> str:
    """The latency table of one rate; ``table`` aligns headers and rows."""
    rows = []
    for name, samples in lat.samples_ns.items():
        if not samples:
            continue
        cells = [f"{v / 1000:,.0f}" for v in lat.percentiles(name).values()]
        sent = statistics.median(lat.publish_rate[name])
        rows.append([name, *cells, f"{sent:,.0f}"])
    rows += [[name, why, "", "", "", ""] for name, why in lat.skipped.items()]
    heading = (
        f"Latency, publish to consumer, {lat.rate.name} rate: 1 consumer, {lat.rate.burst} "
        f"message(s) every {TICK * 1000:g} ms (~{lat.rate.nominal:,.0f} msgs/s), "
        f"{lat.messages:,} messages per round x {rounds} rounds; microseconds"
    )
    headers = ["contender", "p50", "p90", "p99", "max", "msgs/s sent"]
    return heading + "\n" + table(headers, rows)


def to_json(lat: LatencyResult) -> dict[str, Any]:
    """Every sample, the percentiles and the achieved publish rates."""
    return {
        "rate": lat.rate.name,
        "burst": lat.rate.burst,
        "tick_s": TICK,
        "nominal_msgs_per_s": lat.rate.nominal,
        "messages": lat.messages,
        "samples_ns": lat.samples_ns,
        "publish_rate": lat.publish_rate,
        "percentiles_ns": {name: lat.percentiles(name) for name in lat.samples_ns},
        "skipped": lat.skipped,
    }
