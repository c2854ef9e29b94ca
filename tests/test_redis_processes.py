"""The Redis backend under faults: a consumer process killed, connections dropped, a restart.

Processes (tests/redis_child.py) report every publish and consumer call through a
pipe; the parent kills one consumer with SIGKILL while it is inside consumer calls,
and checks that every acknowledged publish was processed at least once, that what the
dead process held was claimed by the others and delivered again (``redelivered``),
and reports how many messages were processed twice. Dropping connections (CLIENT
KILL) in the middle of a run must lose nothing acknowledged either, and the outage is
logged as warnings, never as a traceback per reconnect attempt. The same holds when
the server itself is killed and restarted: a private redis-server on a port of its
own (with appendfsync always), so the shared test server is never touched.
"""

# ruff: noqa: F811 - the fixtures imported from tests.redis_support are parameters here

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.redis_support import answers, client, prefix, redis_url  # noqa: F401 - fixtures
from tinymq import MQ, Context, Msg, StorageError
from tinymq.redis_streams import RedisBackend

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30.0  # seconds any wait on the children may take before the test fails
CLAIM_IDLE = 1.0


@dataclass
class Child:
    """One child process and the lines it has written so far."""

    name: str
    proc: subprocess.Popen[bytes]
    stderr: Path
    lines: list[str] = field(default_factory=list)
    partial: bytes = b""
    closed: bool = False

    def events(self, kind: str) -> list[list[str]]:
        """The fields of every line that starts with ``kind``."""
        return [line.split()[1:] for line in self.lines if line.split()[0] == kind]

    def describe(self) -> str:
        return f"{self.name}: {self.lines[-5:]}, stderr:\n{self.stderr.read_text()[-3000:]}"


@dataclass
class Children:
    """Starts children on this test's Redis prefix and reads all their pipes at once."""

    url: str
    prefix: str
    tmp_path: Path
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, role: str, *args: str) -> Child:
        command = [sys.executable, "-m", "tests.redis_child", role, self.url, self.prefix]
        stderr = self.tmp_path / f"{name}.stderr"
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [*command, *args],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        child = Child(name, proc, stderr)
        self.children.append(child)
        return child

    def pump(self, until: Callable[[], bool], what: str) -> None:
        """Read every child's output until ``until()``; fail after TIMEOUT seconds."""
        deadline = time.monotonic() + TIMEOUT
        with selectors.DefaultSelector() as selector:
            for child in self.children:
                if not child.closed:
                    assert child.proc.stdout is not None
                    selector.register(child.proc.stdout, selectors.EVENT_READ, child)
            while not until():
                left = deadline - time.monotonic()
                if left <= 0 or not selector.get_map():
                    states = "\n".join(c.describe() for c in self.children)
                    pytest.fail(f"waiting for {what}: gave up after {TIMEOUT} s\n{states}")
                for key, _ in selector.select(left):
                    self._read(key.data, selector)

    def _read(self, child: Child, selector: selectors.BaseSelector) -> None:
        assert child.proc.stdout is not None
        data = os.read(child.proc.stdout.fileno(), 1 << 16)
        if not data:
            selector.unregister(child.proc.stdout)
            child.closed = True
            return
        *whole, child.partial = (child.partial + data).split(b"\n")
        child.lines += [line.decode() for line in whole]

    def kill_all(self) -> None:
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGKILL)
            child.proc.wait()
            for pipe in (child.proc.stdin, child.proc.stdout):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def children(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Children]:
    kids = Children(redis_url, prefix, tmp_path)
    yield kids
    kids.kill_all()


def stop(child: Child) -> None:
    """Ask a consumer to stop (it drains what it holds, then writes "done")."""
    assert child.proc.stdin is not None
    child.proc.stdin.write(b"stop\n")
    child.proc.stdin.close()


def test_a_killed_consumers_messages_are_claimed_by_the_others(
    children: Children, redis_url: str, prefix: str
) -> None:
    count = 600
    consumer_args = ("--concurrency", "2", "--work", "0.002", "--claim-idle", str(CLAIM_IDLE))
    victim = children.spawn("victim", "consumer", *consumer_args, "--hang-after", "20")
    others = [children.spawn(f"consumer-{i}", "consumer", *consumer_args) for i in (1, 2)]
    consumers = [victim, *others]
    children.pump(lambda: all(c.events("ready") for c in consumers), "consumers ready")
    producer = children.spawn("producer", "producer", "--count", str(count), "--pace", "0.0005")

    # Both its workers stuck in calls, its intake fills the prefetch behind them.
    children.pump(lambda: len(victim.events("hang")) == 2, "the victim to hang in two calls")
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait(TIMEOUT) == -signal.SIGKILL
    orphans = held_by(redis_url, prefix, victim.proc.pid)  # before anyone claims them
    children.pump(lambda: bool(producer.events("done")), "the producer to finish")
    published = {int(f[0]): int(f[1]) for f in producer.events("pub")}
    assert len(published) == count

    def processed() -> Counter[int]:
        return Counter(int(f[0]) for c in consumers for f in c.events("end"))

    children.pump(lambda: set(published) <= set(processed()), "every message processed")
    for child in others:
        stop(child)
    children.pump(lambda: all(c.events("done") for c in others), "the consumers to stop")

    ended = processed()
    assert set(ended) == set(published), "every published id processed, nothing invented"
    held = {int(f[0]) for f in victim.events("start")} - {int(f[0]) for f in victim.events("end")}
    assert len(held) == 2, "the victim was killed inside its two consumer calls"
    redelivered = {int(f[0]) for c in others for f in c.events("start") if f[2] == "1"}
    assert held <= redelivered, "what the victim held was claimed and delivered again"
    assert len(redelivered) >= orphans >= len(held)
    assert all(int(f[1]) >= 2 for c in others for f in c.events("start") if f[2] == "1")
    duplicates = sum(n - 1 for n in ended.values())
    print(
        f"\n{count} messages, 1 producer, 3 consumer processes, one killed with "
        f"{len(held)} call(s) in flight and {orphans} message(s) held: processed "
        f"{sum(ended.values())} times, {duplicates} duplicate(s), {len(redelivered)} "
        f"redelivered after the claim (claim_idle {CLAIM_IDLE} s); calls ended: "
        + ", ".join(f"{c.name} {len(c.events('end'))}" for c in consumers)
    )
    db = client(redis_url)
    assert db.xlen(f"{prefix}:q:stream") == 0, "every entry acknowledged and deleted"
    assert db.xpending(f"{prefix}:q:stream", "default")["pending"] == 0


def held_by(url: str, prefix: str, pid: int) -> int:
    """How many entries the consumer of process ``pid`` holds (read, not acknowledged)."""
    summary: Any = client(url).xpending(f"{prefix}:q:stream", "default")
    mine = [c for c in summary["consumers"] if f"-{pid}-" in c["name"].decode()]
    return sum(int(c["pending"]) for c in mine)


def kill_connections(url: str, names: set[str]) -> int:
    """CLIENT KILL every connection whose client name is in ``names``; return how many."""
    db = client(url)
    try:
        found: Any = db.client_list()
        ids = [c["id"] for c in found if c.get("name") in names]
        for client_id in ids:
            db.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        db.close()


def test_dropped_connections_lose_nothing_acknowledged_and_are_logged_once(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinymq")
    kills = 10
    seen: list[Msg] = []
    lock = threading.Lock()  # guards seen

    def consume(ctx: Context, msg: Msg) -> None:
        with lock:
            seen.append(msg)

    backends = [RedisBackend(redis_url, prefix=prefix, claim_idle=0.5) for _ in range(2)]
    publisher, worker = (MQ(backend=b) for b in backends)
    publisher.register_queue("q", None)
    worker.register_queue("q", consume, 4)
    worker.start()
    try:
        count, failed = publish_while_dropping(publisher, redis_url, backends, kills)
        wait_consumed(lock, seen, set(range(count)))
    finally:
        worker.stop(timeout=10)
        publisher.stop()
    missing = set(range(count)) - {m.data for m in seen}
    assert not missing, f"acknowledged and never consumed: {sorted(missing)[:10]}"
    outages = [r for r in caplog.records if "unavailable" in r.getMessage()]
    backs = [r for r in caplog.records if "is back after" in r.getMessage()]
    assert outages and backs, "the intake's reconnects are logged"
    assert len(outages) <= kills, "one line per outage, not one per attempt"
    assert all(r.exc_info is None for r in caplog.records), "no tracebacks"
    duplicates = len(seen) - len({m.data for m in seen})
    print(
        f"\n{count} messages, {kills} rounds of CLIENT KILL: {failed} publish(es) raised "
        f"StorageError and were published again, {duplicates} message(s) consumed twice, "
        f"{len(outages)} outage warning(s)"
    )


def publish_while_dropping(
    publisher: MQ, url: str, backends: list[RedisBackend], kills: int
) -> tuple[int, int]:
    """Publish 0, 1, 2... while another thread drops every connection ``kills`` times.

    A publish that raises StorageError may or may not have happened; it is published
    again, so each payload is acknowledged once. Returns how many payloads were
    published, and how many publishes raised.
    """
    count = failed = 0

    def drop_connections() -> None:
        for _ in range(kills):
            time.sleep(0.1)
            kill_connections(url, {b.client_name for b in backends})

    dropper = threading.Thread(target=drop_connections)
    dropper.start()
    try:
        while dropper.is_alive():
            try:
                publisher.publish("q", count)
                count += 1
            except StorageError as exc:
                assert "'q'" in str(exc) and url in str(exc)
                failed += 1
    finally:
        dropper.join()
    return count, failed


def wait_consumed(lock: threading.Lock, seen: list[Msg], wanted: set[int]) -> None:
    """Wait until every payload in ``wanted`` was consumed, or TIMEOUT passes."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with lock:
            if wanted <= {m.data for m in seen}:
                return
        time.sleep(0.01)


@dataclass
class Server:
    """A private redis-server, killed and restarted at will, on a free port."""

    binary: str
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        command += ["--dir", str(self.directory), "--logfile", str(self.directory / "log")]
        self.proc = subprocess.Popen(command)
        deadline = time.monotonic() + TIMEOUT
        while not self.answers():
            assert self.proc.poll() is None, (self.directory / "log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.01)

    def answers(self) -> bool:
        return answers(self.url)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: no private server to restart")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    private = Server(binary, tmp_path, port)
    private.start()
    yield private
    private.kill()


def test_a_server_killed_and_restarted_loses_nothing_acknowledged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinymq")
    seen: list[Msg] = []
    lock = threading.Lock()  # guards seen

    def consume(ctx: Context, msg: Msg) -> None:
        with lock:
            seen.append(msg)

    publisher = MQ(backend=RedisBackend(server.url))
    worker = MQ(backend=RedisBackend(server.url, claim_idle=0.5))
    publisher.register_queue("q", None)
    worker.register_queue("q", consume, 4)
    worker.start()
    acked: list[int] = []
    failed = [0]
    done = threading.Event()

    def publish() -> None:
        n = 0
        while not done.is_set():
            try:
                publisher.publish("q", n)
            except StorageError:  # down, or its outcome unknown: publish it again
                failed[0] += 1
                time.sleep(0.01)
                continue
            acked.append(n)
            n += 1

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        time.sleep(0.3)
        server.kill()  # a crash: what was acknowledged is in the append-only file
        time.sleep(0.5)
        server.start()
        time.sleep(0.3)
        done.set()
        thread.join()
        wait_consumed(lock, seen, set(acked))
    finally:
        done.set()
        worker.stop(timeout=10)
        publisher.stop()
    missing = set(acked) - {m.data for m in seen}
    assert not missing, f"acknowledged and never consumed: {sorted(missing)[:10]}"
    assert failed[0] > 0, "the publisher saw the server go"
    assert any("is back after" in r.getMessage() for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records), "no tracebacks"
    print(
        f"\n{len(acked)} messages acknowledged around a server kill and restart: "
        f"{failed[0]} publish(es) raised StorageError, "
        f"{len(seen) - len({m.data for m in seen})} message(s) consumed twice"
    )
