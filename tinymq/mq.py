"""MQ: named queues, each with its forwarder and a pool of worker threads or tasks.

Publishers call ``publish`` from any thread (``apublish`` from a coroutine); per queue,
a lock issues ids in the order messages enter the queue. Async consumers run as tasks
on the loop of ``astart()``, or on a loop thread the MQ owns under ``start()``.
``stop()`` (or cancelling the Context given to ``start``) closes every queue; workers
consume what was accepted and exit when the queue's end is reached.

Durable queues (``register_queue(..., durable=True)`` on an ``MQ(data_dir=...)``) keep
their messages in a log under ``data_dir`` (see durable.py): opening one recovers
what an earlier run accepted and did not finish, which is delivered again first.

Interpreter exit: all threads are daemons, and an ``atexit`` handler stops every MQ
still running, draining for up to ``exit_timeout`` seconds and logging at ERROR what
it could not consume. The process therefore never hangs on a stuck consumer, and
never drops accepted messages without saying so.
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from tinymq.aio import AsyncConsumer, AsyncWorkers, is_async_consumer
from tinymq.context import Context
from tinymq.datadir import DEAD_DIR, DataDir
from tinymq.deadletter import DeadLetter, DeadLetters, DurableDeadLetters, MemoryDeadLetters
from tinymq.delivery import Delivery, OnDead, OnFailure
from tinymq.durable import DurableOptions, DurableStore
from tinymq.errors import QueueClosedError, QueueExistsError, QueueNotFoundError, StateError
from tinymq.gate import Gate
from tinymq.loops import AsyncSide, running_loop
from tinymq.message import Msg
from tinymq.queue import Queue
from tinymq.recovery import RecoveryReport
from tinymq.retry import ONE_ATTEMPT, Retry, check_seconds
from tinymq.serializers import JSON, Serializer
from tinymq.stats import QueueStats, WorkerStats, summarise
from tinymq.store import MemoryStore, RemoteStore, Store, Wait
from tinymq.timeouts import check_timeout, deadline_after, remaining


class Backend(Protocol):
    """Where an MQ keeps its queues instead of this process (``RedisBackend``)."""

    def open(self, name: str, log: logging.Logger) -> tuple[Store, DeadLetters]:
        """The store and dead letters of queue ``name``."""

    def close(self) -> None:
        """Release connections. Idempotent."""


IN_SIZE = 1024  # room in `in` before a publisher waits for the forwarder
OUT_SIZE = 1024  # wide `out`: hand-offs to workers go in batches, not one by one
SOLE_CONSUMER_BATCH = 64  # messages a queue's only worker takes from `out` at a time


Consumer = Callable[[Context, Msg], None]  # raising marks the message failed
AnyConsumer = Consumer | AsyncConsumer


C = TypeVar("C", bound=Callable[..., object])


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(eq=False)
class _Registration:
    name: str
    consumer: Callable[[Context, Msg], object]
    concurrency: int
    queue: Queue
    store: Store
    delivery: Delivery
    gate: Gate | None  # bounds the pending messages (max_pending); None: unbounded
    # busy[i] is the id of the message worker (or task) i consumes, or None; one writer each.
    busy: list[int | None]
    stats: list[WorkerStats]  # stats[i] is written by worker (or task) i only
    tasks: AsyncWorkers | None  # for an async consumer; else worker threads
    seq_lock: threading.Lock = field(default_factory=threading.Lock)  # guards next_id
    # Held by requeue_dead and purge_dead: a letter is published or purged once.
    dead_lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 0
    first_id: int = 0  # the first id this run issued
    workers: list[threading.Thread] = field(default_factory=list)


class MQ:
    """An embedded message queue: named queues with consumer threads or asyncio tasks.

    Thread-safety: every method may be called from any thread; ``stop()`` and
    ``astop()`` not from a consumer of this MQ (it would wait on itself; cancel the
    context instead), and ``stop()`` not on the MQ's own event loop.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        exit_timeout: float | None = 30.0,
        data_dir: str | os.PathLike[str] | None = None,
        fsync: str = "always",
        fsync_interval: float = 0.2,
        segment_size: int = 16 << 20,
        on_corruption: str = "skip",
        serializer: Serializer = JSON,
        backend: Backend | None = None,
    ) -> None:
        """Create an MQ; with ``data_dir``, lock that directory for durable queues.

        Args:
            logger: where failures are logged (default: the ``tinymq`` logger).
            exit_timeout: how long interpreter exit drains a running MQ.
            data_dir: directory of the durable queues' logs; held until ``stop()``.
            fsync: "always" (publish returns once its record is on stable storage),
                "interval" (synced every ``fsync_interval`` seconds) or "never".
            segment_size: bytes per log segment file.
            on_corruption: "skip" damaged records (logged, reported) or "fail" on open.
            serializer: how durable message data is stored; JSON unless told otherwise.
            backend: keep every queue there instead (``RedisBackend``), shared with
                the other MQs on it; then ``data_dir`` is not used.

        Raises:
            DataDirLockedError: another MQ, here or in another process, holds ``data_dir``.
            ValueError, TypeError: a bad option.
        """
        check_timeout(exit_timeout, "exit_timeout")
        self._durable = DurableOptions(
            fsync=fsync,
            fsync_interval=fsync_interval,
            segment_size=segment_size,
            on_corruption=on_corruption,
            serializer=serializer,
        )
        if backend is not None and not callable(getattr(backend, "open", None)):
            raise TypeError(
                f"backend must be a tinymq backend such as RedisBackend, got {backend!r}"
            )
        if backend is not None and data_dir is not None:
            raise ValueError("give data_dir or backend, not both")
        self._backend = backend
        self._data_dir = None if data_dir is None else DataDir(data_dir)
        self._log = logger if logger is not None else logging.getLogger("tinymq")
        self._exit_timeout = exit_timeout
        self._lock = threading.Lock()  # guards _state and writes to _queues
        self._state = _State.NEW
        self._queues: dict[str, _Registration] = {}
        self._forget_ctx: Callable[[], None] = lambda: None
        self._async = AsyncSide(self._log)  # where async consumers run

    # -- registration ---------------------------------------------------------

    def register_queue(
        self,
        name: str,
        consumer: AnyConsumer | None,
        concurrency: int = 1,
        *,
        durable: bool = False,
        retry: Retry | None = None,
        max_pending: int | None = None,
        on_failure: OnFailure | None = None,
        on_dead: OnDead | None = None,
    ) -> None:
        """Register queue ``name`` whose messages go to ``consumer``.

        A plain function runs on ``concurrency`` threads; an ``async def`` consumer runs
        as ``concurrency`` asyncio tasks. A ``durable`` queue opens its log under
        ``data_dir`` here, and recovers what earlier runs left unfinished.

        Args:
            retry: how failed calls are tried again (default: one attempt, no retry).
                A message that fails its last attempt, or whose consumer raises
                ``Reject``, becomes a dead letter (``dead_letters(name)``).
            max_pending: bound on the messages accepted and not yet taken by a
                consumer; ``publish`` waits for room (default: unbounded).
            on_failure: ``on_failure(msg, exc)`` after each failed call, in the worker.
            on_dead: ``on_dead(dead_letter)`` when a message becomes a dead letter.
                Hook errors are logged and go no further.

        Raises:
            TypeError, ValueError: a bad argument; ``durable`` without a ``data_dir``.
            QueueExistsError: the name is taken.
            StateError: the MQ has already been started.
            CorruptionError: the log is damaged and ``on_corruption="fail"``.
            StorageError: the log cannot be read or written.
        """
        if consumer is None and self._backend is not None:
            consumer = _publish_only  # publishes go to the backend; others consume
        _check_registration(name, concurrency, retry, max_pending, on_failure, on_dead)
        if not callable(consumer):
            raise TypeError(f"consumer for queue {name!r} must be callable, got {consumer!r}")
        if durable and self._data_dir is None and self._backend is None:
            raise ValueError(f"queue {name!r}: durable=True needs MQ(data_dir=...)")
        if max_pending is not None and self._backend is not None:
            raise ValueError(f"queue {name!r}: max_pending is not supported with {self._backend!r}")
        with self._lock:
            if self._state is not _State.NEW:
                raise StateError(f"cannot register queue {name!r}: the MQ is {self._state.value}")
            if name in self._queues:
                raise QueueExistsError(name)
            store, dead = self._open_stores(name, durable)
            busy: list[int | None] = [None] * concurrency
            stats = [WorkerStats() for _ in range(concurrency)]
            tasks = None
            if is_async_consumer(consumer):
                tasks = AsyncWorkers(
                    name,
                    cast(AsyncConsumer, consumer),
                    concurrency,
                    busy=busy,
                    log=self._log,
                    on_gone=functools.partial(self._tasks_gone, name),
                )
                self._async.groups.append(tasks)
            outlet = None if tasks is None else tasks.outlet
            queue = Queue(
                IN_SIZE,
                OUT_SIZE,
                name=name,
                outlet=outlet,
                store=store,
                settle=True,
                slots=concurrency,
            )
            delivery = Delivery(
                queue,
                retry or ONE_ATTEMPT,
                dead or MemoryDeadLetters(),
                self._log,
                on_failure=on_failure,
                on_dead=on_dead,
            )
            gate = None if max_pending is None else Gate(name, max_pending)
            reg = _Registration(
                name, consumer, concurrency, queue, store, delivery, gate, busy, stats, tasks
            )
            reg.next_id = reg.first_id = store.next_id
            if tasks is not None:
                tasks.bind(
                    functools.partial(_take, reg),
                    delivery.settle,
                    stats,
                    functools.partial(_cut, reg),
                )
            self._queues[name] = reg

    def _open_stores(self, name: str, durable: bool) -> tuple[Store, DeadLetters | None]:
        """Open queue ``name``'s store and dead letters: backend, log, or memory."""
        if self._backend is not None:
            return self._backend.open(name, self._log)
        if not durable:
            return MemoryStore(), None
        assert self._data_dir is not None
        directory = self._data_dir.queue_dir(name)
        store = DurableStore(directory, name, self._durable, self._log)
        try:
            dead = DurableDeadLetters(
                os.path.join(directory, DEAD_DIR), name, self._durable, self._log
            )
        except BaseException:
            store.close()
            raise
        store.next_id = max(store.next_id, dead.next_message_id())  # a new id never names a letter
        return store, dead

    def consumer(
        self,
        name: str,
        concurrency: int = 1,
        *,
        durable: bool = False,
        retry: Retry | None = None,
        max_pending: int | None = None,
        on_failure: OnFailure | None = None,
        on_dead: OnDead | None = None,
    ) -> Callable[[C], C]:
        """Decorator form of ``register_queue``; returns the function unchanged."""
        _check_registration(name, concurrency, retry, max_pending, on_failure, on_dead)

        def register(fn: C) -> C:
            self.register_queue(
                name,
                cast(AnyConsumer, fn),
                concurrency,
                durable=durable,
                retry=retry,
                max_pending=max_pending,
                on_failure=on_failure,
                on_dead=on_dead,
            )
            return fn

        return register

    def recovery_report(self, name: str) -> RecoveryReport | None:
        """What opening durable queue ``name`` found (None for an in-memory queue).

        Raises:
            QueueNotFoundError: no such queue.
        """
        reg = self._queues.get(name)
        if reg is None:
            raise QueueNotFoundError(name)
        return reg.store.report if isinstance(reg.store, DurableStore) else None

    @property
    def queue_names(self) -> list[str]:
        """Registered queue names, in registration order."""
        return list(self._queues)

    # -- publishing -----------------------------------------------------------

    def publish(
        self, name: str, data: Any, *, delay: float | None = None, timeout: float | None = None
    ) -> int:
        """Accept ``data`` on queue ``name`` and return its id; callable before ``start()``.

        With ``delay``, the message is delivered no earlier than ``delay`` seconds from
        now (delayed messages come out in order of due time, ties in id order). Blocks
        only while a bounded queue is full (up to ``timeout`` seconds; None waits, 0
        never does) or its ``in`` channel is full, which its forwarder empties, and, for
        a durable queue with fsync="always", until the record is synced.

        Raises:
            QueueNotFoundError: no such queue.
            QueueClosedError: the MQ is stopping or stopped (also while waiting for room).
            QueueFullError: a bounded queue stayed full for ``timeout`` seconds.
            ValueError: a negative ``delay`` or ``timeout``.
            TypeError: a durable queue's serializer cannot encode ``data``; nothing written.
            StorageError: a durable queue could not store it (StorageFullError: no room).
                The message was not acknowledged; if the error came from the sync, it
                may still be delivered.
        """
        reg = self._queues.get(name)
        if reg is None:
            raise QueueNotFoundError(name)
        if delay is not None or timeout is not None:
            _check_publish(delay, timeout)
        if reg.tasks is not None:  # its tasks' loop may be closed: then it takes nothing
            self._async.give_up_on_a_closed_loop()
        gate = reg.gate
        if gate is None:  # the common case, kept short: it is the cost of a publish
            with reg.seq_lock:
                msg_id, wait = _enqueue(reg, data, delay=delay)
            wait()  # outside the lock: concurrent publishers share one sync
            return msg_id
        gate.enter(timeout)
        try:
            with reg.seq_lock:
                msg_id, wait = _enqueue(reg, data, delay=delay)
        except BaseException:
            gate.leave()
            raise
        wait()
        return msg_id

    async def apublish(
        self, name: str, data: Any, *, delay: float | None = None, timeout: float | None = None
    ) -> int:
        """Like ``publish``, but never blocks the event loop.

        The common case takes no thread hop; when ``in`` is full, another publisher
        holds the queue's id lock, a bounded queue is full, or the queue is durable (its
        write may wait for the disk), the blocking publish runs in the loop's executor.
        """
        reg = self._queues.get(name)
        if reg is None:
            raise QueueNotFoundError(name)
        _check_publish(delay, timeout)
        if reg.tasks is not None:
            self._async.give_up_on_a_closed_loop()
        if not reg.store.durable and (reg.gate is None or reg.gate.try_enter()):
            msg_id = None
            try:
                msg_id = _publish_nowait(reg, data, delay)
            finally:
                if msg_id is None and reg.gate is not None:
                    reg.gate.leave()  # not accepted here: give the place back
            if msg_id is not None:
                return msg_id
        call = functools.partial(self.publish, name, data, delay=delay, timeout=timeout)
        return await asyncio.to_thread(call)

    # -- dead letters and stats ---------------------------------------------

    def dead_letters(self, name: str) -> list[DeadLetter]:
        """Queue ``name``'s dead letters, oldest first.

        Raises:
            QueueNotFoundError: no such queue.
        """
        return self._registration(name).delivery.dead.all()

    def requeue_dead(self, name: str, ids: Iterable[int] | None = None) -> int:
        """Publish dead letters of ``name`` again (those of message ``ids``, or all).

        Each is published as a new message (a new id, attempt 1) and then leaves the
        dead letters; concurrent calls (and ``purge_dead``) take turns, so a letter is
        requeued once. Returns how many were requeued.

        Raises:
            QueueNotFoundError: no such queue.
            QueueClosedError: the MQ is stopping or stopped; the letters requeued before
                that are gone from the dead letters, the others stay.
        """
        reg = self._registration(name)
        wanted = _check_ids(ids)
        with reg.dead_lock:
            letters = [d for d in reg.delivery.dead.all() if wanted is None or d.id in wanted]
            for letter in letters:
                self.publish(name, letter.data)
                reg.delivery.dead.remove({letter.id})
            return len(letters)

    def purge_dead(self, name: str, ids: Iterable[int] | None = None) -> int:
        """Drop dead letters of ``name`` (those of message ``ids``, or all); return how many.

        Raises:
            QueueNotFoundError: no such queue.
            StateError: the queue is durable and the MQ has stopped: its dead letters'
                log is closed, so a purge could not last (do it in the next run).
        """
        reg = self._registration(name)
        wanted = _check_ids(ids)
        with reg.dead_lock:
            return len(reg.delivery.dead.remove(wanted))

    def stats(self) -> dict[str, QueueStats]:
        """A snapshot of every queue's counts and recent latency; cheap, any thread."""
        return {
            reg.name: summarise(
                reg.stats,
                published=reg.next_id - reg.first_id,
                pending=reg.queue.waiting,
                delayed=reg.queue.delayed,
                in_flight=sum(1 for b in tuple(reg.busy) if b is not None),
            )
            for reg in list(self._queues.values())
        }

    def _registration(self, name: str) -> _Registration:
        reg = self._queues.get(name)
        if reg is None:
            raise QueueNotFoundError(name)
        return reg

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
        self._start(_check_ctx(ctx), self._async.start_owned)

    async def astart(self, ctx: Context | None = None) -> None:
        """Like ``start``, but async consumers run on the running loop, which must outlive the MQ.

        Raises:
            StateError: already started, or stopped (an MQ runs once).
        """
        ctx = _check_ctx(ctx)
        asyncio.get_running_loop()  # raises outside a coroutine
        self._start(ctx, self._async.start_here)

    def _start(self, ctx: Context, start_tasks: Callable[[Context], None]) -> None:
        """Start forwarders and worker threads, then the async consumers with ``start_tasks``."""
        with self._lock:
            if self._state is not _State.NEW:
                raise StateError(f"cannot start: the MQ is {self._state.value}")
            for reg in self._queues.values():
                self._start_queue(reg, ctx)
            start_tasks(ctx)
            self._state = _State.RUNNING
            _running.add(self)
        self._forget_ctx = ctx.on_cancel(self._close_queues)
        if self._state is _State.STOPPED:  # a stop() in between has finished
            self._forget_ctx()

    def _start_queue(self, reg: _Registration, ctx: Context) -> None:
        if reg.consumer is _publish_only:
            return
        reg.queue.start()
        if reg.store.remote:
            cast(RemoteStore, reg.store).start_intake(reg.queue.deliver)
        if reg.tasks is not None:
            self._log.info("started queue %r with %d tasks", reg.name, reg.concurrency)
            return
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
        """Worker loop: one consumer call at a time until ``out`` is closed and drained.

        The success path is inlined (ack, count, finish): it is the per-message cost. A
        queue's sole worker takes the waiting messages in batches: it would run them in
        that order anyway, and one lock hand-over per batch instead of per message
        keeps the publisher and the worker from trading the lock (and the GIL) for each.
        """
        consumer, busy, log, settle = reg.consumer, reg.busy, self._log, reg.delivery.settle
        stats, gate, clock = reg.stats[worker_id], reg.gate, time.perf_counter
        ack = reg.queue.ack if reg.store.durable else None
        finish, latencies = reg.queue.finish, reg.stats[worker_id].latencies.append
        batch = SOLE_CONSUMER_BATCH if reg.concurrency == 1 else 1
        for msg in reg.queue.receive(batch):
            if gate is not None and msg.attempt == 1 and not msg.redelivered:
                gate.leave()  # its first delivery frees a place in a bounded queue
            busy[worker_id] = msg.id
            stats.delivered += 1  # as the call starts: delivered = settled + in flight
            started = clock()
            try:
                consumer(ctx, msg)
            except BaseException as exc:  # a consumer failure never ends the worker
                log.exception(
                    "queue %r worker %d: consumer failed on message %d",
                    reg.name,
                    worker_id,
                    msg.id,
                )
                latencies(clock() - started)
                settle(msg, exc, stats, worker_id)  # retry or dead letter
            else:
                latencies(clock() - started)
                stats.succeeded += 1
                if ack is not None:
                    try:
                        ack(msg)
                    except Exception:  # as in settle(): the worker goes on
                        log.exception("queue %r: cannot acknowledge message %d", reg.name, msg.id)
                finish(worker_id)
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
        if self._state is _State.STOPPED:
            return
        self._check_may_wait("stop()")
        self._async.check_sync_stop()
        self._close_queues()
        self._async.give_up_on_a_closed_loop()
        deadline = deadline_after(timeout)
        if not (self._join_threads(deadline) and self._async.join(deadline)):
            raise TimeoutError(f"stop timed out after {timeout} s: {self._unconsumed()}")
        self._set_stopped()

    async def astop(self, timeout: float | None = None) -> None:
        """Like ``stop``, awaited: the event loop runs on while the MQ drains.

        Raises:
            TimeoutError: the drain is not done after ``timeout`` seconds; it goes on.
            StateError: called from a consumer, or not on the loop that ``astart()`` used.
        """
        check_timeout(timeout)
        if self._state is _State.STOPPED:
            return
        self._check_may_wait("astop()")
        if self._async.astop_in_thread(asyncio.get_running_loop()):
            await asyncio.to_thread(self.stop, timeout)  # no consumer task on this loop
            return
        self._close_queues()
        deadline = deadline_after(timeout)
        # The loop keeps running the consumers while the threads are joined.
        done = await asyncio.to_thread(self._join_threads, deadline)
        if not (done and await self._async.ajoin(deadline)):
            raise TimeoutError(f"astop timed out after {timeout} s: {self._unconsumed()}")
        self._set_stopped()

    def _check_may_wait(self, call: str) -> None:
        """Refuse a stop from a consumer: it would wait on itself."""
        in_task = running_loop() is not None and self._async.runs(asyncio.current_task())
        if in_task or threading.current_thread() in self._worker_threads():
            raise StateError(
                f"{call} called from a consumer would wait on itself; cancel the context"
            )

    def _join_threads(self, deadline: float | None) -> bool:
        """Join every forwarder and worker thread until ``deadline``; True if all ended."""
        return all(_join(reg, deadline) for reg in self._queues.values())

    def _tasks_gone(self, name: str) -> None:
        """The tasks of queue ``name`` were all cancelled, or their loop was closed under
        them: stop accepting."""
        reg = self._queues[name]
        _close(reg)
        reg.queue.abandon()
        self._log.error(
            "queue %r: its consumer tasks were cancelled or their event loop closed; "
            "the queue is closed",
            name,
        )

    def _set_stopped(self) -> None:
        with self._lock:
            self._state = _State.STOPPED
            _running.discard(self)
        self._forget_ctx()
        self._close_stores()

    def _close_stores(self) -> None:
        """Sync and close every durable log, then free the data directory."""
        for reg in self._queues.values():
            reg.store.close()
            reg.delivery.dead.close()
        if self._backend is not None:
            self._backend.close()
        if self._data_dir is not None:
            self._data_dir.close()

    def _close_queues(self) -> None:
        """Begin the graceful shutdown: no queue accepts messages from now on."""
        for reg in list(self._queues.values()):
            if reg.store.remote:  # read no more: what is left stays with the backend
                cast(RemoteStore, reg.store).stop_intake()
        with self._lock:
            never_started = self._state is _State.NEW
            if self._state is _State.RUNNING:
                self._state = _State.STOPPING
            elif never_started:
                self._state = _State.STOPPED
            for reg in self._queues.values():
                _close(reg)
        if never_started:
            self._warn_never_started()
            self._close_stores()

    def _warn_never_started(self) -> None:
        """Log what was accepted but not consumed; queues are closed by now."""
        waiting = {
            reg.name: reg.queue.backlog for reg in self._queues.values() if reg.queue.backlog
        }
        kept = {name: n for name, n in waiting.items() if self._queues[name].store.durable}
        lost = {name: n for name, n in waiting.items() if name not in kept}
        if lost:
            self._log.error("MQ stopped before it was started: never consumed %s", lost)
        if kept:
            self._log.info("MQ stopped before it was started: kept for the next run %s", kept)

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
        except (TimeoutError, StateError):
            self._log.error(
                "interpreter exit: MQ not drained, messages lost: %s", self._unconsumed()
            )

    def __enter__(self) -> MQ:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> MQ:
        await self.astart()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.astop()

    def __repr__(self) -> str:
        return f"<MQ {self._state.value} queues={self.queue_names}>"


def _publish_only(ctx: Context, msg: Msg) -> None:
    """The consumer of a queue registered without one: this MQ only publishes to it."""
    raise StateError(f"queue {msg.queue!r} is publish-only in this MQ")


def _enqueue(
    reg: _Registration, data: Any, timeout: float | None = None, delay: float | None = None
) -> tuple[int, Wait]:
    """Issue the next id and enqueue; the caller holds ``reg.seq_lock``."""
    if reg.store.remote:  # the backend issues the id and holds the message
        if reg.queue.closed:
            raise QueueClosedError(reg.name)
        msg, wait = reg.store.append(Msg(-1, data, reg.name), delay)
        reg.next_id += 1  # not an id here: counts this MQ's publishes for stats()
        return msg.id, wait
    msg_id = reg.next_id
    wait = reg.queue.enqueue(Msg(msg_id, data, reg.name), timeout, delay)
    reg.next_id = msg_id + 1  # only once accepted: a refused publish burns no id
    return msg_id, wait


def _publish_nowait(reg: _Registration, data: Any, delay: float | None) -> int | None:
    """Publish to an in-memory queue if that needs no wait; None if it would."""
    if not reg.seq_lock.acquire(blocking=False):
        return None
    try:
        return _enqueue(reg, data, timeout=0, delay=delay)[0]
    except TimeoutError:
        return None
    finally:
        reg.seq_lock.release()


def _close(reg: _Registration) -> None:
    """Refuse further publishes to ``reg``; a publisher waiting for room gives up too."""
    reg.queue.close()
    if reg.gate is not None:
        reg.gate.close()


def _cut(reg: _Registration, msg: Msg, slot: int) -> None:
    """A consumer task was cancelled in ``msg``'s call: give it up unsettled (a durable
    store delivers it again after a restart), and count the call over, so that closing
    the queue does not wait for it."""
    reg.queue.release(msg)
    reg.queue.finish(slot)


def _take(reg: _Registration, msg: Msg) -> None:
    """A consumer took ``msg``: its first delivery frees a place in a bounded queue."""
    if reg.gate is not None and msg.attempt == 1 and not msg.redelivered:
        reg.gate.leave()


def _check_publish(delay: object, timeout: object) -> None:
    if delay is not None:
        check_seconds("delay", delay)
    check_timeout(cast("float | None", timeout))


def _check_ids(ids: Iterable[int] | None) -> set[int] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be an iterable of message ids or None, got {ids!r}")
    chosen = set(ids)
    bad = [i for i in chosen if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        raise TypeError(f"ids must be ints, got {bad[0]!r}")
    return chosen


def _check_registration(  # noqa: PLR0917 - register_queue's options, checked in one place
    name: object,
    concurrency: object,
    retry: object,
    max_pending: object,
    on_failure: object,
    on_dead: object,
) -> None:
    """Check the options of ``register_queue`` (all but the consumer) before anything changes."""
    _check_name(name)
    assert isinstance(name, str)
    _check_concurrency(name, concurrency)
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"retry of queue {name!r} must be a tinymq.Retry, got {retry!r}")
    if max_pending is not None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int):
            raise TypeError(f"max_pending of queue {name!r} must be an int, got {max_pending!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending of queue {name!r} must be >= 1, got {max_pending}")
    for hook, what in ((on_failure, "on_failure"), (on_dead, "on_dead")):
        if hook is not None and not callable(hook):
            raise TypeError(f"{what} of queue {name!r} must be callable, got {hook!r}")


def _check_ctx(ctx: object) -> Context:
    if ctx is None:
        return Context()
    if not isinstance(ctx, Context):
        raise TypeError(f"ctx must be a tinymq.Context, got {type(ctx).__name__}")
    return ctx


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
    if reg.queue.started and not reg.queue.wait(remaining(deadline)):
        return False
    for thread in reg.workers:
        thread.join(remaining(deadline))
        if thread.is_alive():
            return False
    return True


_running: weakref.WeakSet[MQ] = weakref.WeakSet()
# A forked child has none of the parent's threads, and its exit must not stop (and
# close the logs of) the parent's MQs.
os.register_at_fork(after_in_child=_running.clear)


@atexit.register
def _stop_running_at_exit() -> None:
    for mq in list(_running):
        mq._stop_at_exit()
