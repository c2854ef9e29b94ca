"""The message that travels through a queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Msg:
    """One published message.

    ``id`` is issued per queue, from 0, in the order messages enter the queue, so
    id order is delivery order. ``attempt`` counts consumer calls, from 1.
    ``redelivered`` is True for a message a durable queue recovered from a previous run.
    """

    id: int
    data: Any
    queue: str
    attempt: int = 1
    redelivered: bool = False
