"""Random fault draws for soak runs: when the next fault comes, and what it is. Pure.

A :class:`FaultSchedule` turns a :class:`~agent.simulator.behaviour.FaultPlan` and a random
stream into concrete :class:`Fault` values; the session's injector
(:mod:`agent.simulator.fault_injection`) acts them out on its connection. Keeping the draws
apart from the I/O lets a test check the distribution without a socket, and keeps a seeded
run's faults independent of how many audio chunks the session happened to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from agent.simulator.behaviour import FaultPlan

__all__ = ["CLOSE_REASONS", "Fault", "FaultSchedule"]

#: Close frames of the injected closes, by recorded fault name. 1011 is what the service sends
#: on internal errors; 1007 and 1008 are the ones reported around goAway rotation.
CLOSE_REASONS: Final[dict[str, tuple[int, str]]] = {
    "close_1011": (1011, "Internal error encountered."),
    "close_1007": (1007, "Request contains an invalid argument."),
    "close_1008": (1008, "The operation was aborted."),
    "refuse_resumption": (1011, "Internal error encountered."),
    "quota": (1008, "Quota exceeded"),
}


#: Faults after which the connection goes on.
_LASTING: Final = frozenset({"stall", "damaged_audio", "silent_answer", "rejected_answer"})


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault to inject. ``kind`` is the name recorded in ``SimSession.faults_injected``."""

    kind: str
    #: go_away: the ``timeLeft`` announced (the connection closes when it has passed).
    time_left_s: float = 0.0
    #: stall: how long the session stays silent.
    duration_s: float = 0.0
    #: closes: the close frame.
    close: tuple[int, str] | None = None

    @property
    def ends_connection(self) -> bool:
        """After this fault the connection is over (nothing more is scheduled on it)."""
        return self.kind not in _LASTING

    @property
    def revokes_handles(self) -> bool:
        return self.kind == "refuse_resumption"


class FaultSchedule:
    """The faults of one connection, drawn from ``rng`` as ``plan`` says."""

    def __init__(self, plan: FaultPlan, rng: np.random.Generator) -> None:
        self.plan = plan
        self._rng = rng
        weights = plan.weights
        self._kinds = list(weights)
        total = sum(weights.values())
        self._p = np.array([w / total for w in weights.values()]) if total > 0 else None
        self._count = 0

    @property
    def exhausted(self) -> bool:
        """No further connection fault will come (all weights 0, or the per-session cap)."""
        cap = self.plan.max_per_session
        return self._p is None or (cap is not None and self._count >= cap)

    def setup_fault(self) -> Fault | None:
        """The fault that hits this connection's setup, if any (drawn once per connection)."""
        quota, hang = self._rng.random(2)
        if quota < self.plan.quota_probability:
            return Fault("quota", close=CLOSE_REASONS["quota"])
        if hang < self.plan.setup_hang_probability:
            return Fault("setup_hang")
        # Drawn only when asked for, so that seeded runs without it keep their draws.
        if self.plan.drop_after_setup_probability and (
            self._rng.random() < self.plan.drop_after_setup_probability
        ):
            return Fault("drop_after_setup", close=CLOSE_REASONS["close_1011"])
        return None

    def next_delay_s(self) -> float:
        """The wait before the next connection fault."""
        return float(self._rng.exponential(self.plan.mean_interval_s))

    def next_fault(self) -> Fault:
        """The next connection fault (raises ``RuntimeError`` once :attr:`exhausted`)."""
        if self.exhausted or self._p is None:
            raise RuntimeError("no more faults in this plan")
        self._count += 1
        kind = self._kinds[int(self._rng.choice(len(self._kinds), p=self._p))]
        plan = self.plan
        if kind == "go_away":
            return Fault("go_away", time_left_s=self._uniform(plan.go_away_time_left_s))
        if kind == "stall":
            return Fault("stall", duration_s=self._uniform(plan.stall_s))
        if kind in _LASTING or kind == "oversized":
            return Fault(kind)
        if kind == "protocol_close":
            kind = "close_1007" if self._rng.random() < 0.5 else "close_1008"
        elif kind == "close":
            kind = "close_1011"
        return Fault(kind, close=CLOSE_REASONS[kind])

    def _uniform(self, bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        return float(self._rng.uniform(lo, hi))
