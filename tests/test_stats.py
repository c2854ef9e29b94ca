"""stats.summarise: a snapshot taken while workers append never raises."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from tinymq.stats import LATENCY_WINDOW, WorkerStats, summarise


class MutatedWindow(deque[float]):
    """A latency window whose first ``fails`` copies meet a worker's append."""

    def __init__(self, values: list[float], fails: int) -> None:
        super().__init__(values, maxlen=LATENCY_WINDOW)
        self.fails = fails

    def __iter__(self) -> Iterator[float]:
        if self.fails:
            self.fails -= 1
            raise RuntimeError("deque mutated during iteration")
        return super().__iter__()


def snapshot(*workers: WorkerStats) -> tuple[float | None, float | None]:
    stats = summarise(list(workers), published=0, pending=0, delayed=0, in_flight=0)
    return stats.latency_p50, stats.latency_p99


def test_a_window_copied_while_its_worker_appends_is_copied_again() -> None:
    busy = WorkerStats(latencies=MutatedWindow([0.5, 0.5, 0.5], fails=2))
    assert snapshot(busy) == (0.5, 0.5)


def test_a_window_that_keeps_changing_is_left_out_of_that_snapshot() -> None:
    busy = WorkerStats(latencies=MutatedWindow([9.0], fails=1000))
    calm = WorkerStats(latencies=deque([0.25], maxlen=LATENCY_WINDOW))
    assert snapshot(busy, calm) == (0.25, 0.25)
