"""Gate: the bound of a queue's pending messages (``max_pending``).

Publishers ``enter`` before a message is accepted and consumers ``leave`` once they
take it, so at most ``limit`` messages are accepted and not yet taken. A publisher
blocks while the gate is full, up to its timeout. Closing the gate (the queue closed)
refuses every later ``enter`` and wakes the publishers waiting in it.
"""

from __future__ import annotations

import threading

from tinymq.errors import QueueClosedError, QueueFullError
from tinymq.timeouts import deadline_after, remaining


class Gate:
    """A counting bound; ``inside`` may start above ``limit`` (a recovered backlog)."""

    def __init__(self, name: str, limit: int, inside: int = 0) -> None:
        self.name, self.limit = name, limit
        self._room = threading.Condition()  # guards inside, closed; notified on a leave or close
        self.inside = inside
        self.closed = False

    def enter(self, timeout: float | None) -> None:
        """Take a place, waiting up to ``timeout`` seconds (None: no limit) for one.

        Raises:
            QueueFullError: no place came free in time.
            QueueClosedError: the gate is closed, or closed while waiting.
        """
        with self._room:
            if self.inside >= self.limit and not self.closed:
                deadline = deadline_after(timeout)
                while self.inside >= self.limit and not self.closed:
                    left = remaining(deadline)
                    if left == 0:
                        raise QueueFullError(self.name, self.limit, timeout)
                    self._room.wait(left)
            if self.closed:  # a closed queue refuses at once, full or not
                raise QueueClosedError(self.name)
            self.inside += 1

    def try_enter(self) -> bool:
        """Take a place if there is one now; never blocks. False when full or closed."""
        with self._room:
            if self.closed or self.inside >= self.limit:
                return False
            self.inside += 1
            return True

    def leave(self, count: int = 1) -> None:
        """Give back ``count`` places (a message was taken, or not accepted after all)."""
        with self._room:
            self.inside -= count
            self._room.notify(count)

    def close(self) -> None:
        """Refuse every later ``enter``; those waiting raise QueueClosedError. Idempotent."""
        with self._room:
            self.closed = True
            self._room.notify_all()
