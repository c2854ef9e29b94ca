"""Queue: FIFO between an ``in`` and an ``out`` Channel, bridged by a forwarder thread.

Once started, only the forwarder thread touches ``_pending``, the backlog its Store
gives it (a deque in memory; a bounded read-ahead over the log for a durable queue),
so ``in`` keeps draining even while ``out`` is full. Closing closes ``in``: the
forwarder moves everything still in ``in`` and ``_pending`` into ``out``, in order,
and then closes ``out`` (the Channel close contract does the rest). A queue built
with an ``Outlet`` (the asyncio side) delivers there instead of ``out``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

from tinymq.channel import Channel, bridge, wait_ready
from tinymq.errors import ChannelClosedError, QueueClosedError, StateError
from tinymq.message import Msg
from tinymq.store import MemoryStore, Store, Wait, no_wait


class Outlet(Protocol):
    """Where a forwarder delivers instead of ``out``; unbounded, called by the forwarder only."""

    def send_from(self, items: deque[Msg]) -> int:
        """Move every item from the left of ``items``; never blocks."""

    def close(self) -> None:
        """Deliver nothing more: receivers get what was sent, then an end."""

    def __len__(self) -> int:
        """Messages sent and not yet received (approximate)."""


class Queue:
    """One named FIFO of messages with its forwarder thread.

    ``enqueue`` may be called from any thread, also before ``start()``, in id order.
    Consumers receive from ``dequeue()``, and ``ack`` each message once done with it;
    iteration over ``dequeue()`` ends once the queue is closed and everything
    enqueued before ``close()`` (or recovered by the store) has been received.
    """

    def __init__(
        self,
        in_size: int = 1,
        out_size: int = 1,
        *,
        name: str = "queue",
        outlet: Outlet | None = None,
        store: Store | None = None,
    ) -> None:
        self.name = name
        self._in, self._out = bridge(in_size, out_size)
        self._outlet = outlet
        self._store: Store = MemoryStore() if store is None else store
        self._pending = self._store.backlog()
        self.ack = self._store.ack
        # Guards _thread; until _thread is set it also guards _pending.
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the forwarder thread. Raises StateError if already started."""
        with self._start_lock:
            if self._thread is not None:
                raise StateError(f"queue {self.name!r} is already started")
            thread = threading.Thread(
                target=self._run, name=f"tinymq:{self.name}:forwarder", daemon=True
            )
            thread.start()
            self._thread = thread

    def enqueue(self, msg: Msg, timeout: float | None = None) -> Wait:
        """Accept ``msg``; blocks only while ``in`` is full, which the forwarder empties.

        Returns the wait for the store's promise (a durable record on disk); call it
        after releasing the id lock, so that concurrent publishers share one sync.

        Raises:
            QueueClosedError: ``close()`` was called before (or while blocked).
            TimeoutError: ``in`` stayed full for ``timeout`` seconds; nothing accepted.
            TypeError, StorageError: the store refused the message; nothing accepted.
        """
        store = self._store
        if not store.durable:  # nothing to record: skip the store on the hot path
            self._accept(msg, timeout)
            return no_wait
        if self._in.closed:  # refuse before writing anything
            raise QueueClosedError(self.name)
        msg, wait = store.append(msg)
        try:
            self._accept(msg, timeout)
        except BaseException:
            store.cancel(msg)
            raise
        return wait

    def _accept(self, msg: Msg, timeout: float | None) -> None:
        try:
            if self._thread is None and self._enqueue_before_start(msg):
                return
            self._in.send(msg, timeout)
        except ChannelClosedError:
            raise QueueClosedError(self.name) from None

    def _enqueue_before_start(self, msg: Msg) -> bool:
        """Append to ``_pending`` if no forwarder runs yet; False once one does."""
        with self._start_lock:
            if self._thread is not None:
                return False
            if self._in.closed:
                raise ChannelClosedError(self.name)
            self._pending.extend((msg,))
            return True

    def dequeue(self) -> Channel[Msg]:
        """Return the ``out`` channel that consumers receive from."""
        if self._outlet is not None:
            raise StateError(f"queue {self.name!r} delivers to an outlet, not to out")
        return self._out

    def close(self) -> None:
        """Stop accepting messages; those already accepted still come out. Idempotent."""
        with self._start_lock:  # orders close against _enqueue_before_start
            self._in.close()

    @property
    def started(self) -> bool:
        """True once ``start()`` was called."""
        return self._thread is not None

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._in.closed

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the forwarder has finished; return False on timeout or if never started."""
        thread = self._thread
        if thread is None:
            return False
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def pending(self) -> int:
        """Messages held by the forwarder, not yet in ``out`` (approximate)."""
        return len(self._pending)

    @property
    def backlog(self) -> int:
        """Messages accepted and not yet received from ``out`` (approximate)."""
        out = len(self._out) if self._outlet is None else len(self._outlet)
        return len(self._in) + len(self._pending) + out

    def _run(self) -> None:
        """Forwarder loop: the only code that touches ``_pending`` after start.

        Emulates Go's select over "receive from in" and "send to out": take every
        message ``in`` holds, hand out what ``out`` has room for, then sleep on the
        one Condition that both signal. While it sleeps with nothing pending,
        publishers hand messages straight to ``out``. The receive side drops out once
        ``in`` is closed and drained; the loop ends when nothing is pending either.
        """
        src: Channel[Msg] | None = self._in
        dst, pending = self._out, self._pending
        out: Channel[Msg] | Outlet = dst if self._outlet is None else self._outlet
        hand_off = self._outlet is None and self._store.direct_hand_off
        try:
            while True:
                if src is not None:
                    try:
                        pending.extend(src.recv_all())
                    except ChannelClosedError:
                        src = None
                if pending.refill():
                    out.send_from(pending.ready)
                elif src is None:
                    break
                wait_ready(src, dst, want_room=len(pending) > 0, hand_off=hand_off)
        finally:
            out.close()  # even on a bug: workers must not wait forever

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<Queue {self.name!r} pending={self.pending}{state}>"
