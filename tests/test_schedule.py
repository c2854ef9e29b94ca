"""Schedule: due-time order with explicit times (the clock is whatever the caller passes)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tinymq import Msg
from tinymq.schedule import Schedule


def msg(msg_id: int, attempt: int = 1) -> Msg:
    return Msg(msg_id, f"m{msg_id}", "q", attempt)


def test_an_empty_schedule_has_nothing_due_and_no_wait() -> None:
    schedule = Schedule()
    assert len(schedule) == 0
    assert not schedule
    assert schedule.pop_due(1e9) == []
    assert schedule.wait_time(0.0) is None


def test_nothing_comes_out_before_its_due_time() -> None:
    schedule = Schedule()
    schedule.push(msg(0), 10.0)
    assert schedule.pop_due(9.999) == []
    assert len(schedule) == 1
    assert schedule.pop_due(10.0) == [msg(0)]  # due at exactly its time
    assert len(schedule) == 0


def test_due_messages_come_out_in_due_time_order_whatever_the_push_order() -> None:
    schedule = Schedule()
    for msg_id, due in [(0, 30.0), (1, 10.0), (2, 20.0), (3, 5.0)]:
        schedule.push(msg(msg_id), due)
    assert schedule.pop_due(12.0) == [msg(3), msg(1)]
    assert schedule.pop_due(25.0) == [msg(2)]
    assert schedule.pop_due(100.0) == [msg(0)]


def test_equal_due_times_come_out_in_id_order() -> None:
    schedule = Schedule()
    for msg_id in [4, 1, 3, 0, 2]:
        schedule.push(msg(msg_id), 7.0)
    assert [m.id for m in schedule.pop_due(7.0)] == [0, 1, 2, 3, 4]


def test_equal_due_time_and_id_come_out_in_push_order() -> None:
    # Two attempts of one message are never both scheduled, but the heap must not
    # compare Msg objects if they were: arrival order decides.
    schedule = Schedule()
    schedule.push(msg(1, attempt=3), 2.0)
    schedule.push(msg(1, attempt=2), 2.0)
    assert [m.attempt for m in schedule.pop_due(2.0)] == [3, 2]


def test_wait_time_counts_down_to_the_earliest_due_time_and_never_below_zero() -> None:
    schedule = Schedule()
    schedule.push(msg(0), 50.0)
    schedule.push(msg(1), 20.0)
    assert schedule.wait_time(5.0) == 15.0
    assert schedule.wait_time(20.0) == 0.0
    assert schedule.wait_time(25.0) == 0.0  # overdue: no negative sleep
    schedule.pop_due(25.0)
    assert schedule.wait_time(25.0) == 25.0


def test_messages_pushed_after_a_pop_join_the_order() -> None:
    schedule = Schedule()
    schedule.push(msg(0), 10.0)
    schedule.push(msg(1), 30.0)
    assert schedule.pop_due(10.0) == [msg(0)]
    schedule.push(msg(2), 20.0)  # a retry due before an older delayed message
    schedule.push(msg(3), 30.0)
    assert schedule.pop_due(30.0) == [msg(2), msg(1), msg(3)]


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 20)),
        min_size=0,
        max_size=40,
        unique_by=lambda e: e[0],
    ),
    clocks=st.lists(st.integers(0, 25), min_size=1, max_size=6),
)
def test_pops_at_any_clock_give_each_message_once_in_due_then_id_order_never_early(
    entries: list[tuple[int, int]], clocks: list[int]
) -> None:
    schedule = Schedule()
    due_of = {}
    for msg_id, due in entries:
        schedule.push(msg(msg_id), float(due))
        due_of[msg_id] = due
    out: list[int] = []
    for now in sorted(clocks):
        popped = [m.id for m in schedule.pop_due(float(now))]
        assert all(due_of[i] <= now for i in popped), "never early"
        out.extend(popped)
        waiting = schedule.wait_time(float(now))
        left = [due for i, due in due_of.items() if i not in out]
        assert len(schedule) == len(left)
        if left:
            assert waiting == max(0.0, min(left) - now)
            assert min(left) > now, "everything due was popped"
        else:
            assert waiting is None
    out.extend(m.id for m in schedule.pop_due(float("inf")))
    assert out == sorted(due_of, key=lambda i: (due_of[i], i))
