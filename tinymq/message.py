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

    def __init__(
        self, id: int, data: Any, queue: str, attempt: int = 1, redelivered: bool = False
    ) -> None:
        # Each field is set once, here, through its slot: the generated frozen __init__
        # goes through object.__setattr__ and costs three times as much per publish.
        _set_id(self, id)
        _set_data(self, data)
        _set_queue(self, queue)
        _set_attempt(self, attempt)
        _set_redelivered(self, redelivered)


_set_id, _set_data, _set_queue, _set_attempt, _set_redelivered = (
    Msg.__dict__[name].__set__ for name in ("id", "data", "queue", "attempt", "redelivered")
)
