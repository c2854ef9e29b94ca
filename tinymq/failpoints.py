"""Named points where a test can make the process kill itself, as etcd's gofail does.

``TINYMQ_FAILPOINTS="segment.after_create:2,publish.after_write:100"`` sends SIGKILL
to this process on the 2nd pass through ``segment.after_create`` (and the 100th through
``publish.after_write``). Unset, each point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = (
    "publish.after_write",  # the record is written, not yet synced
    "publish.after_sync",  # synced, publish not yet returned
    "segment.after_create",  # a new segment file exists, its directory not yet synced
    "segment.before_dir_fsync",  # a new segment holds its header, directory not yet synced
    "segment.after_delete",  # a fully acknowledged segment was unlinked
    "recovery.after_scan",  # the log was read on open, nothing changed yet
    "recovery.after_truncate",  # a torn tail was cut off
)


def _parse(spec: str) -> dict[str, int]:
    armed = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, hit = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"TINYMQ_FAILPOINTS: unknown point {name!r}; known: {POINTS}")
        armed[name] = int(hit or 1)
    return armed


_armed = _parse(os.environ.get("TINYMQ_FAILPOINTS", ""))
_passes: dict[str, int] = {}
_lock = threading.Lock()  # guards _passes


def armed(name: str) -> bool:
    """Whether point ``name`` would kill this process on some pass."""
    return name in _armed


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``name`` is armed and this is its chosen pass."""
    hit = _armed.get(name)
    if hit is None:
        return
    with _lock:
        _passes[name] = count = _passes.get(name, 0) + 1
    if count == hit:
        os.kill(os.getpid(), signal.SIGKILL)
