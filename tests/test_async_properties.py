"""Hypothesis properties on the asyncio side: order, exactly-once and drain under races."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymq import MQ, Context, Msg, QueueClosedError

pytestmark = pytest.mark.filterwarnings("error")

plans = st.fixed_dictionaries(
    {
        "concurrency": st.integers(1, 4),
        "async_publishers": st.integers(0, 3),
        "sync_publishers": st.integers(0, 3),
        "per_publisher": st.integers(0, 80),
        "before_start": st.integers(0, 30),
        "stop_after": st.one_of(st.none(), st.integers(0, 200)),
        "owned_loop": st.booleans(),
        "yield_every": st.integers(1, 10),
    }
)


class Run:
    """One plan: publishers of both kinds into one async-consumed queue."""

    def __init__(self, plan: dict[str, int | bool | None]) -> None:
        self.plan = plan
        self.lock = threading.Lock()  # guards accepted
        self.accepted: list[tuple[int, tuple[str, int, int]]] = []
        self.seen: list[Msg] = []
        self.mq = MQ()
        self.mq.register_queue("q", self.consume, int(plan["concurrency"] or 1))

    async def consume(self, ctx: Context, msg: Msg) -> None:
        if msg.id % 3 == 0:
            await asyncio.sleep(0)  # let other tasks interleave
        self.seen.append(msg)

    def record(self, msg_id: int, data: tuple[str, int, int]) -> None:
        with self.lock:
            self.accepted.append((msg_id, data))

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def publish_sync(self, k: int, n: int) -> None:
        for i in range(n):
            try:
                self.record(self.mq.publish("q", ("s", k, i)), ("s", k, i))
            except QueueClosedError:
                return

    async def publish_async(self, k: int, n: int) -> None:
        every = int(self.plan["yield_every"] or 1)
        for i in range(n):
            try:
                self.record(await self.mq.apublish("q", ("a", k, i)), ("a", k, i))
            except QueueClosedError:
                return
            if i % every == 0:
                await asyncio.sleep(0)

    async def main(self) -> None:
        plan, mq = self.plan, self.mq
        n = int(plan["per_publisher"] or 0)
        for i in range(int(plan["before_start"] or 0)):
            self.record(mq.publish("q", ("s", -1, i)), ("s", -1, i))
        if plan["owned_loop"]:
            mq.start()
        else:
            await mq.astart()
        threads = [
            threading.Thread(target=self.publish_sync, args=(k, n))
            for k in range(int(plan["sync_publishers"] or 0))
        ]
        for t in threads:
            t.start()
        tasks = [
            asyncio.ensure_future(self.publish_async(k, n))
            for k in range(int(plan["async_publishers"] or 0))
        ]
        stop_after = plan["stop_after"]
        if stop_after is not None:  # stop races with the publishers
            while self.count() < int(stop_after) and self.publishing(threads, tasks):
                await asyncio.sleep(0.0005)
            await mq.astop(timeout=30)
        await asyncio.gather(*tasks)
        for t in threads:
            await asyncio.to_thread(t.join, 30)
        await mq.astop(timeout=30)

    @staticmethod
    def publishing(threads: list[threading.Thread], tasks: list[asyncio.Task[None]]) -> bool:
        return any(t.is_alive() for t in threads) or not all(t.done() for t in tasks)

    def check(self) -> None:
        ids = sorted(i for i, _ in self.accepted)
        assert ids == list(range(len(ids))), "ids are consecutive from 0"
        assert Counter(m.id for m in self.seen) == Counter(ids), "exactly once"
        by_id = dict(self.accepted)
        assert all(by_id[m.id] == m.data for m in self.seen)
        if self.plan["concurrency"] == 1:
            assert [m.id for m in self.seen] == ids, "concurrency 1 keeps id order"
        for key in {d[:2] for _, d in self.accepted}:  # each publisher's own order
            mine = [i for i, d in sorted(self.accepted) if d[:2] == key]
            assert [d[2] for i, d in sorted(self.accepted) if d[:2] == key] == sorted(
                d[2] for _, d in self.accepted if d[:2] == key
            ), mine


@settings(max_examples=30, deadline=None)
@given(plan=plans)
def test_async_consumers_get_every_accepted_message_once_in_id_order(
    plan: dict[str, int | bool | None],
) -> None:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        run = Run(plan)
        asyncio.run(run.main())
    finally:
        sys.setswitchinterval(interval)
    run.check()
