"""The load generator's pacer: every request released once, in order, on its exact schedule."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from bench.pacing import kernel_timer_available, pace

TIMERS = [
    pytest.param(True, id="timerfd", marks=pytest.mark.skipif(
        not kernel_timer_available(), reason="needs Linux timerfd")),
    pytest.param(False, id="asyncio-sleep"),
]  # fmt: skip


def run_paced(rate: float, total: int, kernel_timer: bool, stall_at: int | None = None,
              ) -> tuple[list[tuple[int, float]], list[float]]:  # fmt: skip
    released: list[tuple[int, float]] = []

    def release(number: int, scheduled: float) -> None:
        released.append((number, scheduled))
        if number == stall_at:
            time.sleep(0.03)  # the generator loses its core for 30 ticks

    async def main() -> list[float]:
        return await pace(rate, total, release, kernel_timer=kernel_timer)

    lateness = asyncio.run(main())
    return released, lateness


def gaps(released: list[tuple[int, float]]) -> list[float]:
    return [b - a for (_, a), (_, b) in itertools.pairwise(released)]


@pytest.mark.parametrize("kernel_timer", TIMERS)
def test_each_request_is_released_once_in_order_on_an_even_schedule(kernel_timer: bool) -> None:
    released, lateness = run_paced(1000.0, 60, kernel_timer)

    assert [number for number, _ in released] == list(range(60))
    assert gaps(released) == pytest.approx([0.001] * 59, abs=1e-6)
    assert len(lateness) == 60
    assert min(lateness) >= 0  # never released before its time


@pytest.mark.parametrize("kernel_timer", TIMERS)
def test_ticks_missed_while_stalled_keep_their_scheduled_times(kernel_timer: bool) -> None:
    # Latency is measured from the scheduled time, so a stalled generator must not
    # shift the schedule (which would hide the wait) nor drop the missed requests.
    released, lateness = run_paced(1000.0, 80, kernel_timer, stall_at=10)

    assert [number for number, _ in released] == list(range(80))
    assert gaps(released) == pytest.approx([0.001] * 79, abs=1e-6)
    assert max(lateness[11:40]) >= 0.01  # the stalled ticks report their wait
    # ...and go out together when the generator runs again, not one per tick after it.
    assert lateness[39] < lateness[11] - 0.02


def test_nothing_to_release_returns_at_once() -> None:
    assert asyncio.run(pace(500.0, 0, lambda number, scheduled: None)) == []
