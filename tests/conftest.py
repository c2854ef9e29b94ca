"""Shared fixtures: every test must leave no tinymq thread behind."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest


def tinymq_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tinymq:")]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for ``predicate()`` to be true, failing the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        event.wait(0.001)


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = set(tinymq_threads())
    yield
    deadline = time.monotonic() + 5.0
    for thread in tinymq_threads():
        if thread not in before:
            thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [t.name for t in tinymq_threads() if t not in before and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads every microsecond, so races show up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)
