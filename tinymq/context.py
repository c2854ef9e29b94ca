"""Context: the cancellation signal consumers receive, like Go's context.Context.

Cancellation is one-way and idempotent. Callbacks registered with ``on_cancel`` run
exactly once, in the thread that cancels, outside any lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable

_log = logging.getLogger("tinymq")


class Context:
    """A cancellable signal shared by the code that starts an MQ and its consumers.

    Any thread may call any method. Consumers read ``cancelled`` (or ``wait``) to cut
    long work short; an MQ started with a context stops gracefully when it is cancelled.
    """

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()  # guards _callbacks and _timer
        self._callbacks: list[Callable[[], None]] = []
        self._timer: threading.Timer | None = None

    @classmethod
    def with_timeout(cls, seconds: float) -> Context:
        """Return a new context that cancels itself after ``seconds``.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is negative.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds}")
        ctx = cls()
        timer = threading.Timer(seconds, ctx.cancel)
        timer.name = "tinymq:context-timeout"
        timer.daemon = True
        ctx._timer = timer
        timer.start()
        return ctx

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` has been called or the timeout has passed."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Cancel the context and run its callbacks; later calls do nothing."""
        with self._lock:
            if self._cancelled.is_set():
                return
            self._cancelled.set()
            callbacks, self._callbacks = self._callbacks, []
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        for callback in callbacks:
            try:
                callback()
            except BaseException:  # noqa: BLE001 - logged; one bad callback must not stop the rest
                _log.exception("context cancel callback %r failed", callback)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds pass; return ``cancelled``."""
        return self._cancelled.wait(timeout)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Like ``wait``, but awaitable: the event loop runs on meanwhile."""
        if self.cancelled:
            return True
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # runs in the cancelling thread
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(_resolve, woken)

        forget = self.on_cancel(wake)
        try:
            await asyncio.wait({woken}, timeout=timeout)
        finally:
            forget()
            woken.cancel()
        return self.cancelled

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback()`` once on cancel (now, if already cancelled).

        Returns a function that unregisters the callback if it has not run yet.
        """
        with self._lock:
            if not self._cancelled.is_set():
                self._callbacks.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def __repr__(self) -> str:
        return f"<Context {'cancelled' if self.cancelled else 'active'}>"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
