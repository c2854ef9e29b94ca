"""FaultFS: a FileOps that does the real work but fails where a full or failing disk would.

One ``Fault`` names an operation (open, write, allocate, fdatasync, truncate, fsync_dir,
rename, unlink) and the index of the call (counted from 0, per operation) that fails: it raises
OSError with the fault's errno instead of doing anything, or, for a short write, writes
half of the data, returns that count and fails the write of the rest. Only that call
fails (and, for a short write, the write of the rest, and if asked the truncate that
would remove the half); the fault is lifted afterwards, as when space comes back.
``full`` fails every write and allocate with ENOSPC while it is set, as a disk that stays full does.

A failed fdatasync can also lose data, as on Linux, where the pages it failed to write
may be marked clean and never reach the disk: with ``drop_unsynced`` the bytes written
to that file since its last successful fdatasync are zeroed at once, so a store that
went on trusting them would show the loss. Nothing is really synced: these tests are
about errors, not power loss (see crashfs.py for that).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Final

from tinymq.fileops import FileOps, Mapping

OPERATIONS: Final = (
    "open",
    "write",
    "allocate",
    "fdatasync",
    "truncate",
    "fsync_dir",
    "rename",
    "unlink",
)


@dataclass(frozen=True)
class Fault:
    """What the ``at``-th call of ``op`` does instead of its work."""

    op: str
    at: int
    errno: int = errno.EIO
    short: bool = False  # write: write half the data; the write of the rest fails
    uncut: bool = False  # short: and the truncate right after, removing that half, fails (EIO)

    def __post_init__(self) -> None:
        if self.op not in OPERATIONS:
            raise ValueError(f"op must be one of {OPERATIONS}, got {self.op!r}")
        if (self.short or self.uncut) and self.op != "write":
            raise ValueError("only a write can be short")

    def __str__(self) -> str:
        how = "short " if self.short else ""
        uncut = ", then its truncate failing" if self.uncut else ""
        return f"{how}{self.op} #{self.at} failing with {errno.errorcode[self.errno]}{uncut}"


class FaultFS(FileOps):
    """Real file operations, failing as ``fault`` says; counts every call in ``calls``."""

    def __init__(self, fault: Fault | None = None, *, drop_unsynced: bool = False) -> None:
        self.fault = fault
        self.drop_unsynced = drop_unsynced
        self.full = False  # while set, every write fails with ENOSPC
        self.calls: Counter[str] = Counter()
        self.created = 0  # files the open calls created
        self.fired = threading.Event()  # the fault's call was made
        self.failed: list[str] = []  # the operation of every call that failed, in order
        # Guards calls, created, failed, _paths, _ends, _synced, _rest_fails and _cut_fails.
        self._lock = threading.Lock()
        self._paths: dict[int, str] = {}  # fd -> path
        self._ends: dict[str, int] = {}  # path -> end of the data written to it (not zeros)
        self._synced: dict[str, int] = {}  # path -> data end at its last successful fdatasync
        self._rest_fails = False  # the next write is the rest of a short one: it fails
        self._cut_fails = False  # the next truncate, if no write comes first, fails

    # -- the FileOps calls ------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        creating = bool(flags & os.O_CREAT) and not os.path.exists(path)
        fault = self._trip("open")
        if fault is not None:
            raise self._failure("open", fault.errno, path)
        fd = super().open(path, flags)
        with self._lock:
            self.created += creating
            self._paths[fd] = path
            # What a file held when it was first opened counts as synced.
            if creating or path not in self._ends:
                self._ends[path] = 0 if creating else os.fstat(fd).st_size
            self._synced[path] = 0 if creating else self._synced.get(path, self._ends[path])
        return fd

    def close(self, fd: int) -> None:
        with self._lock:
            self._paths.pop(fd, None)
        super().close(fd)

    def write(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        fault = self._trip("write")
        with self._lock:
            rest_fails, self._rest_fails = self._rest_fails, False
            self._cut_fails = self._cut_fails and rest_fails
        if rest_fails:
            assert self.fault is not None
            raise self._failure("write", self.fault.errno, self._path(fd))
        if self.full:
            raise self._failure("write", errno.ENOSPC, self._path(fd))
        if fault is not None and not fault.short:
            raise self._failure("write", fault.errno, self._path(fd))
        if fault is not None:
            with self._lock:
                self._rest_fails, self._cut_fails = True, fault.uncut
            data = data[: len(data) // 2]
        done = super().write(fd, data, offset)
        path = self._path(fd)
        with self._lock:
            self._ends[path] = max(self._ends.get(path, 0), offset + done)
        return done

    def map(self, fd: int, size: int) -> Mapping | None:
        """Never: the faults here are calls that fail, and a store into a mapping is none."""
        return None

    def allocate(self, fd: int, size: int) -> None:
        fault = self._trip("allocate")
        if self.full:
            raise self._failure("allocate", errno.ENOSPC, self._path(fd))
        if fault is not None:
            raise self._failure("allocate", fault.errno, self._path(fd))
        super().allocate(fd, size)

    def fdatasync(self, fd: int) -> None:
        fault = self._trip("fdatasync")
        path = self._path(fd)
        with self._lock:
            size = self._ends.get(path, 0)
        if fault is not None:
            if self.drop_unsynced:
                self._zero_unsynced(path, size)
            raise self._failure("fdatasync", fault.errno, path)
        with self._lock:
            self._synced[path] = size

    def truncate(self, fd: int, size: int) -> None:
        fault = self._trip("truncate")
        with self._lock:
            cut_fails, self._cut_fails = self._cut_fails, False
        if cut_fails:
            raise self._failure("truncate", errno.EIO, self._path(fd))
        if fault is not None:
            raise self._failure("truncate", fault.errno, self._path(fd))
        super().truncate(fd, size)
        path = self._path(fd)
        with self._lock:
            self._synced[path] = min(self._synced.get(path, size), size)
            self._ends[path] = min(self._ends.get(path, size), size)

    def fsync_dir(self, path: str) -> None:
        fault = self._trip("fsync_dir")
        if fault is not None:
            raise self._failure("fsync_dir", fault.errno, path)

    def rename(self, src: str, dst: str) -> None:
        fault = self._trip("rename")
        if fault is not None:
            raise self._failure("rename", fault.errno, src)
        super().rename(src, dst)
        with self._lock:
            for table in (self._synced, self._ends):
                table.pop(dst, None)
                if src in table:
                    table[dst] = table.pop(src)

    def unlink(self, path: str) -> None:
        fault = self._trip("unlink")
        if fault is not None:
            raise self._failure("unlink", fault.errno, path)
        super().unlink(path)
        with self._lock:
            self._synced.pop(path, None)
            self._ends.pop(path, None)

    # -- helpers ----------------------------------------------------------------

    def _trip(self, op: str) -> Fault | None:
        """Count a call of ``op``; return the fault if this is the call that fails."""
        with self._lock:
            index = self.calls[op]
            self.calls[op] += 1
        fault = self.fault
        if fault is None or fault.op != op or fault.at != index:
            return None
        self.fired.set()
        return fault

    def _failure(self, op: str, code: int, path: str) -> OSError:
        with self._lock:
            self.failed.append(op)
        return OSError(code, f"{os.strerror(code)} (injected)", path)

    def _path(self, fd: int) -> str:
        with self._lock:
            return self._paths.get(fd, f"<fd {fd}>")

    def _zero_unsynced(self, path: str, size: int) -> None:
        """Zero what was written to ``path`` since its last fdatasync: the kernel dropped it."""
        with self._lock:
            start = self._synced.get(path, 0)
        if size <= start:
            return
        fd = os.open(path, os.O_WRONLY)  # not the store's: its write calls are counted
        try:
            os.pwrite(fd, bytes(size - start), start)
        finally:
            os.close(fd)
