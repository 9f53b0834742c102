"""A process-wide circuit breaker on new model connections (pure: the clock is passed in).

When most new Live connections fail (refused, set up and dropped at once, timed out), opening
more of them only adds load to a service that is down, and every caller waits through retries
to hear the apology anyway. So once the share of failed connections over the last
``window_s`` reaches ``failure_ratio`` (with at least ``min_samples`` of them), the breaker
*opens*: new connections are refused at once for ``cooldown_s`` (the server turns new calls to
the apology path straight away and says so in ``/readyz``). Then one probe connection is
allowed (*half-open*): if it serves, the breaker closes; if it fails, it opens again for twice
as long, up to ``max_cooldown_s``.

A connection reports once: a failure when it could not be opened or died within its first
seconds (``agent.session`` decides), a success when it served.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Final

__all__ = ["Breaker", "BreakerState"]

WINDOW_S: Final = 30.0
MIN_SAMPLES: Final = 10
FAILURE_RATIO: Final = 0.5
COOLDOWN_S: Final = 5.0
MAX_COOLDOWN_S: Final = 60.0


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """See the module docstring."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        window_s: float = WINDOW_S,
        min_samples: int = MIN_SAMPLES,
        failure_ratio: float = FAILURE_RATIO,
        cooldown_s: float = COOLDOWN_S,
        max_cooldown_s: float = MAX_COOLDOWN_S,
        on_change: Callable[[BreakerState, str], None] | None = None,
    ) -> None:
        self._clock = clock
        self._window_s = window_s
        self._min_samples = min_samples
        self._ratio = failure_ratio
        self._base_cooldown = cooldown_s
        self._max_cooldown = max_cooldown_s
        self._cooldown = cooldown_s
        self._on_change = on_change
        self._samples: deque[tuple[float, bool]] = deque()  # (time, ok)
        self._state = BreakerState.CLOSED
        self._reopen_at = 0.0
        self._probing = False
        #: Connections refused while open, and a hook called for each (metrics).
        self.refused = 0
        self.on_refused: Callable[[], None] | None = None

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def is_open(self) -> bool:
        """New connections would be refused now (a look that does not take the probe)."""
        if self._state is BreakerState.OPEN:
            return self._clock() < self._reopen_at
        return self._state is BreakerState.HALF_OPEN and self._probing

    def allow(self) -> bool:
        """May a new connection be opened now? (Half-open: the one probe.)"""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN and self._clock() >= self._reopen_at:
            self._set(BreakerState.HALF_OPEN, "cooldown over: probing")
        if self._state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused()
        return False

    def success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probing = False
            self._samples.clear()
            self._cooldown = self._base_cooldown
            self._set(BreakerState.CLOSED, "the probe connection served")
            return
        self._add(ok=True)

    def failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probing = False
            self._cooldown = min(self._max_cooldown, self._cooldown * 2)
            self._open("the probe connection failed")
            return
        self._add(ok=False)
        if self._state is BreakerState.CLOSED:
            failed = sum(1 for _, ok in self._samples if not ok)
            if (
                len(self._samples) >= self._min_samples
                and failed / len(self._samples) >= self._ratio
            ):
                self._open(f"{failed} of the last {len(self._samples)} connections failed")

    def _add(self, *, ok: bool) -> None:
        now = self._clock()
        self._samples.append((now, ok))
        while self._samples and self._samples[0][0] < now - self._window_s:
            self._samples.popleft()

    def _open(self, why: str) -> None:
        self._reopen_at = self._clock() + self._cooldown
        self._set(BreakerState.OPEN, f"{why}; refusing new connections for {self._cooldown:g} s")

    def _set(self, state: BreakerState, why: str) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state, why)
