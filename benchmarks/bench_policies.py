"""The delivery-policy rows of bench_throughput.py: what retries and stats cost when idle.

Three contenders, one publisher thread and a no-op consumer on 4 threads, interleaved
round by round in one run:

* plain: a queue registered without ``retry=``, stats never read;
* retry: the same queue with ``retry=Retry(...)``, no call ever failing (the policy is
  armed, never triggered);
* stats: the plain queue while another thread reads ``mq.stats()`` every
  ``STATS_EVERY`` seconds (100 times as often as a dashboard polling each second, so
  that a cost would show).

The figures are ratios to the plain queue of the same round. Every round checks that
each message was consumed exactly once.

Run alone from the repository root::

    PYTHONPATH=. python benchmarks/bench_policies.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench_report import progress  # beside this script, which Python puts first on sys.path

from tinymq import MQ, Context, Msg, Retry

QUEUE = "bench-policies"
CONSUMERS = 4
STATS_EVERY = 0.01  # seconds between stats() reads in the stats row
OVERHEAD_MAX = 0.05  # the bound on the cost of reading stats, and of an idle retry policy
CONTENDERS = ("plain", "retry", "stats")


class CountError(Exception):
    """A contender did not consume every message exactly once."""


@dataclass
class PolicyResult:
    """Rates per contender (msgs/s, one per round) and the sizes they came from."""

    messages: int
    rounds: int
    rates: dict[str, list[float]] = field(default_factory=dict)
    stats_reads: list[int] = field(default_factory=list)

    def ratio(self, contender: str) -> float:
        """Median over rounds of contender / plain in the same round."""
        pairs = zip(self.rates[contender], self.rates["plain"], strict=True)
        return statistics.median(mine / base for mine, base in pairs)


def one_round(contender: str, messages: int) -> tuple[float, int]:
    """Publish ``messages`` and drain them; return msgs/s and how often stats were read."""
    seen: list[int] = []
    record = seen.append

    def consume(ctx: Context, msg: Msg) -> None:
        record(msg.id)

    mq = MQ()
    retry = Retry(max_attempts=5, backoff=0.01) if contender == "retry" else None
    mq.register_queue(QUEUE, consume, CONSUMERS, retry=retry)
    reads, done = [0], threading.Event()

    def read_stats() -> None:
        while not done.wait(STATS_EVERY):
            mq.stats()
            reads[0] += 1

    reader = threading.Thread(target=read_stats, name="bench:stats")
    if contender == "stats":
        reader.start()
    mq.start()
    started = time.perf_counter()
    for n in range(messages):
        mq.publish(QUEUE, n)
    mq.stop()
    elapsed = time.perf_counter() - started
    done.set()
    if contender == "stats":
        reader.join()
    if sorted(seen) != list(range(messages)):
        raise CountError(f"{contender}: consumed {len(seen)} ids, not each of {messages} once")
    return messages / elapsed, reads[0]


def measure(quick: bool, rounds: int | None = None) -> PolicyResult:
    """Run every contender in interleaved rounds."""
    messages = 20_000 if quick else 200_000
    result = PolicyResult(messages, rounds or (3 if quick else 5))
    result.rates = {name: [] for name in CONTENDERS}
    for n in range(result.rounds):
        progress(f"policies: round {n + 1}/{result.rounds}")
        for name in CONTENDERS:
            rate, reads = one_round(name, messages)
            result.rates[name].append(rate)
            if name == "stats":
                result.stats_reads.append(reads)
    return result


def render(res: PolicyResult) -> str:
    """The table of rates and ratios."""
    head = (
        f"Delivery policies, idle: 1 publisher, {CONSUMERS} consumer threads, no-op consumer, "
        f"{res.messages:,} messages; msgs/s, median [min-max] of {res.rounds} interleaved rounds"
    )
    rows = [["contender", "msgs/s", "vs plain"]]
    labels = {
        "plain": "no retry=, stats unread",
        "retry": "retry=Retry(...), never triggered",
        "stats": f"stats() read every {STATS_EVERY * 1000:.0f} ms",
    }
    for name in CONTENDERS:
        rates = res.rates[name]
        cell = f"{statistics.median(rates):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]"
        rows.append([labels[name], cell, f"{res.ratio(name):.3f}x"])
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [head] + [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.append(f"  stats() reads per round: {res.stats_reads}")
    return "\n".join(lines)


def target_rows(res: PolicyResult) -> list[list[str]]:
    """Rows for the targets table: an idle policy and stats reads cost under 5 %."""
    rows = []
    for name, what in (("retry", "idle retry policy"), ("stats", "stats read every 10 ms")):
        ratio = res.ratio(name)
        word = "PASS" if ratio >= 1 - OVERHEAD_MAX else "MISS"
        rows.append([f"{what} vs plain", f"{ratio:.3f}x", f">= {1 - OVERHEAD_MAX:.2f}x", word])
    return rows


def to_json(res: PolicyResult) -> dict[str, Any]:
    return {
        "messages": res.messages,
        "rounds": res.rounds,
        "rates": res.rates,
        "ratios": {name: res.ratio(name) for name in CONTENDERS},
        "stats_reads": res.stats_reads,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    args = parser.parse_args(argv)
    try:
        res = measure(args.quick, args.rounds)
    except CountError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    print(render(res))
    for row in target_rows(res):
        print("  ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
