"""DurableStore: a queue's messages in an append-only log of segment files (see wal.py).

A publish writes its MSG record before it returns; with ``fsync="always"`` it also
waits until the record is on stable storage, and publishers waiting at the same time
share one fdatasync (group commit, group_commit.py: whoever finds no sync running
starts one covering everything written so far; when it ends, the waiters it covered
return and the oldest one left starts the next). A consumer's end writes an ACK
record, which rides the next sync. Segments whose messages are all acknowledged are
deleted from the oldest on; the few live messages of an old segment are moved forward
(re-appended with their id) so that a straggler never pins old segments.

A failed fdatasync, or fsync of the directory, is never retried: the store stays
failed and refuses publishes until it is reopened, because the kernel may have dropped
what it failed to write. A full disk only refuses the publish that found it full; that
publish first deletes the segments acknowledged since the last roll, so a drained queue
makes room by itself. A queue opens on a full disk too, so that it can be drained.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from tinymq import recovery, wal
from tinymq.errors import QueueClosedError, StorageError, StorageFullError
from tinymq.failpoints import armed, failpoint
from tinymq.fileops import REAL, FileOps, Mapping
from tinymq.group_commit import GroupCommit
from tinymq.message import Msg
from tinymq.serializers import JSON, Serializer
from tinymq.store import Backlog, Wait, no_wait

_SAME_AFTER_JSON: Final = frozenset((str, int, bool, type(None)))  # JSON round trips them
FSYNC_POLICIES: Final = ("always", "interval", "never")
CORRUPTION_POLICIES: Final = ("skip", "fail")
READ_AHEAD: Final = 1024  # payloads the forwarder holds; the rest of a backlog stays on disk
_FULL_ERRNOS: Final = frozenset((errno.ENOSPC, errno.EFBIG, errno.EDQUOT))
# An old segment's live messages are moved forward once at most a tenth of its messages
# are live, or half if it is _FAR_BEHIND segments behind: the rewrite stays bounded.
_MOVE_WHEN_LIVE_AT_MOST: Final = 0.1
_FAR_BEHIND: Final = 4


@dataclass(frozen=True)
class DurableOptions:
    """How durable queues write their logs; checked when built."""

    fsync: str = "always"
    fsync_interval: float = 0.2  # seconds between syncs with fsync="interval"
    segment_size: int = 16 << 20  # bytes after which a new segment file is started
    max_record: int = 16 << 20  # largest serialized message, in bytes
    on_corruption: str = "skip"  # or "fail": raise CorruptionError on open
    serializer: Serializer = JSON
    ops: FileOps = field(default=REAL, repr=False)

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {self.fsync!r}")
        if self.on_corruption not in CORRUPTION_POLICIES:
            raise ValueError(
                f"on_corruption must be one of {CORRUPTION_POLICIES}, got {self.on_corruption!r}"
            )
        _check_number("fsync_interval", self.fsync_interval, low=0.001)
        _check_number("segment_size", self.segment_size, low=1024, integer=True)
        _check_number("max_record", self.max_record, low=1, integer=True)
        if not (
            callable(getattr(self.serializer, "dumps", None))
            and callable(getattr(self.serializer, "loads", None))
        ):
            raise TypeError(f"serializer must have dumps and loads, got {self.serializer!r}")


class DurableStore:
    """The log of one durable queue, opened (and recovered) on construction.

    ``append`` is called in id order (under the queue's id lock); ``ack`` from any
    consumer; the backlog only by the forwarder. The constructor raises CorruptionError
    when ``on_corruption="fail"`` and the log is damaged, and StorageError when the log
    cannot be read or synced (a full disk alone does not stop it: see ``_open_tail``).
    """

    durable = True
    remote = False
    direct_hand_off = False  # every message passes the backlog, which tracks the disk

    def __init__(
        self, directory: str, name: str, options: DurableOptions, log: logging.Logger
    ) -> None:
        self.name, self._dir, self._opt, self._log = name, directory, options, log
        self._ops, self._ser = options.ops, options.serializer
        state, self.report = self._recover()
        self.next_id = self.first_new_id = state.next_id
        self._recovered_end = state.next_id
        # Guards the log's tail and what it indexes: _fd, _segment, _offset, _written,
        # _tail, _state, _readers, _closed.
        self._lock = threading.Lock()
        self._state = state
        self._readers: dict[int, int] = {}  # segment -> fd for reading
        self._fd, self._offset, self._written = -1, 0, 0  # no segment to write yet: _fd < 0
        self._map: Mapping | None = None  # _fd's allocated part, where records are copied
        self._segment = max(state.live, default=0)  # the newest, until this run starts one
        self._tail = (-1, 0)  # (fd, _written), replaced whole so a syncer reads it unlocked
        # Positions are bytes written in this run; its error makes the store failed. Every
        # fdatasync of the segment being written runs under its lease (wait or exclusive):
        # Linux reports a failed writeback to one sync of a file only, so a sync running
        # beside a failing one could succeed without the data.
        self._commit = GroupCommit(self._sync)
        # What a publish with fsync="always" waits on; the kill point only when armed.
        fast = not armed("publish.after_sync")
        self._published = self._commit.wait if fast else self._wait_published
        self._closed = False
        self._closing = threading.Event()
        with self._lock:
            self._open_tail()
        self._flusher: threading.Thread | None = None
        if options.fsync == "interval":
            self._flusher = threading.Thread(
                target=self._flush_every, name=f"tinymq:{name}:flusher", daemon=True
            )
            self._flusher.start()

    def _recover(self) -> tuple[recovery.LogState, recovery.RecoveryReport]:
        """Create the directory if it is new, then read the log (see recovery.py)."""
        ops = self._ops
        try:
            ops.mkdir(self._dir)
            ops.fsync_dir(os.path.dirname(self._dir))
            return recovery.recover(
                ops,
                self._dir,
                self.name,
                max_record=self._opt.max_record,
                on_corruption=self._opt.on_corruption,
                log=self._log,
            )
        except OSError as exc:
            raise _storage_error(exc, f"queue {self.name!r}: cannot open {self._dir}") from exc

    def _open_tail(self) -> None:
        """Start this run's segment and collect old ones (raises StorageError; holds _lock).

        On a full disk the queue opens without a segment, so that it can be drained to
        make room; the first publish starts one. Until then acknowledgements are not
        written: those messages come again after a restart.
        """
        try:
            self._start_segment(self._segment + 1)
        except StorageError:
            raise
        except OSError as exc:
            error = _storage_error(exc, f"queue {self.name!r}: cannot start a segment")
            if not isinstance(error, StorageFullError):
                raise error from exc
            self._log.warning("%s; opened without one, the next publish starts it", error)
        self._collect()
        if self._error is not None:  # a sync failed while old segments were collected
            self._close_files()
            raise self._error

    # -- publishers -----------------------------------------------------------

    def append(self, msg: Msg, delay: float | None = None) -> tuple[Msg, Wait]:
        """Write ``msg``'s record; return the message as consumers will see it, and the wait.

        With ``delay``, a SCHED record in the same write keeps its due time.

        Raises:
            TypeError, ValueError: the serializer cannot encode the data, or it is too big.
            StorageFullError, StorageError: nothing was written (or the store is failed).
        """
        payload = self._encode(msg.data)
        now = time.time()
        record = wal.encode(wal.MSG, msg.id, payload, now)
        if delay is not None:
            record += wal.encode_sched(msg.id, now + delay, 1, now)
        if self._ser is JSON and type(msg.data) in _SAME_AFTER_JSON:
            delivered = msg  # decoding would give the same value back
        else:
            delivered = Msg(msg.id, self._ser.loads(payload), msg.queue)
        with self._lock:
            if self._closed or self._commit.error is not None:
                self._check_writable()
            try:
                if self._fd >= 0 and self._offset + len(record) <= self._opt.segment_size:
                    offset = self._write(record)
                else:
                    offset = self._append_record(record)
            except StorageFullError:
                # Segments acknowledged since the last roll may make room: try once more.
                if not self._collect() or self._error is not None:
                    raise
                offset = self._append_record(record)
            self._state.place(msg.id, self._segment, offset, len(payload))
            if delay is not None:
                self._state.sched[msg.id] = (now + delay, 1)
            self.next_id = msg.id + 1
            written = self._written
        failpoint("publish.after_write")
        if self._opt.fsync == "always":
            return delivered, functools.partial(self._published, written)
        return delivered, no_wait

    def _append_record(self, record: bytes) -> int:
        if self._fd < 0 or self._offset + len(record) > self._opt.segment_size:
            self._roll()
        return self._write(record)

    def _encode(self, data: object) -> bytes:
        try:
            payload = self._ser.dumps(data)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise TypeError(
                f"queue {self.name!r}: {self._ser!r} cannot encode {type(data).__name__}: {exc}"
            ) from exc
        if len(payload) > self._opt.max_record:
            raise ValueError(
                f"queue {self.name!r}: message of {len(payload)} bytes exceeds "
                f"max_record={self._opt.max_record}"
            )
        return payload

    def _wait_published(self, written: int) -> None:
        self._wait_synced(written)
        failpoint("publish.after_sync")

    def _wait_synced(self, written: int) -> None:
        """Return once the first ``written`` bytes of this run are on stable storage."""
        self._commit.wait(written)

    def _sync(self) -> int:
        """fdatasync everything written so far and return how much that is (holds the lease)."""
        fd, target = self._tail  # unlocked: the tail only changes under the lease
        try:
            self._ops.fdatasync(fd)
        except OSError as exc:
            self._fail(exc, f"fdatasync of segment {self._segment}")
        return target

    @property
    def _error(self) -> BaseException | None:
        """The error of the failed sync that failed the store, if one did."""
        return self._commit.error

    def _fail(self, exc: OSError, what: str) -> None:
        """Refuse every later publish: a failed sync is never retried (raises the error)."""
        error = StorageError(
            f"queue {self.name!r}: {what} failed ({exc}); the queue refuses publishes "
            "until the MQ is reopened",
            exc.errno,
        )
        if self._commit.fail(error) is error:  # the first failure is the one logged
            self._log.error("%s", error)
        raise error from exc

    def cancel(self, msg: Msg) -> None:
        self.ack(msg)

    def release(self, msg: Msg) -> None:
        pass  # it stays live in the log: the next run delivers it again

    # -- consumers ------------------------------------------------------------

    def ack(self, msg: Msg) -> None:
        """Write ``msg``'s ACK record, unsynced: losing it costs a redelivery, not a message."""
        record = wal.encode(wal.ACK, msg.id, b"", time.time())
        with self._lock:
            if self._closed:
                return
            self._state.sched.pop(msg.id, None)
            segment = self._state.ledger.remove(msg.id)
            if segment is None:
                return
            self._state.live[segment] -= 1
            if self._error is not None or self._fd < 0:  # failed, or no segment (_open_tail)
                return
            try:
                self._write(record)
            except StorageError as exc:
                self._log.warning(
                    "queue %r: message %d will be delivered again after a restart: %s",
                    self.name,
                    msg.id,
                    exc,
                )

    def schedule(self, msg: Msg, delay: float) -> None:
        """Write a SCHED record: ``msg`` is due again in ``delay`` s, as attempt ``msg.attempt``.

        Unsynced, like an ACK: if it is lost, the message comes back at once after a
        restart, as its earlier attempt.
        """
        now = time.time()
        record = wal.encode_sched(msg.id, now + delay, msg.attempt, now)
        with self._lock:
            if self._closed or self._error is not None or self._state.ledger.get(msg.id) is None:
                return
            self._state.sched[msg.id] = (now + delay, msg.attempt)
            if self._fd < 0:  # no segment yet (opened on a full disk): as if the write failed
                self._log.warning(
                    "queue %r: after a restart message %d will be retried at once: no segment",
                    self.name,
                    msg.id,
                )
                return
            try:
                self._write(record)
            except StorageError as exc:
                self._log.warning(
                    "queue %r: after a restart message %d will be retried at once: %s",
                    self.name,
                    msg.id,
                    exc,
                )

    def scheduled(self) -> list[tuple[Msg, float]]:
        """Recovered messages waiting for a due time, with the seconds left until it.

        In order of due time, ties in id order; a time that passed while no MQ ran is
        negative, so that such messages keep that order among themselves too.
        """
        now, found = time.time(), []
        with self._lock:
            for msg_id, (due, attempt) in sorted(
                self._state.sched.items(), key=lambda item: (item[1][0], item[0])
            ):
                where = self._state.ledger.get(msg_id)
                msg = None if where is None else self._read(msg_id, *where)
                if msg is not None:
                    again = Msg(msg_id, msg.data, self.name, attempt, redelivered=True)
                    found.append((again, due - now))
        return found

    # -- the forwarder --------------------------------------------------------

    @property
    def scheduled_count(self) -> int:
        """Live messages waiting for a due time (approximate)."""
        return len(self._state.sched)

    @property
    def live(self) -> int:
        """Messages appended and not acknowledged (approximate)."""
        return self._state.ledger.live

    def backlog(self) -> Backlog:
        """The pending list, starting with every message recovered from earlier runs."""
        ledger = self._state.ledger
        start = ledger.lowest_live() if ledger.live else self._recovered_end
        return DurableBacklog(self, start, self._recovered_end)

    def load(self, start: int, end: int, limit: int) -> tuple[list[Msg], int]:
        """Read up to ``limit`` live messages with ids in ``[start, end)``.

        Returns them and the id to go on from.
        """
        msgs: list[Msg] = []
        with self._lock:
            ledger = self._state.ledger
            start = max(start, ledger.base)  # nothing below the window is live
            while start < end and len(msgs) < limit:
                if start >= ledger.end:  # nor above it: ids appended later extend it
                    start = end
                    break
                where = ledger.get(start)
                if where is not None and start not in self._state.sched:  # those wait
                    msg = self._read(start, *where)
                    if msg is not None:
                        msgs.append(msg)
                start += 1
        return msgs, start

    def _read(self, msg_id: int, segment: int, offset: int, length: int) -> Msg | None:
        """Read one message back; None (and logged, and forgotten) if it fails its checks."""
        try:
            raw = self._ops.pread(self._reader(segment), wal.HEADER_SIZE + length, offset)
            record = wal.parse(raw, 0, self._opt.max_record)
            if record is None or record.kind != wal.MSG or record.id != msg_id:
                raise ValueError("bad checksum or framing")
            data = self._ser.loads(raw[wal.HEADER_SIZE :])
        except Exception as exc:  # noqa: BLE001 - the one message is lost, not the queue
            self._log.error(
                "queue %r: lost message %d: its record in segment %d at offset %d is "
                "unreadable (%s)",
                self.name,
                msg_id,
                segment,
                offset,
                exc,
            )
            self._state.drop(msg_id)
            return None
        return Msg(msg_id, data, self.name, redelivered=msg_id < self.first_new_id)

    def _reader(self, segment: int) -> int:
        fd = self._readers.get(segment)
        if fd is None:
            path = os.path.join(self._dir, wal.segment_name(segment))
            fd = self._readers[segment] = self._ops.open(path, os.O_RDONLY)
        return fd

    # -- the log's tail (caller holds _lock) ----------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise QueueClosedError(self.name)
        if self._error is not None:
            raise self._error

    def _write(self, record: bytes) -> int:
        """Append ``record`` whole, or leave the file as it was; return its offset."""
        fd, start, end, done = self._fd, self._offset, self._offset + len(record), 0
        mapped = self._map
        try:
            if mapped is not None and end <= len(mapped):
                mapped[start:end] = record  # a copy, whole or not at all: see FileOps.map
                done = len(record)
            else:
                done = self._ops.write(fd, record, start)
                if done < len(record):  # a short write: go on from where it stopped
                    view = memoryview(record)
                    while done < len(view):
                        done += self._ops.write(fd, view[done:], start + done)
        except OSError as exc:
            if done:
                self._cut_back(fd, start)
            raise _storage_error(
                exc, f"queue {self.name!r}: cannot write segment {self._segment} at {start}"
            ) from exc
        self._offset = end
        self._written += done
        self._tail = (fd, self._written)
        return start

    def _cut_back(self, fd: int, size: int) -> None:
        """Remove a partial record; if even that fails, the store is failed (and raises).

        A record written after the partial one would turn it into corruption. A cut
        below the mapped part ends the mapping: its pages past the new end are gone.
        """
        if self._map is not None and size < len(self._map):
            self._unmap()
        try:
            self._ops.truncate(fd, size)
        except OSError as exc:
            self._fail(exc, f"truncating segment {self._segment} after a failed write")

    def _roll(self) -> None:
        """Start the next segment once the current one is durable, then collect old ones."""
        with self._commit.exclusive():  # no sync may use the old fd from here on
            try:
                if self._opt.fsync != "never" and self._fd >= 0:
                    with self._fatal(f"fdatasync of segment {self._segment}"):
                        self._ops.fdatasync(self._fd)
                self._start_segment(self._segment + 1)
            except StorageError:
                raise  # the store is failed
            except OSError as exc:  # the current segment stays in use
                raise _storage_error(exc, f"queue {self.name!r}: cannot start a segment") from exc
        self._collect()
        if self._error is not None:  # a sync failed while collecting: write nothing more
            raise self._error

    def _start_segment(self, number: int) -> None:
        """Create segment ``number`` with its HEAD record, durably, and write to it from now on."""
        path = os.path.join(self._dir, wal.segment_name(number))
        head = wal.encode_head(number, self.next_id, self._state.ledger.lowest_live(), time.time())
        fd = self._ops.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)  # read: to map it
        mapped = None
        try:
            failpoint("segment.after_create")
            done = 0
            while done < len(head):
                done += self._ops.write(fd, head[done:], done)
            mapped = self._preallocate(fd, number)
            with self._fatal(f"fdatasync of segment {number}"):
                self._ops.fdatasync(fd)
            failpoint("segment.before_dir_fsync")
            with self._fatal(f"fsync of directory {self._dir}"):
                self._ops.fsync_dir(self._dir)
        except BaseException:
            if mapped is not None:
                mapped.close()
            self._ops.close(fd)
            self._remove_quietly(path)
            raise
        old_fd, old_map = self._fd, self._map
        self._fd, self._map, self._segment, self._offset = fd, mapped, number, len(head)
        self._written += len(head)
        self._tail = (fd, self._written)
        self._state.live.setdefault(number, 0)
        self._commit.advance(self._written)
        self._close_quietly(old_fd, old_map)  # after the switch: nothing uses it again

    def _preallocate(self, fd: int, number: int) -> Mapping | None:
        """Allocate the segment whole, zeros after its HEAD, synced with it; map it.

        A record then lands in allocated space and its fdatasync has no file size to
        commit; where the file system allows (``FileOps.map``) it is copied there
        rather than written, so that appending takes no system call. Not with
        fsync="never": nothing bounds the dirty pages then, and a store that the kernel
        throttles for them would wait holding the GIL. Where allocating fails (a nearly
        full disk, a file system without it) the segment grows with each write instead,
        as a plain append: slower, as safe.
        """
        try:
            self._ops.allocate(fd, self._opt.segment_size)
        except OSError as exc:
            self._log.debug("queue %r: segment %d not preallocated: %s", self.name, number, exc)
            return None
        if self._opt.fsync == "never":
            return None
        try:
            return self._ops.map(fd, self._opt.segment_size)
        except (OSError, ValueError, OverflowError) as exc:  # written instead
            self._log.debug("queue %r: segment %d not mapped: %s", self.name, number, exc)
            return None

    def _unmap(self) -> None:
        """Write the segment being written with ``pwrite`` from now on (holds _lock)."""
        if self._map is not None:
            self._map.close()
            self._map = None

    def _close_tail(self) -> None:
        """Close the segment being written, if any (holds _lock and the lease, or closes)."""
        fd, mapped = self._fd, self._map
        self._fd, self._map = -1, None
        self._close_quietly(fd, mapped)

    def _close_quietly(self, fd: int, mapped: Mapping | None) -> None:
        """Close a segment no longer written; an error closing it is only logged."""
        try:
            if mapped is not None:
                mapped.close()
        finally:
            try:
                if fd >= 0:
                    self._ops.close(fd)
            except OSError as exc:
                self._log.warning("queue %r: cannot close a segment: %s", self.name, exc)

    @contextlib.contextmanager
    def _fatal(self, what: str) -> Iterator[None]:
        """Fail the store if the sync in the block fails: a failed sync is never retried."""
        try:
            yield
        except OSError as exc:
            self._fail(exc, what)

    def _remove_quietly(self, path: str) -> None:
        try:
            self._ops.unlink(path)
            self._ops.fsync_dir(self._dir)
        except OSError as exc:
            self._log.warning("queue %r: cannot remove %s: %s", self.name, path, exc)

    def _collect(self) -> bool:
        """Delete the oldest segments while nothing live is left in them; True if any was."""
        state, deleted = self._state, False
        for segment in sorted(state.live):
            if segment == self._segment:
                break
            live, count = state.live[segment], state.count.get(segment, 0)
            share = 0.5 if self._segment - segment >= _FAR_BEHIND else _MOVE_WHEN_LIVE_AT_MOST
            if live and (live > count * share or not self._move_forward(segment)):
                break
            if not self._delete(segment):
                break
            deleted = True
        return deleted

    def _move_forward(self, segment: int) -> bool:
        """Re-append the live messages of ``segment`` to the current one, durably."""
        if self._fd < 0:  # no segment to move them to (_open_tail)
            return False
        low, high = self._state.span[segment]
        ledger = self._state.ledger
        try:
            for msg_id in list(ledger.live_ids(low, high + 1)):
                where = ledger.get(msg_id)
                if where is None or where[0] != segment:
                    continue
                raw = self._ops.pread(self._reader(segment), wal.HEADER_SIZE + where[2], where[1])
                record = wal.parse(raw, 0, self._opt.max_record)
                if record is None:
                    self._log.error("queue %r: lost message %d: bad record", self.name, msg_id)
                    self._state.drop(msg_id)
                    continue
                payload = raw[wal.HEADER_SIZE :]
                moved = wal.encode(wal.MSG, msg_id, payload, record.time)
                sched = self._state.sched.get(msg_id)
                if sched is not None:  # its SCHED record goes with it
                    moved += wal.encode_sched(msg_id, *sched, record.time)
                offset = self._write(moved)
                self._state.place(msg_id, self._segment, offset, len(payload))
        except OSError as exc:  # StorageError included: keep the old segment, try later
            self._log.warning(
                "queue %r: cannot move segment %d forward: %s", self.name, segment, exc
            )
            return False
        try:
            self._wait_synced(self._written)  # through the group commit, like every sync
        except StorageError:  # the sync failed the store (logged); the caller raises it
            return False
        return True

    def _delete(self, segment: int) -> bool:
        reader = self._readers.pop(segment, None)
        if reader is not None:
            self._ops.close(reader)
        path = os.path.join(self._dir, wal.segment_name(segment))
        try:
            self._ops.unlink(path)
        except OSError as exc:
            self._log.warning("queue %r: cannot delete %s: %s", self.name, path, exc)
            return False
        for table in (self._state.live, self._state.count, self._state.span):
            table.pop(segment, None)  # the file is gone, whatever the directory sync says
        try:
            self._ops.fsync_dir(self._dir)
        except OSError as exc:
            with contextlib.suppress(StorageError):  # logged; the caller raises it
                self._fail(exc, f"fsync of directory {self._dir} after deleting {path}")
            return False
        failpoint("segment.after_delete")
        return True

    # -- background sync and close --------------------------------------------

    def _flush_every(self) -> None:
        """fsync="interval": sync whatever was written, every ``fsync_interval`` seconds."""
        while not self._closing.wait(self._opt.fsync_interval):
            try:
                self._wait_synced(self._tail[1])
            except StorageError:
                return  # logged by _fail; publishes now raise

    def close(self) -> None:
        """Sync and close the log. Idempotent; acks after this are dropped (redelivered)."""
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._error is None:
                self._collect()  # what the consumers acknowledged since the last roll
                with contextlib.suppress(StorageError):  # logged by _fail
                    self._wait_synced(self._written)
            if self._error is None:
                self._trim_tail()
            if self._error is None and self._opt.fsync == "never":
                self._sync_rolled()
            self._close_files()

    def _sync_rolled(self) -> None:
        """fsync="never": sync the segments it rolled past unsynced, so a clean stop keeps all."""
        try:
            recovery.sync_segments(self._ops, self._dir)
        except OSError as exc:
            self._log.warning(
                "queue %r: cannot sync its segments on close; a power cut may lose "
                "what they hold: %s",
                self.name,
                exc,
            )

    def _trim_tail(self) -> None:
        """Give back the newest segment's unused allocation (holds _lock, all synced).

        The next run starts a segment of its own, so this one is never written again,
        and opening it then need not read past its records. Best effort: a segment left
        whole is only bigger.
        """
        if self._fd < 0:
            return
        try:
            with self._commit.exclusive():  # no sync of this fd runs beside another
                self._unmap()  # first: nothing may touch a cut page
                self._ops.truncate(self._fd, self._offset)
                if self._opt.fsync != "never":
                    self._ops.fdatasync(self._fd)
        except OSError as exc:
            self._log.warning(
                "queue %r: cannot trim segment %d to its records: %s", self.name, self._segment, exc
            )

    def _close_files(self) -> None:
        self._close_tail()
        for fd in self._readers.values():
            self._ops.close(fd)
        self._readers.clear()

    def __repr__(self) -> str:
        return f"<DurableStore {self.name!r} {self._dir!r} live={self._state.ledger.live}>"


class DurableBacklog:
    """A durable queue's pending list: at most READ_AHEAD payloads in memory, the rest on disk.

    Pending messages are the live ids in ``[_next, _end)`` plus ``ready``. Messages from
    publishers are kept only while they are next in line and ``ready`` has room;
    otherwise they are read back from the log when their turn comes. Forwarder only.
    """

    def __init__(self, store: DurableStore, start: int, end: int) -> None:
        self.ready: deque[Msg] = deque()
        self._store = store
        self._next = start  # the lowest id not yet in ready
        self._end = end  # one past the highest id received

    def extend(self, msgs: Iterable[Msg]) -> None:
        ready = self.ready
        for msg in msgs:
            if msg.id == self._next and len(ready) < READ_AHEAD:
                ready.append(msg)
                self._next += 1
            self._end = msg.id + 1

    def refill(self) -> bool:
        room = READ_AHEAD - len(self.ready)
        if room > READ_AHEAD // 2 and self._next < self._end:
            msgs, self._next = self._store.load(self._next, self._end, room)
            self.ready.extend(msgs)
        return bool(self.ready) or self._next < self._end

    def __len__(self) -> int:
        """Pending messages; an upper bound while acknowledged ids remain ahead (approximate).

        Messages waiting for a due time are the forwarder's schedule's, not counted here.
        """
        ahead = self._store.live - self._store.scheduled_count
        return len(self.ready) + max(0, min(self._end - self._next, ahead))


def _storage_error(exc: OSError, what: str) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    kind = StorageFullError if exc.errno in _FULL_ERRNOS else StorageError
    return kind(f"{what}: {exc}", exc.errno)


def _check_number(name: str, value: object, *, low: float, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not value >= low:  # also refuses NaN
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
