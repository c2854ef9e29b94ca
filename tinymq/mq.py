"""MQ: named queues, each with its forwarder and a pool of worker threads.

Publishers call ``publish`` from any thread; per queue, a lock issues ids in the order
messages enter the queue. ``stop()`` (or cancelling the Context given to ``start``)
closes every queue; workers consume what was accepted and exit when ``out`` closes.

Interpreter exit: all threads are daemons, and an ``atexit`` handler stops every MQ
still running, draining for up to ``exit_timeout`` seconds and logging at ERROR what
it could not consume. The process therefore never hangs on a stuck consumer, and
never drops accepted messages without saying so.
"""

from __future__ import annotations

import atexit
import enum
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tinymq.channel import check_timeout
from tinymq.context import Context
from tinymq.errors import QueueExistsError, QueueNotFoundError, StateError
from tinymq.message import Msg
from tinymq.queue import Queue

IN_SIZE = 1024  # room in `in` before a publisher waits for the forwarder
OUT_SIZE = 1024  # wide `out`: hand-offs to workers go in batches, not one by one


Consumer = Callable[[Context, Msg], None]  # raising marks the message failed


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(eq=False)
class _Registration:
    name: str
    consumer: Consumer
    concurrency: int
    queue: Queue
    seq_lock: threading.Lock = field(default_factory=threading.Lock)  # guards next_id
    next_id: int = 0
    # busy[i] is the id of the message worker i is consuming, or None; one writer each.
    busy: list[int | None] = field(default_factory=list)
    workers: list[threading.Thread] = field(default_factory=list)


class MQ:
    """An embedded message queue: named queues with consumer threads.

    Thread-safety: every method may be called from any thread; ``stop()`` only not
    from a consumer of this MQ (it would wait on itself; cancel the context instead).
    """

    def __init__(
        self, logger: logging.Logger | None = None, *, exit_timeout: float | None = 30.0
    ) -> None:
        check_timeout(exit_timeout, "exit_timeout")
        self._log = logger if logger is not None else logging.getLogger("tinymq")
        self._exit_timeout = exit_timeout
        self._lock = threading.Lock()  # guards _state and writes to _queues
        self._state = _State.NEW
        self._queues: dict[str, _Registration] = {}
        self._forget_ctx: Callable[[], None] = lambda: None

    # -- registration ---------------------------------------------------------

    def register_queue(self, name: str, consumer: Consumer, concurrency: int = 1) -> None:
        """Register queue ``name`` whose messages go to ``consumer`` on ``concurrency`` threads.

        Raises:
            TypeError, ValueError: a bad name, consumer or concurrency.
            QueueExistsError: the name is taken.
            StateError: the MQ has already been started.
        """
        _check_name(name)
        if not callable(consumer):
            raise TypeError(f"consumer for queue {name!r} must be callable, got {consumer!r}")
        if inspect.iscoroutinefunction(consumer):
            raise TypeError(f"consumer for queue {name!r} is async; tinymq calls it in a thread")
        _check_concurrency(name, concurrency)
        with self._lock:
            if self._state is not _State.NEW:
                raise StateError(f"cannot register queue {name!r}: the MQ is {self._state.value}")
            if name in self._queues:
                raise QueueExistsError(name)
            queue = Queue(IN_SIZE, OUT_SIZE, name=name)
            self._queues[name] = _Registration(name, consumer, concurrency, queue)

    def consumer(self, name: str, concurrency: int = 1) -> Callable[[Consumer], Consumer]:
        """Decorator form of ``register_queue``; returns the function unchanged."""
        _check_name(name)
        _check_concurrency(name, concurrency)

        def register(fn: Consumer) -> Consumer:
            self.register_queue(name, fn, concurrency)
            return fn

        return register

    @property
    def queue_names(self) -> list[str]:
        """Registered queue names, in registration order."""
        return list(self._queues)

    # -- publishing -----------------------------------------------------------

    def publish(self, name: str, data: Any) -> int:
        """Accept ``data`` on queue ``name`` and return its id; callable before ``start()``.

        Blocks only while the queue's ``in`` channel is full, which its forwarder empties.

        Raises:
            QueueNotFoundError: no such queue.
            QueueClosedError: the MQ is stopping or stopped.
        """
        reg = self._queues.get(name)
        if reg is None:
            raise QueueNotFoundError(name)
        with reg.seq_lock:
            msg_id = reg.next_id
            reg.queue.enqueue(Msg(msg_id, data, name))
            reg.next_id = msg_id + 1
        return msg_id

    # -- lifecycle ------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start()`` and the beginning of a shutdown."""
        return self._state is _State.RUNNING

    def start(self, ctx: Context | None = None) -> None:
        """Start every queue's forwarder and workers; cancelling ``ctx`` stops the MQ.

        Consumers receive ``ctx`` (a fresh Context if None).

        Raises:
            StateError: already started, or stopped (an MQ runs once).
        """
        if ctx is not None and not isinstance(ctx, Context):
            raise TypeError(f"ctx must be a tinymq.Context, got {type(ctx).__name__}")
        ctx = ctx if ctx is not None else Context()
        with self._lock:
            if self._state is not _State.NEW:
                raise StateError(f"cannot start: the MQ is {self._state.value}")
            for reg in self._queues.values():
                self._start_queue(reg, ctx)
            self._state = _State.RUNNING
            _running.add(self)
        self._forget_ctx = ctx.on_cancel(self._close_queues)
        if self._state is _State.STOPPED:  # a stop() in between has finished
            self._forget_ctx()

    def _start_queue(self, reg: _Registration, ctx: Context) -> None:
        reg.queue.start()
        reg.busy = [None] * reg.concurrency
        for i in range(reg.concurrency):
            worker = threading.Thread(
                target=self._work,
                args=(reg, i, ctx),
                name=f"tinymq:{reg.name}:worker-{i}",
                daemon=True,
            )
            reg.workers.append(worker)
            worker.start()
        self._log.info("started queue %r with concurrency %d", reg.name, reg.concurrency)

    def _work(self, reg: _Registration, worker_id: int, ctx: Context) -> None:
        """Worker loop: one consumer call at a time until ``out`` is closed and drained."""
        consumer, busy, log = reg.consumer, reg.busy, self._log
        for msg in reg.queue.dequeue():
            busy[worker_id] = msg.id
            try:
                consumer(ctx, msg)
            except BaseException:  # a consumer failure never ends the worker
                log.exception(
                    "queue %r worker %d: consumer failed on message %d",
                    reg.name,
                    worker_id,
                    msg.id,
                )
            busy[worker_id] = None

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, consume everything accepted, and join every thread.

        Safe to call twice, and after the context was cancelled; a second call after a
        timeout waits again.

        Raises:
            TimeoutError: the drain is not done after ``timeout`` seconds.
            StateError: called from one of this MQ's consumers.
        """
        check_timeout(timeout)
        if threading.current_thread() in self._worker_threads():
            raise StateError(
                "stop() called from a consumer would wait on itself; cancel the context"
            )
        self._close_queues()
        deadline = None if timeout is None else time.monotonic() + timeout
        for reg in self._queues.values():
            if not _join(reg, deadline):
                raise TimeoutError(f"stop timed out after {timeout} s: {self._unconsumed()}")
        with self._lock:
            self._state = _State.STOPPED
            _running.discard(self)
        self._forget_ctx()

    def _close_queues(self) -> None:
        """Begin the graceful shutdown: no queue accepts messages from now on."""
        with self._lock:
            never_started = self._state is _State.NEW
            if self._state is _State.RUNNING:
                self._state = _State.STOPPING
            elif never_started:
                self._state = _State.STOPPED
            for reg in self._queues.values():
                reg.queue.close()
        if never_started:
            self._warn_never_started()

    def _warn_never_started(self) -> None:
        """Log what was accepted but will never be consumed; queues are closed by now."""
        lost = {reg.name: reg.queue.backlog for reg in self._queues.values() if reg.queue.backlog}
        if lost:
            self._log.error("MQ stopped before it was started: never consumed %s", lost)

    def _worker_threads(self) -> list[threading.Thread]:
        return [w for reg in self._queues.values() for w in reg.workers]

    def _unconsumed(self) -> str:
        """Describe, per queue, what is accepted and not yet consumed."""
        parts = []
        for reg in self._queues.values():
            waiting = reg.queue.backlog
            busy = sum(1 for b in reg.busy if b is not None)
            if waiting or busy:
                parts.append(f"queue {reg.name!r}: {waiting} waiting, {busy} in consumer calls")
        return "; ".join(parts) or "consumers still running"

    def _stop_at_exit(self) -> None:
        try:
            self.stop(self._exit_timeout)
        except TimeoutError:
            self._log.error(
                "interpreter exit: MQ not drained, messages lost: %s", self._unconsumed()
            )

    def __enter__(self) -> MQ:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<MQ {self._state.value} queues={self.queue_names}>"


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"queue name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("queue name must not be empty")


def _check_concurrency(name: str, concurrency: object) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise TypeError(f"concurrency of queue {name!r} must be an int, got {concurrency!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency of queue {name!r} must be >= 1, got {concurrency}")


def _join(reg: _Registration, deadline: float | None) -> bool:
    """Join ``reg``'s forwarder and workers until ``deadline``; True if all ended."""
    if reg.workers and not reg.queue.wait(_remaining(deadline)):
        return False
    for thread in reg.workers:
        thread.join(_remaining(deadline))
        if thread.is_alive():
            return False
    return True


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


_running: weakref.WeakSet[MQ] = weakref.WeakSet()


@atexit.register
def _stop_running_at_exit() -> None:
    for mq in list(_running):
        mq._stop_at_exit()
