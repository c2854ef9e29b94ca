"""Store: what a queue's forwarder keeps its messages in; MemoryStore keeps them in memory.

A store is called from three sides: publishers ``append`` (under the queue's id lock,
so appends come in id order), the forwarder owns the ``backlog`` (messages accepted
and not yet handed out), and consumers ``ack`` a message once its call is over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from tinymq.message import Msg

Wait = Callable[[], None]  # blocks until an appended message is as durable as promised


def no_wait() -> None:
    """The wait of a store that promises nothing beyond memory."""


class Backlog(Protocol):
    """The forwarder's pending list: ``ready`` is what it hands out next, in id order."""

    ready: deque[Msg]

    def extend(self, msgs: Iterable[Msg]) -> None:
        """Take newly accepted messages, in id order."""

    def refill(self) -> bool:
        """Top up ``ready`` from wherever the rest is kept; False if nothing is pending."""

    def __len__(self) -> int:
        """Messages pending, ``ready`` included."""


class Store(Protocol):
    """Where a queue's messages live between ``publish`` and their acknowledgement."""

    next_id: int  # the first id this run may issue
    durable: bool  # does an accepted message survive the process
    direct_hand_off: bool  # may a publisher put straight into ``out``, skipping the backlog
    # Messages are shared with other processes: ``append`` issues the id, and messages reach
    # ``in`` through the store's own intake (``start_intake``), not from the publisher.
    remote: bool

    def append(self, msg: Msg, delay: float | None = None) -> tuple[Msg, Wait]:
        """Record ``msg``, due ``delay`` seconds from now if given; return the message to
        deliver and the wait for its durability.

        Called with the queue's id lock held, so in id order. Raises TypeError if the
        data cannot be stored, StorageError if it could not be written: then nothing is.
        """

    def schedule(self, msg: Msg, delay: float) -> None:
        """Record that ``msg`` (its next attempt) is due again ``delay`` seconds from now."""

    def scheduled(self) -> list[tuple[Msg, float]]:
        """Recovered messages that wait for a due time, with the seconds left until it
        (negative if it passed while no MQ ran), in order of due time.

        They are not in ``backlog()``; called once, when the queue is built.
        """

    def cancel(self, msg: Msg) -> None:
        """Forget an appended message that was not accepted after all."""

    def ack(self, msg: Msg) -> None:
        """Record that ``msg``'s consumer call is over; it will not be delivered again."""

    def release(self, msg: Msg) -> None:
        """Give ``msg`` up unsettled (its outcome could not be recorded): a durable store
        delivers it again after a restart, a shared one once its claim runs out."""

    def backlog(self) -> Backlog:
        """Return the pending list, holding every message recovered from a previous run."""

    def close(self) -> None:
        """Make everything appended durable and release the files. Idempotent."""


class RemoteStore(Store, Protocol):
    """A store whose messages other processes share (``remote``): they reach the queue's
    ``in`` through the store's own intake, not from the publisher."""

    def start_intake(self, deliver: Callable[[Msg], None]) -> None:
        """Start handing the store's messages to ``deliver`` (the queue's ``in``)."""

    def stop_intake(self) -> None:
        """Stop handing messages over; what was not read stays in the store. Idempotent."""


class MemoryBacklog:
    """A plain deque: every pending message stays in memory."""

    def __init__(self) -> None:
        self.ready: deque[Msg] = deque()
        self.extend = self.ready.extend

    def refill(self) -> bool:
        return bool(self.ready)

    def __len__(self) -> int:
        return len(self.ready)


class MemoryStore:
    """The store of an in-memory queue: nothing survives the process."""

    next_id = 0
    durable = False
    direct_hand_off = True
    remote = False

    def append(self, msg: Msg, delay: float | None = None) -> tuple[Msg, Wait]:
        return msg, no_wait

    def schedule(self, msg: Msg, delay: float) -> None:
        pass

    def scheduled(self) -> list[tuple[Msg, float]]:
        return []

    def cancel(self, msg: Msg) -> None:
        pass

    def ack(self, msg: Msg) -> None:
        pass

    def release(self, msg: Msg) -> None:
        pass

    def backlog(self) -> Backlog:
        return MemoryBacklog()

    def close(self) -> None:
        pass
