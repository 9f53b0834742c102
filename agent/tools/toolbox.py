"""The operator's tools, under one set of rules.

Whatever a tool is (an HTTP endpoint, a Python function, the knowledge base), ``Toolbox.run``:

- bounds it in time (the tool's ``timeout_s``) and in size (arguments and answer);
- turns every failure into a function response that says what went wrong and whether trying
  again makes sense (``{"status": "error", "error": …, "retryable": …}``), so the model can tell
  the caller instead of waiting or calling again and again;
- never raises for anything the tool does (only ``CancelledError``, when the model cancels
  the call or the call ends).

Deduplication per function-call id and cancellation belong to the call that runs the tools
(``telephony.call.tooling``): a toolbox is shared by every call of the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from agent.logs import fields

if TYPE_CHECKING:
    from google.genai import types
from agent.tools.spec import (
    MAX_ARGUMENTS_BYTES,
    MAX_RESPONSE_BYTES,
    CallIdentity,
    Tool,
    ToolFailure,
    ToolSpec,
    failure_response,
)

__all__ = ["HandlerTool", "ToolResult", "Toolbox"]

log = logging.getLogger(__name__)

#: Outcomes as they appear in records and metrics.
OK: Final = "ok"
#: What an answer may say of itself (``status`` or ``result``) that records and metrics keep.
REPORTED_OUTCOMES: Final = frozenset({"no_results", "error"})


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call came to."""

    response: dict[str, Any]
    #: ``ok`` or what went wrong (``timeout``, ``http_error``, ``error``, …).
    outcome: str
    latency_ms: float
    #: ``time.perf_counter()`` when the tool's answer (or failure) was in hand: what the
    #: caller of ``run`` adds after it is its own overhead.
    answered_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == OK


@dataclass(frozen=True)
class HandlerTool:
    """A tool answered by a coroutine of this process that takes only the arguments (e.g.
    ``agent.knowledge.tool.KnowledgeTool.answer``)."""

    spec: ToolSpec
    handler: Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]

    async def invoke(
        self, args: Mapping[str, Any], call_id: str, call: CallIdentity
    ) -> Mapping[str, Any]:
        return await self.handler(dict(args))


class Toolbox:
    """The operator's tools by name (empty: only the built-in tools exist)."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        name = tool.spec.name
        if name in self._tools:
            raise ValueError(
                f"two tools are named {name!r} ({self._tools[name].spec.source} and "
                f"{tool.spec.source})"
            )
        self._tools[name] = tool

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Toolbox) and self.specs() == other.specs()

    __hash__ = None  # type: ignore[assignment]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def spec(self, name: str) -> ToolSpec:
        return self._tools[name].spec

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def declarations(self, *, with_behavior: bool) -> list[types.FunctionDeclaration]:
        return [
            spec.declaration(with_behavior=with_behavior) for spec in self.specs() if spec.declared
        ]

    def with_tools(self, tools: Iterable[Tool]) -> Toolbox:
        """A new toolbox with this one's tools and ``tools``."""
        return Toolbox([*self._tools.values(), *tools])

    async def aclose(self) -> None:
        """Release what the tools hold (the HTTP tools' connection pool)."""
        closed: set[int] = set()
        for tool in self._tools.values():
            resource = getattr(tool, "backend", None)
            if resource is not None and id(resource) not in closed:
                closed.add(id(resource))
                await resource.aclose()

    async def run(
        self, name: str, args: Mapping[str, Any], call_id: str, call: CallIdentity
    ) -> ToolResult:
        """Run one tool call to an answer. Never raises but ``CancelledError``."""
        started = time.perf_counter()
        answered = [started]  # when the tool itself was done (set by _invoke)
        tool = self._tools.get(name)
        try:
            if tool is None:
                raise ToolFailure(
                    "unknown_tool", f"there is no tool named {name!r}", retryable=False
                )
            response = await self._invoke(tool, args, call_id, call, answered)
            # A tool that answers "nothing found" or "failed" in its own words is counted so.
            reported = response.get("status", response.get("result"))
            outcome = (
                reported if isinstance(reported, str) and reported in REPORTED_OUTCOMES else OK
            )
        except ToolFailure as failure:
            response, outcome = failure_response(failure), failure.outcome
            log.warning(
                "tool.failed",
                extra=fields(tool=name, id=call_id, outcome=outcome, error=failure.message),
            )
        except Exception as exc:  # the tool's own bug: the call goes on
            log.exception("tool.crashed", extra=fields(tool=name, id=call_id))
            response = failure_response(
                ToolFailure("error", f"the tool failed ({type(exc).__name__})", retryable=False)
            )
            outcome = "error"
        done = answered[-1] if len(answered) > 1 else time.perf_counter()
        return ToolResult(response, outcome, round((done - started) * 1000, 2), done)

    async def _invoke(
        self,
        tool: Tool,
        args: Mapping[str, Any],
        call_id: str,
        call: CallIdentity,
        answered: list[float],
    ) -> dict[str, Any]:
        spec = tool.spec
        if len(orjson.dumps(dict(args))) > MAX_ARGUMENTS_BYTES:
            raise ToolFailure(
                "too_large",
                f"the arguments are larger than {MAX_ARGUMENTS_BYTES // 1024} KiB",
                retryable=False,
            )
        try:
            async with asyncio.timeout(spec.timeout_s):
                answer = await tool.invoke(args, call_id, call)
        except TimeoutError:
            answered.append(time.perf_counter())
            raise ToolFailure(
                "timeout",
                f"{spec.name} did not answer within {spec.timeout_s:g} s",
                retryable=True,
            ) from None
        answered.append(time.perf_counter())
        response = dict(answer) if isinstance(answer, Mapping) else {"result": answer}
        try:
            size = len(orjson.dumps(response))
        except TypeError as exc:
            raise ToolFailure(
                "invalid_response", f"the answer is not JSON ({exc})", retryable=False
            ) from None
        if size > MAX_RESPONSE_BYTES:
            raise ToolFailure(
                "too_large",
                f"the answer ({size // 1024} KiB) is larger than {MAX_RESPONSE_BYTES // 1024} KiB",
                retryable=False,
            )
        return response
