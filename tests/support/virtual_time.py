"""An asyncio event loop on virtual time: sleeps and timeouts pass instantly, in order.

Code under test that waits (``asyncio.sleep``, ``asyncio.timeout``, ``Event.wait`` with a
timeout) runs exactly as it would on the wall clock, except that whenever nothing is ready to
run the loop jumps to its next timer. A 30 s drain timeout takes microseconds, and the order
of events is deterministic. ``loop.time()`` is the virtual clock: give it to the code as its
clock (``Call(clock=loop.time)``).

Only in-process peers work here (no sockets, no threads): a wait that nothing can ever end
would block forever on the wall clock, so the loop raises ``Deadlock`` instead.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Deadlock", "VirtualTimeLoop", "run_virtual"]


class Deadlock(RuntimeError):
    """Every task waits, and no timer is set: on the wall clock this would hang."""


class _InstantSelector(selectors.SelectSelector):
    """Polls without waiting; a wait for ``timeout`` seconds becomes a jump of the clock."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready:
            return ready
        assert self.loop is not None
        if timeout is None:
            raise Deadlock("every task is waiting and no timer is set")
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """See the module docstring."""

    def __init__(self) -> None:
        selector = _InstantSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += max(0.0, seconds)


def run_virtual(coro: Coroutine[Any, Any, T], *, limit_s: float = 3600.0) -> T:
    """Run ``coro`` to completion on a fresh virtual-time loop (bounded at ``limit_s`` of
    virtual time, so a scenario that never ends fails instead of spinning)."""
    loop = VirtualTimeLoop()

    async def bounded() -> T:
        async with asyncio.timeout(limit_s):
            return await coro

    try:
        return loop.run_until_complete(bounded())
    finally:
        # As asyncio.run does: whatever the scenario left running is cancelled and awaited,
        # so a failing test leaves no task to be collected after the loop is closed.
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
