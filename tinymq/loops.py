"""Where an MQ's async consumer tasks run, and how stopping waits for them.

Under ``MQ.start()`` the tasks run on a ``LoopThread`` the MQ owns and closes on
``stop()``; under ``MQ.astart()`` they run on the caller's loop, which ``astop()`` must
be awaited on. A stop never waits on the loop it runs on: that would deadlock, so it
raises StateError instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tinymq.aio import AsyncWorkers
from tinymq.context import Context
from tinymq.errors import StateError
from tinymq.timeouts import deadline_after, remaining

T = TypeVar("T")

LOOP_CHECK = 0.1  # how often a sync stop() checks that an astart() loop still exists


class LoopThread:
    """An event loop running in its own daemon thread, for async consumers under ``start()``."""

    def __init__(self, name: str = "tinymq:loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._stop_lock = threading.Lock()  # guards _stop_asked: the loop is stopped once
        self._stop_asked = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            # As asyncio.run does: tasks a consumer left behind are cancelled, not destroyed.
            leftover = asyncio.all_tasks(self.loop)
            for task in leftover:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn()`` on the loop's thread and wait for its result."""

        async def run() -> T:
            return fn()

        return self.run(run, timeout)

    def run(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Await ``fn()`` on the loop and wait for its result from another thread.

        Raises:
            TimeoutError: no result after ``timeout`` seconds (the call goes on).
            StateError: the loop has stopped.
        """
        if self.loop.is_closed() or not self._thread.is_alive():
            raise StateError("the MQ's event loop thread has stopped")

        async def run() -> T:
            return await fn()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        deadline = deadline_after(timeout)
        while True:  # in slices: a loop stopped meanwhile would never answer
            try:
                left = remaining(deadline)
                return future.result(LOOP_CHECK if left is None else min(LOOP_CHECK, left))
            except concurrent.futures.TimeoutError:  # not the builtin before Python 3.11
                if not self._thread.is_alive():
                    future.cancel()
                    raise StateError("the MQ's event loop thread has stopped") from None
                if deadline is not None and not remaining(deadline):
                    raise TimeoutError(
                        f"no answer from the MQ's event loop after {timeout} s"
                    ) from None

    def close(self, timeout: float | None = None) -> bool:
        """Stop the loop (once: a second stop would cut its shutdown short) and join its
        thread; True if it ended in time. Any thread, any number of times."""
        with self._stop_lock:
            ask, self._stop_asked = not self._stop_asked, True
        if ask:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """True while the loop thread runs."""
        return self._thread.is_alive()


class AsyncSide:
    """The async consumer groups of one MQ and the loop they run on.

    ``groups`` is filled before start; ``loop`` is set once, by ``start_owned`` or
    ``start_here``. The MQ's lock serialises those two with each other.
    """

    def __init__(self, log: logging.Logger) -> None:
        self.groups: list[AsyncWorkers] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: LoopThread | None = None  # owns `loop` under start()
        self._log = log

    def start_owned(self, ctx: Context) -> None:
        """Start the groups on a new loop thread (none if there are no groups)."""
        if self.groups:
            self._thread = LoopThread()
            self.loop = self._thread.loop
            self._thread.call(functools.partial(self._start_groups, ctx))

    def start_here(self, ctx: Context) -> None:
        """Start the groups on the running loop."""
        self.loop = asyncio.get_running_loop()
        self._start_groups(ctx)

    def _start_groups(self, ctx: Context) -> None:
        for group in self.groups:
            group.start(ctx)

    def runs(self, task: asyncio.Task[object] | None) -> bool:
        """True if ``task`` is one of the consumer tasks."""
        return task is not None and any(task in group.tasks for group in self.groups)

    def check_sync_stop(self) -> None:
        """Refuse a blocking stop that could never end."""
        loop = self.loop
        if loop is None:
            return
        if running_loop() is loop:
            raise StateError("stop() on the MQ's own event loop would block it; await astop()")
        if self._thread is None and not (loop.is_running() or loop.is_closed()):
            # its consumers cannot run, so no drain could end
            raise StateError("the event loop of astart() is not running: await astop() on it")

    def astop_in_thread(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``astop()`` on ``loop`` should run the blocking stop in a thread.

        Raises:
            StateError: ``loop`` is the owned loop, or not the loop of ``astart()``.
        """
        if self._thread is not None and loop is self.loop:
            raise StateError(
                "astop() on the MQ's own event loop would wait on it; cancel the context"
            )
        if self.loop is None or self._thread is not None or self.loop.is_closed():
            return True
        if loop is not self.loop:
            raise StateError("astop() must be awaited on the event loop that ran astart()")
        return False

    def give_up_on_a_closed_loop(self) -> None:
        """If the loop of ``astart()`` was closed without ending the tasks (no ``astop()``,
        nothing cancelled), they never run again: close their queues, so that a stop
        waits for none of their calls and nothing more is accepted."""
        if self._thread is None and self.loop is not None and self.loop.is_closed():
            for group in self.groups:
                if not group.done.is_set():
                    group.gone()

    def join(self, deadline: float | None) -> bool:
        """Wait from another thread for every task, then close an owned loop; True if done."""
        for group in self.groups:
            if group.tasks and not self._wait_done(group, deadline):
                return False
            self._report_left(group)
        if self._thread is None:
            return True
        for group in self.groups:
            if self._thread.alive:
                try:
                    self._thread.run(group.wait_closed, remaining(deadline))
                except TimeoutError:
                    return False
        return self._thread.close(remaining(deadline))

    async def ajoin(self, deadline: float | None) -> bool:
        """Await every task on the loop of ``astart()``, cancelling none; True if done."""
        tasks = [task for group in self.groups for task in group.tasks]
        if tasks and (await asyncio.wait(tasks, timeout=remaining(deadline)))[1]:
            return False
        for group in self.groups:
            await group.wait_closed()
            self._report_left(group)
        return True

    def _wait_done(self, group: AsyncWorkers, deadline: float | None) -> bool:
        """Wait for ``group`` to end, or for its loop to be closed under it."""
        while not group.done.wait(min(LOOP_CHECK, remaining(deadline) or LOOP_CHECK)):
            if self.loop is not None and self.loop.is_closed():
                return True
            if deadline is not None and not remaining(deadline):
                return False
        return True

    def _report_left(self, group: AsyncWorkers) -> None:
        """Log messages a queue accepted but can no longer consume (or finish)."""
        waiting, in_call = len(group.outlet), group.in_call()
        if waiting or in_call:
            self._log.error(
                "queue %r: %d accepted messages were never consumed (%d of them cut short "
                "in a call): its event loop stopped",
                group.name,
                waiting + in_call,
                in_call,
            )


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
