from __future__ import annotations

import threading
from collections import Counter

from tinymq import MQ, Context, Msg

PUBLISHERS, QUEUES, CONCURRENCY, TOTAL = 8, 4, 4, 200_000


def test_eight_publishers_four_queues_two_hundred_thousand_messages_exactly_once() -> None:
    names = [f"q{i}" for i in range(QUEUES)]
    # One list per worker thread: appends need no lock, and the lists are merged at the end.
    seen: dict[str, list[tuple[int, object]]] = {}
    seen_lock = threading.Lock()

    def consumer(ctx: Context, msg: Msg) -> None:
        name = threading.current_thread().name
        mine = seen.get(name)
        if mine is None:
            with seen_lock:
                mine = seen.setdefault(name, [])
        mine.append((msg.id, msg.data))

    mq = MQ()
    for name in names:
        mq.register_queue(name, consumer, CONCURRENCY)
    mq.start()
    per_publisher = TOTAL // PUBLISHERS
    issued: list[list[tuple[str, int]]] = [[] for _ in range(PUBLISHERS)]

    def publish(k: int) -> None:
        out = issued[k]
        for i in range(per_publisher):
            name = names[i % QUEUES]
            out.append((name, mq.publish(name, (k, i))))

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(PUBLISHERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    mq.stop(timeout=120)

    consumed: Counter[tuple[str, int]] = Counter()
    for worker, items in seen.items():
        queue = worker.split(":")[1]
        consumed.update((queue, msg_id) for msg_id, _ in items)
    expected = Counter(pair for out in issued for pair in out)
    assert sum(expected.values()) == TOTAL
    assert consumed == expected
    for name in names:
        ids = sorted(i for (q, i) in expected if q == name)
        assert ids == list(range(TOTAL // QUEUES))
