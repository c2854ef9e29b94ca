"""A consumer that records what it sees, for tests to wait on."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tinymq import Context, Msg


class Recorder:
    """Consumer recording (thread name, msg) per call; ``wait_for(n)`` fails on timeout."""

    def __init__(self, action: Callable[[Context, Msg], None] | None = None) -> None:
        self.action = action
        self.lock = threading.Lock()  # guards seen
        self.seen: list[tuple[str, Msg]] = []
        self.changed = threading.Condition(self.lock)

    def __call__(self, ctx: Context, msg: Msg) -> None:
        try:
            if self.action is not None:
                self.action(ctx, msg)
        finally:
            with self.changed:
                self.seen.append((threading.current_thread().name, msg))
                self.changed.notify_all()

    @property
    def ids(self) -> list[int]:
        with self.lock:
            return [m.id for _, m in self.seen]

    @property
    def data(self) -> list[object]:
        with self.lock:
            return [m.data for _, m in self.seen]

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.seen) >= count, timeout):
                pytest.fail(f"consumer saw {len(self.seen)} messages, expected {count}")
