"""DataDir: the directory of an MQ's durable queues, held by one MQ at a time.

Layout: ``LOCK`` (flock'ed, holding the owner's pid for error messages) and
``queues/<name>/`` with each queue's segments, ``dead/`` with its dead letters' log
and ``quarantine/`` with the torn tails cut off its log. The lock is ``fcntl.flock`` on its
own open file description, so a second opener in the same process is refused too,
and the kernel frees it when the holder dies, however it dies. A child made by
``fork()`` (a fork-started ``multiprocessing.Process``) shares that description: the
child forgets its copy (never unlocking it, which would free the parent's lock), and the
parent unlocks before it closes, so its ``stop()`` frees the directory at once.
"""

from __future__ import annotations

import fcntl
import os
import re
import weakref

from tinymq.errors import DataDirLockedError

DEAD_DIR = "dead"  # in a queue's directory: the log of its dead letters
_QUEUE_DIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_durable_name(name: str) -> None:
    """Refuse queue names that are not safe as a directory name."""
    if not _QUEUE_DIR_NAME.match(name):
        raise ValueError(
            f"durable queue name {name!r} must be 1-200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def queues_dir(path: str) -> str:
    return os.path.join(path, "queues")


class DataDir:
    """An exclusively locked data directory; raises DataDirLockedError at once if held."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd: int | None = None  # set once the lock file is open
        self.path = os.path.abspath(os.fspath(path))
        os.makedirs(queues_dir(self.path), exist_ok=True)
        _fsync_dir(self.path)
        _fsync_dir(os.path.dirname(self.path))
        lock_path = os.path.join(self.path, "LOCK")
        self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(self._fd)
            os.close(self._fd)
            self._fd = None
            raise DataDirLockedError(self.path, pid) from None
        _held.add(self)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def queue_dir(self, name: str) -> str:
        check_durable_name(name)
        return os.path.join(queues_dir(self.path), name)

    def close(self) -> None:
        """Release the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            # Unlock before closing: a forked child may still hold a copy of this open
            # file description (until it forgets it), and closing alone would leave the
            # lock on it.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<DataDir {self.path!r}{' locked' if self._fd is not None else ''}>"


_held: weakref.WeakSet[DataDir] = weakref.WeakSet()  # locked here, for _forget_in_child


def _forget_in_child() -> None:
    """In a forked child: close the copies of the parent's lock descriptors (closing a
    copy leaves the parent's lock as it is; keeping it would hold the lock past the
    parent's stop)."""
    for data_dir in list(_held):
        fd, data_dir._fd = data_dir._fd, None
        if fd is not None:
            os.close(fd)


os.register_at_fork(after_in_child=_forget_in_child)


def _read_pid(fd: int) -> int | None:
    """The holder's pid as it wrote it; None if it has not yet (or it is not alive: the
    file keeps the last holder's pid until the next one writes its own)."""
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return pid


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
