"""Channel: a Go channel for threads, and the select its forwarder needs.

A bounded FIFO with Go's close. ``close()`` puts a private sentinel behind what is
buffered: receivers get every buffered item, then meet the sentinel, which stays in
place so that every receiver, however many, sees it and raises ChannelClosedError.
Python has no ``select``: ``bridge()`` builds two channels on one lock, where "the
first has an item" and "the second has room" signal one Condition, so a forwarder
can wait for either with ``wait_ready()``. While that forwarder idles, a send goes
straight to the second channel, as Go hands a value straight to a parked receiver.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Generator
from typing import Any, Final, Generic, TypeVar

from tinymq.errors import ChannelClosedError
from tinymq.timeouts import check_timeout

T = TypeVar("T")

_CLOSED: Final = object()  # never leaves this module; users may send None


class Channel(Generic[T]):
    """A bounded, closable FIFO shared by any number of sender and receiver threads.

    Close contract (Python 3.13's ``Queue.shutdown()``, made idempotent): after
    ``close()``, ``send`` raises ChannelClosedError and so does every sender blocked
    at that moment; ``recv`` returns what is buffered, then raises
    ChannelClosedError, and iteration stops there.
    """

    def __init__(self, size: int = 1) -> None:
        """Make a channel holding up to ``size`` items; ``size <= 0`` means 1."""
        lock = threading.Lock()
        self._setup(size, threading.Condition(lock), threading.Condition(lock))

    def _setup(
        self, size: int, readable: threading.Condition, writable: threading.Condition
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, got {type(size).__name__}")
        self._size = max(size, 1)
        # Both Conditions share one lock, which guards _buf and _closed.
        self._readable = readable  # notify when an item or the sentinel arrives
        self._writable = writable  # notify when room appears or the channel closes
        self._buf: deque[Any] = deque()  # items, then _CLOSED once closed
        self._closed = False
        # Set on a bridged `in` while its forwarder idles with nothing pending: a send
        # that finds `in` empty may then skip the forwarder, since nothing is ahead of it.
        self._direct: Channel[Any] | None = None
        self.handed_off = 0  # items a send put straight into _direct (under the lock)
        # False on a bridged `out` unless its forwarder waits for room: recv then
        # need not wake it.
        self._notify_room = True

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called (items may still be buffered)."""
        return self._closed

    @property
    def size(self) -> int:
        """How many items the channel holds before ``send`` blocks."""
        return self._size

    def __len__(self) -> int:
        """Number of buffered items (approximate: other threads move them)."""
        n = len(self._buf)
        return n - 1 if self._closed and n else n

    def send(self, item: T, timeout: float | None = None) -> None:
        """Append ``item``, blocking while the channel is full.

        Raises:
            ChannelClosedError: the channel is closed, or closes while blocked.
            TimeoutError: still full after ``timeout`` seconds.
        """
        if timeout is not None:
            check_timeout(timeout)
        with self._writable:
            if not self._closed and len(self._buf) >= self._size:
                ok = self._writable.wait_for(
                    lambda: self._closed or len(self._buf) < self._size, timeout
                )
                if not ok:
                    raise TimeoutError(f"send timed out after {timeout} s: channel full")
            if self._closed:
                raise ChannelClosedError("send on closed channel")
            direct = self._direct
            if direct is not None and not self._buf and len(direct._buf) < direct._size:
                direct._buf.append(item)
                _wake(direct._readable)
                self.handed_off += 1
                return
            self._buf.append(item)
            _wake(self._readable)

    def recv(self, timeout: float | None = None) -> T:
        """Remove and return the oldest item, blocking while the channel is empty.

        Raises:
            ChannelClosedError: the channel is closed and drained.
            TimeoutError: still empty after ``timeout`` seconds.
        """
        if timeout is not None:
            check_timeout(timeout)
        with self._readable:
            if not self._buf and not self._readable.wait_for(lambda: self._buf, timeout):
                raise TimeoutError(f"recv timed out after {timeout} s: channel empty")
            item = self._buf[0]
            if item is _CLOSED:
                raise ChannelClosedError("recv on closed channel")
            self._buf.popleft()
            if self._notify_room:
                _wake(self._writable)
            return item  # type: ignore[no-any-return]

    def recv_many(self, into: deque[T], limit: int) -> int:
        """Move up to ``limit`` items to the right of ``into``, blocking while empty.

        Returns how many. They are in ``into`` before the lock is released, so a
        thread counting the channel and ``into`` never misses them.

        Raises:
            ValueError: ``limit`` is below 1.
            ChannelClosedError: the channel is closed and drained.
        """
        if limit < 1:
            raise ValueError(f"recv_many limit must be at least 1, got {limit!r}")
        with self._readable:
            buf = self._buf
            if not buf:
                self._readable.wait_for(lambda: self._buf)
            n = min(limit, len(buf) - self._closed)  # once closed, the last item is _CLOSED
            if n <= 0:
                raise ChannelClosedError("recv on closed channel")
            into.extend([buf.popleft() for _ in range(n)])
            if self._notify_room:
                _wake(self._writable, n)
            return n

    def give_back(self, items: deque[T]) -> None:
        """Put received items back at the front, in order, and empty ``items``.

        For a receiver that stops before using what it took: the next receiver gets
        them first, as if they had never left. Also once closed: they were sent before.
        """
        with self._readable:
            n = len(items)
            self._buf.extendleft(reversed(items))
            items.clear()
            _wake(self._readable, n)

    def recv_all(self) -> list[T]:
        """Remove and return every buffered item without blocking ([] if none).

        Raises:
            ChannelClosedError: the channel is closed and drained.
        """
        with self._readable:
            buf = self._buf
            if self._closed:
                if len(buf) == 1:
                    raise ChannelClosedError("recv on closed channel")
                items = [buf.popleft() for _ in range(len(buf) - 1)]
            else:
                items = list(buf)
                buf.clear()
            _wake(self._writable, len(items))
            return items

    def send_from(self, items: deque[T]) -> int:
        """Move items from the left of ``items`` while there is room; never blocks.

        Returns how many were moved. Raises ChannelClosedError if closed.
        """
        with self._writable:
            if self._closed:
                raise ChannelClosedError("send on closed channel")
            n = min(self._size - len(self._buf), len(items))
            if n > 0:
                self._buf.extend(items.popleft() for _ in range(n))
                _wake(self._readable, n)
            return max(n, 0)

    def close(self) -> None:
        """Stop accepting items and wake every blocked caller; idempotent."""
        with self._readable:
            if self._closed:
                return
            self._closed = True
            self._buf.append(_CLOSED)
            self._readable.notify_all()
            self._writable.notify_all()

    def __iter__(self) -> Generator[T, None, None]:
        """Yield items until the channel is closed and drained."""
        while True:
            try:
                yield self.recv()
            except ChannelClosedError:
                return

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Channel {len(self)}/{self._size}{state}>"


def bridge(in_size: int, out_size: int) -> tuple[Channel[Any], Channel[Any]]:
    """Make the ``in``/``out`` pair of a forwarder, for ``wait_ready``.

    Both use one lock, and ``in`` getting an item and ``out`` getting room notify the
    same Condition. Only the forwarder may receive from ``in`` or send to ``out``:
    that Condition wakes one waiter at a time.
    """
    lock = threading.Lock()
    ready = threading.Condition(lock)
    src: Channel[Any] = Channel.__new__(Channel)
    src._setup(in_size, ready, threading.Condition(lock))
    dst: Channel[Any] = Channel.__new__(Channel)
    dst._setup(out_size, threading.Condition(lock), ready)
    dst._notify_room = False
    return src, dst


def signal(dst: Channel[Any]) -> threading.Condition:
    """The Condition a bridge's forwarder waits on; notify it (holding it) to wake that."""
    return dst._writable


def wait_ready(
    src: Channel[Any] | None,
    dst: Channel[Any],
    want_room: bool,
    timeout: float | None = None,
    *,
    hand_off: bool = True,
    linger: list[Any] | None = None,
) -> None:
    """Block until ``src`` has an item (or its sentinel) or, if ``want_room``, ``dst`` has room.

    ``src`` and ``dst`` come from one ``bridge()``; ``src`` None leaves that side out.
    The caller must be the forwarder, holding nothing pending unless ``want_room``;
    ``hand_off`` lets senders put straight into ``dst`` meanwhile. With ``linger``, a
    list other threads append to holding ``signal(dst)`` (and then notify it), it also
    returns once that list is non-empty, and it waits even with nothing else to wait
    for, until notified. Without it, it returns at once if there is nothing to wait
    for. It may also return on timeout or spuriously.
    """
    cond = dst._writable  # the Condition `src` also signals
    with cond:
        if src is not None and src._buf:
            return
        if want_room and len(dst._buf) < dst._size:
            return
        if linger:
            return
        if src is None and not want_room and linger is None and timeout is None:
            return
        if src is not None and not want_room and hand_off:
            src._direct = dst
        dst._notify_room = want_room
        try:
            cond.wait(timeout)
        finally:
            dst._notify_room = False
            if src is not None:
                src._direct = None


def _wake(cond: threading.Condition, n: int = 1) -> None:
    """``cond.notify(n)``, skipped when no thread waits; the caller holds ``cond``'s lock.

    Condition.notify checks that its lock is held with two lock operations even when
    nobody waits, which on the publish and receive paths is the common case. Reading
    ``_waiters`` under the lock is safe: a waiter adds itself before releasing it.
    """
    if cond._waiters:  # type: ignore[attr-defined]
        cond.notify(n)
