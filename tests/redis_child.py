"""A process of the Redis multi-process tests: it publishes to, or consumes, queue "q".

Run as ``python -m tests.redis_child producer|consumer URL PREFIX [options]``. It
writes one line per event to stdout with a single unbuffered ``os.write``, so every
line written before a SIGKILL reaches the parent whole:

    ready                                   the MQ is started
    pub <id> <n>                            (producer) publish(n) returned <id>
    start <id> <attempt> <redelivered 0|1>  (consumer) a consumer call began
    end <id>                                (consumer) the call is about to return
    hang <id>                               (consumer) this call will never return
    done                                    stop() returned

A producer publishes ``--count`` messages, then stops. A consumer runs until its stdin
reaches end of file (or says "stop"), then stops; with ``--hang-after K`` every call
after its K-th one hangs, for the parent to kill the process in the middle of calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

if __package__ in (None, ""):  # run as a script: make the "tests" package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinymq import MQ, Context, Msg
from tinymq.redis_streams import RedisBackend

QUEUE = "q"


def emit(line: str) -> None:
    """Write one whole line to stdout at once; exit quietly if the parent has gone."""
    data = (line + "\n").encode()
    try:
        while data:
            data = data[os.write(1, data) :]
    except BrokenPipeError:
        os._exit(1)


class Consumer:
    """Reports each call; calls after the ``hang_after``-th never return."""

    def __init__(self, work: float, hang_after: int | None) -> None:
        self.work, self.hang_after = work, hang_after
        self.lock = threading.Lock()  # guards calls
        self.calls = 0

    def __call__(self, ctx: Context, msg: Msg) -> None:
        emit(f"start {msg.id} {msg.attempt} {int(msg.redelivered)}")
        with self.lock:
            self.calls += 1
            hang = self.hang_after is not None and self.calls > self.hang_after
        if hang:
            emit(f"hang {msg.id}")
            threading.Event().wait()  # until the parent's SIGKILL
        time.sleep(self.work)
        emit(f"end {msg.id}")


def produce(mq: MQ, count: int, pace: float) -> None:
    mq.register_queue(QUEUE, None)
    mq.start()
    emit("ready")
    for n in range(count):
        emit(f"pub {mq.publish(QUEUE, n)} {n}")
        if pace:
            time.sleep(pace)


def consume(mq: MQ, args: argparse.Namespace) -> None:
    mq.register_queue(QUEUE, Consumer(args.work, args.hang_after), args.concurrency)
    mq.start()
    emit("ready")
    for line in sys.stdin:
        if line.strip() == "stop":
            break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("role", choices=("producer", "consumer"))
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("--count", type=int, default=100, help="producer: messages")
    parser.add_argument("--pace", type=float, default=0.0, help="producer: between publishes")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--work", type=float, default=0.0, help="consumer: seconds per call")
    parser.add_argument("--hang-after", type=int, default=None)
    parser.add_argument("--claim-idle", type=float, default=1.0)
    parser.add_argument("--prefetch", type=int, default=8)
    args = parser.parse_args(argv)
    backend = RedisBackend(
        args.url, prefix=args.prefix, claim_idle=args.claim_idle, prefetch=args.prefetch
    )
    mq = MQ(backend=backend)
    if args.role == "producer":
        produce(mq, args.count, args.pace)
    else:
        consume(mq, args)
    mq.stop()
    emit("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
