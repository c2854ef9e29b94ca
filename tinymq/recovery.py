"""Reading a durable queue's log on open: what is live, where, and what is damaged.

Rules: a bad record with nothing valid after it, at the end of the newest segment, is
a torn tail (a write cut short by a crash); anything else bad is corruption. Records
that fail their checksum are never used; every valid record is, wherever it lies.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tinymq import wal
from tinymq.errors import CorruptionError
from tinymq.failpoints import failpoint
from tinymq.fileops import FileOps
from tinymq.ledger import Ledger
from tinymq.lost import LostIds
from tinymq.wal import Buffer


@dataclass(frozen=True)
class Damage:
    """A damaged byte range of one segment and the ids whose records it probably held."""

    segment: str
    offset: int
    length: int
    lost_ids: tuple[int, ...]
    torn_tail: bool
    quarantined: str | None = None  # where a torn tail was copied before truncation
    missing: int = 0  # segment files missing from here on (``segment`` names the first)

    def __str__(self) -> str:
        if self.missing:
            return f"{self.segment}: missing, with the {self.missing - 1} segment(s) after it"
        kind = "torn tail" if self.torn_tail else "corrupt range"
        lost = f", lost ids {list(self.lost_ids)}" if self.lost_ids else ""
        return f"{self.segment}: {kind} at offset {self.offset}, {self.length} bytes{lost}"


@dataclass
class RecoveryReport:
    """What opening a durable queue found; ``MQ.recovery_report(name)`` returns it."""

    queue: str
    directory: str
    segments: int = 0  # segment files read
    records: int = 0  # valid records read
    recovered: int = 0  # messages accepted and not acknowledged: delivered again
    next_id: int = 0  # the first id this run issues
    torn_tail: Damage | None = None
    corruption: list[Damage] = field(default_factory=list)
    seconds: float = 0.0  # time spent reading and repairing

    @property
    def clean(self) -> bool:
        """True if the log held no damage at all."""
        return self.torn_tail is None and not self.corruption


@dataclass
class LogState:
    """The live part of a log, as its store continues from it."""

    ledger: Ledger = field(default_factory=Ledger)
    live: dict[int, int] = field(default_factory=dict)  # segment -> live messages in it
    count: dict[int, int] = field(default_factory=dict)  # segment -> messages written to it
    span: dict[int, list[int]] = field(default_factory=dict)  # segment -> [low, high] id
    sched: dict[int, tuple[float, int]] = field(default_factory=dict)  # id -> (due, attempt)
    next_id: int = 0

    def place(self, msg_id: int, segment: int, offset: int, length: int) -> None:
        """Record that the live copy of ``msg_id`` is at ``offset`` of ``segment``."""
        live, count, span = self.live, self.count, self.span
        before = self.ledger.put(msg_id, segment, offset, length)
        if before is not None:
            live[before] -= 1
        live[segment] = live.get(segment, 0) + 1
        count[segment] = count.get(segment, 0) + 1
        low_high = span.get(segment)
        if low_high is None:
            span[segment] = [msg_id, msg_id]
        elif msg_id > low_high[1]:  # the next id: the hot path
            low_high[1] = msg_id
        elif msg_id < low_high[0]:
            low_high[0] = msg_id
        if msg_id >= self.next_id:
            self.next_id = msg_id + 1

    def drop(self, msg_id: int) -> None:
        """Record that ``msg_id`` was acknowledged (or is unreadable)."""
        self.sched.pop(msg_id, None)
        segment = self.ledger.remove(msg_id)
        if segment is not None:
            self.live[segment] -= 1


def segment_numbers(ops: FileOps, directory: str) -> list[int]:
    """Numbers of the segment files in ``directory``, ascending."""
    numbers = (wal.segment_number(name) for name in ops.listdir(directory))
    return sorted(n for n in numbers if n is not None)


def read_log(
    ops: FileOps, directory: str, queue: str, max_record: int
) -> tuple[LogState, RecoveryReport]:
    """Scan every segment of ``directory``, changing nothing."""
    return _Reader(ops, directory, queue, max_record).read()


class _Reader:
    """One scan of a queue's log, oldest segment first; a second one if there is damage."""

    def __init__(self, ops: FileOps, directory: str, queue: str, max_record: int) -> None:
        self.ops, self.directory, self.max_record = ops, directory, max_record
        self.state, self.report, self.lost = LogState(), RecoveryReport(queue, directory), LostIds()

    def read(self) -> tuple[LogState, RecoveryReport]:
        started = time.monotonic()
        state, report = self.state, self.report
        numbers = segment_numbers(self.ops, self.directory)
        for position, number in enumerate(numbers):
            state.live.setdefault(number, 0)
            self._scan(number, self._apply, newest=position == len(numbers) - 1)
        if self.lost.ranges:
            self._name_lost(numbers)
        for damaged in self.lost.ranges:
            bad = damaged.bad
            damage = Damage(
                damaged.segment, bad.start, bad.end - bad.start, tuple(damaged.lost), damaged.torn
            )
            if damaged.torn:
                report.torn_tail = damage
            else:
                report.corruption.append(damage)
        for low, high in itertools.pairwise(numbers):  # segments go only from the oldest
            if high - low > 1:  # so a gap is damage: whatever they held is gone
                first = os.path.join(self.directory, wal.segment_name(low + 1))
                report.corruption.append(Damage(first, 0, 0, (), False, missing=high - low - 1))
        report.segments = len(numbers)
        report.recovered = state.ledger.live
        report.next_id = state.next_id
        report.seconds = time.monotonic() - started
        return state, report

    def _name_lost(self, numbers: list[int]) -> None:
        """Read the log again for every intact MSG and ACK id, then name the lost ones."""
        seen = self.lost.seen(self.state.next_id)

        def mark(buf: Buffer, segment: int, record: wal.Record) -> None:
            if record.kind in (wal.MSG, wal.ACK):
                seen.add(record.id)

        for number in numbers:
            self._scan(number, mark)
        self.lost.name(self.state.next_id, seen)

    def _scan(
        self,
        number: int,
        visit: Callable[[Buffer, int, wal.Record], None],
        newest: bool | None = None,
    ) -> None:
        """Call ``visit`` on each valid record of segment ``number``; report damage if
        ``newest`` is given (whether it is the newest segment)."""
        path = os.path.join(self.directory, wal.segment_name(number))
        try:
            fd = self.ops.open(path, os.O_RDONLY)
        except FileNotFoundError:  # deleted since it was listed: read without the lock
            return
        try:
            buf = self.ops.read_all(fd)
            try:
                for item in wal.scan(buf, self.max_record):
                    if isinstance(item, wal.Record):
                        visit(buf, number, item)
                    elif newest is not None:
                        self.lost.damaged(path, buf, item, torn=newest and item.tail)
            finally:
                if isinstance(buf, mmap.mmap):
                    buf.close()
        finally:
            self.ops.close(fd)

    def _apply(self, buf: Buffer, segment: int, record: wal.Record) -> None:
        state = self.state
        self.report.records += 1
        if record.kind == wal.MSG:
            state.place(record.id, segment, record.offset, record.length)
            self.lost.message(record.id)
        elif record.kind == wal.ACK:
            state.drop(record.id)
            state.next_id = max(state.next_id, record.id + 1)  # its MSG may be gone with a HEAD
        elif record.kind == wal.SCHED:
            if state.ledger.get(record.id) is not None:
                state.sched[record.id] = wal.decode_sched(buf[record.payload_at : record.end])
        else:
            next_id, _low = wal.decode_head(buf[record.payload_at : record.end])
            state.next_id = max(state.next_id, next_id)
            self.lost.head(next_id)


def recover(
    ops: FileOps,
    directory: str,
    queue: str,
    *,
    max_record: int,
    on_corruption: str,
    log: logging.Logger,
) -> tuple[LogState, RecoveryReport]:
    """Read the log, then cut off a torn tail (kept aside in ``quarantine/``).

    Raises:
        CorruptionError: the log holds corruption and ``on_corruption`` is "fail";
            nothing was changed.
    """
    state, report = read_log(ops, directory, queue, max_record)
    failpoint("recovery.after_scan")
    if report.corruption:
        details = "; ".join(str(d) for d in report.corruption)
        if on_corruption == "fail":
            raise CorruptionError(f"queue {queue!r}: damaged log: {details}", report.corruption)
        log.error("queue %r: skipped damaged records of its log: %s", queue, details)
    if report.torn_tail is not None:
        report.torn_tail = _cut_torn_tail(ops, directory, report.torn_tail)
        log.warning("queue %r: cut a torn tail off its log: %s", queue, report.torn_tail)
    sync_segments(ops, directory)
    return state, report


def sync_segments(ops: FileOps, directory: str) -> None:
    """Make every segment durable before this run writes after them.

    A run that was killed may have left records the OS holds but never wrote (its
    newest segment, or any with fsync="never"). This run reads them, delivers them and
    starts a segment of its own; a power cut later would turn a lost tail into damage in
    the middle of the log instead of a torn tail at its end.
    """
    for number in segment_numbers(ops, directory):
        fd = ops.open(os.path.join(directory, wal.segment_name(number)), os.O_RDWR)
        try:
            ops.fdatasync(fd)
        finally:
            ops.close(fd)


def _cut_torn_tail(ops: FileOps, directory: str, tail: Damage) -> Damage:
    """Copy the tail's bytes into ``quarantine/``, then truncate the segment before them."""
    quarantine = os.path.join(directory, "quarantine")
    ops.mkdir(quarantine)
    copy = os.path.join(quarantine, f"{os.path.basename(tail.segment)}.{tail.offset}.tail")
    fd = ops.open(tail.segment, os.O_RDWR)
    try:
        data = ops.pread(fd, tail.length, tail.offset)
        out = ops.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            _write_all(ops, out, data)
            ops.fdatasync(out)
        finally:
            ops.close(out)
        ops.fsync_dir(quarantine)
        ops.fsync_dir(directory)
        ops.truncate(fd, tail.offset)
        ops.fdatasync(fd)
    finally:
        ops.close(fd)
    failpoint("recovery.after_truncate")
    return Damage(tail.segment, tail.offset, tail.length, tail.lost_ids, True, copy)


def _write_all(ops: FileOps, fd: int, data: bytes) -> None:
    view, done = memoryview(data), 0
    while done < len(view):
        done += ops.write(fd, view[done:], done)
