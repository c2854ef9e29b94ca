"""How a durable queue turns message data into bytes and back.

JSON is the default: data read back from disk can never run code. Pickle stores any
picklable object, but unpickling runs code named by the file, so it is only used when
asked for by name (``MQ(serializer=PICKLE)``), for data directories only you can write.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol


class Serializer(Protocol):
    """Turns message data into bytes and back; ``loads(dumps(x))`` is what consumers get."""

    def dumps(self, data: Any) -> bytes:
        """Encode ``data``; raise TypeError or ValueError if it cannot be."""

    def loads(self, raw: bytes) -> Any:
        """Decode what ``dumps`` produced."""


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # built once


class JsonSerializer:
    """Compact UTF-8 JSON: dicts, lists, str, numbers, bool and None (tuples come back as lists)."""

    def dumps(self, data: Any) -> bytes:
        return _ENCODE(data).encode()

    def loads(self, raw: bytes) -> Any:
        return json.loads(raw)

    def __repr__(self) -> str:
        return "JSON"


class PickleSerializer:
    """Any picklable object. Never use it on a data directory others can write to."""

    def dumps(self, data: Any) -> bytes:
        return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, raw: bytes) -> Any:
        return pickle.loads(raw)  # opted into by name: see the module docstring

    def __repr__(self) -> str:
        return "PICKLE"


JSON = JsonSerializer()
PICKLE = PickleSerializer()
