"""RedisBackend: the same queues on a Redis server, shared by processes and machines.

Each queue is a stream read by one consumer group; every MQ on the same Redis, prefix and
group takes its share. Ids come from a per-queue counter (INCR), so ``Msg.id`` means
the same in every process. An intake thread per queue reads the stream (XREADGROUP) into
the queue's ``in`` channel, where the usual forwarder and workers take over; a worker's
ack is XACK + XDEL. Redis's "pending entries list" is what tinymq calls *in flight*:
entries read by a consumer and not acknowledged. Those held by a consumer that died are
claimed after ``claim_idle`` seconds (XPENDING + XCLAIM) and delivered again, with
``redelivered=True`` and ``attempt`` counting the earlier deliveries. Delayed messages
and retries wait in a sorted set by due time, moved into the stream when due by a
script (any process may move them, each exactly once). Dead letters are a hash.

Keys, for queue ``q``: ``{prefix}:q:stream``, ``:seq``, ``:delayed``, ``:dead``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Final

import redis

from tinymq.deadletter import DeadLetter
from tinymq.errors import StorageError
from tinymq.message import Msg
from tinymq.serializers import JSON, Serializer
from tinymq.store import Backlog, MemoryBacklog, Wait, no_wait

READ_COUNT: Final = 256  # entries per XREADGROUP
BLOCK_MAX: Final = 1.0  # seconds an idle intake blocks in one read
RECONNECT_MAX: Final = 5.0  # seconds between reconnect attempts, at most
_NOTE_EVERY: Final = 30.0  # seconds between log lines while Redis stays unreachable

# KEYS: seq, stream, delayed. ARGV: data, due ("" = now). Returns the new id.
_PUBLISH: Final = """
local id = redis.call('INCR', KEYS[1])
if ARGV[2] == '' then
  redis.call('XADD', KEYS[2], '*', 'id', id, 'attempt', 1, 'data', ARGV[1])
else
  redis.call('ZADD', KEYS[3], ARGV[2], id .. ':1:' .. ARGV[1])
end
return id
"""
# KEYS: delayed, stream. ARGV: now, limit. Moves due members into the stream.
_MOVE_DUE: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local a = string.find(member, ':', 1, true)
    local b = string.find(member, ':', a + 1, true)
    redis.call('XADD', KEYS[2], '*', 'id', string.sub(member, 1, a - 1),
      'attempt', string.sub(member, a + 1, b - 1), 'data', string.sub(member, b + 1))
  end
end
return #due
"""
# KEYS: delayed, stream. ARGV: due, member, group, entry. A retry: due later, this entry done.
_RETRY: Final = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('XACK', KEYS[2], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[2], ARGV[4])
return 1
"""


class RedisBackend:
    """Where an MQ keeps its queues when given ``MQ(backend=RedisBackend(...))``.

    Args:
        url: the Redis server, as redis-py's ``Redis.from_url`` takes it.
        prefix: first part of every key, so several applications can share a server.
        group: the consumer group; MQs with the same group share each queue's messages.
        claim_idle: seconds after which a message held by a silent consumer (a process
            that died mid-call) is claimed and delivered again.
        serializer: how data is stored; JSON unless told otherwise.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "tinymq",
        group: str = "default",
        claim_idle: float = 30.0,
        serializer: Serializer = JSON,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise TypeError(f"url must be a Redis URL string, got {url!r}")
        for name, value in (("prefix", prefix), ("group", group)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if isinstance(claim_idle, bool) or not isinstance(claim_idle, (int, float)):
            raise TypeError(f"claim_idle must be a number of seconds, got {claim_idle!r}")
        if not claim_idle > 0:
            raise ValueError(f"claim_idle must be > 0, got {claim_idle!r}")
        self.url, self.prefix, self.group, self.claim_idle = url, prefix, group, claim_idle
        self.serializer = serializer
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._pool = redis.ConnectionPool.from_url(url)

    def client(self) -> redis.Redis:
        """A client on this backend's connection pool."""
        return redis.Redis(connection_pool=self._pool)

    def open(self, name: str, log: logging.Logger) -> tuple[RedisStore, RedisDeadLetters]:
        """The store and dead letters of queue ``name``; creates its group if missing."""
        store = RedisStore(self, name, log)
        return store, RedisDeadLetters(self, name)

    def key(self, queue: str, part: str) -> str:
        return f"{self.prefix}:{queue}:{part}"

    def close(self) -> None:
        self._pool.disconnect()

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url!r} prefix={self.prefix!r} group={self.group!r}>"


def unavailable(backend: RedisBackend, queue: str, exc: Exception) -> StorageError:
    """The error a call gets while Redis cannot be reached."""
    return StorageError(f"queue {queue!r}: Redis at {backend.url} is unavailable: {exc}")


class RedisStore:
    """A queue's messages in a Redis stream; ``remote``: they reach ``in`` via the intake.

    ``append`` runs one script (INCR + XADD, or ZADD when delayed), so a publish either
    happened whole or not at all; a connection lost during it leaves its outcome unknown,
    as any network call does. ``ack`` and ``schedule`` are called by workers.
    """

    durable = True
    remote = True
    direct_hand_off = True
    next_id = 0  # ids come from Redis

    def __init__(self, backend: RedisBackend, name: str, log: logging.Logger) -> None:
        self.backend, self.name, self._log = backend, name, log
        self._client = backend.client()
        self._stream = backend.key(name, "stream")
        self._keys = (backend.key(name, "seq"), self._stream, backend.key(name, "delayed"))
        self._publish = self._client.register_script(_PUBLISH)
        self._retry = self._client.register_script(_RETRY)
        self._lock = threading.Lock()  # guards _entries
        self._entries: dict[int, bytes] = {}  # message id -> its stream entry, while in flight
        self._intake: Intake | None = None
        try:
            self._client.xgroup_create(self._stream, backend.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        except redis.RedisError as exc:
            raise unavailable(backend, name, exc) from exc

    def append(self, msg: Msg, delay: float | None = None) -> tuple[Msg, Wait]:
        """Publish ``msg.data``; the returned message carries the id Redis issued."""
        payload = self._encode(msg.data)
        due = "" if delay is None else repr(time.time() + delay)
        try:
            msg_id = int(self._publish(keys=self._keys, args=[payload, due]))
        except redis.RedisError as exc:
            raise unavailable(self.backend, self.name, exc) from exc
        return Msg(msg_id, msg.data, self.name), no_wait

    def _encode(self, data: object) -> bytes:
        try:
            return self.backend.serializer.dumps(data)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise TypeError(
                f"queue {self.name!r}: {self.backend.serializer!r} cannot encode "
                f"{type(data).__name__}: {exc}"
            ) from exc

    def cancel(self, msg: Msg) -> None:
        pass  # a remote append is never taken back: append raised, or it is published

    def ack(self, msg: Msg) -> None:
        """XACK + XDEL the message's entry; if Redis is away, it is claimed again later."""
        with self._lock:
            entry = self._entries.pop(msg.id, None)
        if entry is None:
            return
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.xack(self._stream, self.backend.group, entry)
            pipe.xdel(self._stream, entry)
            pipe.execute()
        except redis.RedisError as exc:
            self._log.warning(
                "queue %r: message %d will be delivered again: cannot acknowledge it: %s",
                self.name,
                msg.id,
                exc,
            )

    def schedule(self, msg: Msg, delay: float) -> None:
        """Retry ``msg`` (its next attempt) through the delayed set, for any process to take."""
        with self._lock:
            entry = self._entries.pop(msg.id, None)
        if entry is None:
            return
        member = f"{msg.id}:{msg.attempt}:".encode() + self._encode(msg.data)
        try:
            self._retry(
                keys=[self._keys[2], self._stream],
                args=[repr(time.time() + delay), member, self.backend.group, entry],
            )
        except redis.RedisError as exc:
            self._log.warning(
                "queue %r: message %d will be claimed again instead of retried: %s",
                self.name,
                msg.id,
                exc,
            )

    def scheduled(self) -> list[tuple[Msg, float]]:
        return []  # delayed messages wait in Redis

    def backlog(self) -> Backlog:
        return MemoryBacklog()

    def start_intake(self, deliver: Callable[[Msg], None]) -> None:
        """Start reading the stream into ``deliver`` (the queue's ``in``)."""
        self._intake = Intake(self, deliver, self._log)
        self._intake.start()

    def stop_intake(self) -> None:
        """Stop reading; what was read is delivered, the rest stays in Redis. Idempotent."""
        if self._intake is not None:
            self._intake.stop()

    def track(self, msg_id: int, entry: bytes) -> None:
        with self._lock:
            self._entries[msg_id] = entry

    def decode(self, fields: dict[bytes, bytes], redelivered: bool, extra: int = 0) -> Msg:
        """The message of a stream entry; ``extra`` earlier deliveries add to its attempt."""
        attempt = int(fields[b"attempt"]) + extra
        data = self.backend.serializer.loads(fields[b"data"])
        return Msg(int(fields[b"id"]), data, self.name, attempt, redelivered)

    def close(self) -> None:
        self.stop_intake()
        self._client.close()

    def __repr__(self) -> str:
        return f"<RedisStore {self.name!r} on {self.backend.url!r}>"


class Intake:
    """The thread that moves a queue's stream entries into its ``in`` channel.

    Each turn: move due delayed messages into the stream, claim entries idle longer than
    ``claim_idle``, then read new entries, blocking until one arrives, the next due time,
    or ``BLOCK_MAX``. ``stop()`` unblocks the read with CLIENT UNBLOCK rather than
    waiting it out. Connection errors are logged once (then every 30 s) and retried with
    backoff; the intake says so when Redis is back.
    """

    def __init__(self, store: RedisStore, deliver: Callable[[Msg], None], log: logging.Logger):
        self.store, self._deliver, self._log = store, deliver, log
        backend = store.backend
        self._client = redis.Redis.from_url(backend.url)  # its own: it blocks in reads
        self._move_due = self._client.register_script(_MOVE_DUE)
        self._stopping = threading.Event()
        self._client_id: int | None = None
        self._next_claim = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"tinymq:{store.name}:intake", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        client_id = self._client_id
        if client_id is not None:
            # If Redis is unreachable the read ends on its own within BLOCK_MAX.
            with contextlib.suppress(redis.RedisError):
                self.store.backend.client().client_unblock(client_id)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        self._client.close()

    def _run(self) -> None:
        backoff, down_since, noted = 0.1, None, 0.0
        while not self._stopping.is_set():
            try:
                if self._client_id is None:
                    self._client_id = int(self._client.client_id())
                self._turn()
            except redis.RedisError as exc:
                self._client_id = None
                now = time.monotonic()
                if down_since is None or now - noted >= _NOTE_EVERY:
                    self._log.warning(
                        "queue %r: Redis unavailable (%s); retrying", self.store.name, exc
                    )
                    noted = now
                down_since = down_since or now
                self._stopping.wait(backoff)
                backoff = min(RECONNECT_MAX, backoff * 2)
                continue
            except _Closed:
                return
            if down_since is not None:
                self._log.warning(
                    "queue %r: Redis is back after %.1f s",
                    self.store.name,
                    time.monotonic() - down_since,
                )
                down_since, backoff = None, 0.1

    def _turn(self) -> None:
        store, now = self.store, time.time()
        self._move_due(keys=[store._keys[2], store._stream], args=[repr(now), READ_COUNT])
        if time.monotonic() >= self._next_claim:
            self._claim()
            self._next_claim = time.monotonic() + store.backend.claim_idle / 2
        found: Any = self._client.xreadgroup(
            store.backend.group,
            store.backend.consumer,
            {store._stream: ">"},
            count=READ_COUNT,
            block=int(self._block_time() * 1000),
        )
        for _stream, entries in found or []:
            self._hand_over(entries, redelivered=False, extra={})

    def _block_time(self) -> float:
        """Until the next delayed message is due, at most BLOCK_MAX; at least 1 ms."""
        first = self._client.zrange(self.store._keys[2], 0, 0, withscores=True)
        if not first:
            return BLOCK_MAX
        return min(BLOCK_MAX, max(0.001, float(first[0][1]) - time.time()))

    def _claim(self) -> None:
        """Claim entries other consumers held longer than ``claim_idle``."""
        store = self.store
        backend, idle_ms = store.backend, int(store.backend.claim_idle * 1000)
        pending: Any = self._client.xpending_range(
            store._stream, backend.group, min="-", max="+", count=READ_COUNT, idle=idle_ms
        )
        if not pending:
            return
        deliveries: dict[bytes, int] = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        claimed: Any = self._client.xclaim(
            store._stream, backend.group, backend.consumer, idle_ms, list(deliveries)
        )
        self._hand_over(claimed, redelivered=True, extra=deliveries)

    def _hand_over(self, entries: list[Any], *, redelivered: bool, extra: dict[bytes, int]) -> None:
        for entry_id, fields in entries:
            if not fields:  # deleted meanwhile (acknowledged by its old holder)
                continue
            msg = self.store.decode(fields, redelivered, extra.get(entry_id, 0))
            self.store.track(msg.id, entry_id)
            try:
                self._deliver(msg)
            except Exception as exc:  # the queue closed: the entry stays pending in Redis
                raise _Closed from exc


class _Closed(Exception):
    """The queue stopped taking messages: the intake ends."""


class RedisDeadLetters:
    """A queue's dead letters in a Redis hash: message id -> the letter, serialized."""

    def __init__(self, backend: RedisBackend, name: str) -> None:
        self.backend, self.name = backend, name
        self._client = backend.client()
        self._key = backend.key(name, "dead")

    def add(self, letter: DeadLetter) -> None:
        raw = self.backend.serializer.dumps(asdict(letter))
        try:
            self._client.hset(self._key, str(letter.id), raw)
        except redis.RedisError as exc:
            raise unavailable(self.backend, self.name, exc) from exc

    def all(self) -> list[DeadLetter]:
        try:
            raw: Any = self._client.hvals(self._key)
        except redis.RedisError as exc:
            raise unavailable(self.backend, self.name, exc) from exc
        letters = [DeadLetter(**self.backend.serializer.loads(value)) for value in raw]
        return sorted(letters, key=lambda letter: (letter.dead_at, letter.id))

    def remove(self, ids: set[int] | None) -> list[DeadLetter]:
        chosen = [letter for letter in self.all() if ids is None or letter.id in ids]
        if chosen:
            try:
                self._client.hdel(self._key, *(str(letter.id) for letter in chosen))
            except redis.RedisError as exc:
                raise unavailable(self.backend, self.name, exc) from exc
        return chosen

    def close(self) -> None:
        self._client.close()
