"""FileOps: the one door through which a durable store touches the file system.

Tests replace it with layers that inject faults (disk full, I/O errors, short writes)
or record what a power loss could undo. Calls map one to one onto ``os`` calls and
raise OSError as those do; ``write`` may write less than asked, as ``os.write`` may.
"""

from __future__ import annotations

import contextlib
import mmap
import os


class FileOps:
    """The real file system."""

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags, 0o644)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def read_all(self, fd: int) -> bytes | mmap.mmap:
        """Return the whole file, mapped rather than copied (empty bytes for an empty file)."""
        if os.fstat(fd).st_size == 0:
            return b""
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)

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


REAL = FileOps()
