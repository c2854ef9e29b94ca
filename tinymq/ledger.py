"""Ledger: where each live message of a durable queue sits in its log.

Ids are dense, so the ledger is three flat arrays over the window of ids from the
lowest live one to the highest seen: 12 bytes per id instead of a dict entry, which
keeps a backlog of a million messages at about 12 MB. Not thread-safe: its store
guards it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

_OFFSET_BITS = 40  # offsets within a segment below 1 TiB
_ABSENT = -1


class Ledger:
    """Positions of live (appended and not acknowledged) messages, by id."""

    def __init__(self) -> None:
        self.base = 0  # id of _where[0]
        self._first = 0  # index below which every entry is absent
        self._where = array("q")  # segment << 40 | offset of the record, or _ABSENT
        self._length = array("I")  # payload length of the record
        self.live = 0

    @property
    def end(self) -> int:
        """One past the highest id the window covers."""
        return self.base + len(self._where)

    def put(self, msg_id: int, segment: int, offset: int, length: int) -> int | None:
        """Record where ``msg_id`` lives; return the segment it lived in before, if any."""
        if msg_id - self.base == len(self._where) and self._where:  # the next id: the hot path
            if not self.live:  # nothing live in the window: start it again at this id
                del self._where[:]
                del self._length[:]
                self.base, self._first = msg_id, 0
            self._where.append(segment << _OFFSET_BITS | offset)
            self._length.append(length)
            self.live += 1
            return None
        if not self._where:
            self.base, self._first = msg_id, 0
        elif msg_id < self.base:  # only after damage or an odd log; never on the hot path
            grow = self.base - msg_id
            self._where = array("q", [_ABSENT]) * grow + self._where
            self._length = array("I", [0]) * grow + self._length
            self.base = msg_id
            self._first = 0
        index = msg_id - self.base
        self._first = min(self._first, index)
        if index >= len(self._where):
            grow = index + 1 - len(self._where)
            self._where.extend(array("q", [_ABSENT]) * grow)
            self._length.extend(array("I", [0]) * grow)
        before = self._where[index]
        self._where[index] = segment << _OFFSET_BITS | offset
        self._length[index] = length
        if before == _ABSENT:
            self.live += 1
            return None
        return before >> _OFFSET_BITS

    def get(self, msg_id: int) -> tuple[int, int, int] | None:
        """(segment, offset, length) of a live message, or None."""
        index = msg_id - self.base
        if not 0 <= index < len(self._where):
            return None
        where = self._where[index]
        if where == _ABSENT:
            return None
        return where >> _OFFSET_BITS, where & ((1 << _OFFSET_BITS) - 1), self._length[index]

    def remove(self, msg_id: int) -> int | None:
        """Forget a message (acknowledged); return its segment, or None if it was not live."""
        index = msg_id - self.base
        if not 0 <= index < len(self._where) or self._where[index] == _ABSENT:
            return None
        segment = self._where[index] >> _OFFSET_BITS
        self._where[index] = _ABSENT
        self.live -= 1
        if index == self._first:
            self._advance()
        return segment

    def live_ids(self, low: int, high: int) -> Iterator[int]:
        """Live ids in ``[low, high)``, ascending."""
        where, base = self._where, self.base
        for msg_id in range(max(low, base), min(high, self.end)):
            if where[msg_id - base] != _ABSENT:
                yield msg_id

    def lowest_live(self) -> int:
        """The lowest live id, or ``end`` when nothing is live."""
        return self.base + self._first if self.live else self.end

    def _advance(self) -> None:
        """Move ``_first`` past absent entries; drop them once they are half the arrays."""
        where, first = self._where, self._first
        last = len(where) - 1  # keep one entry so that ``end`` stays known
        while first < last and where[first] == _ABSENT:
            first += 1
        if first > 4096 and first * 2 > len(where):
            del where[:first]
            del self._length[:first]
            self.base += first
            first = 0
        self._first = first
