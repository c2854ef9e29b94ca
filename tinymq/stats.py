"""Stats: what a queue has done, kept per worker and summed on demand.

Each worker (thread or task) counts into its own ``WorkerStats``, so counting takes no
lock: one writer per object. ``summarise`` reads them from any thread; its figures are
a snapshot, approximate while workers run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

LATENCY_WINDOW = 256  # consumer-call durations kept per worker
_COPY_TRIES = 5  # attempts at copying a window a worker is appending to


@dataclass(eq=False)
class WorkerStats:
    """One worker's counts; written by that worker only."""

    delivered: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of one queue, from ``MQ.stats()``."""

    published: int
    """Messages accepted by ``publish`` in this run."""
    delivered: int
    """Consumer calls started, retries included."""
    succeeded: int
    """Consumer calls that returned."""
    failed: int
    """Consumer calls that raised (each retry that fails counts again)."""
    retried: int
    """Failed calls whose message was scheduled to be tried again."""
    dead: int
    """Messages sent to the dead letters in this run."""
    pending: int
    """Messages accepted and ready, not yet taken by a consumer."""
    delayed: int
    """Messages waiting for their due time: delayed publishes and retries."""
    in_flight: int
    """Messages in a consumer call right now."""
    latency_p50: float | None
    """Median consumer-call duration in seconds, over the recent calls; None before any."""
    latency_p99: float | None
    """99th percentile of the same; None before any call."""


def summarise(
    workers: Sequence[WorkerStats], *, published: int, pending: int, delayed: int, in_flight: int
) -> QueueStats:
    """Sum the workers' counts into a QueueStats."""
    recent = sorted(x for w in workers for x in _copy(w.latencies))
    return QueueStats(
        published=published,
        delivered=sum(w.delivered for w in workers),
        succeeded=sum(w.succeeded for w in workers),
        failed=sum(w.failed for w in workers),
        retried=sum(w.retried for w in workers),
        dead=sum(w.dead for w in workers),
        pending=pending,
        delayed=delayed,
        in_flight=in_flight,
        latency_p50=_percentile(recent, 0.50),
        latency_p99=_percentile(recent, 0.99),
    )


def _copy(window: deque[float]) -> tuple[float, ...]:
    """A copy of a worker's latency window, which that worker may append to meanwhile.

    Copying can meet the append (RuntimeError: deque mutated during iteration); then
    try again, and after a few tries leave that worker's window out of this snapshot.
    """
    for _ in range(_COPY_TRIES):
        try:
            return tuple(window)
        except RuntimeError:
            continue
    return ()


def _percentile(ordered: list[float], share: float) -> float | None:
    """The nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
