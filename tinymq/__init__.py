"""tinymq: an embedded message queue for Python services, no broker to install."""

from tinymq.channel import Channel
from tinymq.context import Context
from tinymq.deadletter import DeadLetter
from tinymq.errors import (
    ChannelClosedError,
    CorruptionError,
    DataDirLockedError,
    QueueClosedError,
    QueueExistsError,
    QueueFullError,
    QueueNotFoundError,
    StateError,
    StorageError,
    StorageFullError,
    TinyMQError,
)
from tinymq.message import Msg
from tinymq.mq import MQ, Consumer
from tinymq.queue import Queue
from tinymq.recovery import Damage, RecoveryReport
from tinymq.retry import Reject, Retry, RetryLater
from tinymq.serializers import JSON, PICKLE, Serializer
from tinymq.stats import QueueStats

__all__ = [
    "JSON",
    "MQ",
    "PICKLE",
    "Channel",
    "ChannelClosedError",
    "Consumer",
    "Context",
    "CorruptionError",
    "Damage",
    "DataDirLockedError",
    "DeadLetter",
    "Msg",
    "Queue",
    "QueueClosedError",
    "QueueExistsError",
    "QueueFullError",
    "QueueNotFoundError",
    "QueueStats",
    "RecoveryReport",
    "Reject",
    "Retry",
    "RetryLater",
    "Serializer",
    "StateError",
    "StorageError",
    "StorageFullError",
    "TinyMQError",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``tinymq.RedisBackend``, imported on first use: redis-py is an optional extra."""
    if name == "RedisBackend":
        from tinymq.redis_streams import RedisBackend  # noqa: PLC0415 - optional, on demand

        return RedisBackend
    raise AttributeError(f"module 'tinymq' has no attribute {name!r}")
