"""Dead letters: messages that failed every attempt or were rejected, kept for a person.

``MemoryDeadLetters`` keeps them for the life of the MQ; ``DurableDeadLetters`` keeps
them in a log of their own beside the queue's (``dead/`` in its directory), so they
survive restarts. Both are thread-safe: any worker may add while the API lists. Once
the MQ has stopped, a durable queue's letters can still be listed (from memory) but no
longer removed: the log is closed and the data directory may have another owner.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tinymq.durable import DurableOptions, DurableStore
from tinymq.errors import StateError
from tinymq.message import Msg


@dataclass(frozen=True)
class DeadLetter:
    """A message that will not be tried again, with why."""

    id: int  # the message's id in its queue
    data: Any
    queue: str
    attempts: int  # consumer calls made
    reason: str  # "exhausted" (every attempt failed) or "rejected" (the consumer said so)
    error_type: str  # qualified name of the last exception's type
    error: str  # its message
    traceback: str  # its traceback, as text
    dead_at: float  # time.time() when it was given up

    @classmethod
    def of(cls, msg: Msg, exc: BaseException, reason: str) -> DeadLetter:
        kind = type(exc)
        return cls(
            id=msg.id,
            data=msg.data,
            queue=msg.queue,
            attempts=msg.attempt,
            reason=reason,
            error_type=f"{kind.__module__}.{kind.__qualname__}",
            error=_storable(str(exc)),
            traceback=_storable("".join(traceback.format_exception(kind, exc, exc.__traceback__))),
            dead_at=time.time(),
        )


def _storable(text: str) -> str:
    """``text`` with what UTF-8 cannot hold (lone surrogates, as ``surrogateescape`` makes
    of undecodable file names) escaped: a dead letter must never fail to be kept for it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class DeadLetters(Protocol):
    """Where a queue's dead letters are kept."""

    def add(self, letter: DeadLetter) -> None:
        """Keep ``letter``; for a durable queue, on disk before this returns."""

    def all(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""

    def remove(self, ids: set[int] | None) -> list[DeadLetter]:
        """Forget the letters of message ``ids`` (all if None); return them, oldest first."""

    def close(self) -> None:
        """Release what the store holds. Idempotent."""


class MemoryDeadLetters:
    """Dead letters kept in memory, for the life of the MQ."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _letters
        self._letters: dict[int, DeadLetter] = {}  # by message id, oldest first

    def add(self, letter: DeadLetter) -> None:
        with self._lock:
            self._letters.pop(letter.id, None)
            self._letters[letter.id] = letter

    def all(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._letters.values())

    def remove(self, ids: set[int] | None) -> list[DeadLetter]:
        with self._lock:
            chosen = list(self._letters) if ids is None else [i for i in self._letters if i in ids]
            return [self._letters.pop(i) for i in chosen]

    def close(self) -> None:
        pass


class DurableDeadLetters:
    """Dead letters in a log of their own: each one a record, removed by acknowledging it.

    ``_records`` mirrors the log's live records, oldest first (the log is read once, on
    open), so listing reads no file: it works after ``close()`` too.
    """

    def __init__(
        self, directory: str, name: str, options: DurableOptions, log: logging.Logger
    ) -> None:
        self._name = name
        self._store = DurableStore(directory, f"{name} (dead letters)", options, log)
        self._lock = threading.Lock()  # guards _records, _closed and appends to _store
        self._records: dict[int, Msg] = {}  # message id -> its record in the log
        self._closed = False
        msgs, _ = self._store.load(0, self._store.next_id, limit=self._store.live)
        for record in msgs:
            old = self._records.pop(record.data["id"], None)
            if old is not None:  # died again before the earlier letter's ack was written
                self._store.ack(old)
            self._records[record.data["id"]] = record

    def next_message_id(self) -> int:
        """One past the highest message id a kept letter names (0 if none): the queue's
        ids must continue past it even if its own log lost the HEAD that said so."""
        with self._lock:
            return max(self._records, default=-1) + 1

    def add(self, letter: DeadLetter) -> None:
        with self._lock:
            record = Msg(self._store.next_id, asdict(letter), letter.queue)
            record, wait = self._store.append(record)
            old = self._records.pop(letter.id, None)
            if old is not None:
                self._store.ack(old)
            self._records[letter.id] = record
        wait()

    def all(self) -> list[DeadLetter]:
        with self._lock:
            return [DeadLetter(**record.data) for record in self._records.values()]

    def remove(self, ids: set[int] | None) -> list[DeadLetter]:
        """Acknowledge the chosen letters' records; raises StateError once closed.

        A closed store would drop the acknowledgements silently, and the letters
        would come back in the next run.
        """
        with self._lock:
            if self._closed:
                raise StateError(
                    f"queue {self._name!r}: its dead letters' log is closed with the MQ; "
                    "change them in the next run"
                )
            chosen = [i for i in self._records if ids is None or i in ids]
            records = [self._records.pop(i) for i in chosen]
            for record in records:
                self._store.ack(record)
            return [DeadLetter(**record.data) for record in records]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._store.close()
