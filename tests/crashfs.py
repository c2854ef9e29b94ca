"""CrashFS: a FileOps that does the real work and remembers what a power loss could undo.

Every call is performed on a real directory tree (``root``), so the store under test
sees an ordinary file system. Beside it CrashFS keeps a model of what is durable, in
the spirit of SQLite's crash VFS (test6.c), ALICE and LazyFS:

- per file: its bytes as of its last ``fdatasync`` and the writes and truncates since;
- per directory: its entries as of its last ``fsync_dir`` and the entries it has now
  (a create, unlink or rename is durable only once its directory is fsynced).

The power fails when the ``crash_at``-th modifying call (create, write, fdatasync,
truncate, fsync_dir, rename, unlink, mkdir; counted from 0; a store through a mapping
(``map``) counts and is modelled as a write) is made: that call and
every later one raise PowerLoss instead of doing anything (``close`` still releases
its descriptor). ``build_crash_state`` then writes out one state the disk could hold:

- each directory entry changed since its directory's last fsync is, at random, as it
  was at that fsync or as it is now (so an unsynced create may vanish and an unsynced
  unlink may come back); both names of a rename get the same draw;
- each file holds its durable bytes, then each pending write independently applied
  whole, dropped, cut at a 512-byte sector boundary, or with its sectors replaced by
  garbage or by zeros, and each pending truncate applied or dropped. Damage never
  reaches bytes below the file's durable size (SQLite's powersafe overwrite): the
  risky region is what was appended since the last sync, as ALICE found.

Nothing is really fsynced: durability lives in the model, so the real tree is only a
page-cache view. Every path must lie under ``root``; what is in ``root`` when CrashFS
is built counts as durable.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from tinymq.fileops import FileOps, Mapping

SECTOR: Final = 512
DIRECTORY: Final = "<directory>"  # a directory entry naming a subdirectory
_FATES: Final = ("whole", "dropped", "cut", "garbage", "zeros")
_ALLOCATE: Final = b"<allocate>"  # marks an allocate among a file's pending changes


class PowerLoss(OSError):
    """The simulated power is gone: raised by the call that met it and every later one.

    An OSError (EIO) so that the store under test stops as it does on an I/O error,
    background threads included; nothing it does afterwards reaches the disk.
    """

    def __init__(self, operation: str, path: str) -> None:
        super().__init__(errno.EIO, f"power lost before {operation}", path)


@dataclass(eq=False)
class _File:
    """One file's content now, as of its last fdatasync, and the changes in between."""

    current: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    pending: list[tuple[int, bytes | None]] = field(default_factory=list)  # (offset, data),
    # or (size, None) for a truncate, or (size, _ALLOCATE) for an allocate
    written: int = 0  # end of the bytes written (allocated zeros are not)
    durable_written: int = 0  # ``written`` at the last fdatasync

    def write(self, offset: int, data: bytes) -> None:
        _put(self.current, offset, data)
        self.pending.append((offset, data))
        self.written = max(self.written, offset + len(data))

    def truncate(self, size: int) -> None:
        _resize(self.current, size)
        self.pending.append((size, None))
        self.written = min(self.written, size)

    def allocate(self, size: int) -> None:
        if size > len(self.current):
            self.pending.append((size, _ALLOCATE))
            _resize(self.current, size)

    def sync(self) -> None:
        self.durable = bytes(self.current)
        self.pending.clear()
        self.durable_written = self.written

    def after_crash(self, rng: random.Random) -> bytes:
        """The bytes a power loss could leave: durable ones, then each pending change's fate."""
        data = bytearray(self.durable)
        # Synced bytes are never torn by a later write; allocated zeros may be.
        floor = min(len(data), self.durable_written)
        for offset, payload in self.pending:
            if payload is None:
                if rng.random() < 0.5:
                    _resize(data, offset)
                    floor = min(floor, offset)
                continue
            if payload is _ALLOCATE:  # the new size is kept or not; its bytes read as zeros
                if rng.random() < 0.5 and len(data) < offset:
                    _resize(data, offset)
                continue
            fate, end = rng.choice(_FATES), offset + len(payload)
            if fate == "whole":
                _put(data, offset, payload)
            elif fate == "cut":
                boundaries = range(offset - offset % SECTOR + SECTOR, end, SECTOR)
                cut = rng.choice(boundaries) if boundaries else offset
                _put(data, offset, payload[: cut - offset])
            elif fate in ("garbage", "zeros"):
                start = max(offset - offset % SECTOR, floor)
                size = max(0, end - start)
                _put(data, start, rng.randbytes(size) if fate == "garbage" else bytes(size))
        return bytes(data)


Entry = _File | str  # a file's model, or DIRECTORY


class ObservedMapping:
    """A real writable mapping of ``path`` whose every store goes through ``observe``.

    ``observe(path, offset, data, store)`` must call ``store()`` (the real copy), or
    raise to stand for a store that never happened.
    """

    def __init__(
        self,
        real: mmap.mmap,
        path: str,
        observe: Callable[[str, int, bytes, Callable[[], None]], None],
    ) -> None:
        self._real, self._path, self._observe = real, path, observe

    def __len__(self) -> int:
        return len(self._real)

    def __setitem__(self, index: slice, data: bytes, /) -> None:
        def store() -> None:
            self._real[index] = data

        self._observe(self._path, index.start, bytes(data), store)

    def close(self) -> None:
        self._real.close()


class CrashFS(FileOps):
    """Real file operations under ``root`` plus the model of what would survive a power loss."""

    def __init__(self, root: str, crash_at: int | None = None) -> None:
        self.root = os.path.abspath(root)
        self.crash_at = crash_at
        self.ops = 0  # modifying calls made so far
        self.crashed = False
        self.trace: list[tuple[str, str]] = []  # (call or mark, path) in order
        self.last_write: tuple[str, int, int] = ("", 0, 0)  # (path, offset, end)
        self.mapped_stores = 0  # of the writes, those made through a mapping
        # Called with (number, call, path) before each modifying call that runs: lets a
        # test build crash states at several points of one run.
        self.before_call: Callable[[int, str, str], None] | None = None
        self._current: dict[str, dict[str, Entry]] = {}  # directory -> entries now
        self._durable: dict[str, dict[str, Entry]] = {}  # directory -> entries at its fsync
        self._renamed: dict[tuple[str, str], int] = {}  # (directory, name) -> rename number
        self._fds: dict[int, tuple[_File, str]] = {}
        self._lock = threading.RLock()  # one call at a time: a store may sync from a thread
        for directory, dirs, files in os.walk(self.root):
            entries: dict[str, Entry] = dict.fromkeys(dirs, DIRECTORY)
            for name in files:
                with open(os.path.join(directory, name), "rb") as f:
                    content = f.read()
                entries[name] = _File(bytearray(content), content, [], len(content), len(content))
            self._current[directory] = entries
            self._durable[directory] = dict(entries)

    # -- the FileOps calls ------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        path = os.path.abspath(path)
        with self._lock:
            creating = bool(flags & os.O_CREAT) and not os.path.exists(path)
            if creating or flags & os.O_TRUNC:
                self._tick("create" if creating else "open_truncate", path)
            else:
                self._check()
            fd = os.open(path, flags, 0o644)
            directory, name = os.path.split(path)
            if creating:
                self._current[directory][name] = model = _File()
            else:
                model = self._file(path)
                if flags & os.O_TRUNC:
                    model.truncate(0)
            self._fds[fd] = (model, path)
            return fd

    def close(self, fd: int) -> None:
        """Release ``fd``, even after the power loss (the descriptor must not leak)."""
        with self._lock:
            self._fds.pop(fd, None)
            os.close(fd)

    def write(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        with self._lock:
            model, path = self._fds[fd]
            self._tick("write", path)
            done = os.pwrite(fd, data, offset)
            model.write(offset, bytes(data[:done]))
            self.last_write = (path, offset, offset + done)
            return done

    def map(self, fd: int, size: int) -> Mapping | None:
        """A real mapping (on any file system) whose stores are modelled as writes."""
        self._check()
        return ObservedMapping(mmap.mmap(fd, size), self._fds[fd][1], self._store)

    def _store(self, path: str, offset: int, data: bytes, store: Callable[[], None]) -> None:
        # A store past the file's end changes nothing a sync writes: the model must not
        # count it as written.
        size = os.stat(path).st_size
        assert offset + len(data) <= size, f"a store at {offset} past the end ({size}) of {path}"
        with self._lock:
            self._tick("write", path)
            store()
            self._file(path).write(offset, data)
            self.last_write = (path, offset, offset + len(data))
            self.mapped_stores += 1

    def allocate(self, fd: int, size: int) -> None:
        """Zeros up to ``size``: a size change that a power loss may undo until synced."""
        with self._lock:
            model, path = self._fds[fd]
            self._tick("allocate", path)
            os.posix_fallocate(fd, 0, size)
            model.allocate(size)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self._check()
        return super().pread(fd, size, offset)

    def read_all(self, fd: int) -> bytes | mmap.mmap:
        self._check()
        return super().read_all(fd)

    def size(self, fd: int) -> int:
        self._check()
        return super().size(fd)

    def fdatasync(self, fd: int) -> None:
        with self._lock:
            model, path = self._fds[fd]
            self._tick("fdatasync", path)
            model.sync()

    def truncate(self, fd: int, size: int) -> None:
        with self._lock:
            model, path = self._fds[fd]
            self._tick("truncate", path)
            os.ftruncate(fd, size)
            model.truncate(size)

    def fsync_dir(self, path: str) -> None:
        path = os.path.abspath(path)
        with self._lock:
            self._tick("fsync_dir", path)
            self._durable[path] = dict(self._current[path])
            for key in [k for k in self._renamed if k[0] == path]:
                del self._renamed[key]

    def rename(self, src: str, dst: str) -> None:
        src, dst = os.path.abspath(src), os.path.abspath(dst)
        (sdir, sname), (ddir, dname) = os.path.split(src), os.path.split(dst)
        with self._lock:
            self._tick("rename", src)
            os.rename(src, dst)
            self._current[ddir][dname] = self._current[sdir].pop(sname)
            self._renamed[sdir, sname] = self._renamed[ddir, dname] = self.ops

    def unlink(self, path: str) -> None:
        path = os.path.abspath(path)
        directory, name = os.path.split(path)
        with self._lock:
            self._tick("unlink", path)
            os.unlink(path)
            del self._current[directory][name]

    def listdir(self, path: str) -> list[str]:
        self._check()
        return super().listdir(path)

    def mkdir(self, path: str) -> None:
        path = os.path.abspath(path)
        parent, name = os.path.split(path)
        with self._lock:
            self._tick("mkdir", path)
            if path in self._current:
                return
            os.mkdir(path)
            self._current[parent][name] = DIRECTORY
            self._current[path], self._durable[path] = {}, {}

    # -- for tests --------------------------------------------------------------

    def mark(self, label: str, detail: str = "") -> None:
        """Put a test's own event (such as "published") into the trace."""
        self.trace.append((label, detail))

    def durable_size(self, path: str) -> int | None:
        """Written bytes of ``path`` (not allocated zeros) sure to survive a power loss; None
        if the file itself may vanish."""
        path = os.path.abspath(path)
        if not self._entry_is_durable(path):
            return None
        return self._file(path).durable_written

    def build_crash_state(self, dest: str, rng: random.Random) -> None:
        """Write into ``dest`` (new) one tree that a power loss at this moment could leave."""
        with self._lock:
            self._build(self.root, os.path.abspath(dest), rng, {}, {})

    def _build(
        self,
        directory: str,
        target: str,
        rng: random.Random,
        contents: dict[int, bytes],  # id(model) -> bytes: one fate per file
        draws: dict[object, bool],  # entry change -> does it survive
    ) -> None:
        os.mkdir(target)
        durable, current = self._durable[directory], self._current[directory]
        for name in sorted(durable.keys() | current.keys()):
            entry = durable.get(name)
            if current.get(name) is not entry:
                change = self._renamed.get((directory, name), (directory, name))
                if draws.setdefault(change, rng.random() < 0.5):
                    entry = current.get(name)
            path, copy = os.path.join(directory, name), os.path.join(target, name)
            if entry == DIRECTORY:
                self._build(path, copy, rng, contents, draws)
            elif isinstance(entry, _File):
                if id(entry) not in contents:
                    contents[id(entry)] = entry.after_crash(rng)
                with open(copy, "wb") as f:
                    f.write(contents[id(entry)])

    # -- helpers ----------------------------------------------------------------

    def _check(self) -> None:
        if self.crashed:
            raise PowerLoss("a call after the power loss", "")

    def _tick(self, operation: str, path: str) -> None:
        self._check()
        if self.ops == self.crash_at:
            self.crashed = True
            raise PowerLoss(operation, path)
        if self.before_call is not None:
            self.before_call(self.ops, operation, path)
        self.ops += 1
        self.trace.append((operation, path))

    def _file(self, path: str) -> _File:
        directory, name = os.path.split(path)
        entry = self._current[directory][name]
        assert isinstance(entry, _File), f"{path} is a directory"
        return entry

    def _entry_is_durable(self, path: str) -> bool:
        if path == self.root:
            return True
        directory, name = os.path.split(path)
        entry = self._current[directory].get(name)
        return (
            entry is not None
            and self._durable[directory].get(name) is entry
            and self._entry_is_durable(directory)
        )


def _put(data: bytearray, offset: int, payload: bytes) -> None:
    """Write ``payload`` at ``offset``, zero-filling any hole before it."""
    if offset > len(data):
        data.extend(bytes(offset - len(data)))
    data[offset : offset + len(payload)] = payload


def _resize(data: bytearray, size: int) -> None:
    if size < len(data):
        del data[size:]
    else:
        data.extend(bytes(size - len(data)))
