"""LostIds: which messages the damaged ranges of a log held, for the recovery report.

A damaged range cannot say what it held, so the ids are inferred, two ways:

- Fresh records. A message is first written in id order, so once a HEAD record has made
  the frontier (the highest id issued so far) known, an id above the frontier before a
  range and below the first fresh intact MSG after it was first written in that range.
- Moved copies. A message moved forward is written again behind higher ids; its damaged
  copy is named when its header still passes its check (``wal.salvage_ids``).

Either way an id is named only if no intact MSG or ACK record of it is left anywhere,
so an intact or acknowledged message is never called lost. Damage before the log's
first intact HEAD, or a moved copy whose header is gone, can lose ids that go unnamed.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from tinymq import wal
from tinymq.wal import Buffer

MAX_LISTED = 10_000  # lost ids listed per damaged range


@dataclass
class DamagedRange:
    """A bad byte range and what the records around it tell of its ids."""

    segment: str  # path of the segment file
    bad: wal.BadRange
    torn: bool  # at the end of the newest segment
    after: int | None  # the frontier before it; None if no HEAD was read yet
    salvaged: list[int]  # ids read from headers that still pass their check
    before: int | None = None  # the first fresh intact id after it; None: none came
    lost: list[int] = field(default_factory=list)


class Seen:
    """Ids that have an intact MSG or ACK record: a byte per id of a window, plus a few."""

    def __init__(self, low: int, high: int, extra: Iterator[int]) -> None:
        self.low, self.flags = low, bytearray(max(0, high - low))
        self.extra = {i: False for i in extra if not low <= i < high}

    def add(self, msg_id: int) -> None:
        index = msg_id - self.low
        if 0 <= index < len(self.flags):
            self.flags[index] = 1
        elif msg_id in self.extra:
            self.extra[msg_id] = True

    def __contains__(self, msg_id: int) -> bool:
        index = msg_id - self.low
        if 0 <= index < len(self.flags):
            return bool(self.flags[index])
        return self.extra.get(msg_id, True)  # outside the window: assume not lost

    def unseen(self) -> Iterator[int]:
        """Ids of the window without an intact record, ascending."""
        at = self.flags.find(0)
        while at != -1:
            yield self.low + at
            at = self.flags.find(0, at + 1)


class LostIds:
    """Follows one scan of a log in order; ``name`` then fills each range's ``lost``.

    Between the scan and ``name``, the caller feeds ``seen()`` every intact MSG and ACK id
    of the log (a second pass, made only when there is damage).
    """

    def __init__(self) -> None:
        self.ranges: list[DamagedRange] = []
        self._frontier: int | None = None
        self._open: list[DamagedRange] = []  # ranges still waiting for their ``before``

    def head(self, next_id: int) -> None:
        """A HEAD record: ids from ``next_id`` on are first written after it."""
        self._close(next_id)
        self._frontier = max(-1 if self._frontier is None else self._frontier, next_id - 1)

    def message(self, msg_id: int) -> None:
        if self._frontier is None or msg_id <= self._frontier:
            return  # a moved copy, or no frontier to judge by yet
        self._close(msg_id)
        self._frontier = msg_id

    def _close(self, before: int) -> None:
        """Ids from ``before`` on were first written after the ranges seen so far."""
        for damaged in self._open:
            damaged.before = before
        self._open.clear()

    def damaged(self, segment: str, buf: Buffer, bad: wal.BadRange, torn: bool) -> None:
        salvaged = wal.salvage_ids(buf, bad, MAX_LISTED)
        damaged = DamagedRange(segment, bad, torn, self._frontier, salvaged)
        self.ranges.append(damaged)
        self._open.append(damaged)

    def seen(self, next_id: int) -> Seen:
        """An empty Seen covering every id ``name`` may ask about."""
        afters = [r.after for r in self.ranges if r.after is not None]
        low = min(afters) + 1 if afters else next_id
        return Seen(low, next_id, (i for r in self.ranges for i in r.salvaged))

    def name(self, next_id: int, seen: Seen) -> None:
        """Fill each range's ``lost``: ids without an intact record that it probably held.

        Costs O(log ranges) per unseen id, so a log damaged in many places opens in
        time linear in its size (see ``_Finder``).
        """
        named: set[int] = set()
        find, full = _Finder(self.ranges, next_id), 0
        for msg_id in seen.unseen():
            damaged = find(msg_id)
            if damaged is not None and len(damaged.lost) < MAX_LISTED:
                damaged.lost.append(msg_id)
                named.add(msg_id)
                full += len(damaged.lost) == MAX_LISTED
                if full == len(self.ranges):
                    break
        for damaged in self.ranges:
            for msg_id in damaged.salvaged:
                if msg_id < next_id and msg_id not in seen and msg_id not in named:
                    damaged.lost.append(msg_id)
                    named.add(msg_id)
            damaged.lost.sort()
            del damaged.lost[MAX_LISTED:]


class _Finder:
    """The first range that an id was first written in, going by the frontier: the first
    range with ``after < id < before``.

    The frontier only grows while the log is read, so ``after`` never decreases from one
    range to the next, and ``before`` (the id that closed a range) normally does not
    either: then two binary searches find the range. Should the ``before`` bounds be out
    of order (damaged HEAD records can do that), it looks through the ranges one by one.
    """

    def __init__(self, ranges: list[DamagedRange], next_id: int) -> None:
        self._ranges = [r for r in ranges if r.after is not None]
        self._afters = [r.after for r in self._ranges if r.after is not None]
        self._befores = [next_id if r.before is None else r.before for r in self._ranges]
        pairs = itertools.pairwise(self._befores)
        self._sorted = all(a <= b for a, b in pairs) and self._afters == sorted(self._afters)

    def __call__(self, msg_id: int) -> DamagedRange | None:
        ranges, afters, befores = self._ranges, self._afters, self._befores
        if self._sorted:
            below = bisect.bisect_left(afters, msg_id)  # ranges[:below] have after < id
            first = bisect.bisect_right(befores, msg_id, 0, below)  # first with id < before
            return ranges[first] if first < below else None
        for i, damaged in enumerate(ranges):
            if afters[i] < msg_id < befores[i]:
                return damaged
        return None
