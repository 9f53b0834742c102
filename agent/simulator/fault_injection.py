"""Faults acted out on a live connection: the I/O half of :mod:`agent.simulator.faults`.

A :class:`FaultInjector` belongs to one session and records every fault injected on it. Its
coroutines are started by the session in the session's TaskGroup (so they end with the
connection): :meth:`FaultInjector.run` acts out a :class:`~agent.simulator.faults.FaultSchedule`
(stalls, goAway, closes timed to land mid-speech, revoked resumption handles) until a fault ends
the connection, and the timers send a scheduled ``goAway`` or close the connection later. It acts
only through the :class:`FaultActions` the session gives it, so it never reaches into the
session, and a test can drive it with stand-ins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.simulator.faults import Fault, FaultSchedule

__all__ = ["FaultActions", "FaultInjector"]

log = logging.getLogger(__name__)

#: Base64 characters of the ``oversized`` fault's message: 4 MB, four times a sane cap.
OVERSIZED = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FaultActions:
    """What a fault can do to its connection (the session provides each)."""

    #: Suspend (``True``) or resume (``False``) everything the server sends.
    stall: Callable[[bool], None]
    #: Send ``goAway`` with this ``timeLeft`` (s); the connection closes when it has passed.
    go_away: Callable[[float], Awaitable[bool]]
    #: Close the connection with this code and reason.
    close: Callable[[int, str], Awaitable[None]]
    #: Invalidate the session's resumption handles (its state is lost).
    revoke_handles: Callable[[], None]
    #: Return once the model's answer is playing or the caller is speaking; ``TimeoutError``
    #: after this many seconds.
    wait_for_speech: Callable[[float], Awaitable[None]]
    #: Send one raw message (hostile-model faults).
    send: Callable[[dict[str, object]], Awaitable[bool]]
    #: Make the next answer ``"silent"`` or ``"rejected"``.
    degrade_next_answer: Callable[[str], None]


class FaultInjector:
    """Injects one session's faults and records them (:attr:`injected`)."""

    def __init__(
        self,
        actions: FaultActions,
        *,
        session_id: str,
        connected_at: float,
        on_change: Callable[[], None],
    ) -> None:
        self._actions = actions
        self._session_id = session_id
        self._connected_at = connected_at
        self._on_change = on_change
        #: Faults injected: (seconds since connect, kind), in order.
        self.injected: list[tuple[float, str]] = []

    def record(self, kind: str) -> None:
        """Note a fault of ``kind`` as injected now."""
        at = asyncio.get_running_loop().time() - self._connected_at
        self.injected.append((round(at, 3), kind))
        log.debug("session %s: fault %s at %.3f s", self._session_id, kind, at)
        self._on_change()

    # --- Random faults (SimBehaviour.faults) -------------------------------------------------

    async def run(self, schedule: FaultSchedule) -> None:
        """Act out the schedule's faults until one ends the connection (or none are left)."""
        while not schedule.exhausted:
            await asyncio.sleep(schedule.next_delay_s())
            fault = schedule.next_fault()
            if fault.kind == "stall":
                await self._stall_for(fault.duration_s)
            elif fault.kind in ("silent_answer", "rejected_answer"):
                self.record(fault.kind)
                self._actions.degrade_next_answer(fault.kind.split("_")[0])
            elif fault.kind == "damaged_audio":
                self.record(fault.kind)
                for data in ("abcde", "AAE="):  # invalid base64; then 3 bytes: odd length
                    part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}
                    await self._actions.send({"serverContent": {"modelTurn": {"parts": [part]}}})
            elif fault.kind == "oversized":
                self.record(fault.kind)
                part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "A" * OVERSIZED}}
                await self._actions.send({"serverContent": {"modelTurn": {"parts": [part]}}})
            elif fault.kind == "go_away":
                self.record(fault.kind)
                await self._actions.go_away(fault.time_left_s)
            else:
                await self._close_for(fault, schedule.plan.align_s)
            if fault.ends_connection:
                return

    async def _stall_for(self, duration_s: float) -> None:
        self.record("stall")
        self._actions.stall(True)
        try:
            await asyncio.sleep(duration_s)
        finally:
            self._actions.stall(False)

    async def _close_for(self, fault: Fault, align_s: float) -> None:
        """Close mid-answer or mid-caller-speech when it happens within ``align_s``."""
        with contextlib.suppress(TimeoutError):
            await self._actions.wait_for_speech(align_s)
        if fault.revokes_handles:
            self._actions.revoke_handles()
        self.record(fault.kind)
        assert fault.close is not None
        await self._actions.close(*fault.close)

    # --- Timers ------------------------------------------------------------------------------

    async def go_away_later(self, after_s: float, time_left_s: float) -> None:
        """``goAway`` after ``after_s`` (``SimBehaviour.go_away_after_s``)."""
        await asyncio.sleep(after_s)
        await self._actions.go_away(time_left_s)

    async def close_later(self, delay_s: float, code: int, reason: str) -> None:
        """Close the connection after ``delay_s`` (the deadline announced by ``goAway``)."""
        await asyncio.sleep(delay_s)
        await self._actions.close(code, reason)
