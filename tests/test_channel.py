from __future__ import annotations

import threading
from collections import deque

import pytest

from tinymq import Channel, ChannelClosedError
from tinymq.channel import bridge, wait_ready

BLOCKED = 0.05  # how long a call must stay blocked to count as blocked


def run_in_thread(fn: object) -> tuple[threading.Thread, threading.Event, list[object]]:
    """Run ``fn()`` in a thread; the list receives its result or exception."""
    done = threading.Event()
    result: list[object] = []

    def target() -> None:
        try:
            result.append(fn())  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)
        done.set()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, done, result


def test_items_come_out_in_the_order_they_went_in() -> None:
    ch: Channel[int] = Channel(3)
    for i in range(3):
        ch.send(i)
    assert [ch.recv(), ch.recv(), ch.recv()] == [0, 1, 2]


def test_size_zero_or_negative_means_one() -> None:
    assert Channel(0).size == 1
    assert Channel(-5).size == 1


def test_size_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="size"):
        Channel("3")  # type: ignore[arg-type]


def test_none_is_an_ordinary_item() -> None:
    ch: Channel[None] = Channel(2)
    ch.send(None)
    ch.close()
    assert list(ch) == [None]


def test_send_blocks_while_full_until_a_recv_makes_room() -> None:
    ch: Channel[int] = Channel(1)
    ch.send(1)
    thread, done, _ = run_in_thread(lambda: ch.send(2))
    assert not done.wait(BLOCKED), "send returned while the channel was full"
    assert ch.recv() == 1
    assert done.wait(5)
    thread.join()
    assert ch.recv() == 2


def test_recv_blocks_while_empty_until_a_send() -> None:
    ch: Channel[int] = Channel(1)
    thread, done, result = run_in_thread(ch.recv)
    assert not done.wait(BLOCKED), "recv returned from an empty channel"
    ch.send(7)
    assert done.wait(5)
    thread.join()
    assert result == [7]


def test_timeouts_raise_timeout_error() -> None:
    ch: Channel[int] = Channel(1)
    with pytest.raises(TimeoutError):
        ch.recv(timeout=0.01)
    with pytest.raises(TimeoutError):
        ch.recv(timeout=0)
    ch.send(1)
    with pytest.raises(TimeoutError):
        ch.send(2, timeout=0.01)
    assert len(ch) == 1


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf")])
def test_bad_timeouts_are_rejected_even_when_the_call_would_not_block(timeout: float) -> None:
    ch: Channel[int] = Channel(2)
    ch.send(1)
    with pytest.raises(ValueError, match="timeout"):
        ch.recv(timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        ch.send(2, timeout=timeout)
    with pytest.raises(TypeError, match="timeout"):
        ch.recv(timeout="1")  # type: ignore[arg-type]
    assert len(ch) == 1


def test_send_on_closed_channel_raises() -> None:
    ch: Channel[int] = Channel(1)
    ch.close()
    with pytest.raises(ChannelClosedError):
        ch.send(1)


def test_recv_after_close_returns_buffered_then_raises() -> None:
    ch: Channel[int] = Channel(3)
    ch.send(1)
    ch.send(2)
    ch.close()
    assert ch.closed
    assert ch.recv() == 1
    assert ch.recv() == 2
    with pytest.raises(ChannelClosedError):
        ch.recv()
    # and it's persistent
    with pytest.raises(ChannelClosedError):
        ch.recv(timeout=0)


def test_close_is_idempotent() -> None:
    ch: Channel[int] = Channel(1)
    ch.send(1)
    ch.close()
    ch.close()
    assert list(ch) == [1]


def test_close_wakes_every_blocked_receiver() -> None:
    ch: Channel[int] = Channel(1)
    runs = [run_in_thread(ch.recv) for _ in range(8)]
    for _, done, _ in runs:
        assert not done.wait(0.005)
    ch.close()
    for thread, done, result in runs:
        assert done.wait(5), "a receiver blocked at close never woke"
        thread.join()
        assert isinstance(result[0], ChannelClosedError)


def test_close_wakes_a_blocked_sender_which_raises_and_drops_nothing() -> None:
    ch: Channel[int] = Channel(1)
    ch.send(1)
    thread, done, result = run_in_thread(lambda: ch.send(2))
    assert not done.wait(BLOCKED)
    ch.close()
    assert done.wait(5)
    thread.join()
    assert isinstance(result[0], ChannelClosedError)
    assert list(ch) == [1]


def test_iteration_stops_when_closed_and_drained() -> None:
    ch: Channel[int] = Channel(10)
    for i in range(5):
        ch.send(i)
    ch.close()
    assert list(ch) == [0, 1, 2, 3, 4]
    assert len(ch) == 0


def test_many_receivers_share_the_items_exactly_once() -> None:
    ch: Channel[int] = Channel(4)
    got: list[list[int]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=lambda i=i: got[i].extend(ch)) for i in range(4)]
    for t in threads:
        t.start()
    for i in range(10_000):
        ch.send(i)
    ch.close()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert sorted(x for g in got for x in g) == list(range(10_000))
    for g in got:
        assert g == sorted(g)


def test_recv_all_takes_everything_and_raises_once_drained() -> None:
    ch: Channel[int] = Channel(5)
    assert ch.recv_all() == []
    ch.send(1)
    ch.send(2)
    ch.close()
    assert ch.recv_all() == [1, 2]
    with pytest.raises(ChannelClosedError):
        ch.recv_all()


def test_send_from_moves_only_what_fits() -> None:
    ch: Channel[int] = Channel(3)
    items = deque(range(5))
    assert ch.send_from(items) == 3
    assert list(items) == [3, 4]
    assert ch.send_from(items) == 0
    ch.close()
    with pytest.raises(ChannelClosedError):
        ch.send_from(items)


def test_wait_ready_wakes_on_either_side_of_a_bridge() -> None:
    src, dst = bridge(1, 1)
    dst.send("full")
    # Neither side ready: wait_ready blocks until src gets an item.
    thread, done, _ = run_in_thread(lambda: wait_ready(src, dst, want_room=True))
    assert not done.wait(BLOCKED)
    src.send("item")
    assert done.wait(5)
    thread.join()
    src.recv()
    # Now it blocks until dst gets room.
    thread, done, _ = run_in_thread(lambda: wait_ready(src, dst, want_room=True))
    assert not done.wait(BLOCKED)
    dst.recv()
    assert done.wait(5)
    thread.join()


def test_a_send_skips_an_idle_forwarder_only_when_nothing_is_ahead_of_it() -> None:
    src, dst = bridge(4, 2)
    parked = threading.Event()

    def park() -> None:
        parked.set()
        wait_ready(src, dst, want_room=False)

    thread, done, _ = run_in_thread(park)
    assert parked.wait(5)
    while src._direct is None:  # the forwarder parks under the lock
        assert not done.wait(0.001)
    src.send("a")  # `in` empty, `out` has room: straight to `out`
    src.send("b")
    assert not done.wait(BLOCKED), "a direct hand-off woke the forwarder"
    assert (len(src), len(dst)) == (0, 2)
    src.send("c")  # `out` full: into `in`, which wakes the forwarder
    assert done.wait(5)
    thread.join()
    assert (len(src), len(dst)) == (1, 2)
    assert src._direct is None
    assert [dst.recv(), dst.recv(), src.recv()] == ["a", "b", "c"]


def test_a_send_never_overtakes_an_item_waiting_in_in() -> None:
    src, dst = bridge(4, 1)
    dst.send("x")  # out full
    src._direct = dst  # as while the forwarder is parked with nothing pending
    src.send("a")  # out full: "a" waits in `in`
    assert dst.recv() == "x"  # room appears before the forwarder runs
    src.send("b")  # must not go straight to `out` ahead of "a"
    src._direct = None
    assert (list(src.recv_all()), len(dst)) == (["a", "b"], 0)


def take(ch: Channel[int], limit: int) -> list[int]:
    """``recv_many`` into a new deque, checking the count it returns."""
    into: deque[int] = deque()
    n = ch.recv_many(into, limit)
    assert n == len(into)
    return list(into)


def test_recv_many_takes_up_to_its_limit_in_order_without_waiting_for_more() -> None:
    ch: Channel[int] = Channel(10)
    for i in range(5):
        ch.send(i)
    assert take(ch, 3) == [0, 1, 2]
    assert take(ch, 64) == [3, 4]


def test_recv_many_appends_to_what_the_deque_holds() -> None:
    ch: Channel[int] = Channel(4)
    ch.send(2)
    into = deque([1])
    assert ch.recv_many(into, 8) == 1
    assert list(into) == [1, 2]


@pytest.mark.parametrize("limit", [0, -1])
def test_recv_many_refuses_a_limit_below_one_and_takes_nothing(limit: int) -> None:
    ch: Channel[int] = Channel(4)
    ch.send(1)
    into: deque[int] = deque()
    with pytest.raises(ValueError, match=f"at least 1, got {limit}"):
        ch.recv_many(into, limit)
    assert (len(into), len(ch)) == (0, 1)


def test_recv_many_blocks_while_empty_until_a_send() -> None:
    ch: Channel[int] = Channel(1)
    thread, done, result = run_in_thread(lambda: take(ch, 8))
    assert not done.wait(BLOCKED), "recv_many returned from an empty channel"
    ch.send(7)
    assert done.wait(5)
    thread.join()
    assert result == [[7]]


def test_recv_many_returns_what_was_sent_before_close_then_raises() -> None:
    ch: Channel[int] = Channel(5)
    ch.send(1)
    ch.send(2)
    ch.close()
    assert take(ch, 64) == [1, 2]
    with pytest.raises(ChannelClosedError):
        take(ch, 64)


def test_close_wakes_a_blocked_recv_many_which_raises() -> None:
    ch: Channel[int] = Channel(1)
    thread, done, result = run_in_thread(lambda: take(ch, 4))
    assert not done.wait(BLOCKED), "recv_many returned from an empty channel"
    ch.close()
    assert done.wait(5)
    thread.join()
    assert len(result) == 1 and isinstance(result[0], ChannelClosedError)


def test_recv_many_makes_room_for_as_many_blocked_senders_as_it_took() -> None:
    ch: Channel[int] = Channel(2)
    ch.send(1)
    ch.send(2)
    senders = [run_in_thread(lambda i=i: ch.send(10 + i)) for i in range(2)]
    for _, done, _ in senders:
        assert not done.wait(BLOCKED), "send returned while the channel was full"
    assert take(ch, 2) == [1, 2]
    for thread, done, _ in senders:
        assert done.wait(5), "a sender stayed blocked with room in the channel"
        thread.join()
    assert sorted(take(ch, 8)) == [10, 11]


def test_give_back_puts_items_first_in_their_order_also_once_closed() -> None:
    ch: Channel[int] = Channel(4)
    for i in range(4):
        ch.send(i)
    held = deque(take(ch, 3))  # 0, 1, 2 taken; 3 left
    ch.close()
    ch.give_back(held)
    assert not held
    assert list(ch) == [0, 1, 2, 3]


def test_give_back_wakes_a_blocked_receiver() -> None:
    ch: Channel[int] = Channel(2)
    thread, done, result = run_in_thread(ch.recv)
    assert not done.wait(BLOCKED), "recv returned from an empty channel"
    ch.give_back(deque([5]))
    assert done.wait(5), "a receiver stayed blocked after items were given back"
    thread.join()
    assert result == [5]
