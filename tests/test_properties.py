"""Hypothesis properties of the MQ: ids, order, exactly-once and drain under races."""

from __future__ import annotations

import sys
import threading
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import Recorder
from tinymq import MQ, QueueClosedError

plans = st.fixed_dictionaries(
    {
        "concurrency": st.lists(st.integers(1, 4), min_size=1, max_size=3),
        "publishers": st.integers(1, 4),
        "per_publisher": st.integers(0, 150),
        "before_start": st.integers(0, 40),
        "stop_after": st.one_of(st.none(), st.integers(0, 300)),
    }
)


@settings(max_examples=40, deadline=None)
@given(plan=plans)
def test_every_accepted_message_is_consumed_once_in_id_order(plan: dict[str, object]) -> None:
    concurrency: list[int] = plan["concurrency"]  # type: ignore[assignment]
    publishers: int = plan["publishers"]  # type: ignore[assignment]
    per_publisher: int = plan["per_publisher"]  # type: ignore[assignment]
    stop_after: int | None = plan["stop_after"]  # type: ignore[assignment]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often so that races show up
    try:
        run_plan(concurrency, publishers, per_publisher, stop_after, plan["before_start"])  # type: ignore[arg-type]
    finally:
        sys.setswitchinterval(interval)


def run_plan(
    concurrency: list[int],
    publishers: int,
    per_publisher: int,
    stop_after: int | None,
    before_start: int,
) -> None:
    names = [f"q{i}" for i in range(len(concurrency))]
    recorders = {name: Recorder() for name in names}
    mq = MQ()
    for name, n in zip(names, concurrency, strict=True):
        mq.register_queue(name, recorders[name], n)
    accepted: dict[str, list[tuple[int, tuple[int, int]]]] = {n: [] for n in names}
    lock = threading.Lock()  # guards accepted

    def publish(k: int, count: int) -> None:
        for i in range(count):
            name = names[(k + i) % len(names)]
            try:
                msg_id = mq.publish(name, (k, i))
            except QueueClosedError:
                return
            with lock:
                accepted[name].append((msg_id, (k, i)))

    publish(-1, before_start)
    mq.start()
    threads = [threading.Thread(target=publish, args=(k, per_publisher)) for k in range(publishers)]
    for t in threads:
        t.start()
    if stop_after is not None:  # stop races with the publishers

        def published() -> int:
            with lock:
                return sum(map(len, accepted.values()))

        deadline = threading.Event()
        while published() < stop_after and any(t.is_alive() for t in threads):
            deadline.wait(0.0005)
        mq.stop(timeout=30)
    for t in threads:
        t.join(30)
    mq.stop(timeout=30)

    for name, n in zip(names, concurrency, strict=True):
        ids = sorted(i for i, _ in accepted[name])
        assert ids == list(range(len(ids))), "ids are consecutive from 0"
        consumed = recorders[name].seen
        assert Counter(m.id for _, m in consumed) == Counter(ids), "exactly once"
        by_id = dict(accepted[name])
        assert all(by_id[m.id] == m.data for _, m in consumed)
        if n == 1:
            assert [m.id for _, m in consumed] == ids, "concurrency 1 keeps id order"
        for k in range(-1, publishers):  # a publisher's messages keep their order
            mine = [m.data[1] for _, m in consumed if m.data[0] == k]
            if n == 1:
                assert mine == sorted(mine)
