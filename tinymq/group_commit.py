"""Group commit: threads that wait for the same log to reach the disk share its syncs.

One thread at a time holds the lease: it runs the sync (or rolls the log) while the
others wait, each on a lock of its own. When it is done it releases every waiter that
sync covered and hands the lease to the oldest waiter left, which syncs for everyone
who wrote meanwhile. So a thread alone syncs at once, concurrent writers share one
sync, and a finished sync wakes only threads that can go on: no herd of waiters
re-checking a condition while the next sync waits for one of them to start it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class _Waiter:
    __slots__ = ("gate", "leads", "position")

    def __init__(self, position: float) -> None:
        self.position = position
        self.gate = threading.Lock()
        self.gate.acquire()  # released once: covered, failed, or handed the lease
        self.leads = False  # set with the release that hands it the lease


class GroupCommit:
    """Makes positions of an append-only log durable, one sync for many waiters.

    ``sync`` makes everything written so far durable and returns that position; it
    runs only in the lease holder's thread. Once ``fail`` is called (by ``sync`` or by
    anyone else who saw a sync fail) every wait raises that error: a failed sync is
    never retried.
    """

    def __init__(self, sync: Callable[[], int]) -> None:
        self._sync = sync
        # Guards _synced, _leased, _waiting and error. A waiter's gate is released once,
        # with it held, as the waiter leaves _waiting.
        self._lock = threading.Lock()
        self._synced = 0  # every position up to here is durable
        self._leased = False  # a thread holds the lease: syncing or rolling the log
        self._waiting: list[_Waiter] = []  # in arrival order
        self.error: BaseException | None = None

    @property
    def synced(self) -> int:
        return self._synced

    def wait(self, position: int) -> None:
        """Return once ``position`` is durable; raise ``error`` if the log failed."""
        if not self._acquire(position):
            return
        synced = None
        try:
            synced = self._sync()
        finally:
            self._release(synced)
        if self.error is not None:  # the log failed while this sync ran: it proves nothing
            raise self.error

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lease for the block, so that no sync runs (to roll the log).

        Raises ``error`` if the log failed before the lease was free.
        """
        self._acquire(math.inf)
        try:
            yield
        finally:
            self._release(None)

    def advance(self, position: int) -> None:
        """Everything up to ``position`` is durable (the lease holder synced it itself)."""
        with self._lock:
            self._synced = max(self._synced, position)

    def fail(self, error: BaseException) -> BaseException:
        """Fail every wait from now on with ``error`` (the first one kept); return it."""
        with self._lock:
            if self.error is None:
                self.error = error
            for waiter in self._waiting:
                waiter.gate.release()
            self._waiting.clear()
            return self.error

    def _acquire(self, position: float) -> bool:
        """Wait until ``position`` is durable (False) or this thread holds the lease (True)."""
        with self._lock:
            if self.error is not None:
                raise self.error
            if self._synced >= position:
                return False
            if not self._leased:
                self._leased = True
                return True
            waiter = _Waiter(position)
            self._waiting.append(waiter)
        try:
            waiter.gate.acquire()
        except BaseException:  # interrupted: leave the queue, or pass on the lease
            with self._lock:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                    raise
            if waiter.leads:
                self._release(None)
            raise
        if waiter.leads:
            if self.error is not None:  # failed after the hand-over: pass it on
                self._release(None)
                raise self.error
            return True
        if self.error is not None and self._synced < position:
            raise self.error
        return False

    def _release(self, synced: int | None) -> None:
        """Give up the lease: wake the waiters now covered, hand it to the oldest left."""
        with self._lock:
            if synced is not None and synced > self._synced and self.error is None:
                self._synced = synced
            left = []
            for waiter in self._waiting:
                if self.error is not None or waiter.position <= self._synced:
                    waiter.gate.release()
                else:
                    left.append(waiter)
            if left:
                heir = left.pop(0)
                heir.leads = True
                heir.gate.release()
            else:
                self._leased = False
            self._waiting = left
