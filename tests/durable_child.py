"""The child process of the crash tests: publishes to and consumes one durable queue.

Run as ``python -m tests.durable_child DATA_DIR [options]`` (or ``python
tests/durable_child.py``). It opens queue "q" under DATA_DIR, which recovers what
earlier (killed) runs left, and writes one line per event to stdout with a single
unbuffered ``os.write``, so every line written before a SIGKILL reaches the parent
whole (a pipe write of at most PIPE_BUF bytes is atomic):

    report <json>             the queue's recovery report, once opened
    ready                     the MQ is started; publishers start now
    try <t> <c>               before publish(payload(t, c)); t is "<label>.<thread>"
    ack <id> <t> <c>          publish returned <id>
    got <id> <payload-json>   the consumer was handed <id>, just before it returns
    error <text>              a publisher failed (the test fails on it)
    done                      stop() drained the queue and returned

With ``--publishers 0`` the run only drains: start, then stop(), which delivers
everything recovered. With ``--count 0`` publishers go on until ``--seconds`` pass
(the parent kills the process long before). TINYMQ_FAILPOINTS applies as usual.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable

if __package__ in (None, ""):  # run as a script: make the "tests" package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.oracle import payload
from tinymq import MQ, Context, Msg
from tinymq.recovery import RecoveryReport

QUEUE = "q"


def emit(line: str) -> None:
    """Write one whole line to stdout at once; exit quietly if the parent has gone."""
    data = (line + "\n").encode()
    try:
        while data:
            data = data[os.write(1, data) :]
    except BrokenPipeError:
        os._exit(1)


def report_json(report: RecoveryReport) -> str:
    return json.dumps(
        {
            "segments": report.segments,
            "records": report.records,
            "recovered": report.recovered,
            "next_id": report.next_id,
            "torn_tail": None if report.torn_tail is None else str(report.torn_tail),
            "corruption": [str(damage) for damage in report.corruption],
        }
    )


def consumer(delay: float) -> Callable[[Context, Msg], None]:
    def consume(ctx: Context, msg: Msg) -> None:
        if delay:
            time.sleep(delay)  # a slow consumer, so that a backlog builds up
        emit(f"got {msg.id} {json.dumps(msg.data, separators=(',', ':'))}")

    return consume


def publish_loop(mq: MQ, t: str, count: int, pace: float, until: float) -> None:
    c = 0
    try:
        while (c < count if count else time.monotonic() < until) and mq.running:
            emit(f"try {t} {c}")
            msg_id = mq.publish(QUEUE, payload(t, c))
            emit(f"ack {msg_id} {t} {c}")
            c += 1
            if pace:
                time.sleep(pace)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails
        emit(f"error {t}: {type(exc).__name__}: {exc}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("data_dir")
    parser.add_argument("--fsync", default="always", choices=("always", "interval", "never"))
    parser.add_argument("--segment-size", type=int, default=8192)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--count", type=int, default=0, help="per publisher; 0: no limit")
    parser.add_argument("--seconds", type=float, default=30.0, help="publishing at most")
    parser.add_argument("--pace", type=float, default=0.0, help="pause between publishes")
    parser.add_argument("--consume-delay", type=float, default=0.0)
    parser.add_argument("--label", default="0", help="prefix of the publisher tokens")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mq = MQ(
        data_dir=args.data_dir,
        fsync=args.fsync,
        fsync_interval=0.05,
        segment_size=args.segment_size,
        on_corruption="skip",  # damage shows in the report, which the parent checks
    )
    mq.register_queue(QUEUE, consumer(args.consume_delay), durable=True)
    report = mq.recovery_report(QUEUE)
    assert report is not None
    emit(f"report {report_json(report)}")
    mq.start()
    emit("ready")
    until = time.monotonic() + args.seconds
    threads = [
        threading.Thread(
            target=publish_loop,
            args=(mq, f"{args.label}.{i}", args.count, args.pace, until),
            name=f"publisher-{i}",
        )
        for i in range(args.publishers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mq.stop()
    emit("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
