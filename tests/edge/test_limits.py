"""The CPU share of a module version over a sliding window, with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.limits import CpuShare

MS = 1_000_000  # nanoseconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_under_its_share_a_version_runs_at_once() -> None:
    clock = FakeClock()
    share = CpuShare(50, window=1.0, clock=clock)
    share.charge(400 * MS)
    assert share.delay() == 0.0
    assert share.used_ns() == 400 * MS


def test_over_its_share_it_waits_until_old_charges_leave_the_window() -> None:
    clock = FakeClock()
    share = CpuShare(50, window=1.0, clock=clock)
    share.charge(300 * MS)  # at t=100.0
    clock.now = 100.4
    share.charge(300 * MS)  # at t=100.4: 600 ms used of a 500 ms budget
    assert share.delay() == pytest.approx(0.6)  # when the first charge leaves (t=101.0)
    clock.now = 101.0
    assert share.delay() == 0.0
    assert share.used_ns() == 300 * MS


def test_the_window_forgets_everything_after_it_passes() -> None:
    clock = FakeClock()
    share = CpuShare(10, window=2.0, clock=clock)
    share.charge(5_000 * MS)
    assert share.delay() == pytest.approx(2.0)
    clock.now += 2.0
    assert share.delay() == 0.0
    assert share.used_ns() == 0


@pytest.mark.parametrize("percent", [0, -1, 101])
def test_a_share_out_of_range_is_refused(percent: int) -> None:
    with pytest.raises(ValueError, match="cpuPercent"):
        CpuShare(percent)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.7), st.integers(0, 400_000_000)), max_size=30), st.integers(1, 100))
def test_over_says_what_delay_says_without_reading_the_clock_under_the_budget(
    steps: list[tuple[float, int]], percent: int
) -> None:
    now = [0.0]
    reads = [0]

    def clock() -> float:
        reads[0] += 1
        return now[0]

    share = CpuShare(percent, window=1.0, clock=clock)
    for advance, cpu_ns in steps:
        now[0] += advance
        charged = share._used_ns  # what is charged, expired or not, before the question
        before = reads[0]
        over = share.over()
        if charged < share.budget_ns:
            assert reads[0] == before  # answered without the clock: expiring only lowers the charge
        assert over == (share.delay() > 0)
        share.charge(cpu_ns)


@settings(max_examples=200, deadline=None)
@given(
    charges=st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(1, 800 * MS)), min_size=1, max_size=8),
    asked=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5),
)
def test_free_at_is_one_instant_however_late_it_is_asked(charges: list[tuple[float, int]], asked: list[float]) -> None:
    clock = FakeClock()
    share = CpuShare(50, window=1.0, clock=clock)
    for gap, ns in charges:
        clock.now += gap
        share.charge(ns)
    start = clock.now
    free = share.free_at(start)
    assert share.delay() == pytest.approx(free - start)
    for step in sorted(asked):  # asked again later, before it (no new charge): the same instant
        now = start + step
        clock.now = now
        assert share.free_at(now) == (free if now < free else now)
