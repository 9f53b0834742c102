"""Random fault draws (FaultSchedule, FaultPlan): pure, no socket."""

from __future__ import annotations

import numpy as np
import pytest

from agent.simulator import FaultPlan
from agent.simulator.faults import CLOSE_REASONS, FaultSchedule
from support.sim import NO_FAULTS, only

# --- Random faults (soak runs) -------------------------------------------------------------


def test_fault_schedule_draws_as_planned() -> None:
    plan = FaultPlan(mean_interval_s=2.0, go_away_time_left_s=(2, 10), stall_s=(3, 15))
    schedule = FaultSchedule(plan, np.random.default_rng(1))
    delays = [schedule.next_delay_s() for _ in range(4000)]
    assert np.mean(delays) == pytest.approx(2.0, rel=0.1)  # exponential waits, mean as planned
    assert min(delays) >= 0
    faults = [schedule.next_fault() for _ in range(4000)]
    kinds = [f.kind for f in faults]
    share = {k: kinds.count(k) / len(kinds) for k in set(kinds)}
    # Five equal weights; a protocol close is 1007 or 1008 at even odds.
    for kind in ("go_away", "close_1011", "stall", "refuse_resumption"):
        assert share[kind] == pytest.approx(0.2, abs=0.03)
    for kind in ("close_1007", "close_1008"):
        assert share[kind] == pytest.approx(0.1, abs=0.03)
    for f in faults:
        if f.kind == "go_away":
            assert 2 <= f.time_left_s <= 10 and f.close is None and f.ends_connection
        elif f.kind == "stall":
            assert 3 <= f.duration_s <= 15 and not f.ends_connection
        else:
            assert f.close == CLOSE_REASONS[f.kind] and f.ends_connection
    assert {f.close for f in faults if f.close} == {
        (1011, "Internal error encountered."),
        (1007, "Request contains an invalid argument."),
        (1008, "The operation was aborted."),
    }
    assert [f.revokes_handles for f in faults] == [k == "refuse_resumption" for k in kinds]

    # Seeded: the same draws again.
    again = FaultSchedule(plan, np.random.default_rng(1))
    assert [again.next_delay_s() for _ in range(4000)] == delays
    assert [again.next_fault() for _ in range(4000)] == faults

    # Weights of 0 are never drawn; a cap ends the schedule.
    capped = FaultSchedule(only("stall_weight", max_per_session=2), np.random.default_rng(2))
    assert [capped.next_fault().kind for _ in range(2)] == ["stall", "stall"]
    assert capped.exhausted
    with pytest.raises(RuntimeError):
        capped.next_fault()
    assert FaultSchedule(NO_FAULTS, np.random.default_rng(3)).exhausted


def test_setup_faults_hit_the_planned_fraction_of_connections() -> None:
    rng = np.random.default_rng(4)
    assert all(FaultSchedule(FaultPlan(), rng).setup_fault() is None for _ in range(500))
    plan = FaultPlan(setup_hang_probability=0.3, quota_probability=0.1)
    drawn = [FaultSchedule(plan, rng).setup_fault() for _ in range(4000)]
    kinds = [f.kind if f else None for f in drawn]
    assert kinds.count("quota") / len(kinds) == pytest.approx(0.1, abs=0.02)
    # A hang is drawn for connections that got through the quota check.
    assert kinds.count("setup_hang") / len(kinds) == pytest.approx(0.9 * 0.3, abs=0.03)
    assert {f.close for f in drawn if f and f.kind == "quota"} == {(1008, "Quota exceeded")}


@pytest.mark.parametrize(
    "knobs",
    [
        {"mean_interval_s": 0},
        {"mean_interval_s": float("inf")},
        {"stall_weight": -1},
        {"go_away_time_left_s": (5, 2)},
        {"stall_s": (-1, 2)},
        {"align_s": -1},
        {"max_per_session": -1},
        {"setup_hang_probability": 1.5},
        {"quota_probability": -0.1},
    ],
)
def test_fault_plan_rejects_nonsense(knobs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultPlan(**knobs)  # type: ignore[arg-type]
