"""The exceptions tinymq raises.

Every error names the queue it is about. Arguments that are simply wrong raise the
builtin ValueError or TypeError instead, naming the argument.
"""

from __future__ import annotations

from typing import Any


class TinyMQError(Exception):
    """Base class of every tinymq error; ``str()`` is the plain message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # KeyError subclasses would otherwise repr-quote the message.
        return self.message


class QueueNotFoundError(TinyMQError, KeyError):
    """Raised when a call names a queue that was never registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"queue {name!r} is not registered")
        self.queue = name


class QueueExistsError(TinyMQError):
    """Raised by ``register_queue`` when the name is already taken."""

    def __init__(self, name: str) -> None:
        super().__init__(f"queue {name!r} is already registered")
        self.queue = name


class QueueClosedError(TinyMQError):
    """Raised when a message is offered to a queue that no longer accepts any."""

    def __init__(self, name: str) -> None:
        super().__init__(f"queue {name!r} is closed")
        self.queue = name


class ChannelClosedError(TinyMQError):
    """Raised by ``send`` on a closed channel and by ``recv`` on a closed, drained one."""


class StateError(TinyMQError, RuntimeError):
    """Raised when a call does not fit the state the MQ or queue is in."""


class StorageError(TinyMQError, OSError):
    """Raised when a durable queue's log cannot be written or synced.

    Nothing is acknowledged by a call that raises it. ``errno`` is the cause's, if any.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class StorageFullError(StorageError):
    """Raised when the disk (or a file size limit) has no room for a record; retry later."""


class CorruptionError(TinyMQError):
    """Raised on open with ``on_corruption="fail"`` when a log holds damaged records.

    ``damage`` lists each damaged range (segment, offset, length, lost ids).
    """

    def __init__(self, message: str, damage: list[Any]) -> None:
        super().__init__(message)
        self.damage = damage


class DataDirLockedError(StateError):
    """Raised when another MQ, in this process or another, holds the data directory."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"data directory {path!r} is locked by {holder}")
        self.path = path
        self.pid = pid


class QueueFullError(TinyMQError):
    """Raised by ``publish`` when a bounded queue stayed full for the whole timeout."""

    def __init__(self, name: str, limit: int, timeout: float | None) -> None:
        super().__init__(
            f"queue {name!r} is full: {limit} messages pending (max_pending) for {timeout} s"
        )
        self.queue = name
        self.limit = limit
