"""tinymq: an embedded message queue for Python services, no broker to install."""

from tinymq.channel import Channel
from tinymq.context import Context
from tinymq.errors import (
    ChannelClosedError,
    CorruptionError,
    DataDirLockedError,
    QueueClosedError,
    QueueExistsError,
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
from tinymq.serializers import JSON, PICKLE, Serializer

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
    "Msg",
    "Queue",
    "QueueClosedError",
    "QueueExistsError",
    "QueueNotFoundError",
    "RecoveryReport",
    "Serializer",
    "StateError",
    "StorageError",
    "StorageFullError",
    "TinyMQError",
]
__version__ = "0.1.0"
