"""The in-memory contenders of bench_throughput.py: what a user would pick instead of tinymq.

Each adapter starts one contender with W consumer threads that call the same
handler, and returns a ``Running``: ``put`` publishes one item from the calling
thread, ``finish`` returns once every item was handled (and, where the contender
can, its threads joined), ``close`` releases what is left outside the clock.

* queue.Queue: the baseline. W threads ``get()`` until a sentinel that each of them
  re-posts for the next.
* tinymq: one queue of concurrency W, ended by ``stop()`` (drain, join).
* ThreadPoolExecutor.submit: ``submit(handle, item)`` to a pool of W threads, ended by
  ``shutdown(wait=True)``. One Future and one work item per message.
* janus (sync to sync): W threads on ``sync_q.get()`` until ``sync_q.shutdown()``.
* huey MemoryHuey: a task per message (pickled into the in-memory storage), W worker
  threads of ``create_consumer(worker_type="thread")``. Its workers poll: an idle
  worker sleeps ``initial_delay``, growing by ``backoff`` up to ``max_delay``. The
  defaults (0.1 s to 10 s) would measure the sleeps, so the benchmark polls every
  1 ms to 10 ms, and ``results=False`` skips the result store: both in huey's favour.
  Drained when the storage is empty, then ``stop(graceful=True)`` joins the workers.
* dramatiq StubBroker: an actor whose ``send`` encodes a JSON message with a UUID and
  timestamps, and an in-process ``Worker`` with W worker threads and its prefetching
  consumer thread, default middleware. Drained by ``broker.join`` and ``worker.join``
  (its test helpers); ``worker.stop()``, which waits out a poll of ``worker_timeout``,
  runs outside the clock, in dramatiq's favour.

Contenders from the ``bench`` extra (janus is a tinymq dependency) are skipped, and
reported as such, when they are not installed.
"""

from __future__ import annotations

import importlib
import itertools
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from typing import Any, TypeVar

import janus

from tinymq import MQ, Consumer, Context, Msg

QUEUE = "bench"
JOIN_TIMEOUT = 60.0  # seconds; a contender still busy after this has lost messages
POLL = 0.001  # seconds between checks of a contender that can only be polled for drained
CPU_WORK = 50e-6  # seconds of CPU each call of the "50 us CPU" consumer spins

PLAIN = "queue.Queue"
TINYMQ = "tinymq"
EXECUTOR = "ThreadPoolExecutor.submit"
JANUS_SYNC = "janus sync-to-sync"
HUEY = "huey MemoryHuey"
DRAMATIQ = "dramatiq StubBroker"

Handler = Callable[[Any], None]
T = TypeVar("T")
_STOP = object()  # the baseline's sentinel
_names = itertools.count()  # huey and dramatiq register tasks and queues by name


class CountError(Exception):
    """A contender did not handle every message it was given exactly once (or in order)."""


def finish(stop: Callable[[], T], label: str) -> T:
    """Call ``stop`` (drain and join); a timeout means messages were not handled."""
    try:
        return stop()
    except TimeoutError as exc:
        raise CountError(f"{label}: not drained: {exc}") from exc


def check_count(label: str, values: Sequence[Any], expected: int) -> None:
    """Raise CountError unless ``values`` holds ``expected`` entries."""
    if len(values) != expected:
        raise CountError(f"{label}: handled {len(values)} messages, expected {expected}")


def check_exactly_once(label: str, values: Sequence[Any], expected: int) -> None:
    """Raise CountError unless ``values`` holds ``expected`` distinct entries."""
    check_count(label, values, expected)
    distinct = len(set(values))
    if distinct != expected:
        raise CountError(f"{label}: handled {expected} messages but only {distinct} distinct")


def check_order(label: str, values: Sequence[int]) -> None:
    """Raise CountError unless ``values`` are 0, 1, 2, ... (publish order)."""
    for position, value in enumerate(values):
        if value != position:
            raise CountError(f"{label}: message {value} handled in place {position}")


@dataclass
class Sink:
    """What consumers record, in the call shape of each contender."""

    values: list[Any]
    handle: Handler  # called with the item by every contender but tinymq
    consume: Consumer  # called by tinymq's workers with the message


def spin(seconds: float) -> None:
    """Keep the CPU (and the GIL) busy for ``seconds``, as a consumer doing real work."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def record_items(cpu: float = 0.0) -> Sink:
    """A sink appending each item, after ``cpu`` seconds of work if not 0.

    ``list.append`` is atomic, so no lock is needed.
    """
    values: list[Any] = []
    append = values.append
    if not cpu:

        def handle(item: Any) -> None:
            append(item)

        def consume(ctx: Context, msg: Msg) -> None:
            append(msg.data)

    else:

        def handle(item: Any) -> None:
            spin(cpu)
            append(item)

        def consume(ctx: Context, msg: Msg) -> None:
            spin(cpu)
            append(msg.data)

    return Sink(values, handle, consume)


def record_latency() -> Sink:
    """A sink appending, per item, the nanoseconds since the publish stamp it carries."""
    values: list[int] = []
    append = values.append
    clock = time.perf_counter_ns

    def handle(item: int) -> None:
        append(clock() - item)

    def consume(ctx: Context, msg: Msg) -> None:
        append(clock() - msg.data)

    return Sink(values, handle, consume)


def _nothing() -> None:
    pass


@dataclass
class Running:
    """A started contender: ``put`` publishes one item, ``finish`` waits until all are handled.

    ``close`` runs outside the clock, after ``finish``.
    """

    put: Callable[[Any], object]
    finish: Callable[[], None]
    close: Callable[[], None] = _nothing


def _join(threads: list[threading.Thread], label: str) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise TimeoutError(f"{label} workers still running after {JOIN_TIMEOUT} s")


def _start_threads(workers: int, target: Callable[[], None]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    return threads


def start_plain(workers: int, sink: Sink) -> Running:
    """Start ``workers`` threads on a plain unbounded ``queue.Queue``."""
    q: queue.Queue[Any] = queue.Queue()
    handle = sink.handle

    def work() -> None:
        get = q.get
        while True:
            item = get()
            if item is _STOP:
                q.put(_STOP)  # for the next worker
                return
            handle(item)

    threads = _start_threads(workers, work)

    def finish() -> None:
        q.put(_STOP)
        _join(threads, PLAIN)

    return Running(q.put, finish)


def start_tinymq(workers: int, sink: Sink) -> Running:
    """Start an MQ with one queue of concurrency ``workers``."""
    mq = MQ()
    mq.register_queue(QUEUE, sink.consume, workers)
    mq.start()
    return Running(partial(mq.publish, QUEUE), partial(mq.stop, JOIN_TIMEOUT))


def start_executor(workers: int, sink: Sink) -> Running:
    """A ThreadPoolExecutor of ``workers`` threads; each item is one ``submit``."""
    pool = ThreadPoolExecutor(max_workers=workers)
    submit: Callable[..., object] = pool.submit  # the item is submit's one extra argument
    return Running(partial(submit, sink.handle), partial(pool.shutdown, wait=True))


def start_janus_sync(workers: int, sink: Sink) -> Running:
    """``workers`` threads on a ``janus.Queue``'s sync side, ended by its ``shutdown()``."""
    q: janus.Queue[Any] = janus.Queue()
    sync_q, handle = q.sync_q, sink.handle

    def work() -> None:
        get = sync_q.get
        while True:
            try:
                item = get()
            except janus.SyncQueueShutDown:
                return
            handle(item)

    threads = _start_threads(workers, work)

    def finish() -> None:
        sync_q.shutdown()  # the workers drain what is left, then meet ShutDown
        _join(threads, JANUS_SYNC)

    return Running(sync_q.put, finish, q.close)


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Restore the signal handlers that huey's consumer installs on start."""
    kept = {
        sig: signal.getsignal(sig)
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
        if sig is not None
    }
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


def start_huey(workers: int, sink: Sink) -> Running:
    """A MemoryHuey task per item, run by ``workers`` consumer threads polling every 1-10 ms."""
    huey_api = importlib.import_module("huey")
    huey = huey_api.MemoryHuey(f"bench-{next(_names)}", results=False)
    task = huey.task(name="handle")(sink.handle)
    consumer = huey.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=False,
        initial_delay=0.001,
        backoff=1.15,
        max_delay=0.01,
        check_worker_health=False,
    )
    with _signal_handlers_kept():
        consumer.start()

    def finish() -> None:
        deadline = time.monotonic() + JOIN_TIMEOUT
        while huey.pending_count():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{HUEY}: {huey.pending_count()} tasks left")
            time.sleep(POLL)
        consumer.stop(graceful=True)  # the workers finish the task they hold, then exit

    return Running(task, finish)


def start_dramatiq(workers: int, sink: Sink) -> Running:
    """A dramatiq actor on a StubBroker, consumed by an in-process Worker of ``workers`` threads."""
    dramatiq = importlib.import_module("dramatiq")
    stub = importlib.import_module("dramatiq.brokers.stub")
    broker = stub.StubBroker()
    name = f"bench{next(_names)}"
    actor = dramatiq.actor(sink.handle, broker=broker, actor_name=name, queue_name=name)
    worker = dramatiq.Worker(broker, worker_threads=workers, worker_timeout=100)
    worker.start()

    def finish() -> None:
        broker.join(name, timeout=int(JOIN_TIMEOUT * 1000))
        worker.join()

    def close() -> None:
        worker.stop()
        broker.close()

    return Running(actor.send, finish, close)


@dataclass(frozen=True)
class Contender:
    """How to start one contender, whether it keeps order, and what it needs installed."""

    name: str
    start: Callable[[int, Sink], Running]
    ordered: bool  # one consumer sees the items in publish order
    needs: str | None = None  # a module from the bench extra


CONTENDERS = (
    Contender(PLAIN, start_plain, ordered=True),
    Contender(TINYMQ, start_tinymq, ordered=True),
    Contender(EXECUTOR, start_executor, ordered=True),
    Contender(JANUS_SYNC, start_janus_sync, ordered=True),
    Contender(HUEY, start_huey, ordered=True, needs="huey"),
    # Its workers take messages from a priority queue keyed by the time the consumer
    # thread prefetched them: "roughly FIFO", in its own words, so only counts are checked.
    Contender(DRAMATIQ, start_dramatiq, ordered=False, needs="dramatiq"),
)
BY_NAME = {c.name: c for c in CONTENDERS}


def missing(contender: Contender) -> str | None:
    """Why ``contender`` cannot run here ("skipped (...)"), or None if it can."""
    if contender.needs is None:
        return None
    try:
        importlib.import_module(contender.needs)
    except ImportError:
        return f"skipped ({contender.needs} not installed)"
    return None


def version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
