"""The per-call bridge with in-process fakes of both peers, on virtual time (milliseconds each).

``FakeTwilio`` plays Twilio's side (marks echoed as the audio plays, all at once on a clear);
``FakeConversation`` plays the model's. No sockets, no threads, no wall-clock sleeps: the
whole-stack behaviour is proven again end to end in tests/e2e.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from agent.events import (
    AudioOut,
    FunctionCall,
    InputTranscript,
    Interrupted,
    OutputTranscript,
    SessionClosed,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
)
from agent.prompts import (
    SILENT_GOODBYE_PROMPT,
    STILL_THERE_PROMPT,
    dtmf_prompt,
    greeting_prompt,
    outbound_greeting_prompt,
    wrap_up_prompt,
)
from agent.tools import Toolbox, ToolSpec
from agent.tools.toolbox import HandlerTool
from support.fakes import SILENCE, FakeConversation, FakeTwilio
from support.virtual_time import run_virtual
from telephony.audio import ulaw_encode
from telephony.call.bridge import END_DRAIN_TIMEOUT_S, Call
from telephony.call.state import State
from telephony.call.summary import CallSummary, Outcome
from telephony.call.uplink import UplinkBlocks
from telephony.twilio import media_stream as ms

GREETING = "Hello! How can I help?"


def agent_audio(seconds: float, chunk_s: float = 0.04) -> tuple[AudioOut, ...]:
    """Model speech: a 440 Hz tone at 24 kHz in 40 ms chunks, as the Live API sends it (the
    conversion to 8 kHz μ-law is the real one)."""
    t = np.arange(round(seconds * 24_000)) / 24_000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    step = round(chunk_s * 24_000) * 2
    return tuple(AudioOut(pcm[i : i + step]) for i in range(0, len(pcm), step))


def caller_speech(seconds: float) -> bytes:
    """A caller talking: a loud 300 Hz tone as 8 kHz μ-law."""
    t = np.arange(round(seconds * 8000)) / 8000
    return ulaw_encode((np.sin(2 * np.pi * 300 * t) * 12000).astype("<i2").tobytes())


async def until(condition: Callable[[], object], timeout_s: float = 60.0) -> None:
    """Wait (virtual time) until ``condition()`` holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling state the fakes expose
            await asyncio.sleep(0.005)


class Scene:
    """A started call with its two fakes."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.twilio = FakeTwilio(echo_marks=options.pop("echo_marks", True))
        self.model = FakeConversation()
        opener = options.pop("opener", self.model.open)
        self.call = Call(
            self.twilio,
            opener,
            greeting=options.pop("greeting", GREETING),
            clock=self.loop.time,
            **options,
        )
        self.task: asyncio.Task[CallSummary] | None = None
        self.silence_task: asyncio.Task[None] | None = None

    async def start(self, **parameters: str) -> Scene:
        self.twilio.start(**parameters)
        self.task = asyncio.create_task(self.call.run())
        return self

    async def connected(self, **parameters: str) -> Scene:
        await self.start(**parameters)
        await until(lambda: self.call.state.current is State.ACTIVE)
        return self

    def keep_line_open(self) -> None:
        """Twilio sends a frame every 20 ms, silence when the caller says nothing."""

        async def frames() -> None:
            while True:
                self.twilio.media(SILENCE)
                await asyncio.sleep(0.02)

        self.silence_task = asyncio.create_task(frames())

    async def ended(self, timeout_s: float = 120.0) -> CallSummary:
        assert self.task is not None
        async with asyncio.timeout(timeout_s):
            summary = await self.task
        if self.silence_task is not None:
            self.silence_task.cancel()
        return summary

    async def hang_up(self) -> CallSummary:
        self.twilio.stop()
        return await self.ended()


def virtual(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on its own virtual-time loop."""

    def run() -> None:
        run_virtual(test())

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


# --- starting -----------------------------------------------------------------------------


@virtual
async def test_the_agent_is_cued_to_greet_and_its_audio_reaches_the_caller() -> None:
    s = await Scene().connected(**{"from": "+14155550100", "to": "+14155550199"})
    assert s.model.texts == [greeting_prompt(GREETING)]
    assert s.model.opened is not None and s.model.opened.call_sid == s.call.summary.call_sid
    assert s.model.opened.clock_origin == s.call._t0
    s.model.push(*agent_audio(1.0), OutputTranscript(GREETING), TurnComplete())
    await until(lambda: s.twilio.audio_bytes == 8000)
    summary = await s.hang_up()
    assert summary.outcome is Outcome.COMPLETED and summary.reason == "caller hung up"
    assert (summary.caller, summary.callee, summary.direction) == (
        "+14155550100",
        "+14155550199",
        "inbound",
    )
    assert summary.first_audio_ms is not None and summary.first_audio_ms < 50
    [turn] = summary.turns
    assert (turn.agent, turn.agent_audio_ms, turn.interrupted) == (GREETING, 1000, False)
    # A mark follows every 200 ms of audio, and one closes the turn: what was heard is known.
    marks = s.twilio.of(ms.OutboundMark)
    assert len(marks) == 5
    assert s.call.state.current is State.ENDED


@virtual
async def test_no_start_within_the_timeout_is_rejected() -> None:
    s = Scene(stream_start_timeout_s=2.0)
    s.twilio.frame(s.twilio.builder.connected())
    s.task = asyncio.create_task(s.call.run())
    summary = await s.ended()
    assert summary.outcome is Outcome.REJECTED
    assert s.twilio.closed == (1008, "no start event")
    assert s.loop.time() == pytest.approx(2.0)
    assert s.model.opened is None  # no session for a stream that never started


@virtual
async def test_a_stream_given_up_on_before_start_is_closed_at_once() -> None:
    s = Scene(stream_start_timeout_s=5.0)
    s.twilio.frame(s.twilio.builder.connected())
    s.task = asyncio.create_task(s.call.run())
    await asyncio.sleep(1.0)
    s.call.give_up_start("made room")
    summary = await s.ended()
    assert (summary.outcome, summary.reason) == (Outcome.REJECTED, "made room")
    assert s.twilio.closed == (1013, "try again later")
    assert s.loop.time() == pytest.approx(1.0)
    # Before run() (still being accepted): it never waits. After start: no effect.
    early = Scene(stream_start_timeout_s=5.0)
    early.call.give_up_start("made room")
    early.task = asyncio.create_task(early.call.run())
    assert (await early.ended()).reason == "made room"
    late = await Scene().connected()
    late.call.give_up_start("made room")
    await asyncio.sleep(1.0)
    assert late.call.state.current is State.ACTIVE
    assert (await late.hang_up()).outcome is Outcome.COMPLETED


@virtual
async def test_digits_pressed_while_the_model_connects_reach_it_in_order() -> None:
    model = FakeConversation()

    async def slow_open(*args: Any) -> FakeConversation:
        await asyncio.sleep(1.5)
        return await model.open(*args)

    s = Scene(opener=slow_open)
    s.model = model
    await s.start()
    s.twilio.media(caller_speech(0.2))
    s.twilio.dtmf("4")
    s.twilio.dtmf("2")
    await until(lambda: s.call.state.current is State.ACTIVE)
    await until(lambda: len(model.texts) == 3)
    assert model.texts == [greeting_prompt(GREETING), dtmf_prompt("4"), dtmf_prompt("2")]
    assert len(model.audio) == 10  # the buffered caller audio, delivered before the digits
    assert s.call.summary.model_connect_ms == pytest.approx(1500, abs=1)
    await s.hang_up()


@pytest.mark.parametrize("chunk_ms", [20, 40, 60])
def test_caller_audio_buffered_while_connecting_is_bounded_in_time_whatever_the_chunks(
    chunk_ms: int,
) -> None:
    @virtual
    async def run() -> None:
        model = FakeConversation()
        opened = asyncio.Event()

        async def slow_open(*args: Any) -> FakeConversation:
            await opened.wait()
            return await model.open(*args)

        s = Scene(opener=slow_open, model_audio_chunk_ms=chunk_ms)
        s.model = model
        await s.start()
        s.twilio.media(caller_speech(6.0))  # 300 frames: 1 s more than the 5 s kept
        await until(lambda: s.call.summary.frames_in == 300)
        opened.set()
        await until(lambda: s.call.state.current is State.ACTIVE)
        kept = 5000 // chunk_ms  # messages: whole ones, at most the last 5 s
        await until(lambda: len(model.audio) >= kept)
        assert s.call.summary.dropped_pre_session_frames == 300 - kept * chunk_ms // 20
        assert sum(map(len, model.audio)) == kept * chunk_ms * 32  # 16 kHz PCM16
        assert {len(a) for a in model.audio} == {chunk_ms * 32}
        await s.hang_up()

    run()


# --- barge-in ------------------------------------------------------------------------------


@virtual
async def test_barge_in_clears_at_once_and_drops_the_rest_of_the_turn() -> None:
    s = await Scene().connected()
    text = "Sure, I can help you with that booking today."
    s.model.push(*agent_audio(2.0), OutputTranscript(text))
    await until(lambda: s.twilio.audio_bytes > 0)
    await asyncio.sleep(0.8)  # the caller hears 0.8 s of it, then talks over it
    # Paced: only a bounded lead (1 s) ahead of what was heard has left; the rest is held.
    assert s.twilio.audio_bytes == pytest.approx(1.8 * 8000, abs=400)
    interrupted_at = s.loop.time()
    s.model.push(Interrupted())
    await until(lambda: s.twilio.of(ms.OutboundClear))
    [(cleared_at, _)] = s.twilio.of(ms.OutboundClear)
    assert cleared_at == pytest.approx(interrupted_at, abs=0.01)
    # The rest of the interrupted generation never plays.
    sent_before = s.twilio.audio_bytes
    s.model.push(*agent_audio(0.5), OutputTranscript(" more"), TurnComplete())
    await until(lambda: len(s.call.summary.turns) == 1)
    assert s.twilio.audio_bytes == sent_before
    [interruption] = s.call.summary.interruptions
    assert interruption.sent_ms == pytest.approx(1800, abs=50)
    assert interruption.heard_ms == pytest.approx(800, abs=40)
    assert interruption.confirmed_ms == pytest.approx(800, abs=200)  # last mark before it
    assert text.startswith(interruption.transcript_heard)
    cut = round(len(text) * interruption.heard_ms / interruption.sent_ms)
    assert abs(len(interruption.transcript_heard) - cut) <= 1
    [turn] = s.call.summary.turns
    assert turn.interrupted and turn.agent == text
    assert turn.agent_heard == interruption.transcript_heard
    # The clear's echoes are not taken as proof that audio played.
    assert any(cleared for _, _, cleared in s.twilio.echoed)
    # The next answer plays again.
    s.model.push(*agent_audio(0.4), OutputTranscript("Go ahead."), TurnComplete())
    await until(lambda: s.twilio.audio_bytes == sent_before + 3200)
    summary = await s.hang_up()
    assert [t.agent for t in summary.turns] == [text, "Go ahead."]


@virtual
async def test_a_clear_after_the_turn_completed_marks_that_turn_heard_in_part() -> None:
    """The model finished generating; its audio still plays at Twilio when the caller cuts in."""
    s = await Scene().connected()
    s.model.push(*agent_audio(3.0), OutputTranscript("A long answer."), TurnComplete())
    await until(lambda: len(s.call.summary.turns) == 1)
    await asyncio.sleep(1.0)
    s.model.push(Interrupted(), TurnComplete())
    await until(lambda: s.call.summary.interruptions)
    # Not discarding: the next answer is played, not swallowed.
    s.model.push(*agent_audio(0.2), OutputTranscript("Yes?"), TurnComplete())
    await until(lambda: len(s.call.summary.turns) == 2)
    summary = await s.hang_up()
    first, second = summary.turns
    assert first.interrupted and first.agent_heard is not None
    assert 0 < len(first.agent_heard) < len("A long answer.")
    assert second.agent == "Yes?" and not second.interrupted


# --- ending --------------------------------------------------------------------------------


@virtual
async def test_end_call_waits_until_the_goodbye_has_played() -> None:
    s = await Scene().connected()
    s.model.push(
        OutputTranscript("Goodbye!"),
        ToolCall((FunctionCall("fc-1", "end_call", {"reason": "done"}),)),
        *agent_audio(2.0),
        TurnComplete(),
    )
    await until(lambda: s.model.tool_responses)
    [(call_id, name, response)] = s.model.tool_responses
    assert (call_id, name, response["result"]) == ("fc-1", "end_call", "ok")
    assert s.call.state.current is State.ENDING
    summary = await s.ended()
    assert summary.outcome is Outcome.ENDED_BY_AGENT and summary.reason == "agent ended the call"
    assert s.twilio.closed == (1000, "agent ended the call")
    # Closed once the last mark came back, i.e. after the 2 s goodbye played, not before.
    last_echo = max(t for t, _, _ in s.twilio.echoed)
    assert last_echo >= 2.0 and s.loop.time() == pytest.approx(last_echo, abs=0.05)


@virtual
async def test_a_second_end_call_while_ending_is_ignored() -> None:
    s = await Scene().connected()
    s.model.push(ToolCall((FunctionCall("a", "end_call", {}), FunctionCall("b", "end_call", {}))))
    await until(lambda: len(s.model.tool_responses) == 2)
    assert [r[2]["result"] for r in s.model.tool_responses] == ["ok", "ignored"]
    await s.ended()


@virtual
async def test_the_end_drain_is_bounded_when_marks_never_come_back() -> None:
    s = await Scene(echo_marks=False).connected()
    s.model.push(
        ToolCall((FunctionCall("fc-1", "end_call", {}),)), *agent_audio(1.0), TurnComplete()
    )
    summary = await s.ended()
    assert summary.outcome is Outcome.ENDED_BY_AGENT
    assert s.loop.time() == pytest.approx(END_DRAIN_TIMEOUT_S, abs=0.1)


@virtual
async def test_a_cancelled_end_call_lets_the_call_go_on() -> None:
    s = await Scene().connected()
    s.model.push(ToolCall((FunctionCall("fc-1", "end_call", {}),)), *agent_audio(1.0))
    await until(lambda: s.call.state.current is State.ENDING)
    s.model.push(ToolCallCancellation(("fc-1",)))
    await until(lambda: s.call.state.current is State.ACTIVE)
    s.model.push(TurnComplete())
    await asyncio.sleep(5)  # far past the playback and the quiet period: still up
    assert s.twilio.closed is None and not s.task.done()  # type: ignore[union-attr]
    summary = await s.hang_up()
    assert summary.outcome is Outcome.COMPLETED


@virtual
async def test_an_unknown_tool_gets_an_error_answer() -> None:
    s = await Scene().connected()
    s.model.push(ToolCall((FunctionCall("fc-9", "launch_rocket", {}),)))
    await until(lambda: s.model.tool_responses)
    # Informative and final, so the model tells the caller instead of trying again.
    assert s.model.tool_responses == [
        (
            "fc-9",
            "launch_rocket",
            {
                "result": "error",
                "error": "there is no tool named 'launch_rocket'",
                "retryable": False,
            },
        )
    ]
    await s.hang_up()


class SlowTool:
    """A tool handler that answers after ``delay_s`` (virtual time)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.cancelled = 0

    async def __call__(self, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(args)
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return {"result": "ok", "passages": [{"source": "faq.md", "text": "Open 9-5."}]}


def knowledge(handler: Any, timeout_s: float = 3.0) -> Toolbox:
    """A toolbox running ``search_knowledge`` with ``handler`` (as the service sets it up)."""
    spec = ToolSpec(
        "search_knowledge",
        "Search.",
        {"type": "object", "properties": {"query": {"type": "string"}}},
        timeout_s=timeout_s,
        declared=False,
    )
    return Toolbox([HandlerTool(spec, handler)])


@virtual
async def test_a_handled_tool_is_answered_off_the_model_loop_and_recorded() -> None:
    tool = SlowTool(0.3)
    s = await Scene(toolbox=knowledge(tool, timeout_s=10)).connected()
    s.model.push(ToolCall((FunctionCall("k1", "search_knowledge", {"query": "hours"}),)))
    # While the search runs, the model's audio still reaches the caller.
    s.model.push(*agent_audio(0.2))
    await until(lambda: s.call.summary.frames_out > 0)
    assert s.model.tool_responses == []
    await until(lambda: s.model.tool_responses)
    [(call_id, name, response)] = s.model.tool_responses
    assert (call_id, name, response["result"]) == ("k1", "search_knowledge", "ok")
    assert tool.calls == [{"query": "hours"}]
    [record] = s.call.summary.tool_calls
    assert record["outcome"] == "ok" and record["args"] == {"query": "hours"}
    assert record["latency_ms"] == pytest.approx(300, abs=20)
    assert record["overhead_ms"] >= 0
    assert record["result"]["passages"][0]["source"] == "faq.md"
    await s.hang_up()


@virtual
async def test_a_handled_tool_taken_back_by_the_model_gets_no_answer() -> None:
    tool = SlowTool(5.0)
    s = await Scene(toolbox=knowledge(tool, timeout_s=10)).connected()
    s.model.push(ToolCall((FunctionCall("k1", "search_knowledge", {"query": "x"}),)))
    await until(lambda: tool.calls)
    s.model.push(ToolCallCancellation(("k1",)))
    await until(lambda: tool.cancelled)
    await asyncio.sleep(6)
    assert s.model.tool_responses == []
    assert s.call.summary.tool_calls[0]["outcome"] == "cancelled"
    await s.hang_up()


@virtual
async def test_a_handler_that_never_answers_is_bounded_and_the_call_end_cancels_it() -> None:
    stuck = SlowTool(3600.0)
    s = await Scene(toolbox=knowledge(stuck)).connected()
    s.model.push(ToolCall((FunctionCall("k1", "search_knowledge", {"query": "x"}),)))
    await until(lambda: s.model.tool_responses, timeout_s=30)
    assert s.model.tool_responses[0][2]["status"] == "error"
    # A second one, still running when the caller hangs up, does not hold the call open.
    s.model.push(ToolCall((FunctionCall("k2", "search_knowledge", {"query": "y"}),)))
    await until(lambda: len(stuck.calls) == 2)
    began = s.loop.time()
    summary = await s.hang_up()
    assert s.loop.time() - began < 1.0
    assert [t["outcome"] for t in summary.tool_calls] == ["timeout", "cancelled"]


@virtual
async def test_transfer_needs_a_number_and_ends_as_a_transfer() -> None:
    s = await Scene(transfer_number="+14155550123").connected()
    s.model.push(ToolCall((FunctionCall("t", "transfer_call", {}),)), TurnComplete())
    summary = await s.ended()
    assert summary.outcome is Outcome.TRANSFER
    assert s.twilio.closed == (1000, "agent transferred")


@virtual
async def test_a_lost_model_ends_the_call_for_the_apology() -> None:
    s = await Scene().connected()
    s.model.push(SessionClosed("the model could not be reached again", retryable=False))
    summary = await s.ended()
    assert summary.outcome is Outcome.FAILED
    assert s.twilio.closed == (1011, "model unavailable")


@virtual
async def test_a_model_that_cannot_be_opened_fails_the_call() -> None:
    s = Scene()
    s.model.refuse = SessionClosed("quota", retryable=False)
    await s.start()
    summary = await s.ended()
    assert summary.outcome is Outcome.FAILED and "quota" in summary.reason


# --- the limits ----------------------------------------------------------------------------


@virtual
async def test_a_silent_caller_is_asked_then_told_goodbye() -> None:
    s = await Scene(caller_silence_s=5.0).connected()
    s.keep_line_open()
    await until(lambda: STILL_THERE_PROMPT in s.model.texts)
    asked = s.loop.time()
    assert asked == pytest.approx(5.0, abs=0.6)  # checked every 0.5 s
    # "After as long again": counted from the question, even if the model stays silent.
    await until(lambda: SILENT_GOODBYE_PROMPT in s.model.texts)
    assert s.loop.time() == pytest.approx(asked + 5.0, abs=0.6)
    summary = await s.ended()
    assert (summary.outcome, summary.reason) == (Outcome.ENDED_BY_AGENT, "caller silent")


@virtual
async def test_a_caller_who_speaks_is_not_asked() -> None:
    s = await Scene(caller_silence_s=5.0).connected()
    for _ in range(4):
        await s.twilio.speak(caller_speech(0.5), then_silence_s=3.0)
    assert STILL_THERE_PROMPT not in s.model.texts
    assert len(s.model.audio) == 4 * 175  # every frame reached the model
    await s.hang_up()


@virtual
async def test_silence_is_not_counted_while_the_agent_talks() -> None:
    s = await Scene(caller_silence_s=3.0).connected()
    s.keep_line_open()
    s.model.busy = True
    await asyncio.sleep(10)
    assert STILL_THERE_PROMPT not in s.model.texts
    await s.hang_up()


@virtual
async def test_a_long_call_is_wrapped_up_then_ended() -> None:
    s = await Scene(max_call_s=60.0).connected()
    await until(lambda: len(s.model.texts) == 2)
    # 30 s before the end, or a quarter of the call for short limits.
    assert s.model.texts[1] == wrap_up_prompt(15)
    assert s.loop.time() == pytest.approx(45.0, abs=0.6)
    summary = await s.ended()
    assert summary.reason == "maximum call duration reached"
    # The agent had nothing left to play: the call ends at the limit.
    assert s.loop.time() == pytest.approx(60.0, abs=0.6)


# --- outbound calls ------------------------------------------------------------------------


@virtual
async def test_outbound_the_agent_speaks_once_the_callee_has_answered() -> None:
    s = await Scene(outbound_greeting="Hi, it's the clinic.").connected(direction="outbound-api")
    assert s.model.texts == []  # nothing until a person answers
    await s.twilio.speak(caller_speech(0.6), then_silence_s=1.0)
    assert s.model.texts == [outbound_greeting_prompt("Hi, it's the clinic.")]
    # The callee's "hello?" was never passed to the model: only the quiet after it was.
    heard = np.frombuffer(b"".join(s.model.audio), "<i2")
    assert 0 < len(s.model.audio) <= 26 and np.abs(heard).max() < 100
    before = len(s.model.audio)
    await s.twilio.speak(caller_speech(0.2))
    assert len(s.model.audio) == before + 10
    await s.hang_up()


@virtual
async def test_outbound_a_silent_callee_is_greeted_after_the_timeout() -> None:
    s = await Scene(outbound_greeting="Hello?", answer_timeout_s=4.0).connected(
        direction="outbound-api"
    )
    s.keep_line_open()
    await until(lambda: s.model.texts)
    assert s.loop.time() == pytest.approx(4.0, abs=0.6)
    await s.hang_up()


# --- what the record says ------------------------------------------------------------------


@virtual
async def test_turns_are_dated_when_each_side_began_speaking() -> None:
    s = await Scene(greeting=None).connected()
    await asyncio.sleep(1.0)
    await s.twilio.speak(caller_speech(1.0), then_silence_s=0.6)
    s.model.push(InputTranscript("what time"), InputTranscript(" do you open"))
    await asyncio.sleep(0.2)
    s.model.push(*agent_audio(0.5), OutputTranscript("At nine."), TurnComplete())
    await until(lambda: s.call.summary.turns)
    [turn] = s.call.summary.turns
    assert turn.caller == "what time do you open"
    assert turn.caller_at_s == pytest.approx(1.0, abs=0.05)
    assert turn.agent_at_s == pytest.approx(2.8, abs=0.05)
    # End of speech (dated back to the last loud frame) → the answer's first audio.
    assert turn.response_ms == pytest.approx(800, abs=50)
    await s.hang_up()


def test_a_call_logs_without_the_fakes_leaking(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        s = await Scene().connected()
        await s.hang_up()

    with caplog.at_level(logging.INFO, logger="telephony.call.bridge"):
        run_virtual(scenario())
    events = [r.getMessage() for r in caplog.records]
    assert events[:2] == ["call.started", "model.connected"] and events[-1] == "call.ended"


# --- model output we do not trust ------------------------------------------------------------


@virtual
async def test_a_model_far_faster_than_real_time_is_paced() -> None:
    """60 s of speech at once: at most the lead is ever queued at Twilio, the rest is held
    here and leaves as it plays, in messages of at most 200 ms."""
    s = await Scene().connected()
    s.model.push(*agent_audio(60.0), OutputTranscript("A very long answer."), TurnComplete())
    worst = 0.0
    for _ in range(40):
        await asyncio.sleep(0.25)
        worst = max(worst, s.twilio._playback.queued_bytes / 8000)
    assert worst <= 1.0 + 0.05
    assert max(len(e.payload) for _, e in s.twilio.of(ms.OutboundMedia)) <= 1600
    assert s.twilio.audio_bytes == pytest.approx((10.0 + 1.0) * 8000, abs=1600)
    # A barge-in drops what is held here too: nothing more leaves.
    s.model.push(Interrupted(), TurnComplete())
    await until(lambda: s.twilio.of(ms.OutboundClear))
    sent = s.twilio.audio_bytes
    await asyncio.sleep(3.0)
    assert s.twilio.audio_bytes == sent
    summary = await s.hang_up()
    assert summary.turns[0].agent_audio_ms == 60_000  # held audio counted with its turn


@virtual
async def test_a_media_message_and_its_mark_leave_in_one_write() -> None:
    """Each release of the pacer is one write to Twilio: a mark never travels apart from the
    audio it follows."""
    s = await Scene().connected()
    s.model.push(*agent_audio(6.0), TurnComplete())
    await until(lambda: s.twilio.audio_bytes == 6 * 8000)
    summary = await s.hang_up()
    writes, events = s.twilio.writes, [e for _, e in s.twilio.sent]
    assert sum(writes) == len(events)
    batches, start = [], 0
    for n in writes:
        batches.append(events[start : start + n])
        start += n
    for batch in batches:
        assert not isinstance(batch[0], ms.OutboundMark), batch  # never a mark on its own
    media = [e for e in events if isinstance(e, ms.OutboundMedia)]
    marks = [e for e in events if isinstance(e, ms.OutboundMark)]
    assert len(marks) == 30  # one per 200 ms of audio
    # The answer's first second leaves as the model sends it (40 ms messages); then the
    # pacer releases 200 ms messages, each with its mark: one write per media message.
    assert len(writes) == len(media), (writes, len(media))
    assert summary.turns[0].agent_audio_ms == 6000


@virtual
async def test_one_huge_audio_chunk_is_split_into_normal_messages() -> None:
    s = await Scene().connected()
    [huge] = agent_audio(10.0, chunk_s=10.0)
    s.model.push(huge, TurnComplete())
    await until(lambda: s.twilio.audio_bytes >= 8000)
    assert max(len(e.payload) for _, e in s.twilio.of(ms.OutboundMedia)) <= 1600
    await s.hang_up()


@virtual
async def test_damaged_model_audio_is_counted_and_the_call_goes_on() -> None:
    from agent.events import AudioDamaged

    s = await Scene().connected()
    s.model.push(AudioDamaged("base64", 5), AudioDamaged("odd length", 1), *agent_audio(0.2))
    await until(lambda: s.twilio.audio_bytes == 1600)
    summary = await s.hang_up()
    assert summary.model_audio_damaged == 2
    assert summary.outcome is Outcome.COMPLETED


# --- the console: an observer and typed caller turns ------------------------------------------


@virtual
async def test_an_observer_sees_the_calls_events_and_typed_text_is_the_callers_turn() -> None:
    seen: list[dict[str, Any]] = []
    s = Scene(direction="browser", observer=seen.append)
    await s.call.caller_text("before start: ignored")
    await s.connected()
    s.model.push(*agent_audio(1.0), OutputTranscript("Hello"))
    await until(lambda: s.twilio.audio_bytes > 0)
    s.model.push(Interrupted(), InputTranscript("wait"), TurnComplete())
    await until(lambda: len(s.call.summary.turns) == 1)
    await s.call.caller_text("I'd like a table\n for two")
    assert s.model.texts[-1] == "I'd like a table for two"  # control characters dropped
    s.model.push(*agent_audio(0.2), OutputTranscript("Sure."), TurnComplete())
    await until(lambda: len(s.call.summary.turns) == 2)
    summary = await s.hang_up()
    assert summary.direction == "browser"
    assert summary.turns[1].caller == "I'd like a table for two"
    assert summary.turns[1].response_ms is not None
    kinds = [e["event"] for e in seen]
    assert kinds == [
        "transcript",
        "interrupted",
        "transcript",
        "turn",
        "transcript",
        "turn",
        "ended",
    ]
    assert seen[0] == {"event": "transcript", "who": "agent", "text": "Hello"}
    assert seen[2] == {"event": "transcript", "who": "caller", "text": "wait"}
    assert seen[1]["heard_text"] == seen[3]["agent_heard"]
    assert seen[3]["interrupted"] is True
    assert seen[-1]["outcome"] == "completed"
    # Media frames are never observed: nothing per frame.
    assert len(seen) == 7


@virtual
async def test_caller_audio_goes_to_the_model_in_chunks_of_the_setting() -> None:
    s = await Scene(model_audio_chunk_ms=60).connected()
    speech = caller_speech(1.0)  # 50 frames of 20 ms
    await s.twilio.speak(speech, then_silence_s=0.0)
    await until(lambda: len(s.model.audio) == 16)  # 48 frames in 16 messages, 2 waiting
    assert {len(a) for a in s.model.audio} == {1920}
    await s.hang_up()
    single = Scene()  # the default: one message per 20 ms frame, the bytes unchanged
    await single.connected()
    await single.twilio.speak(speech, then_silence_s=0.0)
    await until(lambda: len(single.model.audio) == 50)
    # The 2 frames still waiting went on at the hang-up: the same bytes, whatever the chunks.
    assert len(s.model.audio) == 17 and len(s.model.audio[-1]) == 2 * 640
    assert b"".join(single.model.audio) == b"".join(s.model.audio)
    await single.hang_up()


@virtual
async def test_well_into_an_utterance_loud_frames_go_in_speech_blocks() -> None:
    s = await Scene(model_audio_speech_chunk_ms=60).connected()
    speech = caller_speech(1.0)  # 50 loud frames
    await s.twilio.speak(speech, then_silence_s=0.0)
    # 15 frames (0.3 s) one by one, then 33 in 11 blocks of three; 2 wait for the next.
    await until(lambda: len(s.model.audio) == 26)
    assert [len(a) for a in s.model.audio] == [640] * 15 + [1920] * 11
    s.twilio.media(SILENCE)  # a pause: out at once, with the 2 held frames
    await until(lambda: len(s.model.audio) == 27)
    assert len(s.model.audio[-1]) == 3 * 640
    single = Scene()  # speech blocks off: the same audio, one message per frame
    await single.connected()
    await single.twilio.speak(speech, then_silence_s=0.0)
    single.twilio.media(SILENCE)
    await until(lambda: len(single.model.audio) == 51)
    assert b"".join(single.model.audio) == b"".join(s.model.audio)
    await s.hang_up()
    await single.hang_up()


@virtual
async def test_frames_held_for_a_quiet_block_reach_the_model_when_the_caller_hangs_up() -> None:
    """Quiet audio goes to the model in 100 ms blocks: a hang-up mid-block must not leave
    the last frames behind (every frame Twilio sent reaches the model or is counted)."""
    s = await Scene(model_audio_quiet_chunk_ms=100).connected()
    for _ in range(100 + 3):  # 2 s of quiet line (quiet blocks), then 3 frames
        s.twilio.media(SILENCE)
        await asyncio.sleep(0.02)
    await until(lambda: s.call.summary.frames_in == 103)
    assert sum(map(len, s.model.audio)) < 103 * 640  # some frames held for the next block
    summary = await s.hang_up()
    assert sum(map(len, s.model.audio)) == summary.frames_in * 640  # 16 kHz PCM16
    assert summary.dropped_pre_session_frames == 0


class DirectFakeTwilio(FakeTwilio):
    """``FakeTwilio`` with ``telephony.server.media_socket.DirectSocket``'s contract: a frame
    is offered to ``on_frame`` (``Call.take_frame``) only while the call waits in
    ``receive()`` with nothing queued."""

    def __init__(self) -> None:
        super().__init__()
        self.on_frame: Callable[[str], bool] | None = None
        self.waiting = False
        self.taken = 0

    def frame(self, text: str | bytes | None) -> None:
        take = self.on_frame
        if (
            self.waiting
            and self._inbound.empty()
            and take is not None
            and isinstance(text, str)
            and take(text)
        ):
            self.taken += 1
            return
        super().frame(text)

    async def receive(self) -> str | bytes | None:
        self.waiting = True
        try:
            frame: str | bytes | None = await super().receive()
        finally:
            self.waiting = False
        return frame


def direct_scene(**options: Any) -> Scene:
    s = Scene(**options)
    s.twilio = DirectFakeTwilio()
    s.call.socket = s.twilio
    s.twilio.on_frame = s.call.take_frame
    return s


@virtual
async def test_frames_taken_in_the_read_callback_reach_the_model_as_through_the_loop() -> None:
    """The fast path (``Call.take_frame``) takes media frames in the socket's callback;
    what reaches the model, and what the call counts, is what the caller loop alone gives,
    whether the model's socket takes each block at once or not."""
    speech = caller_speech(1.0)

    async def run(s: Scene) -> CallSummary:
        await s.connected()
        for _ in range(90):  # quiet line (quiet blocks) ...
            s.twilio.media(SILENCE)
            await asyncio.sleep(0.02)
        await s.twilio.speak(speech, then_silence_s=0.3)  # ... an utterance, a pause
        s.twilio.media(SILENCE[:80])  # and an odd short frame
        await until(lambda: s.call.summary.frames_in == 90 + 50 + 15 + 1)
        return await s.hang_up()

    options: dict[str, Any] = {"model_audio_speech_chunk_ms": 60, "model_audio_quiet_chunk_ms": 100}
    loop, direct, held = Scene(**options), direct_scene(**options), direct_scene(**options)
    held.model.sends_nowait = False  # the model's socket under flow control throughout
    plain, fast, waited = await run(loop), await run(direct), await run(held)
    assert isinstance(direct.twilio, DirectFakeTwilio) and isinstance(held.twilio, DirectFakeTwilio)
    # Every media frame is taken in the read callback (the loop is never busy here).
    assert direct.twilio.taken == 156
    # Under flow control only the frames the uplink holds are; the loop sends the blocks.
    assert 60 < held.twilio.taken < 120
    assert fast.frames_in == plain.frames_in == waited.frames_in == 156
    for scene in (direct, held):
        assert [len(a) for a in scene.model.audio] == [len(a) for a in loop.model.audio]
        assert b"".join(scene.model.audio) == b"".join(loop.model.audio)


@virtual
async def test_a_bug_in_the_fast_path_fails_the_call_in_its_own_loop() -> None:
    s = direct_scene(model_audio_quiet_chunk_ms=100)
    await s.connected()

    class Broken(UplinkBlocks):
        def push(self, ulaw: bytes) -> bytes | None:
            raise RuntimeError("bug in push")

    s.call._uplink = Broken(20, 100)
    s.twilio.media(SILENCE)  # the socket's callback survives; the call's loop raises
    assert s.task is not None
    with pytest.raises(ExceptionGroup) as crashed:
        async with asyncio.timeout(5):
            await s.task
    assert crashed.group_contains(RuntimeError, match="bug in push")
