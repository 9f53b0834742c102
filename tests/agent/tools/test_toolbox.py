"""The rules every operator tool runs under: time and size bounds, and failures the model
can act on. HTTP edge cases run against an in-process transport (the e2e tests use a real
server)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from agent.tools import CallIdentity, Toolbox, ToolFailure, ToolSpec
from agent.tools.http import HttpBackend, HttpTool, sign

pytestmark = pytest.mark.asyncio

CALL = CallIdentity("CA1", "+14155550100", "+14155550199", "inbound", {"tier": "gold"})
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}


class FnTool:
    def __init__(self, name: str, fn: Any, timeout_s: float = 1.0) -> None:
        self.spec = ToolSpec(name, "A test tool.", SCHEMA, timeout_s=timeout_s)
        self.fn = fn

    async def invoke(
        self, args: Mapping[str, Any], call_id: str, call: CallIdentity
    ) -> Mapping[str, Any]:
        return await self.fn(args)  # type: ignore[no-any-return]


async def run(tool: Any, args: dict[str, Any] | None = None) -> Any:
    return await Toolbox([tool]).run(tool.spec.name, args or {"q": "x"}, "fc-1", CALL)


async def test_an_answer_passes_through_and_a_non_object_is_wrapped() -> None:
    async def answer(args: Mapping[str, Any]) -> Any:
        return {"found": args["q"]}

    async def scalar(args: Mapping[str, Any]) -> Any:
        return 42

    ok = await run(FnTool("a", answer))
    assert ok.ok and ok.response == {"found": "x"} and ok.latency_ms >= 0
    wrapped = await run(FnTool("b", scalar))
    assert wrapped.response == {"result": 42}


async def test_a_slow_tool_times_out_into_a_retryable_error() -> None:
    async def slow(args: Mapping[str, Any]) -> Any:
        await asyncio.sleep(10)

    result = await run(FnTool("slow", slow, timeout_s=0.05))
    assert result.outcome == "timeout"
    assert result.response == {
        "status": "error",
        "error": "slow did not answer within 0.05 s",
        "retryable": True,
    }


async def test_failures_and_crashes_become_answers_and_never_raise() -> None:
    async def refuses(args: Mapping[str, Any]) -> Any:
        raise ToolFailure("no_results", "nothing matches", retryable=False)

    async def crashes(args: Mapping[str, Any]) -> Any:
        raise KeyError("boom")

    async def huge(args: Mapping[str, Any]) -> Any:
        return {"blob": "x" * 20_000}

    async def not_json(args: Mapping[str, Any]) -> Any:
        return {"when": object()}

    refused = await run(FnTool("r", refuses))
    assert (refused.outcome, refused.response["retryable"]) == ("no_results", False)
    crashed = await run(FnTool("c", crashes))
    assert crashed.outcome == "error" and "KeyError" in crashed.response["error"]
    assert (await run(FnTool("h", huge))).outcome == "too_large"
    assert (await run(FnTool("j", not_json))).outcome == "invalid_response"
    big_args = await run(FnTool("a", refuses), {"q": "y" * 20_000})
    assert big_args.outcome == "too_large"
    unknown = await Toolbox().run("nope", {}, "fc-1", CALL)
    assert unknown.outcome == "unknown_tool" and unknown.response["retryable"] is False


async def test_cancellation_propagates() -> None:
    async def slow(args: Mapping[str, Any]) -> Any:
        await asyncio.sleep(10)

    task = asyncio.create_task(run(FnTool("slow", slow, timeout_s=5)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def http_tool(handler: Any, secret: str | None = None) -> HttpTool:
    backend = HttpBackend(secret, transport=httpx.MockTransport(handler))
    spec = ToolSpec("lookup", "Look it up.", SCHEMA, timeout_s=1.0)
    return HttpTool(spec, "https://shop.example.com/lookup", backend, headers={"X-Key": "k"})


async def test_http_requests_carry_the_call_and_a_verifiable_signature() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "found"})

    result = await run(http_tool(handler, secret="s3cret"))
    assert result.response == {"status": "found"}
    [request] = seen
    body = request.content
    assert request.headers["X-Key"] == "k"
    assert request.headers["Idempotency-Key"] == "CA1:fc-1"
    ts = request.headers["X-Agent-Timestamp"]
    assert request.headers["X-Agent-Signature"] == sign("s3cret", ts, body)
    assert b'"custom_parameters":{"tier":"gold"}' in body


@pytest.mark.parametrize(
    ("response", "outcome", "retryable"),
    [
        (httpx.Response(503), "http_error", True),
        (httpx.Response(404, json={"error": "no such order"}), "http_error", False),
        (httpx.Response(200, text="<html>"), "invalid_json", False),
        (httpx.Response(200, content=b"[" + b"1," * 10_000 + b"1]"), "too_large", False),
    ],
)
async def test_http_failures_say_what_went_wrong(
    response: httpx.Response, outcome: str, retryable: bool
) -> None:
    result = await run(http_tool(lambda request: response))
    assert result.outcome == outcome
    assert result.response["retryable"] is retryable


async def test_an_unreachable_backend_is_a_retryable_connection_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    result = await run(http_tool(handler))
    assert result.outcome == "connection_error" and result.response["retryable"] is True
    assert "could not reach the lookup service" in result.response["error"]


async def test_an_empty_2xx_answer_is_ok_and_a_list_is_wrapped() -> None:
    assert (await run(http_tool(lambda r: httpx.Response(204)))).response == {"status": "ok"}
    listed = await run(http_tool(lambda r: httpx.Response(200, json=[1, 2])))
    assert listed.response == {"result": [1, 2]}
