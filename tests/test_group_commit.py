"""GroupCommit: waiters share syncs, return only once covered, and all see a failure."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymq.group_commit import GroupCommit

WAIT = 10.0  # seconds any event may take before the test fails


class FakeLog:
    """An append-only log whose sync the test can hold, fail, and count."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards written, durable, syncs
        self.written = 0
        self.durable = 0
        self.syncs = 0
        self.entered = threading.Semaphore(0)  # released as each sync starts
        self.go = threading.Event()  # a sync returns once set
        self.go.set()
        self.error: Exception | None = None

    def write(self, n: int = 1) -> int:
        with self.lock:
            self.written += n
            return self.written

    def sync(self) -> int:
        with self.lock:
            target = self.written
            self.syncs += 1
        self.entered.release()
        assert self.go.wait(WAIT), "a sync was held too long"
        if self.error is not None:
            raise self.error
        with self.lock:
            self.durable = max(self.durable, target)
        return target


def start(target: Callable[..., object], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def queued(commit: GroupCommit, n: int) -> None:
    """Wait until ``n`` threads wait behind the lease holder; fail after WAIT seconds."""
    deadline = threading.Event()
    for _ in range(int(WAIT / 0.005)):
        with commit._lock:
            if len(commit._waiting) >= n:
                return
        deadline.wait(0.005)
    raise AssertionError(f"{n} waiters never queued")


def joined(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), "a waiter hung"


def test_a_thread_alone_syncs_at_once_and_a_covered_position_needs_no_sync() -> None:
    log = FakeLog()
    commit = GroupCommit(log.sync)
    commit.wait(log.write())
    assert (log.syncs, log.durable, commit.synced) == (1, 1, 1)
    commit.wait(1)
    assert log.syncs == 1


def test_waiters_behind_a_running_sync_share_the_next_one() -> None:
    log, returned = FakeLog(), []
    commit = GroupCommit(log.sync)
    log.go.clear()
    leader = start(commit.wait, log.write())
    assert log.entered.acquire(timeout=WAIT)

    def waiter() -> None:
        position = log.write()
        commit.wait(position)
        with log.lock:
            returned.append((position, log.durable))

    others = [start(waiter) for _ in range(6)]
    queued(commit, 6)  # all six behind the held sync
    log.go.set()
    joined(leader, *others)
    assert log.syncs == 2, "the six waiters did not share one sync"
    assert all(durable >= position for position, durable in returned)


def test_a_finished_sync_wakes_only_the_waiters_it_covered() -> None:
    log = FakeLog()
    commit = GroupCommit(log.sync)
    log.go.clear()
    first = start(commit.wait, log.write())
    assert log.entered.acquire(timeout=WAIT)
    second = start(commit.wait, log.write())  # written after the held sync began
    queued(commit, 1)
    log.go.set()  # first's sync covers 1, not 2: second must lead a sync of its own
    joined(first, second)
    assert log.syncs == 2
    assert log.durable == 2


def test_a_failed_sync_fails_every_waiter_and_every_later_wait() -> None:
    log, errors = FakeLog(), []
    commit = GroupCommit(log.sync)
    log.go.clear()
    log.error = OSError(5, "EIO")

    def waiter() -> None:
        try:
            commit.wait(log.write())
        except OSError as exc:
            errors.append(exc)

    leader = start(waiter)
    assert log.entered.acquire(timeout=WAIT)
    others = [start(waiter) for _ in range(4)]
    queued(commit, 4)
    commit.fail(log.error)  # what the store does when its sync raises
    log.go.set()
    joined(leader, *others)
    assert errors == [log.error] * 5
    with pytest.raises(OSError):
        commit.wait(log.write())
    assert log.syncs == 1, "a failed sync was retried"


def test_the_lease_holder_failing_without_fail_still_frees_the_waiters() -> None:
    log = FakeLog()
    commit = GroupCommit(log.sync)
    log.go.clear()
    log.error = RuntimeError("sync raised")
    outcomes: list[str] = []

    def waiter() -> None:
        try:
            commit.wait(log.write())
            outcomes.append("ok")
        except RuntimeError:
            outcomes.append("raised")

    leader = start(waiter)
    assert log.entered.acquire(timeout=WAIT)
    other = start(waiter)
    queued(commit, 1)
    log.go.set()
    assert log.entered.acquire(timeout=WAIT)  # the lease passed on: the other syncs too
    joined(leader, other)
    assert sorted(outcomes) == ["raised", "raised"]


def test_exclusive_holds_off_syncs_and_advance_covers_the_waiters() -> None:
    log = FakeLog()
    commit = GroupCommit(log.sync)
    with commit.exclusive():
        waiter = start(commit.wait, log.write())
        queued(commit, 1)
        assert log.syncs == 0 and waiter.is_alive()
        commit.advance(log.written)  # the holder made it durable itself (a roll)
    joined(waiter)
    assert log.syncs == 0


@settings(max_examples=40, deadline=None)
@given(
    writes=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=12),
    threads=st.integers(min_value=1, max_value=6),
)
def test_every_wait_returns_covered_and_syncs_never_outnumber_waits(
    writes: list[int], threads: int
) -> None:
    log, late, waits = FakeLog(), [], [0]
    commit = GroupCommit(log.sync)

    def publisher() -> None:
        for n in writes:
            position = log.write(n)
            commit.wait(position)
            with log.lock:
                waits[0] += 1
                if log.durable < position:
                    late.append((position, log.durable))

    joined(*[start(publisher) for _ in range(threads)])
    assert not late
    assert waits[0] == threads * len(writes)
    assert log.syncs <= waits[0]
    assert commit.synced == log.durable == log.written


def test_a_sync_that_succeeds_while_the_log_fails_is_not_trusted() -> None:
    # Linux reports a failed writeback to one sync of a file only: a sync that returns
    # while another part of the store reports a failure may not have written its data.
    log = FakeLog()
    commit = GroupCommit(log.sync)
    log.go.clear()
    outcome: list[object] = []

    def publish() -> None:
        try:
            commit.wait(log.write())
            outcome.append("returned")
        except OSError as exc:
            outcome.append(exc)

    holder = start(publish)
    assert log.entered.acquire(timeout=WAIT)  # its sync is running
    failure = OSError(5, "fsync of the directory failed")
    commit.fail(failure)
    log.go.set()  # its own sync succeeds
    joined(holder)
    assert outcome == [failure]
    assert commit.synced == 0, "a position covered only by the distrusted sync counts as synced"
    with pytest.raises(OSError):
        commit.wait(1)
