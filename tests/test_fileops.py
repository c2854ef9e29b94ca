"""FileOps.map: which file systems a segment is written through a mapping on, and the store
writing through one (records copied into it, spilling to writes past its end)."""

from __future__ import annotations

import errno
import io
import logging
import mmap
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tinymq import fileops, wal
from tinymq.durable import DurableOptions, DurableStore
from tinymq.errors import StorageError, StorageFullError
from tinymq.fileops import (
    REAL,
    FileOps,
    Mapping,
    file_system,
    mappable,
    queue_flag,
    stable_writes,
)
from tinymq.message import Msg

LOG = logging.getLogger("tinymq.test")
QUEUE = "q"

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683656k
41 27 0:45 /@home /home rw,relatime shared:1 - btrfs /dev/sdb2 rw,ssd,subvol=/@home
42 27 8:17 / /srv/data rw,noatime shared:7 master:3 - xfs /dev/sdb1 rw,attr2
"""


def test_the_file_system_is_found_by_the_device_numbers() -> None:
    assert file_system(MOUNTINFO, os.makedev(254, 0)) == ("ext4", ["rw", "discard"])
    assert file_system(MOUNTINFO, os.makedev(0, 27)) == ("tmpfs", ["rw", "size=24683656k"])
    assert file_system(MOUNTINFO, os.makedev(0, 45))[0] == "btrfs"  # type: ignore[index]
    assert file_system(MOUNTINFO, os.makedev(8, 17)) == ("xfs", ["rw", "attr2"])  # optional
    assert file_system(MOUNTINFO, os.makedev(8, 1)) is None
    assert file_system("", os.makedev(254, 0)) is None


def test_only_in_place_file_systems_without_dax_or_stable_pages_are_mapped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mounts = MOUNTINFO + (
        "43 27 259:1 / /pmem rw - ext4 /dev/pmem0 rw,dax=always\n"
        "44 27 259:2 / /pmem2 rw - ext4 /dev/pmem1 rw\n"  # DAX per file: the device says
        "45 27 8:33 / /slow rw - ext4 /dev/sdc1 rw\n"
    )
    real_open = open

    def fake_open(path: str, *args: object, **kwargs: object) -> object:
        if path == "/proc/self/mountinfo":
            return io.StringIO(mounts)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", fake_open)
    stable: dict[int, bool | None] = {
        os.makedev(254, 0): False,
        os.makedev(8, 17): False,
        os.makedev(259, 1): False,
        os.makedev(259, 2): False,
        os.makedev(8, 33): True,
    }
    dax: dict[int, bool | None] = dict.fromkeys(stable, False)
    dax[os.makedev(259, 2)] = True
    monkeypatch.setattr(fileops, "stable_writes", stable.get)
    monkeypatch.setattr(fileops, "queue_flag", lambda device, name: dax.get(device))
    assert mappable(os.makedev(254, 0))  # ext4, no stable pages, no DAX
    assert mappable(os.makedev(0, 27))  # tmpfs: no device, nothing to ask
    assert not mappable(os.makedev(0, 45))  # btrfs: copy-on-write
    assert not mappable(os.makedev(8, 17))  # xfs: reflinked blocks are copied on write
    assert not mappable(os.makedev(8, 33))  # ext4 on a device that needs stable pages
    assert not mappable(os.makedev(259, 1))  # mounted with DAX
    assert not mappable(os.makedev(259, 2))  # a DAX device, so files may use DAX
    assert not mappable(os.makedev(8, 1))  # not mounted: unknown
    stable[os.makedev(254, 0)] = None
    assert not mappable(os.makedev(254, 0))  # stable pages unknown
    stable[os.makedev(254, 0)], dax[os.makedev(254, 0)] = False, None
    assert not mappable(os.makedev(254, 0))  # DAX unknown


def test_a_file_on_tmpfs_is_mapped_and_stores_reach_the_file(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            found = file_system(f.read(), os.stat(shm).st_dev)
    except OSError:
        found = None
    if found is None or found[0] != "tmpfs" or not os.access(shm, os.W_OK):
        pytest.skip("no writable tmpfs at /dev/shm")
    fd, name = tempfile.mkstemp(dir=shm)
    try:
        REAL.allocate(fd, 8192)
        mapping = REAL.map(fd, 8192)
        assert mapping is not None, "tmpfs writes in place: it must be mapped"
        mapping[100:105] = b"hello"
        mapping.close()
        assert os.pread(fd, 5, 100) == b"hello"
    finally:
        os.close(fd)
        os.unlink(name)


def _sys_tree(root: Path, device: str, **files: str) -> None:
    for relative, content in files.items():
        path = root / "dev" / "block" / device / relative.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_stable_writes_is_read_from_the_device_its_disk_or_its_bdi(tmp_path: Path) -> None:
    _sys_tree(tmp_path / "a", "8:0", queue__stable_writes="1\n")
    assert stable_writes(os.makedev(8, 0), str(tmp_path / "a")) is True
    _sys_tree(tmp_path / "b", "254:0", queue__stable_writes="0\n")
    assert stable_writes(os.makedev(254, 0), str(tmp_path / "b")) is False
    # A partition has no queue of its own: its disk's (the parent directory) counts.
    _sys_tree(tmp_path / "c", "disk", queue__stable_writes="1\n")
    (tmp_path / "c" / "dev" / "block" / "disk" / "8:1").mkdir()
    os.rename(tmp_path / "c" / "dev" / "block" / "disk", tmp_path / "c" / "disk")
    (tmp_path / "c" / "dev" / "block" / "8:1").symlink_to(tmp_path / "c" / "disk" / "8:1")
    assert stable_writes(os.makedev(8, 1), str(tmp_path / "c")) is True
    # Before Linux 5.9: a queue without the attribute, and the bdi says it.
    for device in ("9:0", "9:1"):
        bdi = tmp_path / "d" / "class" / "bdi" / device
        bdi.mkdir(parents=True)
        (bdi / "stable_pages_required").write_text("1\n")
    (tmp_path / "d" / "dev" / "block" / "9:0" / "queue").mkdir(parents=True)
    assert stable_writes(os.makedev(9, 0), str(tmp_path / "d")) is True
    # Without a queue to ask, the bdi is not trusted (since 5.9 it reads 0 whatever holds).
    assert stable_writes(os.makedev(9, 1), str(tmp_path / "d")) is None
    assert stable_writes(os.makedev(9, 2), str(tmp_path / "d")) is None  # unknown
    _sys_tree(tmp_path / "e", "259:2", queue__dax="1\n")
    assert queue_flag(os.makedev(259, 2), "dax", str(tmp_path / "e")) is True
    assert queue_flag(os.makedev(259, 3), "dax", str(tmp_path / "e")) is None


class AlwaysMapped(FileOps):
    """The real file system, mapping every allocated segment and counting system writes."""

    def __init__(self) -> None:
        self.writes = 0
        self.maps: list[mmap.mmap] = []
        self.full = False  # a write stops at the file's size (short), then ENOSPC
        self.map_error: Exception | None = None
        self.sync_error: OSError | None = None

    def map(self, fd: int, size: int) -> Mapping | None:
        if self.map_error is not None:
            raise self.map_error
        mapping = mmap.mmap(fd, size)
        self.maps.append(mapping)
        return mapping

    def write(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self.writes += 1
        if self.full:
            room = os.fstat(fd).st_size - offset
            if room <= 0:
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            data = data[:room]
        return super().write(fd, data, offset)

    def fdatasync(self, fd: int) -> None:
        if self.sync_error is not None:
            raise self.sync_error
        super().fdatasync(fd)


def open_store(path: Path, ops: FileOps, **options: Any) -> DurableStore:
    return DurableStore(str(path), QUEUE, DurableOptions(ops=ops, **options), LOG)


def reopened_scheduled(path: Path) -> list[int]:
    """The ids of the messages waiting for a due time after a reopen."""
    store = open_store(path, REAL)
    try:
        return [msg.id for msg, _ in store.scheduled()]
    finally:
        store.close()


def reopened_ids(path: Path) -> list[tuple[int, object]]:
    """(id, data) of every live message after a reopen, delayed ones too, in id order."""
    store = open_store(path, REAL)
    try:
        assert store.report.clean, store.report
        msgs, _ = store.load(0, store.next_id, 1000)
        msgs += [msg for msg, _ in store.scheduled()]
        return sorted(((m.id, m.data) for m in msgs), key=lambda pair: pair[0])
    finally:
        store.close()


def test_records_and_acks_are_copied_into_the_mapping(tmp_path: Path) -> None:
    ops = AlwaysMapped()
    store = open_store(tmp_path / QUEUE, ops, fsync="always", segment_size=4096)
    writes_at_open = ops.writes  # the segment's HEAD
    msgs = []
    for n in range(3):
        msg, wait = store.append(Msg(n, f"m{n}", QUEUE))
        wait()
        msgs.append(msg)
    store.ack(msgs[0])
    store.schedule(msgs[1], 3600.0)
    assert ops.writes == writes_at_open, "a record that fits was written, not copied"
    store.close()
    assert ops.maps and all(m.closed for m in ops.maps)
    assert reopened_ids(tmp_path / QUEUE) == [(1, "m1"), (2, "m2")]
    assert reopened_scheduled(tmp_path / QUEUE) == [1]  # its copied SCHED was read back


def test_a_record_that_would_end_past_the_mapping_is_written_and_read_back(
    tmp_path: Path,
) -> None:
    # Publishes roll before a record would pass the segment's size; an ACK, a SCHED or a
    # moved record is appended where it is, so it can cross the mapped part's end.
    ops = AlwaysMapped()
    store = open_store(tmp_path / QUEUE, ops, fsync="always", segment_size=1024)
    pad = 1024 - store._offset - wal.HEADER_SIZE - 2 - 20
    first, wait = store.append(Msg(0, "x" * pad, QUEUE))
    wait()
    writes = ops.writes
    store.schedule(first, 3600.0)  # starts inside the mapping, ends past it
    assert ops.writes > writes
    store.append(Msg(1, "y", QUEUE))[1]()  # rolls: a new mapped segment
    store.close()
    assert reopened_ids(tmp_path / QUEUE) == [(0, "x" * pad), (1, "y")]
    assert reopened_scheduled(tmp_path / QUEUE) == [0]  # the crossing SCHED was read back


def test_a_write_cut_back_below_the_mapped_end_ends_the_mapping(tmp_path: Path) -> None:
    # Were the mapping kept, the next record would be copied past the file's end: not
    # written by fdatasync, so lost while acknowledged (or SIGBUS on a page past it).
    ops = AlwaysMapped()
    store = open_store(tmp_path / QUEUE, ops, fsync="always", segment_size=8192)
    pad = 8150 - store._offset - wal.HEADER_SIZE - 2
    first, wait = store.append(Msg(0, "x" * pad, QUEUE))
    wait()
    ops.full = True
    store.schedule(first, 60.0)  # crosses the allocated end: part written, ENOSPC, cut back
    assert store._map is None
    with pytest.raises(StorageFullError):
        store.append(Msg(1, 7, QUEUE))[1]()  # written, not copied: the disk is full
    ops.full = False
    store.append(Msg(1, 8, QUEUE))[1]()  # room again: the segment grows with the write
    path = tmp_path / QUEUE / wal.segment_name(store._segment)
    assert path.stat().st_size >= store._offset, "an acknowledged record lies past the end"
    store.close()
    assert reopened_ids(tmp_path / QUEUE) == [(0, "x" * pad), (1, 8)]


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOMEM, "no memory"), ValueError("bad"), OverflowError("too big")]
)
def test_a_segment_that_cannot_be_mapped_is_written(tmp_path: Path, error: Exception) -> None:
    ops = AlwaysMapped()
    ops.map_error = error
    store = open_store(tmp_path / QUEUE, ops, fsync="always")
    writes = ops.writes
    store.append(Msg(0, "w", QUEUE))[1]()
    assert ops.writes == writes + 1 and store._map is None
    store.close()
    assert reopened_ids(tmp_path / QUEUE) == [(0, "w")]


def test_a_segment_that_fails_to_start_leaves_no_mapping_open(tmp_path: Path) -> None:
    ops = AlwaysMapped()
    ops.sync_error = OSError(errno.EIO, "I/O error (injected)")
    with pytest.raises(StorageError):
        open_store(tmp_path / QUEUE, ops, fsync="always")
    assert ops.maps and all(m.closed for m in ops.maps)


def test_fsync_never_writes_records_and_maps_nothing(tmp_path: Path) -> None:
    # Nothing bounds its dirty pages: a store the kernel throttles would hold the GIL.
    ops = AlwaysMapped()
    store = open_store(tmp_path / QUEUE, ops, fsync="never")
    store.append(Msg(0, "n", QUEUE))[1]()
    assert not ops.maps and store._map is None
    store.close()


def test_a_store_into_the_mapping_is_what_another_reader_of_the_file_sees(
    tmp_path: Path,
) -> None:
    # Read back through a descriptor of its own, as recovery after a killed process does.
    ops = AlwaysMapped()
    store = open_store(tmp_path / QUEUE, ops, fsync="always")
    try:
        store.append(Msg(0, "kept", QUEUE))[1]()
        assert store._map is not None
        path = tmp_path / QUEUE / wal.segment_name(store._segment)
        assert b'"kept"' in path.read_bytes()
    finally:
        store.close()
