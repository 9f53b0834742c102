"""Operator tools end to end: the real server, the real SDK, the simulator as the model, and a
real HTTP server standing in for the operator's backend (good, slow, failing, not JSON)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.simulator.wire import field as wfield
from agent.tools.http import SIGNATURE_HEADER, TIMESTAMP_HEADER
from support import run_stack, silence
from support.tool_backend import Backend, tool_backend

pytestmark = pytest.mark.asyncio

SECRET = "tool-signing-secret-for-tests"


def tools_file(tmp_path: Path, backend: Backend, **overrides: dict[str, Any]) -> Path:
    """A tools file with one tool per backend path; ``overrides`` change a tool's fields."""

    def one(name: str, path: str, **extra: Any) -> dict[str, Any]:
        tool = {
            "name": name,
            "description": f"Look something up ({name}).",
            "parameters": {
                "type": "object",
                "properties": {"order": {"type": "string", "description": "the order number"}},
                "required": ["order"],
            },
            "url": backend.url(path),
            "headers": {"Authorization": "Bearer ${SHOP_TOKEN}"},
            "timeout_s": 1.5,
        }
        tool.update(extra)
        tool.update(overrides.get(name, {}))
        return tool

    doc = {
        "tools": [
            one("lookup_order", "ok"),
            one("slow_lookup", "slow"),
            one("broken_lookup", "fail"),
            one("busy_lookup", "busy"),
            one("html_lookup", "notjson"),
            one("huge_lookup", "big"),
            one("background_lookup", "ok", behavior="non_blocking", scheduling="silent"),
        ]
    }
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(doc))
    return path


def declarations(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The function declarations of a session's setup, by name (the wire mixes key cases)."""
    return {d["name"]: d for t in tools for d in wfield(t, "function_declarations") or []}


def env_for(tmp_path: Path, backend: Backend, **extra: str) -> dict[str, str]:
    return {
        "AGENT_TOOLS_FILE": str(tools_file(tmp_path, backend)),
        "SHOP_TOKEN": "shop-secret",
        "TOOLS_SIGNING_SECRET": SECRET,
        "AGENT_GREETING": "",
        **extra,
    }


async def test_a_tool_call_reaches_the_backend_once_signed_and_its_answer_reaches_the_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with tool_backend() as backend:
        monkeypatch.setenv("SHOP_TOKEN", "shop-secret")
        async with run_stack(monkeypatch, env_for(tmp_path, backend)) as stack:
            call = asyncio.create_task(
                stack.call(
                    silence(1.0),
                    linger_s=30.0,
                    custom_parameters={
                        "from": "+14155550100",
                        "to": "+14155550199",
                        "tier": "gold",
                    },
                )
            )
            sim = await stack.sim.next_session()
            await sim.wait_setup()
            declared = declarations(sim.tools)
            fc_id = await sim.send_tool_call("lookup_order", {"order": "A123"})
            response = await sim.wait_tool_response(fc_id)
            await sim.say("Your order has shipped. Goodbye!")
            end_id = await sim.send_tool_call("end_call", {"reason": "done"})
            await sim.wait_tool_response(end_id)
            await call
            summary = await stack.summary()
    # Declared with its schema and an explicit behavior (on 3.8 undeclared means non-blocking).
    assert wfield(declared["lookup_order"], "parameters_json_schema")["required"] == ["order"]
    assert declared["lookup_order"]["behavior"] == "BLOCKING"
    assert declared["background_lookup"]["behavior"] == "NON_BLOCKING"
    assert {"end_call", "lookup_order"} <= set(declared)
    # The backend's JSON object is the function response.
    assert response["response"] == {"echo": {"order": "A123"}, "status": "found"}
    [request] = backend.requests
    body = json.loads(request["body"])
    assert body["tool"] == "lookup_order" and body["function_call_id"] == fc_id
    assert body["arguments"] == {"order": "A123"}
    assert body["call"]["call_sid"] == summary.call_sid
    assert body["call"]["from"] == "+14155550100" and body["call"]["to"] == "+14155550199"
    assert body["call"]["direction"] == "inbound"
    assert body["call"]["custom_parameters"]["tier"] == "gold"
    headers = request["headers"]
    assert headers["authorization"] == "Bearer shop-secret"  # ${SHOP_TOKEN} expanded
    assert headers["idempotency-key"] == f"{summary.call_sid}:{fc_id}"
    # The signature verifies the way the README says to.
    timestamp = headers[TIMESTAMP_HEADER.lower()]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256)
    assert headers[SIGNATURE_HEADER.lower()] == "v1=" + expected.hexdigest()
    assert abs(int(timestamp) - time.time()) < 60
    # On the call's record, with its latency and outcome.
    [tool] = [t for t in summary.tool_calls if t["name"] == "lookup_order"]
    assert tool["outcome"] == "ok" and 0 < tool["latency_ms"] < 1500
    assert tool["args"] == {"order": "A123"}


@pytest.mark.parametrize(
    ("name", "outcome", "retryable", "words"),
    [
        ("slow_lookup", "timeout", True, "did not answer within 1.5 s"),
        ("broken_lookup", "http_error", True, "HTTP 500: database unavailable"),
        ("busy_lookup", "http_error", True, "HTTP 429"),
        ("html_lookup", "invalid_json", False, "not JSON"),
        ("huge_lookup", "too_large", False, "larger than 16 KiB"),
    ],
)
async def test_a_failing_backend_becomes_an_answer_the_model_can_act_on(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    outcome: str,
    retryable: bool,
    words: str,
) -> None:
    async with tool_backend() as backend:
        async with run_stack(monkeypatch, env_for(tmp_path, backend)) as stack:
            call = asyncio.create_task(stack.call(silence(1.0), linger_s=30.0))
            sim = await stack.sim.next_session()
            await sim.wait_setup()
            started = time.monotonic()
            fc_id = await sim.send_tool_call(name, {"order": "A123"})
            response = (await sim.wait_tool_response(fc_id, timeout=10))["response"]
            waited = time.monotonic() - started
            # The call goes on: the model can still talk and hang up.
            await sim.say("Sorry, I cannot look that up right now. Goodbye!")
            end_id = await sim.send_tool_call("end_call", {})
            await sim.wait_tool_response(end_id)
            result = await call
            summary = await stack.summary()
    assert response["status"] == "error"
    assert response["retryable"] is retryable
    assert words in response["error"]
    assert waited < 1.5 + 1.0  # bounded by the tool's timeout, never hung
    assert result.ended_by == "server" and summary.outcome == "ended_by_agent"
    [tool] = [t for t in summary.tool_calls if t["name"] == name]
    assert tool["outcome"] == outcome


async def test_a_cancelled_tool_call_cancels_the_backend_request_and_gets_no_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with tool_backend() as backend:
        backend.slow_s = 5.0
        env = env_for(tmp_path, backend)
        env["AGENT_TOOLS_FILE"] = str(tools_file(tmp_path, backend, slow_lookup={"timeout_s": 8}))
        async with run_stack(monkeypatch, env) as stack:
            call = asyncio.create_task(stack.call(silence(1.0), linger_s=30.0))
            sim = await stack.sim.next_session()
            await sim.wait_setup()
            fc_id = await sim.send_tool_call("slow_lookup", {"order": "A1"})
            await asyncio.wait_for(backend.arrived.wait(), 5)
            await sim.cancel_tool_calls([fc_id])
            async with asyncio.timeout(5):
                while not backend.disconnected:  # noqa: ASYNC110 - the backend's own record
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            answered = fc_id in sim.tool_responses
            await sim.say("Never mind. Goodbye!")
            end_id = await sim.send_tool_call("end_call", {})
            await sim.wait_tool_response(end_id)
            await call
            summary = await stack.summary()
    assert backend.disconnected == ["/slow"]
    assert not answered
    [tool] = [t for t in summary.tool_calls if t["name"] == "slow_lookup"]
    assert tool["outcome"] == "cancelled"


async def test_a_tool_call_repeated_after_a_reconnect_reaches_the_backend_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with tool_backend() as backend:
        backend.slow_s = 1.0
        async with run_stack(monkeypatch, env_for(tmp_path, backend)) as stack:
            call = asyncio.create_task(stack.call(silence(1.0), linger_s=30.0))
            first = await stack.sim.next_session()
            await first.wait_setup()
            # The backend is still working when the connection drops; the resumed model
            # asks again with the same id.
            fc_id = await first.send_tool_call("slow_lookup", {"order": "A9"})
            await asyncio.wait_for(backend.arrived.wait(), 5)
            await first.close(1011, "Internal error encountered.")
            second = await stack.sim.next_session()
            await second.wait_setup()
            await second.send_tool_call("slow_lookup", {"order": "A9"}, id=fc_id)
            response = await second.wait_tool_response(fc_id, timeout=10)
            # And once more after it was answered: answered again, not run again.
            await second.send_tool_call("slow_lookup", {"order": "A9"}, id=fc_id)
            await asyncio.sleep(0.5)
            await second.say("Done. Goodbye!")
            end_id = await second.send_tool_call("end_call", {})
            await second.wait_tool_response(end_id)
            await call
            summary = await stack.summary()
    assert [r["path"] for r in backend.requests] == ["/slow"]
    assert response["response"] == {"status": "finally"}
    assert [t["name"] for t in summary.tool_calls].count("slow_lookup") == 1


async def test_a_non_blocking_tool_answers_with_its_scheduling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with tool_backend() as backend:
        async with run_stack(monkeypatch, env_for(tmp_path, backend)) as stack:
            call = asyncio.create_task(stack.call(silence(1.0), linger_s=30.0))
            sim = await stack.sim.next_session()
            await sim.wait_setup()
            fc_id = await sim.send_tool_call("background_lookup", {"order": "B2"})
            response = await sim.wait_tool_response(fc_id)
            await sim.say("Goodbye!")
            end_id = await sim.send_tool_call("end_call", {})
            await sim.wait_tool_response(end_id)
            await call
            summary = await stack.summary()
    assert response["scheduling"] == "SILENT"
    assert response["response"]["status"] == "found"
    [tool] = [t for t in summary.tool_calls if t["name"] == "background_lookup"]
    assert tool["behavior"] == "non_blocking" and tool["outcome"] == "ok"


async def test_the_caller_hears_a_soft_sound_while_a_slow_tool_runs_and_not_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with tool_backend() as backend:
        backend.slow_s = 2.0
        env = env_for(tmp_path, backend)
        env["AGENT_TOOLS_FILE"] = str(tools_file(tmp_path, backend, slow_lookup={"timeout_s": 5}))
        async with run_stack(monkeypatch, env) as stack:
            call = asyncio.create_task(stack.call(silence(1.0), linger_s=30.0))
            sim = await stack.sim.next_session()
            await sim.wait_setup()
            fc_id = await sim.send_tool_call("slow_lookup", {"order": "A1"})
            await sim.wait_tool_response(fc_id, timeout=10)
            await sim.say("It shipped yesterday. Goodbye!")
            end_id = await sim.send_tool_call("end_call", {})
            await sim.wait_tool_response(end_id)
            result = await call
            summary = await stack.summary()
    [tool] = [t for t in summary.tool_calls if t["name"] == "slow_lookup"]
    started = tool["at_s"]
    # ~0.7 s after the tool started, for the rest of its 2 s: about 1.3 s of the sound.
    assert 800 <= summary.filler_ms <= 1600
    sound = [p for p in result.played if p.start < started + tool["latency_ms"] / 1000]
    assert sound and min(p.start for p in sound) >= started + 0.6


async def test_python_tools_and_google_search_are_declared_and_python_tools_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "AGENT_TOOLS_MODULE": "support.sample_tools",
        "AGENT_TOOLS": "end_call,google_search",
        "AGENT_GREETING": "",
    }
    async with run_stack(monkeypatch, env) as stack:
        call = asyncio.create_task(stack.call(silence(1.0), linger_s=30.0))
        sim = await stack.sim.next_session()
        await sim.wait_setup()
        tools = sim.tools
        fc_id = await sim.send_tool_call("opening_hours", {"day": "saturday"})
        response = (await sim.wait_tool_response(fc_id))["response"]
        bad_id = await sim.send_tool_call("opening_hours", {"day": "someday"})
        bad = (await sim.wait_tool_response(bad_id))["response"]
        await sim.say("Goodbye!")
        end_id = await sim.send_tool_call("end_call", {})
        await sim.wait_tool_response(end_id)
        await call
        summary = await stack.summary()
    assert any(wfield(t, "google_search") is not None for t in tools)
    decl = declarations(tools)["opening_hours"]
    assert decl["description"].startswith("When the clinic is open")
    schema = wfield(decl, "parameters_json_schema")
    assert schema["properties"]["day"]["enum"][0] == "monday"
    assert "call" not in schema["properties"]  # the call's identity is not the model's to fill
    assert response == {"day": "saturday", "hours": "9 am to 1 pm", "caller": summary.caller}
    assert bad == {"status": "no_results", "error": "no such day: someday", "retryable": False}
