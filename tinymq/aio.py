"""The asyncio side: async consumers fed by a forwarder thread through a janus.Queue.

A queue whose consumer is ``async def`` delivers to a ``JanusOutlet`` instead of
``out``: the forwarder puts each batch, as one list, into the janus queue's sync side,
so crossing from thread to loop costs one wake-up per batch, not per message. On the
loop a feeder task spreads the batches over an ``asyncio.Queue`` that ``concurrency``
consumer tasks get from, in order; a sole consumer task (concurrency 1) takes the
batches itself, since it would run them in that order anyway. The tasks run on the
loop that called ``MQ.astart()``, or on a loop thread the MQ owns (see loops.py).
Only the loop's thread touches the tasks, the asyncio.Queue and ``AsyncWorkers._live``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import janus

from tinymq.context import Context
from tinymq.message import Msg
from tinymq.stats import WorkerStats

T = TypeVar("T")
AsyncConsumer = Callable[[Context, Msg], Awaitable[None]]
Settle = Callable[[Msg, "BaseException | None", WorkerStats, int], None]


def is_async_consumer(consumer: object) -> bool:
    """True for an ``async def`` function or an object whose ``__call__`` is one."""
    call = getattr(consumer, "__call__", None)  # noqa: B004 - an object's __call__ counts
    return inspect.iscoroutinefunction(consumer) or inspect.iscoroutinefunction(call)


_END: Final = object()  # tells a consumer task that its queue is drained


class JanusOutlet:
    """A forwarder's outlet onto an unbounded janus.Queue of batches; closing lets it drain."""

    def __init__(self) -> None:
        self.queue: janus.Queue[list[Msg]] = janus.Queue()  # binds to a loop on first use
        self.sent = 0  # messages put; written by the forwarder thread only
        self.taken = 0  # messages handed to a consumer task; written by the loop only

    def send_from(self, items: deque[Msg]) -> int:
        batch = list(items)
        self.sent += len(batch)  # before a task can take them: ``len`` never goes below 0
        try:
            self.queue.sync_q.put_nowait(batch)
        except BaseException:
            self.sent -= len(batch)
            raise
        items.clear()
        return len(batch)

    def close(self) -> None:
        self.queue.sync_q.shutdown()  # async gets return what is left, then raise

    def __len__(self) -> int:
        """Messages sent and not yet taken by a consumer task (approximate)."""
        return self.sent - self.taken


class AsyncWorkers:
    """The ``concurrency`` tasks consuming one queue's outlet; ``done`` is set when all ended."""

    def __init__(
        self,
        name: str,
        consumer: AsyncConsumer,
        concurrency: int,
        *,
        busy: list[int | None],
        log: logging.Logger,
        on_gone: Callable[[], None],
    ) -> None:
        self.name = name
        self.outlet = JanusOutlet()
        self.tasks: list[asyncio.Task[None]] = []  # the consumer tasks, then any feeder
        self.done = threading.Event()
        self._consumer, self._concurrency = consumer, concurrency
        self._busy, self._log, self._on_gone = busy, log, on_gone
        self._take: Callable[[Msg], None] = lambda msg: None
        self._settle: Settle = lambda msg, error, stats, slot: None
        self._cut: Callable[[Msg, int], None] = lambda msg, slot: None
        self._stats: list[WorkerStats] = [WorkerStats() for _ in range(concurrency)]
        self._live = 0
        self._gone = False  # gone() was called

    def bind(
        self,
        take: Callable[[Msg], None],
        settle: Settle,
        stats: list[WorkerStats],
        cut: Callable[[Msg, int], None],
    ) -> None:
        """Set what a task does when it takes a message, once its call is over, and
        when the task is cancelled in the middle of a call (``cut``: give it up unsettled)."""
        self._take, self._settle, self._stats, self._cut = take, settle, stats, cut

    def start(self, ctx: Context) -> None:
        """Create the tasks; must run on the loop's thread."""
        loop = asyncio.get_running_loop()
        self._live = self._concurrency
        if self._concurrency == 1:  # the sole task takes the batches itself: no feeder hop
            self.tasks = [
                loop.create_task(
                    self._work(0, ctx, self._take_batch), name=f"tinymq:{self.name}:task-0"
                )
            ]
            return
        ready: asyncio.Queue[Any] = asyncio.Queue()

        async def take_one() -> tuple[Msg, ...] | None:
            msg = await ready.get()
            return None if msg is _END else (msg,)

        self.tasks = [
            loop.create_task(self._work(i, ctx, take_one), name=f"tinymq:{self.name}:task-{i}")
            for i in range(self._concurrency)
        ]
        self.tasks.append(loop.create_task(self._feed(ready), name=f"tinymq:{self.name}:feeder"))

    async def _take_batch(self) -> list[Msg] | None:
        """The next batch from janus for a sole task; None once the outlet is drained."""
        try:
            return await self.outlet.queue.async_q.get()
        except janus.AsyncQueueShutDown:
            return None

    async def _feed(self, ready: asyncio.Queue[Any]) -> None:
        """Spread each batch from janus over ``ready``; once drained, end every task."""
        get, put = self.outlet.queue.async_q.get, ready.put_nowait
        while True:
            try:
                batch = await get()
            except janus.AsyncQueueShutDown:
                break
            for msg in batch:
                put(msg)
        for _ in range(self._concurrency):
            put(_END)

    async def _work(
        self, task_id: int, ctx: Context, take: Callable[[], Awaitable[Sequence[Msg] | None]]
    ) -> None:
        """Task loop: one consumer call at a time until ``take`` says the outlet is drained.

        ``take`` gives the next messages in order: one at a time from the shared
        ``ready`` queue, or a whole batch for a sole task. Messages a task holds and has
        not started count as not taken (``JanusOutlet.__len__``).
        """
        busy, outlet, stats = self._busy, self.outlet, self._stats[task_id]
        clock = time.perf_counter
        cancelled = False
        current: Msg | None = None  # the message in a call, while there is one
        try:
            while (msgs := await take()) is not None:
                for msg in msgs:
                    outlet.taken += 1
                    self._take(msg)
                    busy[task_id], current = msg.id, msg
                    stats.delivered += 1  # as the call starts: delivered = settled + in flight
                    started = clock()
                    error = await self._call(task_id, ctx, msg)
                    stats.latencies.append(clock() - started)
                    self._settle(msg, error, stats, task_id)  # ack, retry or dead letter
                    error = current = None  # no reference cycle through the traceback
                    busy[task_id] = None
        except (asyncio.CancelledError, GeneratorExit):  # GeneratorExit: task destroyed
            cancelled = True
            raise
        finally:
            if cancelled and current is not None:  # its call was cut short: give it up, counted
                busy[task_id] = None
                self._cut(current, task_id)
            self._live -= 1
            if self._live == 0:
                self.done.set()
                if cancelled:
                    self.gone()

    def in_call(self) -> int:
        """Messages whose call began and has not ended (tasks of a closed loop keep them)."""
        return sum(1 for msg_id in tuple(self._busy) if msg_id is not None)

    def gone(self) -> None:
        """The tasks were cancelled, or their loop closed under them: close the queue
        (once), so that it takes nothing more and its stop waits for nothing."""
        if not self._gone:
            self._gone = True
            self._on_gone()

    async def _call(self, task_id: int, ctx: Context, msg: Msg) -> BaseException | None:
        """Await the consumer on ``msg``; return what it raised, logged (None if nothing)."""
        try:
            await self._consumer(ctx, msg)
        except asyncio.CancelledError as exc:
            if _task_cancelled():
                self._log.error(
                    "queue %r task %d: cancelled while consuming message %d",
                    self.name,
                    task_id,
                    msg.id,
                )
                raise
            error: BaseException = exc  # the consumer's own CancelledError: a failure
        except GeneratorExit:  # the task is destroyed (its loop closed): not a failure
            raise
        except BaseException as exc:  # noqa: BLE001 - a consumer failure never ends the task
            error = exc
        else:
            return None
        self._log.error(
            "queue %r task %d: consumer failed on message %d",
            self.name,
            task_id,
            msg.id,
            exc_info=error,  # outside the except block: exception() would log none
        )
        return error

    async def wait_closed(self) -> None:
        """Let janus finish its own notifier tasks; after ``done``."""
        await self.outlet.queue.wait_closed()


def _task_cancelled() -> bool:
    """True if the current task was asked to cancel (not just handed a CancelledError)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is None or cancelling() > 0
