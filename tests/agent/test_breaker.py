"""The circuit breaker on new model connections: open, cooldown, one probe, close."""

from __future__ import annotations

from agent.breaker import Breaker, BreakerState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_it_opens_when_most_connections_fail_and_refuses_at_once() -> None:
    clock, changes = Clock(), []
    b = Breaker(
        clock, min_samples=10, failure_ratio=0.5, on_change=lambda s, why: changes.append(s)
    )
    for _ in range(4):
        b.success()
    for _ in range(5):
        b.failure()
    assert b.state is BreakerState.CLOSED  # 9 samples: not enough to judge
    b.failure()
    assert b.state is BreakerState.OPEN and b.is_open
    assert not b.allow() and b.refused == 1
    assert changes == [BreakerState.OPEN]


def test_after_the_cooldown_one_probe_decides() -> None:
    clock = Clock()
    b = Breaker(clock, min_samples=2, cooldown_s=5.0)
    b.failure()
    b.failure()
    assert b.is_open
    clock.now = 5.0
    assert not b.is_open  # a look does not take the probe
    assert b.allow()  # the probe
    assert not b.allow()  # only one at a time
    b.success()
    assert b.state is BreakerState.CLOSED and b.allow()


def test_a_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    clock = Clock()
    b = Breaker(clock, min_samples=1, cooldown_s=5.0, max_cooldown_s=12.0)
    b.failure()
    for cooldown in (10.0, 12.0, 12.0):
        clock.now += 20
        assert b.allow()
        b.failure()
        assert b.is_open
        clock.now += cooldown - 0.01
        assert b.is_open
        clock.now += 0.02
        assert not b.is_open


def test_old_outcomes_leave_the_window() -> None:
    clock = Clock()
    b = Breaker(clock, window_s=30.0, min_samples=4, failure_ratio=0.5)
    for _ in range(3):
        b.failure()
    clock.now = 40.0  # those three are forgotten
    for _ in range(3):
        b.success()
    b.failure()
    assert b.state is BreakerState.CLOSED
