"""The operator's tools, as one call runs them.

The toolbox (``agent.tools.toolbox``) is shared by every call and bounds each run in time and
size. What belongs to one call is here:

- **once per function-call id**: the model may repeat a call after a reconnect (the resumed
  session asks again for what it had asked before the drop). A repeat of a call still running
  is ignored (its answer is on the way); a repeat of an answered one is answered again by the
  conversation layer (``agent.resilient``) from the first answer. The backend is reached once.
- **cancellation**: ``toolCallCancellation`` (or the call ending) cancels the running request;
  nothing is answered for it.
- **the record**: every call on its turn in the call's ``tool_calls`` (name, arguments,
  latency, outcome), updated in place from ``running`` to its outcome.
- **dead air**: ``blocking_since`` says since when the model has been waiting for a blocking
  tool, for the bridge's "working on it" sound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from agent.events import AgentError, FunctionCall
from agent.logs import fields
from agent.tools.spec import CallIdentity
from agent.tools.toolbox import Toolbox

__all__ = ["ToolRunner"]

log = logging.getLogger(__name__)

#: Function-call ids remembered per call (a call makes a handful; this only bounds a model
#: that floods us with ids).
MAX_REMEMBERED: Final = 1024
#: Tool calls run at once per call; more are answered at once with an error.
MAX_CONCURRENT: Final = 8

SendResponse = Callable[[str, str, dict[str, Any], Any], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]


class ToolRunner:
    """Runs one call's operator tool calls (see the module docstring)."""

    def __init__(
        self,
        toolbox: Toolbox,
        identity: CallIdentity,
        *,
        send: SendResponse,
        spawn: Spawn,
        records: list[dict[str, Any]],
        clock: Callable[[], float],
        t0: float,
        turn: Callable[[], int],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._toolbox = toolbox
        self._identity = identity
        self._send = send
        self._spawn = spawn
        self._records = records
        self._now = clock
        self._t0 = t0
        self._turn = turn
        self._on_change = on_change
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._running: dict[str, tuple[asyncio.Task[None], dict[str, Any], bool, float]] = {}

    def handles(self, name: str) -> bool:
        return name in self._toolbox

    @property
    def blocking_since(self) -> float | None:
        """When the oldest blocking tool still running started (None: none is running)."""
        starts = [started for _, _, blocking, started in self._running.values() if blocking]
        return min(starts) if starts else None

    async def start(self, fc: FunctionCall) -> None:
        """Start the tool the model asked for (or ignore a repeat of one already started)."""
        if fc.id in self._seen:
            log.info("call.tool_call_repeated", extra=fields(tool=fc.name, id=fc.id))
            return
        self._seen[fc.id] = None
        while len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        spec = self._toolbox.spec(fc.name)
        now = self._now()
        record: dict[str, Any] = {
            "id": fc.id,
            "name": fc.name,
            "args": dict(fc.args),
            "at_s": round(now - self._t0, 3),
            "turn": self._turn(),
            "behavior": spec.behavior,
            "outcome": "running",
        }
        self._records.append(record)
        log.info("call.tool_started", extra=fields(tool=fc.name, id=fc.id, args=fc.args))
        if len(self._running) >= MAX_CONCURRENT:
            response = {
                "status": "error",
                "error": f"too many tools running at once (at most {MAX_CONCURRENT})",
                "retryable": True,
            }
            self._finish(record, "too_many", 0.0, response)
            await self._answer(fc, response, None)
            return
        blocking = spec.behavior == "blocking"
        task = self._spawn(self._run(fc, record), f"tool:{fc.name}:{fc.id}")
        self._running[fc.id] = (task, record, blocking, now)
        self._on_change()

    def cancel(self, ids: tuple[str, ...]) -> list[str]:
        """The model took these calls back: stop their requests. The ids it had running."""
        cancelled = []
        for call_id in ids:
            entry = self._running.pop(call_id, None)
            if entry is None:
                continue
            task, record, _, started = entry
            task.cancel()
            self._finish(record, "cancelled", (self._now() - started) * 1000, None)
            cancelled.append(call_id)
        if cancelled:
            self._on_change()
        return cancelled

    def cancel_all(self) -> None:
        """The call is ending: whatever still runs is cancelled (recorded as such)."""
        self.cancel(tuple(self._running))

    async def _run(self, fc: FunctionCall, record: dict[str, Any]) -> None:
        spec = self._toolbox.spec(fc.name)
        started = self._now()
        result = await self._toolbox.run(fc.name, fc.args, fc.id, self._identity)
        if self._running.pop(fc.id, None) is None:
            return  # cancelled meanwhile
        # On the call's clock, like every other time in its record.
        self._finish(record, result.outcome, (self._now() - started) * 1000, result.response)
        self._on_change()
        await self._answer(fc, result.response, spec.sdk_scheduling())
        # Ours, from the tool's answer to the function response handed to the socket.
        record["overhead_ms"] = round((time.perf_counter() - result.answered_at) * 1000, 3)

    async def _answer(self, fc: FunctionCall, response: dict[str, Any], scheduling: Any) -> None:
        try:
            await self._send(fc.id, fc.name, response, scheduling)
        except AgentError as exc:
            # The conversation is lost; the call is ending on that error anyway.
            log.warning(
                "call.tool_answer_lost", extra=fields(tool=fc.name, id=fc.id, error=str(exc))
            )

    def _finish(
        self,
        record: dict[str, Any],
        outcome: str,
        latency_ms: float,
        response: dict[str, Any] | None,
    ) -> None:
        record["outcome"] = outcome
        record["latency_ms"] = round(latency_ms, 1)
        if response is not None:
            record["result"] = response
        log.info(
            "call.tool_call",
            extra=fields(
                tool=record["name"],
                id=record["id"],
                outcome=outcome,
                latency_ms=record["latency_ms"],
            ),
        )
