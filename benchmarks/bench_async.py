"""The asyncio contenders of bench_throughput.py, and its I/O-bound scenario.

Each round runs one contender once and returns its seconds and what its consumers
recorded; bench_throughput.py interleaves the rounds, checks the counts and reports.

* Sync to async. A publisher *thread* puts N ints, as a sync web worker publishing
  into async consumers would; W asyncio tasks hand each one to a no-op async handler.
  The baseline is a raw ``janus.Queue`` whose publisher shuts it down after the last
  put (the tasks drain it, then meet ``AsyncQueueShutDown``); tinymq is one queue
  with an async consumer of concurrency W on ``astart()``'s loop, ended by
  ``astop()`` once the publisher is done. The tasks are parked on their first get
  before the publisher starts, as in a service waiting for traffic.
* I/O-bound. N messages whose consumer waits ``delay`` seconds, concurrency C:
  tinymq async consumers (C tasks on one loop, published with ``apublish``) against
  tinymq thread consumers (C worker threads, ``time.sleep``). The clock runs from
  ``astart()``/``start()`` until ``astop()``/``stop()`` returned, so it includes
  starting the C threads.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import janus

from tinymq import MQ, Context, Msg

JANUS = "janus"
TINYMQ_ASYNC = "tinymq async"
TINYMQ_THREADS = "tinymq threads"
ASYNC_CONTENDERS = (JANUS, TINYMQ_ASYNC)
IO_CONTENDERS = (TINYMQ_ASYNC, TINYMQ_THREADS)

QUEUE = "bench-async"


@dataclass
class Timed:
    """Seconds of one round and what its consumers recorded."""

    seconds: float
    values: list[Any]


@dataclass
class IoRun:
    """One I/O-bound round: ``Timed`` plus what was alive once every message was published."""

    seconds: float
    values: list[Any]
    threads: int  # threading.active_count(), main thread included
    growth: int | None  # what ``measure`` grew by from before start to that moment


# -- sync to async ---------------------------------------------------------------


def throughput_round(contender: str, messages: int, tasks: int, timeout: float) -> Timed:
    """Run one sync-to-async round of ``contender`` on a fresh event loop.

    Raises:
        TimeoutError: the consumers were still busy ``timeout`` s after the last publish.
    """
    rounds = {JANUS: _janus_round, TINYMQ_ASYNC: _tinymq_round}
    return asyncio.run(rounds[contender](messages, tasks, timeout))


async def _janus_round(messages: int, tasks: int, timeout: float) -> Timed:
    """W tasks ``await async_q.get()`` until the publisher thread's ``shutdown()``."""
    q: janus.Queue[int] = janus.Queue()
    values: list[int] = []
    append = values.append

    async def handle(item: int) -> None:
        append(item)

    async def work() -> None:
        get = q.async_q.get
        while True:
            try:
                item = await get()
            except janus.AsyncQueueShutDown:
                return
            await handle(item)

    workers = [asyncio.create_task(work()) for _ in range(tasks)]

    def publish() -> None:
        put = q.sync_q.put
        for i in range(messages):
            put(i)
        q.sync_q.shutdown()

    async def drain() -> None:
        pending = (await asyncio.wait(workers, timeout=timeout))[1]
        if pending:
            for task in pending:
                task.cancel()
            raise TimeoutError(f"{len(pending)} {JANUS} tasks still running after {timeout} s")

    seconds = await _time_thread_publisher(publish, drain)
    await q.wait_closed()
    return Timed(seconds, values)


async def _tinymq_round(messages: int, tasks: int, timeout: float) -> Timed:
    """An async no-op consumer of concurrency ``tasks``, started on this loop."""
    values: list[int] = []
    append = values.append

    async def consume(ctx: Context, msg: Msg) -> None:
        append(msg.data)

    mq = MQ()
    mq.register_queue(QUEUE, consume, tasks)
    await mq.astart()
    put = partial(mq.publish, QUEUE)

    def publish() -> None:
        for i in range(messages):
            put(i)

    seconds = await _time_thread_publisher(publish, partial(mq.astop, timeout))
    return Timed(seconds, values)


async def _time_thread_publisher(
    publish: Callable[[], None], drain: Callable[[], Awaitable[None]]
) -> float:
    """Run ``publish`` on a new thread, then await ``drain()``; return the seconds of both.

    The consumer tasks get one loop iteration first, which parks them on their
    first get.
    """
    loop = asyncio.get_running_loop()
    published: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            publish()
        except Exception as exc:  # noqa: BLE001 - re-raised on the loop by `await published`
            loop.call_soon_threadsafe(published.set_exception, exc)
        else:
            loop.call_soon_threadsafe(published.set_result, None)

    thread = threading.Thread(target=run, name="bench:publisher", daemon=True)
    await asyncio.sleep(0)
    gc.collect()
    start = time.perf_counter()
    thread.start()
    await published
    await drain()
    elapsed = time.perf_counter() - start
    thread.join()
    return elapsed


# -- I/O-bound -------------------------------------------------------------------


def io_round(
    contender: str,
    messages: int,
    concurrency: int,
    delay: float,
    *,
    timeout: float,
    measure: Callable[[], int | None],
) -> IoRun:
    """Run one I/O-bound round of ``contender``; ``measure`` is sampled before and mid-run.

    Raises:
        TimeoutError: the MQ was not drained ``timeout`` s after the last publish.
    """
    if contender == TINYMQ_ASYNC:
        return asyncio.run(_io_async(messages, concurrency, delay, timeout, measure))
    return _io_threads(messages, concurrency, delay, timeout, measure)


async def _io_async(
    messages: int,
    concurrency: int,
    delay: float,
    timeout: float,
    measure: Callable[[], int | None],
) -> IoRun:
    """``concurrency`` tasks on this loop, each awaiting ``asyncio.sleep(delay)``."""
    values: list[int] = []
    append = values.append

    async def consume(ctx: Context, msg: Msg) -> None:
        await asyncio.sleep(delay)
        append(msg.data)

    mq = MQ()
    mq.register_queue(QUEUE, consume, concurrency)
    gc.collect()
    before = measure()
    start = time.perf_counter()
    await mq.astart()
    for i in range(messages):
        await mq.apublish(QUEUE, i)
    threads, after = threading.active_count(), measure()
    await mq.astop(timeout)
    elapsed = time.perf_counter() - start
    return IoRun(elapsed, values, threads, _growth(before, after))


def _io_threads(
    messages: int,
    concurrency: int,
    delay: float,
    timeout: float,
    measure: Callable[[], int | None],
) -> IoRun:
    """``concurrency`` worker threads, each in ``time.sleep(delay)``."""
    values: list[int] = []
    append = values.append

    def consume(ctx: Context, msg: Msg) -> None:
        time.sleep(delay)
        append(msg.data)

    mq = MQ()
    mq.register_queue(QUEUE, consume, concurrency)
    gc.collect()
    before = measure()
    start = time.perf_counter()
    mq.start()
    for i in range(messages):
        mq.publish(QUEUE, i)
    threads, after = threading.active_count(), measure()
    mq.stop(timeout)
    elapsed = time.perf_counter() - start
    return IoRun(elapsed, values, threads, _growth(before, after))


def _growth(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before
