"""tinymq: an embedded message queue for Python services, no broker to install."""

from tinymq.channel import Channel
from tinymq.context import Context
from tinymq.errors import (
    ChannelClosedError,
    QueueClosedError,
    QueueExistsError,
    QueueNotFoundError,
    StateError,
    TinyMQError,
)
from tinymq.message import Msg
from tinymq.mq import MQ, Consumer
from tinymq.queue import Queue

__all__ = [
    "MQ",
    "Channel",
    "ChannelClosedError",
    "Consumer",
    "Context",
    "Msg",
    "Queue",
    "QueueClosedError",
    "QueueExistsError",
    "QueueNotFoundError",
    "StateError",
    "TinyMQError",
]
__version__ = "0.1.0"
