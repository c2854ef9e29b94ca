"""Consumers for the delivery-policy tests: a script decides each call, a log records it."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tinymq import Context, Msg
from tinymq.mq import AnyConsumer

Script = Callable[[Msg], "BaseException | None"]  # the exception a call raises, or None
Hold = Callable[[Msg], "threading.Event | None"]  # an Event the call waits for first, or None


@dataclass(frozen=True)
class Call:
    """One consumer call as the consumer saw it; times are ``time.monotonic()``."""

    id: int
    data: object
    attempt: int
    redelivered: bool
    started: float  # as the call began
    ended: float  # just before it returned or raised
    raised: BaseException | None
    thread: str


class CallLog:
    """Records every call of a consumer made by ``consumer(kind, log)``; thread-safe."""

    def __init__(self, script: Script | None = None, hold: Hold | None = None) -> None:
        self.script: Script = script or (lambda msg: None)
        self.hold: Hold = hold or (lambda msg: None)
        self._changed = threading.Condition()  # guards calls, started; notified on each change
        self.calls: list[Call] = []
        self.started: list[Msg] = []  # messages whose call has begun, in that order

    def begin(self, msg: Msg) -> float:
        with self._changed:
            self.started.append(msg)
            self._changed.notify_all()
        return time.monotonic()

    def end(self, msg: Msg, started: float) -> None:
        """Record the call, then raise what the script says."""
        error = self.script(msg)
        call = Call(
            msg.id,
            msg.data,
            msg.attempt,
            msg.redelivered,
            started,
            time.monotonic(),
            error,
            threading.current_thread().name,
        )
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        if error is not None:
            raise error

    def wait_calls(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` calls have ended; fail the test on timeout."""
        self._wait(lambda: len(self.calls) >= count, f"{count} calls", timeout)

    def wait_started(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` calls have begun; fail the test on timeout."""
        self._wait(lambda: len(self.started) >= count, f"{count} calls begun", timeout)

    def _wait(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                pytest.fail(f"consumer: {what} not reached in {timeout} s: {self.calls}")

    def of(self, msg_id: int) -> list[Call]:
        """The calls on message ``msg_id``, in order."""
        with self._changed:
            return [c for c in self.calls if c.id == msg_id]

    def first(self, msg_id: int) -> Call:
        return self.of(msg_id)[0]


def consumer(kind: str, log: CallLog) -> AnyConsumer:
    """A thread consumer (``kind="thread"``) or an ``async def`` one writing to ``log``."""
    if kind == "thread":

        def consume(ctx: Context, msg: Msg) -> None:
            started = log.begin(msg)
            hold = log.hold(msg)
            if hold is not None and not hold.wait(5):
                raise AssertionError("the test never released the consumer")
            log.end(msg, started)

        return consume

    async def aconsume(ctx: Context, msg: Msg) -> None:
        started = log.begin(msg)
        hold = log.hold(msg)
        if hold is not None and not await asyncio.to_thread(hold.wait, 5):
            raise AssertionError("the test never released the consumer")
        log.end(msg, started)

    return aconsume


def gaps(calls: list[Call]) -> list[float]:
    """Seconds from each call's end to the start of the next one (of one message)."""
    return [b.started - a.ended for a, b in itertools.pairwise(calls)]


def waited_at_least(calls: list[Call], asked: list[float]) -> bool:
    """True if each call began at least ``asked[i]`` seconds after the one before ended.

    Compared as the scheduler does (end + delay <= start), so that float rounding
    cannot make an exact wait look short.
    """
    pairs = itertools.pairwise(calls)
    return all(b.started >= a.ended + wait for (a, b), wait in zip(pairs, asked, strict=True))


KINDS = ["thread", "async"]
