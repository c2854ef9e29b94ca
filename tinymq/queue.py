"""Queue: FIFO between an ``in`` and an ``out`` Channel, bridged by a forwarder thread.

Once started, only the forwarder thread touches ``_pending``, the backlog its Store
gives it (a deque in memory; a bounded read-ahead over the log for a durable queue),
and ``_schedule``, the messages waiting for a due time, so ``in`` keeps draining even
while ``out`` is full. Closing closes ``in``: the forwarder moves everything still in
``in``, ``_pending`` and ``_schedule`` (each at its due time) into ``out``, in order,
and then closes ``out`` (the Channel close contract does the rest). A queue built
with ``settle=True`` also waits for every consumer call in flight, which may hand
its message back for a retry. A queue built with an ``Outlet`` (the asyncio side)
delivers there instead of ``out``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Generator
from typing import Final, Protocol

from tinymq.channel import Channel, bridge, signal, wait_ready
from tinymq.errors import ChannelClosedError, QueueClosedError, StateError
from tinymq.message import Msg
from tinymq.schedule import Schedule
from tinymq.store import MemoryStore, Store, Wait, no_wait

_WAKE: Final = None  # posted to _later to wake a forwarder waiting for calls in flight
# The forwarder's longest sleep: Condition.wait overflows on a due time centuries away
# (past threading.TIMEOUT_MAX), and waking early only costs one more pass of its loop.
_MAX_SLEEP: Final = 3600.0


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
        settle: bool = False,
        slots: int = 1,
    ) -> None:
        self.name = name
        self._in, self._out = bridge(in_size, out_size)
        self._outlet = outlet
        self._store: Store = MemoryStore() if store is None else store
        self._pending = self._store.backlog()
        self.ack = self._store.ack
        self.release = self._store.release
        self._settle = settle  # consumers call finish() after each call; close waits for them
        # Guards _later and _draining; the forwarder waits on it (see channel.signal).
        self._signal = signal(self._out)
        self._later: list[tuple[Msg, float] | None] = []  # (msg, due) or _WAKE, for the forwarder
        self._draining = False  # the forwarder waits for calls in flight: finish() must wake it
        self._schedule = Schedule()  # forwarder only, like _pending
        self._due: deque[Msg] = deque()  # forwarder only: due messages, handed out first
        self._handed = 0  # forwarder only: messages handed to consumers
        self._finished = [0] * slots  # calls settled per consumer slot; one writer each
        for msg, delay in self._store.scheduled():
            self._later.append((msg, time.monotonic() + delay))
        # Messages receivers took and have not yielded, by id() of each receiver's deque:
        # added and removed whole by their receiver, read whole (atomically) by ``backlog``.
        self._held: dict[int, deque[Msg]] = {}
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

    def enqueue(self, msg: Msg, timeout: float | None = None, delay: float | None = None) -> Wait:
        """Accept ``msg``; blocks only while ``in`` is full, which the forwarder empties.

        With ``delay``, the message is handed out no earlier than ``delay`` seconds from
        now, without holding back the messages behind it. Returns the wait for the
        store's promise (a durable record on disk); call it after releasing the id
        lock, so that concurrent publishers share one sync.

        Raises:
            QueueClosedError: ``close()`` was called before (or while blocked).
            TimeoutError: ``in`` stayed full for ``timeout`` seconds; nothing accepted.
            TypeError, StorageError: the store refused the message; nothing accepted.
        """
        store = self._store
        if delay is None and not store.durable:  # nothing to record: the hot path
            self._accept(msg, timeout)
            return no_wait
        if self._in.closed:  # refuse before writing anything
            raise QueueClosedError(self.name)
        msg, wait = store.append(msg, delay)
        try:
            if delay is None:
                self._accept(msg, timeout)
            else:
                self._post(msg, time.monotonic() + delay, accepting=True)
        except BaseException:
            store.cancel(msg)
            raise
        return wait

    def retry(self, msg: Msg, delay: float) -> None:
        """Hand ``msg`` back, to be handed out again as its next attempt after ``delay`` s.

        For a consumer of a ``settle=True`` queue, between its call and ``finish()``;
        also while the queue is closing, which waits for the retry.
        """
        if not self._settle:
            raise StateError(f"queue {self.name!r}: retry() needs Queue(settle=True)")
        again = Msg(msg.id, msg.data, msg.queue, msg.attempt + 1, msg.redelivered)
        self._store.schedule(again, delay)
        if not self._store.remote:  # a remote store hands it out again itself
            self._post(again, time.monotonic() + delay, accepting=False)

    def finish(self, slot: int = 0) -> None:
        """Tell a ``settle=True`` queue that a consumer call is over (acked or retried).

        ``slot`` (below the ``slots`` given) is the calling consumer's own: one thread
        or task per slot, so counting takes no lock.
        """
        self._finished[slot] += 1
        if self._draining:
            with self._signal:
                self._later.append(_WAKE)
                self._signal.notify()

    def abandon(self) -> None:
        """The consumers are gone (their loop ended): stop waiting for calls in flight."""
        with self._signal:
            self._settle = False
            self._later.append(_WAKE)
            self._signal.notify()

    def _post(self, msg: Msg, due: float, *, accepting: bool) -> None:
        """Give the forwarder a message to hand out at ``due`` (time.monotonic)."""
        with self._signal:
            if accepting and self._in.closed:
                raise QueueClosedError(self.name)
            self._later.append((msg, due))
            self._signal.notify()

    def deliver(self, msg: Msg) -> None:
        """Accept a message a remote store's intake read; blocks while ``in`` is full.

        Raises:
            QueueClosedError: the queue is closed; the message stays with the store.
        """
        self._accept(msg, None)

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

    def receive(self, batch: int = 1) -> Generator[Msg, None, None]:
        """Yield messages from ``out`` until it is closed and drained, as ``dequeue()``.

        With ``batch`` > 1 it takes up to that many waiting messages per lock acquisition:
        only for a queue's sole consumer, since the messages it holds wait behind its
        current call (a second consumer could have taken them). They still count in
        ``backlog``, and if the generator is closed early they go back to the front of
        ``out``, where they were.

        Raises:
            ValueError: ``batch`` is below 1.
            StateError: the queue delivers to an outlet, not to ``out``.
        """
        if batch < 1:
            raise ValueError(
                f"queue {self.name!r}: receive batch must be at least 1, got {batch!r}"
            )
        out = self.dequeue()
        return iter(out) if batch == 1 else self._receive_batches(out, batch)

    def _receive_batches(self, out: Channel[Msg], batch: int) -> Generator[Msg, None, None]:
        held: deque[Msg] = deque()
        self._held[id(held)] = held
        try:
            while True:
                try:
                    out.recv_many(held, batch)
                except ChannelClosedError:
                    return
                while held:
                    yield held.popleft()
        finally:
            if held:  # closed early (a break, an error in the caller): nothing is dropped
                out.give_back(held)
            del self._held[id(held)]

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
        """Messages held by the forwarder, ready and not yet in ``out`` (approximate)."""
        return len(self._pending) + len(self._due)

    @property
    def delayed(self) -> int:
        """Messages waiting for their due time (approximate)."""
        return len(self._schedule) + sum(1 for item in tuple(self._later) if item is not _WAKE)

    @property
    def waiting(self) -> int:
        """Messages accepted, due and not yet received from ``out`` (approximate)."""
        out = len(self._out) if self._outlet is None else len(self._outlet)
        held = sum(len(h) for h in tuple(self._held.values()))
        return len(self._in) + self.pending + out + held

    @property
    def backlog(self) -> int:
        """Messages accepted and not yet received from ``out``: waiting or delayed."""
        return self.waiting + self.delayed

    def _run(self) -> None:
        """Forwarder loop: the only code that touches ``_pending`` and ``_schedule`` after start.

        Emulates Go's select over "receive from in", "send to out" and a timer: take
        every message ``in`` holds and every message posted for later, hand out what
        ``out`` has room for (due messages first), then sleep on the one Condition that
        all of them signal, until the next due time. While it sleeps with nothing
        pending, publishers hand messages straight to ``out``. The receive side drops
        out once ``in`` is closed and drained; the loop ends when nothing is pending
        or scheduled either and, with ``settle``, no consumer call is in flight.
        """
        src: Channel[Msg] | None = self._in
        dst, pending, schedule, due = self._out, self._pending, self._schedule, self._due
        out: Channel[Msg] | Outlet = dst if self._outlet is None else self._outlet
        hand_off = self._outlet is None and self._store.direct_hand_off
        try:
            while True:
                if src is not None:
                    try:
                        pending.extend(src.recv_all())
                    except ChannelClosedError:
                        src = None
                        self._draining = self._settle
                if self._later:
                    self._take_later()
                if schedule:
                    due.extend(schedule.pop_due(time.monotonic()))
                if due:
                    self._handed += out.send_from(due)
                elif pending.refill():
                    self._handed += out.send_from(pending.ready)
                if src is None and not due and not pending.refill() and self._finished_all():
                    break
                wait_ready(
                    src,
                    dst,
                    want_room=bool(due) or len(pending) > 0,
                    timeout=_sleep_time(schedule),
                    hand_off=hand_off,
                    linger=self._later,
                )
        finally:
            out.close()  # even on a bug: workers must not wait forever

    def _take_later(self) -> None:
        """Move what other threads posted into the schedule."""
        with self._signal:
            later, self._later[:] = list(self._later), []
        for item in later:
            if item is not _WAKE:
                self._schedule.push(*item)

    def _finished_all(self) -> bool:
        """Nothing scheduled or posted, and every message handed out is settled."""
        # Read the count first: a consumer posts its retry to _later before it finishes,
        # so a finish counted here had its retry posted before _later is looked at.
        finished = sum(self._finished)
        if self._schedule or self._later:
            return False
        handed = self._handed + self._in.handed_off
        return not self._settle or finished >= handed

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<Queue {self.name!r} pending={self.pending}{state}>"


def _sleep_time(schedule: Schedule) -> float | None:
    """How long the forwarder may sleep: until the next due time, at most _MAX_SLEEP."""
    wait = schedule.wait_time(time.monotonic())
    return None if wait is None else min(wait, _MAX_SLEEP)
