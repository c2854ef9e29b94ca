"""The log format: segment files of checksummed records.

A record is a 32-byte header and a payload, little endian::

    magic  4s  b"TQr1", where a reader resynchronises after damage
    crc    u32 zlib.crc32 of every byte after itself: the rest of the header and the payload
    kind   u8  HEAD, MSG or ACK
    check  3s  the low 3 bytes of zlib.crc32 of kind, length, id and time: a header whose
               payload is damaged still tells which message was lost (``salvage_ids``)
    length u32 payload bytes, at most ``max_record``, checked before anything is read
    id     u64 the message id (for HEAD: the segment number)
    time   f64 seconds since the epoch when the record was made

A segment file is allocated whole when it is created, so zeros follow its last record:
its records end where nothing but zeros is left. A segment begins with a HEAD record
whose payload holds the next id to issue and the lowest unacknowledged id when it was
created. MSG carries the serialized data; a MSG
for an id already in the log replaces it (a message moved forward). ACK has no payload.
SCHED follows the MSG of its id: the message waits until a due time (a delayed publish
or a retry), and its next delivery is the given attempt.
"""

from __future__ import annotations

import mmap
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

MAGIC: Final = b"TQr1"
_FIELDS = struct.Struct("<IQd")  # length, id, time
_FIELDS_AT = 12  # offset of length, id and time
_HEAD_PAYLOAD = struct.Struct("<QQ")  # next id, lowest unacknowledged id
HEADER_SIZE: Final = _FIELDS_AT + _FIELDS.size

HEAD: Final = 1
MSG: Final = 2
ACK: Final = 3
SCHED: Final = 4
KINDS: Final = frozenset((HEAD, MSG, ACK, SCHED))
_SCHED_PAYLOAD = struct.Struct("<dI")  # due (seconds since the epoch), attempt
# Each kind as its byte, and the crc32 of that byte (where a header check starts).
_KIND_BYTES: Final = {
    kind: (kind.to_bytes(1, "little"), zlib.crc32(kind.to_bytes(1, "little"))) for kind in KINDS
}

Buffer = bytes | mmap.mmap  # a segment's bytes, read or mapped

_ZERO_SCAN_CHUNK = 1 << 16  # bytes compared at a time when looking for a segment's end

_SEGMENT_NAME = re.compile(r"^(\d{10})\.wal$")


def segment_name(number: int) -> str:
    """File name of segment ``number``; names sort in segment order."""
    return f"{number:010d}.wal"


def segment_number(name: str) -> int | None:
    """The number of a segment file name, or None for any other file."""
    match = _SEGMENT_NAME.match(name)
    return int(match.group(1)) if match else None


def encode(kind: int, record_id: int, payload: bytes, time: float) -> bytes:
    """Frame one record (``_header`` inlined: this runs once per publish)."""
    fields = _FIELDS.pack(len(payload), record_id, time)
    kind_byte, kind_crc = _KIND_BYTES[kind]
    check = (zlib.crc32(fields, kind_crc) & 0xFFFFFF).to_bytes(3, "little")
    body = b"".join((kind_byte, check, fields, payload))
    return b"".join((MAGIC, zlib.crc32(body).to_bytes(4, "little"), body))


def _header(kind: int, fields: bytes) -> bytes:
    """Kind, header check and fields: the header after magic and crc."""
    kind_byte, kind_crc = _KIND_BYTES[kind]
    check = (zlib.crc32(fields, kind_crc) & 0xFFFFFF).to_bytes(3, "little")
    return b"".join((kind_byte, check, fields))


def encode_head(segment: int, next_id: int, low_id: int, time: float) -> bytes:
    return encode(HEAD, segment, _HEAD_PAYLOAD.pack(next_id, low_id), time)


def encode_sched(msg_id: int, due: float, attempt: int, time: float) -> bytes:
    return encode(SCHED, msg_id, _SCHED_PAYLOAD.pack(due, attempt), time)


def decode_sched(payload: bytes) -> tuple[float, int]:
    """Return (due time, attempt) from a SCHED payload."""
    due, attempt = _SCHED_PAYLOAD.unpack(payload)
    return due, attempt


def decode_head(payload: bytes) -> tuple[int, int]:
    """Return (next id, lowest unacknowledged id) from a HEAD payload."""
    next_id, low_id = _HEAD_PAYLOAD.unpack(payload)
    return next_id, low_id


class Record(NamedTuple):
    """A record that passed every check; ``payload`` is sliced from the segment on demand."""

    offset: int
    kind: int
    id: int
    time: float
    length: int

    @property
    def end(self) -> int:
        return self.offset + HEADER_SIZE + self.length

    @property
    def payload_at(self) -> int:
        return self.offset + HEADER_SIZE


@dataclass(frozen=True)
class BadRange:
    """Bytes ``[start, end)`` of a segment that hold no valid record.

    ``tail``: no valid record follows it in the segment (only zeros, if anything).
    """

    start: int
    end: int
    tail: bool = False


def parse(buf: Buffer, offset: int, max_record: int) -> Record | None:
    """The record at ``offset`` if magic, bounds and checksum all hold, else None."""
    end_of_header = offset + HEADER_SIZE
    if end_of_header > len(buf) or buf[offset : offset + 4] != MAGIC:
        return None
    kind = buf[offset + 8]
    length, record_id, time = _FIELDS.unpack_from(buf, offset + _FIELDS_AT)
    end = end_of_header + length
    if kind not in KINDS or length > max_record or end > len(buf):
        return None
    crc = int.from_bytes(buf[offset + 4 : offset + 8], "little")
    if zlib.crc32(buf[offset + 8 : end]) != crc:
        return None
    return Record(offset, kind, record_id, time, length)


def scan(buf: Buffer, max_record: int) -> Iterator[Record | BadRange]:
    """Yield every valid record of a segment and every damaged range between them, in order.

    After damage, reading resumes at the next offset where a whole valid record starts,
    found by searching for the magic, so a scan is linear in practice and never reads
    a length it has not bounded. Zeros after the last record are the segment's unused
    allocated space, not damage: a damaged range before them ends where they begin.
    """
    offset, size = 0, len(buf)
    while offset < size:
        record = parse(buf, offset, max_record)
        if record is not None:
            yield record
            offset = record.end
            continue
        resume = _resync(buf, offset + 1, max_record)
        if resume == size:
            end = _zeros_from(buf, offset)
            if end > offset:
                yield BadRange(offset, end, tail=True)
            return
        yield BadRange(offset, resume)
        offset = resume


def _zeros_from(buf: Buffer, start: int) -> int:
    """Where the run of zero bytes that ends ``buf`` begins, at ``start`` or later."""
    end = len(buf)
    while end > start:
        begin = max(start, end - _ZERO_SCAN_CHUNK)
        nonzero = len(buf[begin:end].rstrip(b"\0"))
        if nonzero:
            return begin + nonzero
        end = begin
    return start


def _resync(buf: Buffer, start: int, max_record: int) -> int:
    """Offset of the next valid record at or after ``start``, or the end of ``buf``."""
    at = buf.find(MAGIC, start)
    while at != -1:
        if parse(buf, at, max_record) is not None:
            return at
        at = buf.find(MAGIC, at + 1)
    return len(buf)


def salvage_ids(buf: Buffer, bad: BadRange, limit: int) -> list[int]:
    """Ids of the MSG records in a damaged range whose header still passes its check.

    The payload (and so the crc) of such a record is damaged, but its id can be trusted
    as far as a 24-bit check goes: enough to name a lost message, never to deliver one.
    """
    ids: list[int] = []
    at = buf.find(MAGIC, bad.start, bad.end)
    while at != -1 and len(ids) < limit and at + HEADER_SIZE <= len(buf):
        fields = bytes(buf[at + _FIELDS_AT : at + HEADER_SIZE])
        if buf[at + 8] == MSG and bytes(buf[at + 8 : at + _FIELDS_AT]) == _header(MSG, fields)[:4]:
            ids.append(_FIELDS.unpack(fields)[1])
        at = buf.find(MAGIC, at + 1, bad.end)
    return ids
