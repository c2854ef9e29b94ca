"""FileOps.map: which file systems a segment is written through a mapping on, and the store
writing through one (records copied into it, spilling to writes past its end)."""

from __future__ import annotations

import logging
import mmap
import os
from pathlib import Path

from tinymq import wal
from tinymq.durable import DurableOptions, DurableStore
from tinymq.fileops import REAL, FileOps, Mapping, file_system, mappable, stable_writes
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
    assert file_system(MOUNTINFO, os.makedev(254, 0)) == "ext4"
    assert file_system(MOUNTINFO, os.makedev(0, 27)) == "tmpfs"
    assert file_system(MOUNTINFO, os.makedev(0, 45)) == "btrfs"
    assert file_system(MOUNTINFO, os.makedev(8, 17)) == "xfs"  # optional fields skipped
    assert file_system(MOUNTINFO, os.makedev(8, 1)) is None
    assert file_system("", os.makedev(254, 0)) is None


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
    bdi = tmp_path / "d" / "class" / "bdi" / "9:0"
    bdi.mkdir(parents=True)
    (bdi / "stable_pages_required").write_text("0\n")
    assert stable_writes(os.makedev(9, 0), str(tmp_path / "d")) is False
    assert stable_writes(os.makedev(9, 1), str(tmp_path / "d")) is None  # unknown


def test_map_gives_a_writable_mapping_only_where_mappable_says_so(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        REAL.allocate(fd, 8192)
        mapping = REAL.map(fd, 8192)
        assert (mapping is not None) == mappable(os.fstat(fd).st_dev)
        if mapping is not None:
            mapping[100:105] = b"hello"
            mapping.close()
            assert path.read_bytes()[100:105] == b"hello"
    finally:
        os.close(fd)


class AlwaysMapped(FileOps):
    """The real file system, mapping every allocated segment and counting system writes."""

    def __init__(self) -> None:
        self.writes = 0
        self.maps: list[mmap.mmap] = []

    def map(self, fd: int, size: int) -> Mapping | None:
        mapping = mmap.mmap(fd, size)
        self.maps.append(mapping)
        return mapping

    def write(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self.writes += 1
        return super().write(fd, data, offset)


def test_records_are_copied_into_the_mapping_and_spill_to_writes_past_its_end(
    tmp_path: Path,
) -> None:
    ops = AlwaysMapped()
    options = DurableOptions(fsync="always", segment_size=1024, max_record=4096, ops=ops)
    store = DurableStore(str(tmp_path / QUEUE), QUEUE, options, LOG)
    writes_at_open = ops.writes  # the segment's HEAD
    small = [store.append(Msg(n, f"m{n}", QUEUE)) for n in range(3)]
    for _, wait in small:
        wait()
    assert ops.writes == writes_at_open, "a record that fits was written, not copied"
    wait = store.append(Msg(3, "b" * 2000, QUEUE))[1]  # more than a segment holds
    wait()
    assert ops.writes > writes_at_open  # written after the mapped part: the file grows
    store.ack(small[0][0])
    store.close()
    assert ops.maps and all(m.closed for m in ops.maps)
    reopened = DurableStore(str(tmp_path / QUEUE), QUEUE, DurableOptions(ops=REAL), LOG)
    try:
        assert reopened.report.clean
        msgs, _ = reopened.load(0, 4, 10)
        assert [(m.id, m.data) for m in msgs] == [(1, "m1"), (2, "m2"), (3, "b" * 2000)]
        assert reopened._state.ledger.get(0) is None  # its ACK was copied in too
    finally:
        reopened.close()


def test_a_store_into_the_mapping_is_what_another_reader_of_the_file_sees(
    tmp_path: Path,
) -> None:
    # Read back through a descriptor of its own, as recovery after a killed process does.
    ops = AlwaysMapped()
    store = DurableStore(str(tmp_path / QUEUE), QUEUE, DurableOptions(fsync="always", ops=ops), LOG)
    try:
        store.append(Msg(0, "kept", QUEUE))[1]()
        path = tmp_path / QUEUE / wal.segment_name(store._segment)
        assert b'"kept"' in path.read_bytes()
    finally:
        store.close()
