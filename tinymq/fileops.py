"""FileOps: the one door through which a durable store touches the file system.

Tests replace it with layers that inject faults (disk full, I/O errors, short writes)
or record what a power loss could undo. Calls map one to one onto ``os`` calls and
raise OSError as those do; ``write`` may write less than asked, as ``os.pwrite`` may.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from typing import Protocol

# File systems that write a file's allocated blocks in place (no copy-on-write): a store
# through a mapping into them needs no new block, so it cannot meet a full disk.
# (xfs is not here: with reflink, its default since xfsprogs 5.1, a cloned file's blocks
# are shared, and the first store into one allocates.)
IN_PLACE = frozenset({"ext2", "ext3", "ext4", "tmpfs"})


class Mapping(Protocol):
    """A writable view of a file's first ``len()`` bytes (``mmap.mmap`` is one)."""

    def __len__(self) -> int: ...

    def __setitem__(self, index: slice, data: bytes, /) -> None: ...

    def close(self) -> None: ...


class FileOps:
    """The real file system."""

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags, 0o644)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        """Write at ``offset`` (never at the file position): ``os.pwrite``."""
        return os.pwrite(fd, data, offset)

    def allocate(self, fd: int, size: int) -> None:
        """Reserve the file's blocks up to ``size`` bytes, reading as zeros.

        Writes within them then leave the file's size alone, so an fdatasync after
        one has no size to commit: about a third cheaper on ext4 (PostgreSQL and
        SQLite reuse allocated log files for the same reason).
        """
        os.posix_fallocate(fd, 0, size)

    def map(self, fd: int, size: int) -> Mapping | None:
        """Map the file's first ``size`` bytes (allocated: see ``allocate``) for writing.

        A store into the mapping is a copy under the GIL, no system call: where
        several threads append, none gives up the GIL while it holds a lock the others
        wait for. ``fdatasync`` of the file makes it durable (Linux keeps one page cache
        for both). None where a store could fail or stall, which a mapping would turn
        into SIGBUS or a wait holding the GIL: see ``mappable``. ``fd`` is open for
        reading and writing.
        """
        if not mappable(os.fstat(fd).st_dev):
            return None
        return mmap.mmap(fd, size)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def read_all(self, fd: int) -> bytes | mmap.mmap:
        """Return the file's bytes, mapped rather than copied (empty bytes if none).

        Allocated space never written (see ``allocate``) is left off the end where the
        file system tells where it starts: it reads as zeros, and mapping it would
        make a reader touch every page of a segment that is mostly unused.
        """
        size = _data_end(fd)
        if size == 0:
            return b""
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fsync_dir(self, path: str) -> None:
        """Make the creates, renames and deletes of entries in ``path`` durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def mkdir(self, path: str) -> None:
        """Create ``path`` if missing (not its parents)."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)


def _data_end(fd: int) -> int:
    """The end of the file's last data extent (SEEK_DATA/SEEK_HOLE); its size if unknown."""
    size = os.fstat(fd).st_size
    end = at = 0
    try:
        while at < size:
            at = os.lseek(fd, os.lseek(fd, at, os.SEEK_DATA), os.SEEK_HOLE)
            end = at
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: no data after ``at``; else it cannot tell
            return size
    return min(end, size)


def mappable(device: int) -> bool:
    """Whether writing through a mapping into allocated blocks on ``device`` is safe.

    Its file system must write in place (``IN_PLACE``: a copy-on-write one allocates
    at writeback, and a full disk at a page fault is SIGBUS), not use DAX (which writes
    to the device inside the page fault), and its block device must not need stable
    pages (else a store into a page under writeback waits for the disk inside the page
    fault, holding the GIL). Unknown counts as no. Read each time: a device number may
    be mounted again with another file system.
    """
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            mounts = f.read()
    except OSError:
        return False
    found = file_system(mounts, device)
    if found is None:
        return False
    kind, options = found
    if kind not in IN_PLACE or "dax" in options or "dax=always" in options:
        return False
    if kind == "tmpfs":  # memory: no device, no writeback to wait for
        return True
    return queue_flag(device, "dax") is False and stable_writes(device) is False


def file_system(mountinfo: str, device: int) -> tuple[str, list[str]] | None:
    """The type and options of the file system mounted from ``device`` (/proc/self/mountinfo)."""
    wanted = _numbers(device)
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and " - " in line:
            kind, *rest = line.split(" - ", 1)[1].split()
            options = rest[1].split(",") if len(rest) > 1 else []  # after the source
            return kind, options
    return None


def queue_flag(device: int, name: str, sys_root: str = "/sys") -> bool | None:
    """A 0/1 attribute of ``device``'s request queue, its disk's for a partition (None: unknown)."""
    block = os.path.join(sys_root, "dev", "block", _numbers(device))
    for path in (
        os.path.join(block, "queue", name),
        os.path.join(block, "..", "queue", name),  # a partition: the kernel resolves the link
    ):
        try:
            with open(path, encoding="ascii") as f:
                return f.read().strip() != "0"
        except (OSError, ValueError):
            continue
    return None


def stable_writes(device: int, sys_root: str = "/sys") -> bool | None:
    """Whether ``device`` needs pages left unchanged while they are written (None: unknown).

    Linux 5.9 moved this from the bdi (``stable_pages_required``, which has read 0 ever
    since) to the request queue; the bdi is asked only where the queue is there without
    the attribute, so on an older kernel.
    """
    found = queue_flag(device, "stable_writes", sys_root)
    if found is not None:
        return found
    name = _numbers(device)
    if not os.path.isdir(os.path.join(sys_root, "dev", "block", name, "queue")):
        return None
    try:
        with open(os.path.join(sys_root, "class", "bdi", name, "stable_pages_required")) as f:
            return f.read().strip() != "0"
    except (OSError, ValueError):
        return None


def _numbers(device: int) -> str:
    """``device`` as Linux names it in mountinfo and sysfs: "major:minor"."""
    return f"{os.major(device)}:{os.minor(device)}"


REAL = FileOps()
