from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import wait_until
from tinymq import Msg, Queue, QueueClosedError, StateError


def msg(i: int) -> Msg:
    return Msg(i, f"data-{i}", "q")


def drain(q: Queue) -> list[int]:
    return [m.id for m in q.dequeue()]


def test_messages_come_out_in_enqueue_order_and_out_closes_after_close() -> None:
    q = Queue(2, 2)
    q.start()
    for i in range(100):
        q.enqueue(msg(i))
    q.close()
    assert drain(q) == list(range(100))
    assert q.wait(5)


def test_enqueue_after_close_raises_and_names_the_queue() -> None:
    q = Queue(name="enrich")
    q.start()
    q.close()
    with pytest.raises(QueueClosedError, match="'enrich'"):
        q.enqueue(msg(0))
    assert drain(q) == []
    assert q.wait(5)


def test_enqueue_before_start_is_delivered_after_start() -> None:
    # The article deadlocks here: more messages than `in` holds, no forwarder yet.
    q = Queue(1, 1)
    for i in range(5000):
        q.enqueue(msg(i))
    assert q.pending == 5000
    q.start()
    q.close()
    assert drain(q) == list(range(5000))
    assert q.wait(5)


def test_enqueue_before_start_after_close_raises() -> None:
    q = Queue()
    q.close()
    with pytest.raises(QueueClosedError):
        q.enqueue(msg(0))
    q.start()
    assert drain(q) == []
    assert q.wait(5)


def test_enqueue_does_not_block_while_out_is_full() -> None:
    q = Queue(1, 1)
    q.start()
    done = threading.Event()

    def publish() -> None:
        for i in range(10_000):
            q.enqueue(msg(i))
        done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    # Nobody receives from `out`, yet all 10,000 get in: the forwarder keeps them.
    assert done.wait(10), "enqueue blocked behind a full out channel"
    thread.join()
    assert q.backlog == 10_000
    assert len(q.dequeue()) == 1
    q.close()
    assert drain(q) == list(range(10_000))
    assert q.wait(5)


def test_wait_times_out_while_the_forwarder_runs() -> None:
    q = Queue()
    assert q.wait(0) is False  # never started
    q.start()
    assert q.wait(0.01) is False
    q.close()
    assert q.wait(5) is True


def test_start_twice_raises() -> None:
    q = Queue(name="twice")
    q.start()
    with pytest.raises(StateError, match="'twice'"):
        q.start()
    q.close()
    assert q.wait(5)


def test_close_is_idempotent_and_repr_says_closed() -> None:
    q = Queue(name="r")
    q.close()
    q.close()
    assert q.closed
    assert repr(q) == "<Queue 'r' pending=0 closed>"


@settings(max_examples=60, deadline=None)
@given(
    in_size=st.integers(-1, 8),
    out_size=st.integers(-1, 8),
    before_start=st.integers(0, 50),
    after_start=st.integers(0, 300),
    publishers=st.integers(1, 4),
    consumers=st.integers(1, 4),
)
def test_any_enqueue_sequence_comes_out_whole_and_in_order(  # noqa: PLR0917 - drawn by hypothesis
    in_size: int,
    out_size: int,
    before_start: int,
    after_start: int,
    publishers: int,
    consumers: int,
) -> None:
    q = Queue(in_size, out_size)
    for i in range(before_start):
        q.enqueue(msg(i))
    q.start()
    received: list[list[int]] = [[] for _ in range(consumers)]
    readers = [
        threading.Thread(target=lambda r=r: r.extend(m.id for m in q.dequeue())) for r in received
    ]
    for t in readers:
        t.start()
    # Each publisher enqueues its own ascending stripe; per-publisher order must hold.
    lock = threading.Lock()
    order: list[int] = list(range(before_start))

    def publish(stripe: int) -> None:
        for i in range(before_start + stripe, before_start + after_start, publishers):
            with lock:
                q.enqueue(msg(i))
                order.append(i)

    writers = [threading.Thread(target=publish, args=(s,)) for s in range(publishers)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(10)
    q.close()
    for t in readers:
        t.join(10)
        assert not t.is_alive()
    assert q.wait(5)
    everything = sorted(x for r in received for x in r)
    assert everything == list(range(before_start + after_start))
    position = {m: k for k, m in enumerate(order)}
    for r in received:  # each consumer sees a subsequence of enqueue order
        assert [position[x] for x in r] == sorted(position[x] for x in r)
    if consumers == 1:
        assert received[0] == order


def test_a_batch_receiver_takes_what_out_holds_and_what_it_holds_stays_backlog() -> None:
    q = Queue(8, 8)
    for i in range(5):
        q.enqueue(msg(i))
    q.start()
    wait_until(lambda: len(q.dequeue()) == 5)  # the forwarder moved all five to out
    received = q.receive(64)
    assert next(received).id == 0
    assert len(q.dequeue()) == 0, "the receiver took one message at a time"
    assert q.backlog == 4
    q.close()
    assert [m.id for m in received] == [1, 2, 3, 4]
    assert q.backlog == 0
    assert q.wait(5)


@settings(max_examples=30, deadline=None)
@given(count=st.integers(0, 300), batch=st.integers(1, 70))
def test_a_batch_receiver_gets_every_message_once_in_order(count: int, batch: int) -> None:
    q = Queue(4, 4)
    q.start()
    got: list[int] = []
    receiver = threading.Thread(target=lambda: got.extend(m.id for m in q.receive(batch)))
    receiver.start()
    for i in range(count):
        q.enqueue(msg(i))
    q.close()
    receiver.join(10)
    assert not receiver.is_alive(), "the receiver did not end after close"
    assert got == list(range(count))
    assert q.wait(5)


@pytest.mark.parametrize("batch", [1, 64])
def test_a_receiver_closed_early_leaves_what_it_took_and_did_not_yield(batch: int) -> None:
    q = Queue(8, 8)
    for i in range(5):
        q.enqueue(msg(i))
    q.start()
    wait_until(lambda: len(q.dequeue()) == 5)
    received = q.receive(batch)
    assert next(received).id == 0
    received.close()  # as a `break` out of the loop does
    assert q.backlog == 4
    q.close()
    assert [m.id for m in q.receive(batch)] == [1, 2, 3, 4]
    assert q.wait(5)


def test_closing_one_batch_receiver_leaves_another_ones_messages_counted() -> None:
    q = Queue(8, 8)
    q.enqueue(msg(0))
    q.enqueue(msg(1))
    q.start()
    wait_until(lambda: len(q.dequeue()) == 2)
    first = q.receive(2)
    assert [next(first).id, next(first).id] == [0, 1]  # it holds nothing now
    q.enqueue(msg(2))
    wait_until(lambda: len(q.dequeue()) == 1)
    second = q.receive(2)
    assert next(second).id == 2  # it holds nothing either: two equal, empty deques
    second.close()
    for i in range(3, 6):
        q.enqueue(msg(i))
    wait_until(lambda: len(q.dequeue()) == 3)
    assert next(first).id == 3  # took 3 and 4, holds 4
    assert q.backlog == 2, "what the first receiver holds must still count"
    first.close()
    assert q.backlog == 2
    q.close()
    assert drain(q) == [4, 5]


@pytest.mark.parametrize("batch", [0, -3])
def test_receive_refuses_a_batch_below_one_at_once(batch: int) -> None:
    q = Queue(8, 8)
    q.enqueue(msg(0))
    q.start()
    with pytest.raises(ValueError, match=f"receive batch must be at least 1, got {batch}"):
        q.receive(batch)
    q.close()
    assert drain(q) == [0]
