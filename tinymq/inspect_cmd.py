"""``tinymq inspect DATA_DIR``: what each durable queue holds, read without the lock.

It changes nothing (no truncation, no quarantine, no lock), so it is safe to run
beside the MQ that owns the directory; a log being written may then show a torn tail
that is only the record in progress.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tinymq import wal
from tinymq.datadir import DEAD_DIR, queues_dir
from tinymq.fileops import REAL
from tinymq.recovery import Damage, LogState, read_log, segment_numbers

_MAX_RECORD = 1 << 30  # inspect reads logs of any configuration


@dataclass
class QueueSummary:
    """One durable queue as ``inspect`` sees it."""

    queue: str
    pending: int  # accepted and not acknowledged
    oldest_pending_age: float | None  # seconds since the oldest pending message was published
    delayed: int  # pending messages waiting for a due time (delayed publishes, retries)
    dead: int  # dead letters kept
    next_id: int
    segments: int
    bytes: int
    damage: list[Damage] = field(default_factory=list)


def summarize(data_dir: str, now: float | None = None) -> list[QueueSummary]:
    """Summarize every durable queue under ``data_dir``, in name order."""
    root = queues_dir(data_dir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{data_dir!r} holds no tinymq queues (no {root!r})")
    now = time.time() if now is None else now
    return [_summarize_queue(root, name, now) for name in sorted(os.listdir(root))]


def _summarize_queue(root: str, name: str, now: float) -> QueueSummary:
    directory = os.path.join(root, name)
    state, report = read_log(REAL, directory, name, _MAX_RECORD)
    numbers = segment_numbers(REAL, directory)
    size = sum(_size(os.path.join(directory, wal.segment_name(n))) for n in numbers)
    oldest = _oldest_pending_time(directory, state)
    damage = ([report.torn_tail] if report.torn_tail else []) + report.corruption
    dead_dir = os.path.join(directory, DEAD_DIR)
    dead = read_log(REAL, dead_dir, name, _MAX_RECORD)[0] if os.path.isdir(dead_dir) else None
    return QueueSummary(
        queue=name,
        pending=state.ledger.live,
        oldest_pending_age=None if oldest is None else max(0.0, now - oldest),
        delayed=len(state.sched),
        dead=0 if dead is None else dead.ledger.live,
        next_id=state.next_id,
        segments=len(numbers),
        bytes=size,
        damage=damage,
    )


def _oldest_pending_time(directory: str, state: LogState) -> float | None:
    where = state.ledger.get(state.ledger.lowest_live())
    if where is None:
        return None
    segment, offset, length = where
    try:
        with open(os.path.join(directory, wal.segment_name(segment)), "rb") as file:
            file.seek(offset)
            record = wal.parse(file.read(wal.HEADER_SIZE + length), 0, _MAX_RECORD)
    except FileNotFoundError:  # deleted by the running MQ since it was read
        return None
    return None if record is None else record.time


def _size(path: str) -> int:
    """A segment's size; 0 if the running MQ deleted it since it was listed."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", help="the MQ's data_dir")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def main(args: argparse.Namespace) -> int:
    """Print the summary; exit status 1 if any queue's log is damaged, 2 if unreadable."""
    try:
        summaries = summarize(args.data_dir)
    except OSError as exc:
        print(f"tinymq inspect: {exc}")
        return 2
    if args.json:
        print(json.dumps([_as_json(s) for s in summaries], indent=2))
    else:
        print(_table(summaries))
    return 1 if any(s.damage for s in summaries) else 0


def _as_json(summary: QueueSummary) -> dict[str, Any]:
    return asdict(summary)


def _table(summaries: list[QueueSummary]) -> str:
    columns = ("queue", "pending", "oldest", "delayed", "dead", "next id", "segments", "bytes")
    widths = (24, 9, 9, 8, 6, 9, 8, 12)
    lines = [
        " ".join(
            f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
            for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        )
    ]
    for s in summaries:
        age = "-" if s.oldest_pending_age is None else f"{s.oldest_pending_age:.0f}s"
        row = (s.queue, s.pending, age, s.delayed, s.dead, s.next_id, s.segments, s.bytes)
        lines.append(
            " ".join(
                f"{v:<{w}}" if i == 0 else f"{v:>{w}}"
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        lines.extend(f"  damage: {d}" for d in s.damage)
    if not summaries:
        lines.append("(no durable queues)")
    return "\n".join(lines)
