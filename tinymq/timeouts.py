"""Timeouts: validation, and deadlines for waits made of several steps."""

from __future__ import annotations

import math
import time


def check_timeout(timeout: float | None, name: str = "timeout") -> None:
    """Raise if ``timeout`` is neither None nor a finite number >= 0."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number or None, got {type(timeout).__name__}")
    if not (timeout >= 0 and math.isfinite(timeout)):
        raise ValueError(f"{name} must be a finite number >= 0 or None, got {timeout}")


def deadline_after(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` at which ``timeout`` seconds from now end (None: never)."""
    return None if timeout is None else time.monotonic() + timeout


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (0 once passed; None: no limit)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
