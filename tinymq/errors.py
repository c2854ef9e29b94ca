"""The exceptions tinymq raises.

Every error names the queue it is about. Arguments that are simply wrong raise the
builtin ValueError or TypeError instead, naming the argument.
"""

from __future__ import annotations


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
