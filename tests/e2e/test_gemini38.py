"""What Gemini 3.8 Live changed, end to end: the simulator acts like the model generation the
session names (``gemini-3.8-live``: audio and transcript in one message, blocking calls
cancelled by new input; ``…-extended-thinking``: ``interactionStatus``, and ``turnComplete``
in the middle of an answer), and hanging up, the stall watchdog and tools stay right."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.simulator import SimBehaviour
from agent.simulator.voice import OUTPUT_RATE, synthesize
from support import run_stack, silence, speech
from support.tool_backend import tool_backend

pytestmark = pytest.mark.asyncio

THINKING = "gemini-3.8-live-extended-thinking"


async def test_hanging_up_waits_for_the_whole_goodbye_when_turn_complete_comes_mid_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    goodbye = "Thank you for calling the clinic, have a wonderful day, goodbye!"
    env = {"GEMINI_MODEL": THINKING, "AGENT_GREETING": ""}
    async with run_stack(monkeypatch, env) as stack:
        call = asyncio.create_task(stack.call(silence(0.5), linger_s=30.0))
        sim = await stack.sim.next_session()
        await sim.wait_setup()
        # The model asks to hang up first, then says goodbye; its answer has a turnComplete
        # half-way and goes on (interactionStatus IN_PROGRESS until the end).
        fc_id = await sim.send_tool_call("end_call", {"reason": "done"})
        await sim.wait_tool_response(fc_id)
        await sim.say(goodbye)
        result = await call
        summary = await stack.summary()
    spoken_s = len(synthesize(goodbye, sim.voice or "Puck").pcm) / 2 / OUTPUT_RATE
    played_s = sum(p.end - p.start for p in result.played)
    assert summary.outcome == "ended_by_agent" and result.ended_by == "server"
    assert played_s >= spoken_s - 0.1, (played_s, spoken_s)  # none of it cut off
    assert len(summary.turns) >= 2  # the answer came as two "turns"


@pytest.mark.parametrize(("model", "stalls"), [(THINKING, 0), ("gemini-2.5-flash-native-audio", 1)])
async def test_a_model_that_says_it_is_working_is_not_taken_for_stalled(
    monkeypatch: pytest.MonkeyPatch, model: str, stalls: int
) -> None:
    # The model thinks 6 s before answering, longer than the 4 s stall timeout: the
    # extended-thinking model says IN_PROGRESS meanwhile; the 2.5 model says nothing and is
    # nudged (the control: the same wait without the status is a stall).
    env = {"GEMINI_MODEL": model, "AGENT_GREETING": "", "MODEL_STALL_TIMEOUT_S": "4"}
    async with run_stack(monkeypatch, env, behaviour=SimBehaviour(think_ms=6000)) as stack:
        result = await stack.call(
            silence(0.5) + speech("what time do you open on saturday"), linger_s=9.0
        )
        summary = await stack.summary()
    assert summary.stalls == stalls
    assert result.time_to_first_audio_s is not None  # answered either way


async def test_a_blocking_tool_call_is_cancelled_when_the_caller_speaks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with tool_backend() as backend:
        backend.slow_s = 8.0
        tools = tmp_path / "tools.json"
        tools.write_text(
            json.dumps(
                {
                    "tools": [
                        {
                            "name": "slow_lookup",
                            "description": "Look up an order (slowly).",
                            "parameters": {"type": "object", "properties": {}},
                            "url": backend.url("slow"),
                            "timeout_s": 10,
                        }
                    ]
                }
            )
        )
        env = {"AGENT_TOOLS_FILE": str(tools), "AGENT_GREETING": ""}  # gemini-3.8-live
        async with run_stack(monkeypatch, env) as stack:
            call = asyncio.create_task(
                stack.call(silence(1.5) + speech("actually, never mind that"), linger_s=2.0)
            )
            sim = await stack.sim.next_session()
            await sim.wait_setup()
            fc_id = await sim.send_tool_call("slow_lookup", {})
            await call
            summary = await stack.summary()
    # The model cancelled the blocking call when new input came; the request went with it.
    assert fc_id in sim.cancelled_calls
    assert backend.disconnected == ["/slow"]
    [tool] = summary.tool_calls
    assert tool["outcome"] == "cancelled" and fc_id not in sim.tool_responses
