"""RedisBackend: the same queues on a Redis server, shared by processes and machines.

Each queue is a stream read by one consumer group; every MQ on the same Redis, prefix and
group takes its share. Ids come from a per-queue counter (INCR), so ``Msg.id`` means
the same in every process. An intake thread per queue reads the stream (XREADGROUP) into
the queue's ``in`` channel, where the usual forwarder and workers take over; a worker's
ack is XACK + XDEL (one script). Redis's "pending entries list" is what tinymq calls *in flight*:
entries read by a consumer and not acknowledged. A process holds at most ``prefetch``
of them per queue, and renews its claim on them (XCLAIM ... JUSTID) every third of
``claim_idle``; those of a process that stopped renewing (it died, or lost Redis) are
claimed after ``claim_idle`` seconds (XPENDING + XCLAIM, rather than XAUTOCLAIM, to read
each entry's delivery count) and delivered again, with ``redelivered=True`` and
``attempt`` counting the earlier deliveries. Delayed messages and retries wait in a
sorted set by due time, moved into the stream when due by a script (any process may
move them, each exactly once). Dead letters are a hash; an entry that cannot be decoded
becomes one at once (reason "undecodable") instead of stopping the intake.

Keys, for queue ``q``: ``{prefix}:q:stream``, ``:seq``, ``:delayed``, ``:dead``.
Registering a queue does not contact Redis: its intake creates the group when it first
connects, and again if a restart lost it.
"""

from __future__ import annotations

import logging
import math
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

READ_COUNT: Final = 256  # at most this many entries per claim or move of due messages
BLOCK_MAX: Final = 1.0  # seconds an idle intake blocks in one read
RECONNECT_MAX: Final = 5.0  # seconds between reconnect attempts, at most
CONNECT_TIMEOUT: Final = 5.0  # seconds to connect (unless the URL says otherwise)
SOCKET_TIMEOUT: Final = 10.0  # seconds to wait for a reply; above BLOCK_MAX
_UNBLOCK_TRIES: Final = 100  # a read not blocked after this many ms ends on its own
_NOTE_EVERY: Final = 30.0  # seconds between log lines while Redis stays unreachable
_JOIN_INTAKE: Final = 2.0  # seconds close() waits for an intake cut off from its socket

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
# KEYS: delayed, stream. ARGV: now, limit. Moves due members into the stream; returns
# the due time of the next member left, or false if there is none.
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
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return false end
return first[2]
"""
# KEYS: stream. ARGV: group, entry. The ack: one command, cheaper than MULTI/EXEC for both.
_ACK: Final = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
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
        claim_idle: seconds after which the messages held by a process that stopped
            renewing its claim (it died mid-call) are claimed and delivered again.
        prefetch: messages per queue this process holds at most (read, not yet
            acknowledged); keep it above the queue's concurrency.
        serializer: how data is stored; JSON unless told otherwise.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "tinymq",
        group: str = "default",
        claim_idle: float = 30.0,
        prefetch: int = 64,
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
        if isinstance(prefetch, bool) or not isinstance(prefetch, int):
            raise TypeError(f"prefetch must be an int, got {prefetch!r}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self.url, self.prefix, self.group, self.claim_idle = url, prefix, group, claim_idle
        self.prefetch, self.serializer = prefetch, serializer
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._pool = self._new_pool()

    def _new_pool(self) -> redis.ConnectionPool:
        """A pool whose connections carry the client name ``tinymq:{consumer}``."""
        return redis.ConnectionPool.from_url(
            self.url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            client_name=self.client_name,
        )

    @property
    def client_name(self) -> str:
        """What CLIENT LIST shows for this backend's connections."""
        return f"tinymq:{self.consumer}"

    def client(self) -> redis.Redis:
        """A client on this backend's connection pool."""
        return redis.Redis(connection_pool=self._pool)

    def reader(self) -> redis.Redis:
        """A client with a connection of its own, for an intake that blocks in reads."""
        return redis.Redis(connection_pool=self._new_pool())

    def open(self, name: str, log: logging.Logger) -> tuple[RedisStore, RedisDeadLetters]:
        """The store and dead letters of queue ``name``; contacts no server."""
        dead = RedisDeadLetters(self, name)
        return RedisStore(self, name, log, dead), dead

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

    def __init__(
        self, backend: RedisBackend, name: str, log: logging.Logger, dead: RedisDeadLetters
    ) -> None:
        self.backend, self.name, self.dead, self._log = backend, name, dead, log
        self._client = backend.client()
        self.stream = backend.key(name, "stream")
        self.delayed = backend.key(name, "delayed")
        self._seq = backend.key(name, "seq")
        self._publish = self._client.register_script(_PUBLISH)
        self._retry = self._client.register_script(_RETRY)
        self._ack = self._client.register_script(_ACK)
        self._lock = threading.Lock()  # guards _entries
        # Notified when the entries held fall to half the prefetch: the intake reads again.
        self.settled = threading.Condition(self._lock)
        self._low_water = backend.prefetch // 2
        self._entries: dict[int, bytes] = {}  # message id -> its stream entry, while in flight
        self._intake: Intake | None = None

    def append(self, msg: Msg, delay: float | None = None) -> tuple[Msg, Wait]:
        """Publish ``msg.data``; the returned message carries the id Redis issued."""
        payload = self._encode(msg.data)
        due = None if delay is None else time.time() + delay
        try:
            keys = (self._seq, self.stream, self.delayed)
            msg_id = int(self._publish(keys=keys, args=[payload, "" if due is None else repr(due)]))
        except redis.RedisError as exc:
            raise unavailable(self.backend, self.name, exc) from exc
        if due is not None:
            self._wake(due)
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
        entry = self._forget(msg.id)
        if entry is None:
            return
        try:
            self._done(entry)
        except redis.RedisError as exc:
            self._log.warning(
                "queue %r: message %d will be delivered again: cannot acknowledge it: %s",
                self.name,
                msg.id,
                exc,
            )

    def _done(self, entry: bytes) -> None:
        self._ack(keys=[self.stream], args=[self.backend.group, entry])

    def _forget(self, msg_id: int) -> bytes | None:
        """Stop tracking ``msg_id``'s entry: it leaves this process's prefetch."""
        with self._lock:
            entry = self._entries.pop(msg_id, None)
            if entry is not None and len(self._entries) == self._low_water:
                self.settled.notify()
        return entry

    def schedule(self, msg: Msg, delay: float) -> None:
        """Retry ``msg`` (its next attempt) through the delayed set, for any process to take."""
        entry = self._forget(msg.id)
        if entry is None:
            return
        member = f"{msg.id}:{msg.attempt}:".encode() + self._encode(msg.data)
        due = time.time() + delay
        try:
            self._retry(
                keys=[self.delayed, self.stream],
                args=[repr(due), member, self.backend.group, entry],
            )
        except redis.RedisError as exc:
            self._log.warning(
                "queue %r: message %d will be claimed again instead of retried: %s",
                self.name,
                msg.id,
                exc,
            )
            return
        self._wake(due)

    def _wake(self, due: float) -> None:
        """Cut this process's intake's read short if ``due`` comes before it ends."""
        intake = self._intake
        if intake is not None:
            intake.wake_before(due)

    def scheduled(self) -> list[tuple[Msg, float]]:
        return []  # delayed messages wait in Redis

    def backlog(self) -> Backlog:
        return MemoryBacklog()

    def start_intake(self, deliver: Callable[[Msg], None]) -> None:
        """Start reading the stream into ``deliver`` (the queue's ``in``)."""
        self._intake = Intake(self, deliver, self._log)
        self._intake.start()

    def stop_intake(self) -> None:
        """Stop reading; what was read is delivered, the rest stays in Redis. The intake
        goes on renewing the entries this process holds until they are settled or the
        store is closed, so that no other process takes a call still draining here.
        Returns at once. Idempotent."""
        if self._intake is not None:
            self._intake.stop_reading()

    def release(self, msg: Msg) -> None:
        """Stop renewing ``msg``'s entry without settling it: any process claims it again
        after ``claim_idle`` (a dead letter could not be written, say)."""
        self._forget(msg.id)

    def room(self) -> int:
        """How many entries this process may read now: none while it holds more than half
        its ``prefetch``, then up to ``prefetch`` (reads come in batches, not one by one)."""
        with self._lock:
            held = len(self._entries)
            return 0 if held > self._low_water else self.backend.prefetch - held

    def wait_room(self, timeout: float, stopping: threading.Event) -> None:
        """Wait up to ``timeout`` s for the entries held to fall to half the ``prefetch``;
        ``stop`` wakes it too."""
        with self.settled:
            if len(self._entries) > self._low_water and not stopping.is_set():
                self.settled.wait(timeout)

    def held(self) -> list[bytes]:
        """The entries this process holds, read and not yet acknowledged or retried."""
        with self._lock:
            return list(self._entries.values())

    def track(self, msg_id: int, entry: bytes) -> None:
        with self._lock:
            self._entries[msg_id] = entry

    def decode(self, fields: dict[bytes, bytes], redelivered: bool, extra: int = 0) -> Msg:
        """The message of a stream entry; ``extra`` earlier deliveries add to its attempt."""
        attempt = int(fields[b"attempt"]) + extra
        data = self.backend.serializer.loads(fields[b"data"])
        return Msg(int(fields[b"id"]), data, self.name, attempt, redelivered)

    def bury(self, entry: bytes, fields: dict[bytes, bytes], exc: Exception) -> None:
        """Make an entry that cannot be decoded a dead letter (its data as text), and drop it."""
        try:
            msg_id = int(fields.get(b"id", b"0"))
        except ValueError:
            msg_id = 0
        raw = fields.get(b"data", b"").decode("utf-8", "replace")
        kind = type(exc)
        letter = DeadLetter(
            id=msg_id,
            data=raw,
            queue=self.name,
            attempts=0,
            reason="undecodable",
            error_type=f"{kind.__module__}.{kind.__qualname__}",
            error=str(exc),
            traceback="",
            dead_at=time.time(),
        )
        self._log.error(
            "queue %r: entry %s (message %d) cannot be decoded by %r, made a dead letter: %s",
            self.name,
            entry.decode(),
            msg_id,
            self.backend.serializer,
            exc,
        )
        self.dead.add(letter)
        self._done(entry)

    def close(self) -> None:
        if self._intake is not None:
            self._intake.stop()
        self._client.close()

    def __repr__(self) -> str:
        return f"<RedisStore {self.name!r} on {self.backend.url!r}>"


class Intake:
    """The thread that moves a queue's stream entries into its ``in`` channel.

    Each turn: renew the claim on the entries this process holds and claim those other
    consumers left idle longer than ``claim_idle`` (every third of it); then, if this
    process holds fewer than ``prefetch`` entries, move due delayed messages into the
    stream (when any may be due: see ``_check_due``) and read new entries, blocking until
    one arrives, the next due time, the next renewal or ``BLOCK_MAX``; else wait for a
    worker to settle one. ``stop_reading()`` ends the reads and claims, not the renewals:
    the thread renews what this process still holds until none is left or ``stop()``.
    Both, and an earlier due time, unblock the read with CLIENT UNBLOCK rather than
    waiting it out.
    Connection errors are logged once (then every 30 s, never with a traceback) and
    retried with backoff; the intake says so when Redis is back.
    """

    def __init__(self, store: RedisStore, deliver: Callable[[Msg], None], log: logging.Logger):
        self.store, self._deliver, self._log = store, deliver, log
        self._client = store.backend.reader()  # its own connection: it blocks in reads
        self._move_due = self._client.register_script(_MOVE_DUE)
        self._stopping = threading.Event()  # stop(): the thread ends
        self._draining = threading.Event()  # stop_reading(): only renewals from now on
        self._client_id: int | None = None
        self._next_claim = 0.0  # time.monotonic() of the next renewal and claim
        # time.time() when the current read ends at the latest: inf while it is being
        # prepared, 0.0 between reads. ``_reads`` counts the reads that have ended.
        self._read_until = 0.0
        self._reads = 0
        self._next_due: float | None = None  # time.time() when the next delayed one is due
        self._next_due_check = 0.0  # time.monotonic() of the next look at the delayed set
        self._poked = False  # this process added a delayed message: look at the set
        self._thread = threading.Thread(
            target=self._run, name=f"tinymq:{store.name}:intake", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop_reading(self) -> None:
        """Read and claim nothing more; keep renewing what is held. Returns at once."""
        self._draining.set()
        with self.store.settled:
            self.store.settled.notify_all()
        self._unblock()

    def stop(self) -> None:
        """End the thread, also mid-read on a server that stopped answering."""
        self._draining.set()
        self._stopping.set()
        with self.store.settled:
            self.store.settled.notify_all()
        self._unblock()
        pool = self._client.connection_pool
        pool.disconnect()  # a read or a reply still awaited fails now, not at its timeout
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(_JOIN_INTAKE)
            if self._thread.is_alive():
                self._log.warning("queue %r: its intake thread did not end", self.store.name)
        self._client.close()
        pool.disconnect()

    def wake_before(self, due: float) -> None:
        """A message is due at ``due`` (time.time()): end the read early if it ends later."""
        self._poked = True  # before the check of _read_until: see _read
        if due < self._read_until:
            self._unblock()

    def _unblock(self) -> None:
        """End the current read now. A read still on its way to Redis cannot be unblocked
        yet, so try again each millisecond until it is blocked, or has ended."""
        reads, client = self._reads, self.store.backend.client()
        for _ in range(_UNBLOCK_TRIES):
            client_id = self._client_id
            if client_id is None or self._read_until == 0.0 or self._reads != reads:
                return  # not reading: the next turn sees the new due time, or the stop
            try:
                if client.client_unblock(client_id):
                    return
            except redis.RedisError:
                return  # unreachable: the read ends on its own within BLOCK_MAX
            time.sleep(0.001)

    def _run(self) -> None:
        backoff, down_since, noted = 0.1, None, 0.0
        while not self._stopping.is_set():
            if self._draining.is_set() and not self.store.held():
                return  # nothing left to renew
            try:
                if self._client_id is None:
                    self._connect()
                if self._draining.is_set():
                    self._renew_only()
                else:
                    self._turn()
            except (redis.RedisError, StorageError) as exc:  # StorageError: from dead letters
                self._client_id = None
                if self._stopping.is_set():
                    return  # stop() cut the connection
                now = time.monotonic()
                if down_since is None or now - noted >= _NOTE_EVERY:
                    self._log.warning(
                        "queue %r: Redis at %s unavailable (%s); retrying",
                        self.store.name,
                        self.store.backend.url,
                        exc,
                    )
                    noted = now
                down_since = down_since or now
                self._stopping.wait(backoff)
                backoff = min(RECONNECT_MAX, backoff * 2)
                continue
            except _Closed:
                self._draining.set()  # the queue takes nothing more: renew what it holds
                continue
            except Exception:
                if self._stopping.is_set():
                    return  # stop() closed its socket mid-call: redis-py fails in many ways
                raise
            if down_since is not None:
                self._log.warning(
                    "queue %r: Redis is back after %.1f s",
                    self.store.name,
                    time.monotonic() - down_since,
                )
                down_since, backoff = None, 0.1

    def _connect(self) -> None:
        """Learn this connection's id (for CLIENT UNBLOCK) and make sure the group exists."""
        store = self.store
        self._client_id = int(self._client.client_id())
        try:
            self._client.xgroup_create(store.stream, store.backend.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _renew_only(self) -> None:
        """While the queue drains: renew what this process holds every third of
        ``claim_idle``, and sleep in between (a settled entry or ``stop()`` wakes it)."""
        if time.monotonic() >= self._next_claim:
            self._renew()
            self._next_claim = time.monotonic() + self.store.backend.claim_idle / 3
        with self.store.settled:
            if not self._stopping.is_set():
                self.store.settled.wait(self._until_claim())

    def _turn(self) -> None:
        store = self.store
        if time.monotonic() >= self._next_claim:
            self._renew()
            self._claim()
            self._next_claim = time.monotonic() + store.backend.claim_idle / 3
        room = store.room()
        if room <= 0:
            store.wait_room(self._until_claim(), self._stopping)
            return
        found = self._read(room)
        for _stream, entries in found or []:
            self._hand_over(entries, redelivered=False, extra={})

    def _read(self, count: int) -> Any:
        """Move due messages into the stream, then read up to ``count`` new entries."""
        store = self.store
        self._read_until = math.inf  # from here on a waker must unblock (see _unblock)
        try:
            self._check_due()
            block = self._block_time(self._next_due)
            self._read_until = time.time() + block
            return self._client.xreadgroup(
                store.backend.group,
                store.backend.consumer,
                {store.stream: ">"},
                count=count,
                block=max(1, int(block * 1000)),
            )
        finally:
            self._reads += 1
            self._read_until = 0.0

    def _check_due(self) -> None:
        """Move due delayed messages into the stream, if any may be due.

        That is when one this intake knows of is due, when this process added one, and
        once per BLOCK_MAX for those other processes add: not a round trip per read.
        """
        store, now = self.store, time.monotonic()
        known_due = self._next_due is not None and self._next_due <= time.time()
        if not (self._poked or known_due or now >= self._next_due_check):
            return
        self._poked = False
        next_due = self._move_due(
            keys=[store.delayed, store.stream], args=[repr(time.time()), READ_COUNT]
        )
        self._next_due = None if next_due is None else float(next_due)
        self._next_due_check = now + BLOCK_MAX

    def _until_claim(self) -> float:
        return max(0.001, self._next_claim - time.monotonic())

    def _block_time(self, next_due: float | None) -> float:
        """Until the next delayed message is due or the next renewal, at most BLOCK_MAX."""
        block = min(BLOCK_MAX, self._until_claim())
        if next_due is not None:
            block = min(block, max(0.001, next_due - time.time()))
        return block

    def _renew(self) -> None:
        """Reset the idle time of the entries this process holds: it is alive."""
        store = self.store
        held: list[Any] = store.held()  # redis-py's stubs want a list of a union
        if held:
            self._client.xclaim(
                store.stream, store.backend.group, store.backend.consumer, 0, held, justid=True
            )

    def _claim(self) -> None:
        """Claim entries other consumers held longer than ``claim_idle``, as room allows."""
        store = self.store
        backend, idle_ms, room = store.backend, int(store.backend.claim_idle * 1000), store.room()
        if room <= 0:
            return
        pending: Any = self._client.xpending_range(
            store.stream, backend.group, min="-", max="+", count=min(room, READ_COUNT), idle=idle_ms
        )
        held = set(store.held())  # ours, late for renewal: not to be delivered twice here
        deliveries: dict[bytes, int] = {
            p["message_id"]: int(p["times_delivered"])
            for p in pending or []
            if p["message_id"] not in held
        }
        if not deliveries:
            return
        claimed: Any = self._client.xclaim(
            store.stream, backend.group, backend.consumer, idle_ms, list(deliveries)
        )
        self._hand_over(claimed, redelivered=True, extra=deliveries)

    def _hand_over(self, entries: list[Any], *, redelivered: bool, extra: dict[bytes, int]) -> None:
        for entry_id, fields in entries:
            if not fields:  # deleted meanwhile (acknowledged by its old holder)
                continue
            try:
                msg = self.store.decode(fields, redelivered, extra.get(entry_id, 0))
            except Exception as exc:  # noqa: BLE001 - any serializer error: the entry is poison
                try:
                    self.store.bury(entry_id, fields, exc)
                except (redis.RedisError, StorageError) as failed:  # the rest still goes on
                    self._log.warning(
                        "queue %r: entry %s stays pending, to be buried once claimed again: %s",
                        self.store.name,
                        entry_id.decode(),
                        failed,
                    )
                continue
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
