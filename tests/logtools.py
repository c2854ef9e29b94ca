"""Build, read and judge durable queue logs in tests, independently of tinymq's own reader.

The oracle here re-implements the record format from its description (a 32-byte
header ``magic, crc32, kind, 3 zero bytes, length, id, time`` then the payload) so a
test never trusts the code it checks. ``expect`` predicts, from a pristine log and a
damaged copy of it, exactly what recovery must find: the damaged ranges (maximal runs
of records with a changed or missing byte), which of them is a torn tail, which
messages survive and which id comes next.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tinymq.durable import DurableOptions, DurableStore
from tinymq.message import Msg

HEADER = struct.Struct("<4sIB3xIQd")  # magic, crc, kind, length, id, time
HEAD_PAYLOAD = struct.Struct("<QQ")  # next id, lowest unacknowledged id
MAGIC = b"TQr1"
HEAD, MSG, ACK = 1, 2, 3
LENGTH_AT = 12  # offset of the length field in a header
QUEUE = "q"


def payload(msg_id: int) -> dict[str, object]:
    """The data of message ``msg_id``: derived from the id, of a length varying with it."""
    digest = hashlib.sha256(str(msg_id).encode()).hexdigest()
    return {"id": msg_id, "body": digest[: 8 + msg_id % 48]}


@dataclass(frozen=True)
class Rec:
    """One record of a pristine segment: where it is and what it says."""

    offset: int
    end: int
    kind: int
    id: int
    head_next_id: int | None = None  # for HEAD records


def parse_segment(data: bytes) -> list[Rec]:
    """Every record of a pristine segment (zeros after the last are its unused allocated
    space); raises ValueError on any defect."""
    recs, offset = [], 0
    while offset < len(data) and data[offset:].strip(b"\0"):
        if offset + HEADER.size > len(data):
            raise ValueError(f"partial header at {offset}")
        magic, crc, kind, length, rec_id, _time = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if magic != MAGIC or kind not in (HEAD, MSG, ACK) or end > len(data):
            raise ValueError(f"bad header at {offset}")
        if zlib.crc32(data[offset + 8 : end]) != crc:
            raise ValueError(f"bad checksum at {offset}")
        head_next = None
        if kind == HEAD:
            head_next, _low = HEAD_PAYLOAD.unpack(data[offset + HEADER.size : end])
        recs.append(Rec(offset, end, kind, rec_id, head_next))
        offset = end
    return recs


class Log:
    """A pristine log: segment name -> bytes and records, plus what was published and acked."""

    def __init__(self, segments: dict[str, bytes], published: int, acked: frozenset[int]) -> None:
        self.segments = segments
        self.records = {name: parse_segment(data) for name, data in segments.items()}
        self.published = published  # ids 0 .. published-1 were issued
        self.acked = acked

    def __repr__(self) -> str:
        sizes = {name: len(data) for name, data in sorted(self.segments.items())}
        return f"Log(segments={sizes}, published={self.published}, acked={len(self.acked)})"

    @property
    def names(self) -> list[str]:
        return sorted(self.segments)

    def write(self, directory: Path, changed: dict[str, bytes]) -> None:
        """Write this log into ``directory``, with ``changed`` segments replacing originals."""
        directory.mkdir(parents=True)
        for name, data in self.segments.items():
            (directory / name).write_bytes(changed.get(name, data))


def options(*, segment_size: int = 2048, on_corruption: str = "skip") -> DurableOptions:
    """Store options for these tests: small segments, no waiting for the disk."""
    return DurableOptions(fsync="never", segment_size=segment_size, on_corruption=on_corruption)


def quiet_logger() -> tuple[logging.Logger, list[logging.LogRecord]]:
    """A logger of its own (not in the logging tree) and the list it records into."""
    logger = logging.Logger("tests.logtools")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    return logger, records


def build_log(
    directory: Path,
    *,
    segment_size: int,
    count: int,
    acked_prefix: int,
    straggler: int,
    lag: int,
    ack_every: int,
) -> Log:
    """Publish ``count`` messages through a real store and stop it.

    The first ``acked_prefix`` ids but ``straggler`` are acknowledged ``lag`` publishes
    later, so their segments are deleted and the log does not start at id 0, and the
    straggler is moved forward behind higher ids. Of the rest, every id with
    ``id % ack_every == 1`` is acknowledged two publishes later.
    """
    logger, _ = quiet_logger()
    store = DurableStore(str(directory), QUEUE, options(segment_size=segment_size), logger)
    acked: set[int] = set()
    sent: list[Msg] = []
    for msg_id in range(count):
        msg, wait = store.append(Msg(msg_id, payload(msg_id), QUEUE))
        wait()
        sent.append(msg)
        done = [msg_id - lag] if 0 <= msg_id - lag < acked_prefix else []
        if msg_id - 2 >= acked_prefix and (msg_id - 2) % ack_every == 1:
            done.append(msg_id - 2)
        for old in done:
            if old != straggler:
                store.ack(sent[old])
                acked.add(old)
    store.close()
    segments = {p.name: p.read_bytes() for p in directory.glob("*.wal")}
    assert set(os.listdir(directory)) == set(segments)
    return Log(segments, count, frozenset(acked))


@dataclass(frozen=True)
class Range:
    """A damaged byte range, as tinymq's Damage names it (segment by file name)."""

    segment: str
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass
class Expected:
    """What opening a damaged copy of a log must find."""

    sizes: dict[str, int]  # segment name -> bytes
    ranges: list[Range] = field(default_factory=list)  # every damaged range, in log order
    torn: Range | None = None
    corruption: list[Range] = field(default_factory=list)
    records: int = 0  # intact records
    delivered: list[int] = field(default_factory=list)  # ids to deliver, in order
    damaged_msgs: set[int] = field(default_factory=set)  # ids with no intact MSG record left
    may_be_lost: set[int] = field(default_factory=set)  # ids whose every record is damaged
    must_name: set[int] = field(default_factory=set)  # lost ids recovery can tell (see below)
    before_first_damage: list[int] = field(default_factory=list)  # unacked ids wholly before it
    next_id: int = 0


def expect(log: Log, files: dict[str, bytes]) -> Expected:
    """Predict recovery of ``files`` (segment name -> bytes), a damaged copy of ``log``."""
    out = Expected(sizes={name: len(data) for name, data in files.items()})
    intact: list[Rec] = []
    names = log.names
    damage_seen = False
    for name in names:
        for start, end, rec in _units(log, name, files[name]):
            damage_seen = damage_seen or rec is None
            if rec is not None:
                intact.append(rec)
                if not damage_seen and rec.kind == MSG:
                    out.before_first_damage.append(rec.id)
            elif out.ranges and out.ranges[-1].segment == name and out.ranges[-1].end == start:
                last = out.ranges.pop()  # damaged records in a row form one range
                out.ranges.append(Range(name, last.offset, end - last.offset))
            else:
                out.ranges.append(Range(name, start, end - start))
        # Records cut off whole are missing too: what follows is after the damage.
        records = log.records[name]
        damage_seen = damage_seen or (bool(records) and len(files[name]) < records[-1].end)
    unnamed = _end_at_zeros(log, files, out)
    for r in out.ranges:
        if r.segment == names[-1] and r.end == len(files[r.segment].rstrip(b"\0")):
            out.torn = r
        else:
            out.corruption.append(r)
    intact_msgs = {r.id for r in intact if r.kind == MSG}
    intact_acks = {r.id for r in intact if r.kind == ACK}
    all_msgs = {r.id for recs in log.records.values() for r in recs if r.kind == MSG}
    out.records = len(intact)
    out.delivered = sorted(intact_msgs - intact_acks)
    out.before_first_damage = [i for i in out.before_first_damage if i not in log.acked]
    out.damaged_msgs = all_msgs - intact_msgs
    # An id whose only trace is a damaged ACK may have been lost as far as recovery knows.
    all_ids = {r.id for recs in log.records.values() for r in recs if r.kind != HEAD}
    out.may_be_lost = out.damaged_msgs | (all_ids - all_msgs - intact_acks)
    heads = [r.head_next_id for r in intact if r.head_next_id is not None]
    out.next_id = max([i + 1 for i in intact_msgs] + heads, default=0)
    unacked_lost = out.damaged_msgs - log.acked
    # Ids from next_id on are issued again, so a torn tail's last records go unnamed.
    out.must_name = {i for i in _telling(log, files) if i in unacked_lost and i < out.next_id}
    out.must_name -= unnamed
    return out


def _end_at_zeros(log: Log, files: dict[str, bytes], out: Expected) -> set[int]:
    """End each segment's last damaged range where only zeros are left after it.

    Zeros after a segment's records read as its unused allocated space, so a damaged
    range with nothing intact after it stops where they begin, and one that is all
    zeros is no damage at all. Returns the ids of the MSG records lying wholly in
    those zeros: recovery cannot tell them from unused space, so it cannot name them.
    """
    unnamed: set[int] = set()
    for name in log.names:
        mine = [r for r in out.ranges if r.segment == name]
        if not mine:
            continue
        last, new = mine[-1], files[name]
        if new[last.end :].strip(b"\0"):
            continue  # an intact record follows it
        end = last.offset + len(new[last.offset :].rstrip(b"\0"))
        index = out.ranges.index(last)
        if end > last.offset:
            out.ranges[index] = Range(name, last.offset, end - last.offset)
        else:
            del out.ranges[index]
        unnamed |= {
            r.id
            for r in log.records[name]
            if r.kind == MSG and r.offset >= end and r.end <= last.end
        }
    return unnamed


def _telling(log: Log, files: dict[str, bytes]) -> Iterator[int]:
    """Ids of damaged MSG records that recovery can name as lost.

    Two kinds: a message's first (fresh) record, damaged but not cut off, once an intact
    HEAD came before it, since fresh records are in id order and the HEAD tells the
    highest id issued; and any record whose header bytes (all but the crc) are intact.
    """
    issued = -1  # the highest id written before this point, in the pristine log
    head_intact = False
    for name in log.names:
        new, pristine = files[name], log.segments[name]
        for rec in log.records[name]:
            present = rec.offset < len(new)  # not cut off whole
            if present and new[rec.offset : rec.end] == pristine[rec.offset : rec.end]:
                head_intact = head_intact or rec.kind == HEAD
            elif present and rec.kind == MSG:
                header_kept = rec.offset + HEADER.size <= len(new) and all(
                    new[rec.offset + i] == pristine[rec.offset + i]
                    for i in (*range(4), *range(8, HEADER.size))
                )
                if (rec.id > issued and head_intact) or header_kept:
                    yield rec.id
            last = rec.id if rec.kind == MSG else (rec.head_next_id or 0) - 1
            issued = max(issued, last) if rec.kind != ACK else issued


def _units(log: Log, name: str, new: bytes) -> Iterator[tuple[int, int, Rec | None]]:
    """(start, end, record) of each record of segment ``name`` still (partly) in ``new``,
    with ``None`` for a record with a changed or missing byte, then any bytes appended."""
    orig, data_end = log.segments[name], 0
    for rec in log.records[name]:
        if rec.offset >= len(new):
            return  # cut off whole: gone without a trace
        end = min(rec.end, len(new))
        intact = end == rec.end and new[rec.offset : end] == orig[rec.offset : end]
        yield rec.offset, end, rec if intact else None
        data_end = rec.end
    if new[data_end:].strip(b"\0"):  # bytes written over its unused space, or after it
        yield data_end, len(new), None


def drain(store: DurableStore) -> list[Msg]:
    """Every message the store's backlog hands out, as the forwarder would take them."""
    backlog = store.backlog()
    got: list[Msg] = []
    while backlog.refill():
        got.extend(backlog.ready)
        backlog.ready.clear()
    return got


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Relative path -> bytes of every file under ``directory`` (None for a directory)."""
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
        for p in sorted(directory.rglob("*"))
    }
