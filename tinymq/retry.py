"""Retry: how often and how late a failed consumer call is tried again.

A consumer can also steer one call: raise ``RetryLater(delay)`` to be tried again after
``delay`` seconds (still within ``max_attempts``), or ``Reject(reason)`` to send the
message to the dead letters at once.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

JITTER = 0.25  # jitter adds up to this share of the backoff; it never shortens it


class RetryLater(Exception):
    """Raised by a consumer: try this message again after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        check_seconds("delay", delay)
        super().__init__(f"retry later, in {delay} s")
        self.delay = float(delay)


class Reject(Exception):
    """Raised by a consumer: this message can never succeed; dead-letter it now."""

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Retry:
    """Retry a failed call up to ``max_attempts`` calls in all, waiting longer each time.

    Before attempt ``n + 1`` the message waits ``backoff * factor ** (n - 1)`` seconds,
    at most ``max_backoff``, plus up to a quarter more with ``jitter`` (which spreads
    retries of messages that failed together, and never makes a wait shorter).
    """

    max_attempts: int = 5
    backoff: float = 0.5
    factor: float = 2.0
    max_backoff: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        check_seconds("backoff", self.backoff)
        check_seconds("max_backoff", self.max_backoff)
        check_seconds("factor", self.factor)
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (counted from 1)."""
        try:
            raw = self.backoff * self.factor ** (attempt - 1)
        except OverflowError:  # factor ** (attempt - 1) is past the largest float
            raw = math.inf if self.backoff else 0.0
        base = min(self.max_backoff, raw)
        return base * (1 + JITTER * rng.random()) if self.jitter else base


def check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


ONE_ATTEMPT = Retry(max_attempts=1, backoff=0.0, jitter=False)  # no retry= given: as the seed
