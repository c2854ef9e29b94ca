"""The Redis rows of bench_throughput.py: tinymq on Redis against a bare loop and dramatiq.

The same work for every contender, in interleaved rounds of one run: P consumer
processes (1 and 4) are started and ready, then this process publishes N ints one
publish at a time and waits until every one has been consumed and acknowledged. The
clock runs from the first publish until Redis holds none of them any more; the rate
is N over that time (the publish phase alone is reported too). Contenders:

* tinymq: each process runs an MQ on ``RedisBackend`` with one no-op consumer thread
  (concurrency 1, default prefetch); this process publishes through a publish-only MQ
  (INCR + XADD in one script). Done when the stream is empty (ack is XACK + XDEL).
* redis-py: the bare loop doing the same work by hand. XADD per message here; in each
  process one thread reads XREADGROUP COUNT 64 BLOCK 100 and acknowledges each entry
  after its (no-op) call with XACK + XDEL in one MULTI (tinymq runs both in one script).
* dramatiq: its RedisBroker; ``actor.send`` per message here, a ``Worker`` with one
  worker thread in each process (worker_timeout 100 ms, and prefetch 64 like the
  others: its default for one thread, 2, costs a fetch per 2 messages). Done when its
  message hash is empty. Reported as skipped if dramatiq is not installed.

Every process reports what it consumed; a round fails (CountError) unless the
published ints were each consumed exactly once. The figures are rates and the ratios
of tinymq to each contender with the same process count (the median of same-round
ratios). Keys live under a fresh prefix per run, deleted afterwards, in the database
of TINYMQ_BENCH_REDIS_URL (default redis://127.0.0.1:6379/14); without a server the
section is skipped.

Run alone from the repository root::

    python benchmarks/bench_redis.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
from bench_report import progress, spread, table  # beside this script, on sys.path

import tinymq
from tinymq import MQ, Context, Msg
from tinymq.redis_streams import RedisBackend

URL = os.environ.get("TINYMQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
QUEUE = "bench"
GROUP = "bench"
PROCESSES = (1, 4)
TINYMQ, BARE, DRAMATIQ = "tinymq", "redis-py", "dramatiq"
CONTENDERS = (TINYMQ, BARE, DRAMATIQ)
LABELS = {
    TINYMQ: "tinymq RedisBackend",
    BARE: "bare redis-py XADD/XREADGROUP/XACK",
    DRAMATIQ: "dramatiq RedisBroker",
}
READ_COUNT = 64  # the bare loop's XREADGROUP COUNT and dramatiq's prefetch: tinymq's default
CHILD_TIMEOUT = 120.0  # seconds a round may take before it counts as hung
POLL = 0.002  # seconds between checks that Redis holds no message any more


class CountError(Exception):
    """A contender did not consume every message exactly once."""


# -- the consumer processes ---------------------------------------------------------

Seen = list[int]
Stop = Callable[[], None]


def consume_tinymq(url: str, key: str) -> tuple[Seen, Stop]:
    seen: Seen = []

    def consume(ctx: Context, msg: Msg) -> None:
        seen.append(msg.data)

    mq = MQ(backend=RedisBackend(url, prefix=key))
    mq.register_queue(QUEUE, consume)
    mq.start()
    return seen, mq.stop


def consume_bare(url: str, key: str) -> tuple[Seen, Stop]:
    """One thread: XREADGROUP, then per entry the call and XACK + XDEL in one MULTI."""
    seen: Seen = []
    db, stream, stopping = redis.Redis.from_url(url), f"{key}:stream", threading.Event()
    name = f"bare-{os.getpid()}"

    def loop() -> None:
        while not stopping.is_set():
            found: Any = db.xreadgroup(GROUP, name, {stream: ">"}, count=READ_COUNT, block=100)
            for _stream, entries in found or []:
                for entry_id, fields in entries:
                    seen.append(json.loads(fields[b"data"]))
                    pipe = db.pipeline(transaction=True)
                    pipe.xack(stream, GROUP, entry_id)
                    pipe.xdel(stream, entry_id)
                    pipe.execute()

    thread = threading.Thread(target=loop, name="bench:bare")
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join()

    return seen, stop


def dramatiq_actor(url: str, key: str, handle: Callable[[int], None]) -> tuple[Any, Any]:
    """A no-op dramatiq actor on a RedisBroker under ``key``; returns (broker, actor)."""
    dramatiq = importlib.import_module("dramatiq")
    brokers = importlib.import_module("dramatiq.brokers.redis")
    broker = brokers.RedisBroker(url=url, namespace=key)
    actor = dramatiq.actor(handle, broker=broker, actor_name=QUEUE, queue_name=QUEUE)
    return broker, actor


def consume_dramatiq(url: str, key: str) -> tuple[Seen, Stop]:
    seen: Seen = []
    broker, _ = dramatiq_actor(url, key, seen.append)
    dramatiq = importlib.import_module("dramatiq")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    # Prefetch as tinymq's: dramatiq's default for one thread is 2, a fetch per 2 messages.
    worker.queue_prefetch = READ_COUNT
    worker.start()

    def stop() -> None:
        worker.stop()
        broker.close()

    return seen, stop


CONSUMERS: dict[str, Callable[[str, str], tuple[Seen, Stop]]] = {
    TINYMQ: consume_tinymq,
    BARE: consume_bare,
    DRAMATIQ: consume_dramatiq,
}


def child(kind: str, url: str, key: str) -> None:
    """Consume until stdin says stop (or ends); then print the ints consumed, as JSON."""
    seen, stop = CONSUMERS[kind](url, key)
    print("ready", flush=True)
    sys.stdin.readline()
    stop()
    print(json.dumps(seen), flush=True)


# -- the publishing side -------------------------------------------------------------


@dataclass
class Side:
    """How this process publishes for a contender and counts what Redis still holds."""

    publish: Callable[[int], object]
    remaining: Callable[[], int]
    close: Callable[[], None]


def side(kind: str, db: redis.Redis, key: str) -> Side:
    stream = f"{key}:stream"
    if kind == TINYMQ:
        mq = MQ(backend=RedisBackend(URL, prefix=key))
        mq.register_queue(QUEUE, None)
        return Side(partial(mq.publish, QUEUE), partial(db.xlen, f"{key}:{QUEUE}:stream"), mq.stop)
    if kind == BARE:
        db.xgroup_create(stream, GROUP, id="0", mkstream=True)
        return Side(
            lambda n: db.xadd(stream, {"data": json.dumps(n)}),
            partial(db.xlen, stream),
            lambda: None,
        )
    broker, actor = dramatiq_actor(URL, key, lambda n: None)
    return Side(actor.send, partial(db.hlen, f"{key}:{QUEUE}.msgs"), broker.close)


def spawn(kind: str, key: str, count: int) -> list[subprocess.Popen[str]]:
    """Start ``count`` consumer processes and wait until each is ready."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(tinymq.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, os.path.abspath(__file__), "--child", kind, URL, key]
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            for other in procs:
                other.kill()
            raise RuntimeError(f"{kind} consumer exited before it was ready: {proc.wait()}")
    return procs


def collect(procs: list[subprocess.Popen[str]]) -> list[int]:
    """Tell every process to stop; return all the ints they consumed."""
    seen: list[int] = []
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.close()
    for proc in procs:
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(CHILD_TIMEOUT)
        seen += json.loads(out.strip().splitlines()[-1])
    return seen


def one_round(kind: str, processes: int, messages: int, db: redis.Redis) -> tuple[float, float]:
    """Publish ``messages`` to ``processes`` consumers; return (msgs/s drained, published)."""
    key = f"bench-{uuid.uuid4().hex[:12]}"
    here = side(kind, db, key)
    procs = spawn(kind, key, processes)
    try:
        started = time.perf_counter()
        for n in range(messages):
            here.publish(n)
        published = time.perf_counter() - started
        deadline = time.monotonic() + CHILD_TIMEOUT
        while here.remaining() and time.monotonic() < deadline:
            time.sleep(POLL)
        drained = time.perf_counter() - started
        seen = collect(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        here.close()
        keys = list(db.scan_iter(match=f"{key}*", count=1000))
        if keys:
            db.delete(*keys)
    if sorted(seen) != list(range(messages)):
        raise CountError(
            f"{kind}, {processes} process(es): consumed {len(seen)} messages "
            f"({len(set(seen))} distinct), not each of {messages} once"
        )
    return messages / drained, messages / published


# -- measuring ---------------------------------------------------------------------


@dataclass
class RedisResult:
    """Rates per row (``"{contender}/{processes}"``), one per round, in msgs/s."""

    url: str
    messages: int
    rounds: int
    server: str = ""  # the Redis version
    skipped: str | None = None  # why nothing was measured
    dramatiq_skipped: str | None = None
    rates: dict[str, list[float]] = field(default_factory=dict)  # until all consumed
    publish_rates: dict[str, list[float]] = field(default_factory=dict)  # the publish phase

    @property
    def contenders(self) -> list[str]:
        return [c for c in CONTENDERS if f"{c}/{PROCESSES[0]}" in self.rates]

    def ratio(self, top: str, bottom: str) -> float:
        """Median over rounds of top / bottom in the same round."""
        pairs = zip(self.rates[top], self.rates[bottom], strict=True)
        return statistics.median(mine / theirs for mine, theirs in pairs)


def probe(url: str) -> tuple[redis.Redis | None, str]:
    """A client on ``url`` and the server's version, or None and why not."""
    db = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        info: Any = db.info("server")
    except (redis.RedisError, OSError) as exc:
        db.close()
        return None, f"skipped (no Redis answers at {url}: {exc})"
    return db, str(info.get("redis_version", "?"))


def measure(quick: bool, rounds: int | None = None) -> RedisResult:
    """Run every contender and process count in interleaved rounds."""
    result = RedisResult(URL, 500 if quick else 20_000, rounds or (1 if quick else 5))
    db, server = probe(URL)
    if db is None:
        result.skipped = server
        progress(f"Redis: {server}")
        return result
    result.server = server
    kinds = [TINYMQ, BARE]
    if importlib.util.find_spec("dramatiq") is None:  # not imported here: only probed
        result.dramatiq_skipped = "skipped (dramatiq is not installed)"
    else:
        kinds.append(DRAMATIQ)
    rows = [f"{kind}/{p}" for kind in kinds for p in PROCESSES]
    result.rates = {row: [] for row in rows}
    result.publish_rates = {row: [] for row in rows}
    try:
        for n in range(result.rounds):
            progress(f"Redis: round {n + 1}/{result.rounds}")
            for row in rows:
                kind, processes = row.split("/")
                drained, published = one_round(kind, int(processes), result.messages, db)
                result.rates[row].append(drained)
                result.publish_rates[row].append(published)
    finally:
        db.close()
    return result


# -- reporting ---------------------------------------------------------------------


def render(res: RedisResult) -> str:
    """The table of rates, and tinymq's ratios to the others."""
    if res.skipped is not None:
        return f"Redis: {res.skipped}"
    head = (
        f"Redis (server {res.server}, {res.url}; {os.cpu_count()} CPUs for the server and "
        f"every process): {res.messages:,} messages published one at "
        f"a time by 1 process, consumed by P processes (no-op consumer); msgs/s until all "
        f"consumed, median [min-max] of {res.rounds} interleaved round(s)"
    )
    headers = ["contender", "P", "msgs/s", "publish msgs/s", "tinymq vs this"]
    rows = []
    for kind in res.contenders:
        for p in PROCESSES:
            row = f"{kind}/{p}"
            lead = "-" if kind == TINYMQ else f"{res.ratio(f'{TINYMQ}/{p}', row):.2f}x"
            rows.append(
                [
                    LABELS[kind],
                    str(p),
                    spread(res.rates[row], ",.0f"),
                    spread(res.publish_rates[row], ",.0f"),
                    lead,
                ]
            )
    notes = [
        f"  {LABELS[kind]}: {PROCESSES[-1]} processes over 1: "
        f"{res.ratio(f'{kind}/{PROCESSES[-1]}', f'{kind}/{PROCESSES[0]}'):.2f}x"
        for kind in res.contenders
    ]
    if res.dramatiq_skipped is not None:
        notes.append(f"  {LABELS[DRAMATIQ]}: {res.dramatiq_skipped}")
    return "\n".join([head, table(headers, rows, left=1), *notes])


def target_rows(res: RedisResult) -> list[list[str]]:
    """No targets: the issue sets none for Redis, so the section reports ratios only."""
    return []


def to_json(res: RedisResult) -> dict[str, Any]:
    ratios = {}
    for kind in res.contenders:
        if kind != TINYMQ:
            for p in PROCESSES:
                ratios[f"{TINYMQ}/{p} vs {kind}/{p}"] = res.ratio(f"{TINYMQ}/{p}", f"{kind}/{p}")
    return {
        "url": res.url,
        "server": res.server,
        "messages": res.messages,
        "rounds": res.rounds,
        "skipped": res.skipped,
        "dramatiq_skipped": res.dramatiq_skipped,
        "rates": res.rates,
        "publish_rates": res.publish_rates,
        "ratios": ratios,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the Redis rows alone; return 1 if a contender lost or repeated a message."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        child(args[1], args[2], args[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--json", help="also write every figure to this file")
    parsed = parser.parse_args(args)
    try:
        res = measure(parsed.quick, parsed.rounds)
    except CountError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    print(render(res))
    if parsed.json:
        with open(parsed.json, "w") as out:
            json.dump(to_json(res), out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
