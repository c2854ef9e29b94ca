"""Schedule: messages waiting for their due time (delayed publishes and retries).

Owned by a queue's forwarder thread, like ``_pending``: not thread-safe. Due messages
come out in order of due time, ties in id order, whatever order they went in.
"""

from __future__ import annotations

import heapq
import itertools

from tinymq.message import Msg


class Schedule:
    """A heap of messages by due time; ``due`` times are on the queue's clock."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Msg]] = []
        self._tie = itertools.count()  # keeps equal (due, id) pairs in arrival order

    def push(self, msg: Msg, due: float) -> None:
        heapq.heappush(self._heap, (due, msg.id, next(self._tie), msg))

    def pop_due(self, now: float) -> list[Msg]:
        """Remove and return every message due at ``now``, earliest first."""
        heap, out = self._heap, []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[3])
        return out

    def wait_time(self, now: float) -> float | None:
        """Seconds until the next message is due (0 if one is); None if none is waiting."""
        return max(0.0, self._heap[0][0] - now) if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
