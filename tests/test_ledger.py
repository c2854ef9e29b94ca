"""Ledger: positions of live messages by id, in a window that never outgrows what is live."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tinymq.ledger import Ledger


def test_the_lowest_live_id_follows_a_drained_window_to_the_next_message() -> None:
    ledger = Ledger()
    ledger.put(0, 1, 10, 5)
    ledger.put(1, 1, 20, 5)
    ledger.remove(0)
    ledger.remove(1)
    ledger.put(2, 1, 30, 5)
    assert (ledger.live, ledger.lowest_live()) == (1, 2)
    assert ledger.get(2) == (1, 30, 5)


def test_a_queue_that_drains_after_each_message_keeps_a_window_of_one() -> None:
    ledger = Ledger()
    for msg_id in range(30_000):  # publish, consume, acknowledge, for a long time
        ledger.put(msg_id, 1, msg_id * 10, 5)
        ledger.remove(msg_id)
    assert ledger.end - ledger.base <= 1


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=120))
def test_live_ids_and_the_lowest_live_one_match_a_plain_set(steps: list[tuple[bool, int]]) -> None:
    ledger, live, next_id = Ledger(), set[int](), 0
    for publish, pick in steps:
        if publish or not live:
            ledger.put(next_id, 1, next_id, 1)
            live.add(next_id)
            next_id += 1
        else:
            gone = sorted(live)[pick % len(live)]
            assert ledger.remove(gone) == 1
            live.discard(gone)
        assert ledger.live == len(live)
        assert ledger.lowest_live() == (min(live) if live else ledger.end)
        assert list(ledger.live_ids(0, next_id)) == sorted(live)
    assert ledger.end - ledger.base <= max(4097, 2 * (next_id - min(live, default=next_id)) + 1)
