from __future__ import annotations

import threading

import pytest

from tinymq import Context


def test_cancel_is_one_way_and_idempotent() -> None:
    ctx = Context()
    assert not ctx.cancelled
    assert ctx.wait(0) is False
    ctx.cancel()
    ctx.cancel()
    assert ctx.cancelled
    assert ctx.wait() is True


def test_wait_returns_when_another_thread_cancels() -> None:
    ctx = Context()
    woke = threading.Event()

    def waiter() -> None:
        if ctx.wait(10):
            woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not woke.wait(0.02)
    ctx.cancel()
    assert woke.wait(5)
    thread.join()


def test_with_timeout_cancels_itself() -> None:
    ctx = Context.with_timeout(0.01)
    assert ctx.wait(5) is True
    assert ctx.cancelled


def test_with_timeout_rejects_bad_seconds() -> None:
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="seconds"):
            Context.with_timeout(bad)
    with pytest.raises(TypeError, match="seconds"):
        Context.with_timeout("1")  # type: ignore[arg-type]


def test_cancel_before_timeout_stops_the_timer() -> None:
    ctx = Context.with_timeout(60)
    ctx.cancel()
    assert ctx._timer is None


def test_callbacks_run_once_and_a_failing_one_does_not_stop_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = Context()
    calls: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    ctx.on_cancel(boom)
    ctx.on_cancel(lambda: calls.append("a"))
    forget = ctx.on_cancel(lambda: calls.append("forgotten"))
    forget()
    ctx.cancel()
    ctx.cancel()
    assert calls == ["a"]
    assert "boom" in caplog.text
    ctx.on_cancel(lambda: calls.append("late"))  # already cancelled: runs at once
    assert calls == ["a", "late"]
