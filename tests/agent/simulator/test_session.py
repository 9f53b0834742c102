"""Simulated Live API sessions: the protocol and the script API, driven by the real google-genai
SDK over TLS (plus a few raw clients).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import numpy as np
import orjson
import pytest
from google.genai import errors, types
from websockets.exceptions import ConnectionClosed

from agent.simulator import LiveSimulator
from agent.simulator.voice import OUTPUT_RATE
from agent.simulator.wire import format_duration
from support.sim import (
    FAST,
    MODEL,
    audio_of,
    band_fraction,
    flags,
    input_text,
    live_config,
    make_client,
    one_turn,
    output_text,
    raw_connect,
    raw_recv,
    send_pcm,
    silence,
    voiced,
)

# --- Setup ---------------------------------------------------------------------------------


async def test_setup_delay_is_honoured() -> None:
    async with LiveSimulator(behaviour=replace(FAST, setup_delay_s=0.3)) as sim:
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()):
            assert loop.time() - start >= 0.3


async def test_setup_that_never_completes_needs_a_client_timeout() -> None:
    async with LiveSimulator(behaviour=replace(FAST, complete_setup=False)) as sim:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()):
                    pytest.fail("connect() returned without setupComplete")
        s = await sim.next_session()
        assert s.setup is not None and not s.setup_completed
        await s.wait_closed()


async def test_rejected_setup_surfaces_as_api_error() -> None:
    behaviour = replace(FAST, reject_setup=(1008, "Quota exceeded"))
    async with LiveSimulator(behaviour=behaviour) as sim:
        with pytest.raises(errors.APIError) as info:
            async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()):
                pass
        assert info.value.code == 1008
        assert "Quota exceeded" in str(info.value)


async def test_first_message_must_be_setup(sim: LiveSimulator) -> None:
    async with raw_connect(sim) as ws:
        await ws.send(orjson.dumps({"realtimeInput": {"text": "hi"}}).decode())
        with pytest.raises(ConnectionClosed) as info:
            await raw_recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1007
    assert "setup" in info.value.rcvd.reason


# --- Caller speech -------------------------------------------------------------------------


async def test_utterance_is_transcribed_and_echoed_in_varying_chunks(sim: LiveSimulator) -> None:
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        await send_pcm(live, silence(0.3) + voiced(1.2) + silence(0.7))
        messages = await one_turn(live)
        s = await sim.next_session()

    assert input_text(messages) == "[caller speech 1.20 s]"
    assert output_text(messages) == "[echo 1.20 s]"
    assert flags(messages)[-2:] == ["generation_complete", "turn_complete"]
    assert messages[-1].usage_metadata is not None
    assert messages[-1].usage_metadata.response_token_count == pytest.approx(1.4 * 25, abs=3)
    chunks = audio_of(messages)
    seconds = sum(len(c) for c in chunks) / 2 / OUTPUT_RATE
    # The utterance plus 100 ms of pre-roll and 100 ms of tail.
    assert seconds == pytest.approx(1.4, abs=0.03)
    sizes = [len(c) // 2 for c in chunks]
    assert len(set(sizes)) > 3 and any(n % 2 for n in sizes)
    assert all(n <= 120 * 24 for n in sizes) and all(n >= 20 * 24 for n in sizes[:-1])
    assert [(u.start_ms, u.end_ms) for u in s.utterances] == [(300.0, 1500.0)]
    assert s.audio_in_ms == pytest.approx(2200)
    assert s.turns_completed == 1


async def test_echo_is_the_callers_audio(sim: LiveSimulator) -> None:
    utterance = voiced(0.8, seed=3)
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        await send_pcm(live, silence(0.2) + utterance + silence(0.6))
        echo = b"".join(audio_of(await one_turn(live)))
    x = np.frombuffer(utterance, "<i2").astype(np.float64)
    y = np.frombuffer(echo, "<i2").astype(np.float64)
    # Compare at 24 kHz against a plain interpolation of the original; align by correlation.
    ref = np.interp(np.arange(len(x) * 3 // 2) / 1.5, np.arange(len(x)), x)
    corr = np.correlate(y, ref[: len(ref) // 2], mode="valid")
    lag = int(np.argmax(corr))
    seg = y[lag : lag + len(ref)]
    similarity = (
        np.dot(seg, ref[: len(seg)]) / np.linalg.norm(seg) / np.linalg.norm(ref[: len(seg)])
    )
    assert similarity > 0.95


async def test_audio_stream_end_ends_the_utterance(sim: LiveSimulator) -> None:
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        await send_pcm(live, voiced(0.5))
        await live.send_realtime_input(audio_stream_end=True)
        messages = await one_turn(live)
    assert input_text(messages) == "[caller speech 0.50 s]"


async def test_setup_silence_duration_is_honoured(sim: LiveSimulator) -> None:
    aad = types.AutomaticActivityDetection(silence_duration_ms=1000)
    config = live_config(
        realtime_input_config=types.RealtimeInputConfig(automatic_activity_detection=aad)
    )
    async with make_client(sim).aio.live.connect(model=MODEL, config=config) as live:
        s = await sim.next_session()
        # A 700 ms pause does not end the utterance any more.
        await send_pcm(live, voiced(0.4) + silence(0.7) + voiced(0.4) + silence(1.1))
        await s.wait_utterances(1)
        assert [(u.start_ms, u.end_ms) for u in s.utterances] == [(0.0, 1500.0)]


async def test_manual_activity_signals(sim: LiveSimulator) -> None:
    aad = types.AutomaticActivityDetection(disabled=True)
    config = live_config(
        realtime_input_config=types.RealtimeInputConfig(automatic_activity_detection=aad)
    )
    async with make_client(sim).aio.live.connect(model=MODEL, config=config) as live:
        s = await sim.next_session()
        await send_pcm(live, voiced(0.3) + silence(0.8))  # ignored: no activity window
        await live.send_realtime_input(activity_start=types.ActivityStart())
        await send_pcm(live, silence(0.6))  # loudness does not matter in manual mode
        await live.send_realtime_input(activity_end=types.ActivityEnd())
        messages = await one_turn(live)
    assert input_text(messages) == "[caller speech 0.60 s]"
    assert [(u.start_ms, u.end_ms) for u in s.utterances] == [(1100.0, 1700.0)]


# --- Text and the synthetic voice ----------------------------------------------------------


async def test_quoted_greeting_is_spoken(sim: LiveSimulator) -> None:
    cue = 'Greet the caller now. Say exactly: "Hello, thanks for calling."'
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        await live.send_realtime_input(text=cue)
        messages = await one_turn(live)
        s = await sim.next_session()
    assert s.texts == [cue]
    assert output_text(messages) == "Hello, thanks for calling."
    pcm = b"".join(audio_of(messages))
    assert 1.2 < len(pcm) / 2 / OUTPUT_RATE < 3.5
    assert band_fraction(pcm, OUTPUT_RATE) > 0.8


async def test_client_content_digit_and_fallback_replies(sim: LiveSimulator) -> None:
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        await live.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="The caller pressed 4.")]),
            turn_complete=True,
        )
        assert output_text(await one_turn(live)) == "You pressed 4."
        await live.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="Some context.")]),
            turn_complete=False,
        )
        await live.send_realtime_input(text="What now?")
        assert output_text(await one_turn(live)) == "Okay."
        s = await sim.next_session()
    assert s.texts == ["The caller pressed 4.", "Some context.", "What now?"]


# --- Tools, goAway, errors -----------------------------------------------------------------


async def test_tool_call_round_trip(sim: LiveSimulator) -> None:
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        s = await sim.next_session()
        call_id = await s.send_tool_call("end_call", {"reason": "done"})
        async with asyncio.timeout(5):
            message = await anext(live.receive())
        assert message.tool_call is not None and message.tool_call.function_calls
        call = message.tool_call.function_calls[0]
        assert (call.id, call.name, call.args) == (call_id, "end_call", {"reason": "done"})
        await live.send_tool_response(
            function_responses=[
                types.FunctionResponse(id=call.id, name=call.name, response={"ok": True})
            ]
        )
        response = await s.wait_tool_response(call_id)
        assert response["response"] == {"ok": True}
        assert response["name"] == "end_call"

        await s.cancel_tool_calls(["fc-9"])
        async with asyncio.timeout(5):
            message = await anext(live.receive())
        assert message.tool_call_cancellation is not None
        assert message.tool_call_cancellation.ids == ["fc-9"]
        await live.send_tool_response(
            function_responses=[types.FunctionResponse(id="nobody", name="x", response={})]
        )
        await s.wait_tool_response("nobody")


async def test_go_away_then_deadline_close(sim: LiveSimulator) -> None:
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        s = await sim.next_session()
        await s.go_away(0.3)
        async with asyncio.timeout(5):
            message = await anext(live.receive())
        assert message.go_away is not None and message.go_away.time_left == "0.300s"
        with pytest.raises(errors.APIError) as info:
            await one_turn(live)
    assert info.value.code == 1011
    assert "Deadline expired" in str(info.value)
    assert await s.wait_closed() == 1011
    assert format_duration(50) == "50s"


async def test_scheduled_go_away() -> None:
    behaviour = replace(FAST, go_away_after_s=0.1, go_away_time_left_s=50)
    async with (
        LiveSimulator(behaviour=behaviour) as sim,
        make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live,
    ):
        async with asyncio.timeout(5):
            message = await anext(live.receive())
        assert message.go_away is not None and message.go_away.time_left == "50s"


async def test_close_surfaces_as_api_error(sim: LiveSimulator) -> None:
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        s = await sim.next_session()
        await s.close()
        with pytest.raises(errors.APIError) as info:
            await one_turn(live)
    assert info.value.code == 1011
    assert "Internal error encountered." in str(info.value)
    assert s.closed and s.close_code == 1011


async def test_stall_goes_silent_but_keeps_recording(sim: LiveSimulator) -> None:
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        s = await sim.next_session()
        s.stall()
        await live.send_realtime_input(text='Say "hello"')
        await s.wait_text("hello")
        with pytest.raises(TimeoutError):
            await one_turn(live, within_s=0.5)
        s.stall(False)
        await live.send_realtime_input(text='Say "again"')
        assert output_text(await one_turn(live)) == "again"


# --- Session resumption --------------------------------------------------------------------


async def test_resumption_handles_are_issued_and_accepted(sim: LiveSimulator) -> None:
    client = make_client(sim)
    config = live_config(session_resumption=types.SessionResumptionConfig())
    async with client.aio.live.connect(model=MODEL, config=config) as live:
        async with asyncio.timeout(5):
            update = (await anext(live.receive())).session_resumption_update
        assert update is not None and update.resumable and update.new_handle
        await live.send_realtime_input(text="hi")
        turn = await one_turn(live)
        # After the turn: a fresh handle (it comes after turnComplete, in the next receive()).
        async with asyncio.timeout(5):
            after = (await anext(live.receive())).session_resumption_update
        assert turn[-1].server_content and turn[-1].server_content.turn_complete
        assert after is not None and after.new_handle not in (None, update.new_handle)
    first = await sim.next_session()
    assert first.handles_issued == [update.new_handle, after.new_handle]

    resume = live_config(session_resumption=types.SessionResumptionConfig(handle=update.new_handle))
    async with client.aio.live.connect(model=MODEL, config=resume):
        second = await sim.next_session()
        assert second.resumed_from == update.new_handle
        assert sim.session_for_handle(update.new_handle) is first

    unknown = live_config(session_resumption=types.SessionResumptionConfig(handle="bogus"))
    with pytest.raises(errors.APIError) as info:
        async with client.aio.live.connect(model=MODEL, config=unknown):
            pass
    assert info.value.code == 1008


async def test_refuse_resumption_fault() -> None:
    async with LiveSimulator(behaviour=replace(FAST, refuse_resumption=True)) as sim:
        client = make_client(sim)
        config = live_config(session_resumption=types.SessionResumptionConfig())
        async with client.aio.live.connect(model=MODEL, config=config):
            handle = (await sim.next_session()).handles_issued[0]
        resume = live_config(session_resumption=types.SessionResumptionConfig(handle=handle))
        with pytest.raises(errors.APIError) as info:
            async with client.aio.live.connect(model=MODEL, config=resume):
                pass
        assert info.value.code == 1008


# --- Robustness ----------------------------------------------------------------------------


async def test_peer_port_is_the_clients_local_port(sim: LiveSimulator) -> None:
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        s = await sim.next_session()
        assert s.peer_port is not None
        assert s.peer_port == live._ws.local_address[1]
        assert s.faults_injected == [] and sim.fault_counts == {}


async def test_abrupt_disconnect_leaves_nothing_running(
    sim: LiveSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with raw_connect(sim) as ws:
        await ws.send(orjson.dumps({"setup": {}}).decode())
        await raw_recv(ws)
        cue = {"realtimeInput": {"text": 'Say "a long sentence to be cut off"'}}
        await ws.send(orjson.dumps(cue).decode())
        await raw_recv(ws)  # the reply has started
        ws.transport.abort()
    s = await sim.next_session()
    assert await s.wait_closed() == 1006
    await asyncio.sleep(0.05)
    assert not s._tasks
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
