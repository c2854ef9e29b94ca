"""Delivery: what becomes of a message once its consumer call is over.

Success acknowledges it. A failure is retried, if its queue's ``Retry`` allows another
attempt, by handing it back to the forwarder's schedule (no worker waits for the
backoff, and nothing behind it waits either); otherwise it becomes a dead letter and
is acknowledged. Called by every worker thread and task, so it holds no state but
the per-worker stats it is given.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from tinymq.deadletter import DeadLetter, DeadLetters
from tinymq.message import Msg
from tinymq.queue import Queue
from tinymq.retry import Reject, Retry, RetryLater
from tinymq.stats import WorkerStats

OnFailure = Callable[[Msg, BaseException], object]
OnDead = Callable[[DeadLetter], object]


class Delivery:
    """Settles one queue's messages: ack, retry or dead letter, then ``finish``."""

    def __init__(
        self,
        queue: Queue,
        retry: Retry,
        dead: DeadLetters,
        log: logging.Logger,
        *,
        on_failure: OnFailure | None = None,
        on_dead: OnDead | None = None,
    ) -> None:
        self.queue, self.retry, self.dead, self._log = queue, retry, dead, log
        self._on_failure, self._on_dead = on_failure, on_dead
        self._rng = random.Random()

    def settle(self, msg: Msg, error: BaseException | None, stats: WorkerStats, slot: int) -> None:
        """Record the outcome of ``msg``'s call by the consumer in ``slot``; never raises
        for a store or hook failure."""
        try:
            if error is None:
                stats.succeeded += 1
                self.queue.ack(msg)
            else:
                self._failed(msg, error, stats)
        except Exception:  # noqa: BLE001 - the worker must go on; the message stays unacked
            self._log.exception("queue %r: cannot settle message %d", msg.queue, msg.id)
        finally:
            self.queue.finish(slot)

    def _failed(self, msg: Msg, error: BaseException, stats: WorkerStats) -> None:
        stats.failed += 1
        self._hook(self._on_failure, "on_failure", msg, msg, error)
        delay = self._retry_delay(msg, error)
        if delay is not None:
            self.queue.retry(msg, delay)
            stats.retried += 1
            return
        reason = "rejected" if isinstance(error, Reject) else "exhausted"
        letter = DeadLetter.of(msg, error, reason)
        try:
            self.dead.add(letter)
        except BaseException:
            self.queue.release(msg)  # unsettled: delivered again later, never held forever
            raise
        self.queue.ack(msg)
        stats.dead += 1
        self._log.warning(
            "queue %r: message %d is a dead letter after %d attempt(s) (%s)",
            msg.queue,
            msg.id,
            msg.attempt,
            reason,
        )
        self._hook(self._on_dead, "on_dead", msg, letter)

    def _retry_delay(self, msg: Msg, error: BaseException) -> float | None:
        """Seconds until the next attempt, or None if there is none."""
        if isinstance(error, Reject) or msg.attempt >= self.retry.max_attempts:
            return None
        if isinstance(error, RetryLater):
            return error.delay
        return self.retry.delay(msg.attempt, self._rng)

    def _hook(self, hook: Callable[..., object] | None, what: str, msg: Msg, *args: Any) -> None:
        """Call a user hook; its failure is logged and goes no further."""
        if hook is None:
            return
        try:
            hook(*args)
        except BaseException:  # noqa: BLE001 - as for the consumer: a hook never ends the worker
            self._log.exception("queue %r: %s hook failed on message %d", msg.queue, what, msg.id)
