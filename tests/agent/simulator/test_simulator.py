"""The Live API simulator, driven by the real google-genai SDK over TLS (plus a few raw clients)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest
from google import genai
from google.genai import errors, types
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent.simulator import FaultPlan, LiveSimulator, SimBehaviour, SimSession, run_standalone
from agent.simulator.dialogue import reply_for_text
from agent.simulator.faults import CLOSE_REASONS, FaultSchedule
from agent.simulator.utterances import SpeechEnded, SpeechStarted, UtteranceDetector
from agent.simulator.voice import OUTPUT_RATE, synthesize
from agent.simulator.wire import decode_b64, format_duration, is_live_path

MODEL = "gemini-3.8-live"
IN_RATE = 16_000
GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"

# Fast by default: no pacing, no think time, turnComplete right after generationComplete.
FAST = SimBehaviour(pace=0, think_ms=0, hold_turn_complete=False, seed=7)


# --- Signals -------------------------------------------------------------------------------


def voiced(seconds: float, rate: int = IN_RATE, dbfs: float = -20.0, seed: int = 0) -> bytes:
    """A speech-like signal: harmonics of a gliding ~150 Hz pitch with a syllable rhythm."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f0 = 150 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 15))
    x = x * (0.75 + 0.25 * np.sin(2 * np.pi * 4 * t))  # dips, never silent
    x = x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20)
    return np.asarray(x).astype("<i2").tobytes()


def silence(seconds: float, rate: int = IN_RATE) -> bytes:
    return bytes(2 * round(seconds * rate))


def band_fraction(pcm: bytes, rate: int, lo: float = 300, hi: float = 3400) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(power[(f >= lo) & (f <= hi)].sum() / power.sum())


# --- Fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[LiveSimulator]:
    async with LiveSimulator(behaviour=FAST) as simulator:
        yield simulator


def make_client(sim: LiveSimulator, **ws_args: object) -> genai.Client:
    return genai.Client(
        api_key="test",
        http_options=types.HttpOptions(
            base_url=sim.base_url,
            async_client_args={"ssl": sim.client_ssl_context(), **ws_args},
        ),
    )


def live_config(**overrides: object) -> types.LiveConnectConfig:
    base: dict[str, object] = {
        "response_modalities": [types.Modality.AUDIO],
        "input_audio_transcription": types.AudioTranscriptionConfig(),
        "output_audio_transcription": types.AudioTranscriptionConfig(),
    }
    base.update(overrides)
    return types.LiveConnectConfig(**base)  # type: ignore[arg-type]


async def send_pcm(live: genai.live.AsyncSession, pcm: bytes, frame_ms: int = 20) -> None:
    step = IN_RATE * frame_ms // 1000 * 2
    for i in range(0, len(pcm), step):
        await live.send_realtime_input(
            audio=types.Blob(data=pcm[i : i + step], mime_type="audio/pcm;rate=16000")
        )


async def one_turn(
    live: genai.live.AsyncSession, within_s: float = 10.0
) -> list[types.LiveServerMessage]:
    """Messages up to and including the next turn_complete (receive() stops there)."""
    async with asyncio.timeout(within_s):
        return [m async for m in live.receive()]


def audio_of(messages: list[types.LiveServerMessage]) -> list[bytes]:
    chunks = []
    for m in messages:
        if m.server_content and m.server_content.model_turn:
            for part in m.server_content.model_turn.parts or []:
                if part.inline_data and part.inline_data.data:
                    chunks.append(part.inline_data.data)
    return chunks


def output_text(messages: list[types.LiveServerMessage]) -> str:
    return "".join(
        m.server_content.output_transcription.text or ""
        for m in messages
        if m.server_content and m.server_content.output_transcription
    )


def input_text(messages: list[types.LiveServerMessage]) -> str:
    return "".join(
        m.server_content.input_transcription.text or ""
        for m in messages
        if m.server_content and m.server_content.input_transcription
    )


def flags(messages: list[types.LiveServerMessage]) -> list[str]:
    """The turn-structure events, in order."""
    out = []
    for m in messages:
        sc = m.server_content
        if sc is None:
            continue
        if sc.model_turn:
            out.append("audio")
        for name in ("interrupted", "generation_complete", "turn_complete"):
            if getattr(sc, name):
                out.append(name)
    return out


def raw_connect(sim: LiveSimulator, path: str = GEMINI_PATH, key: str | None = "k") -> ws_connect:
    headers = {"x-goog-api-key": key} if key is not None else {}
    return ws_connect(
        f"wss://127.0.0.1:{sim.port}{path}",
        ssl=sim.client_ssl_context(),
        additional_headers=headers,
    )


async def raw_recv(ws: ClientConnection, within_s: float = 5.0) -> dict[str, object]:
    async with asyncio.timeout(within_s):
        message: dict[str, object] = orjson.loads(await ws.recv())
        return message


# --- Setup ---------------------------------------------------------------------------------


async def test_setup_is_completed_and_recorded(sim: LiveSimulator) -> None:
    config = live_config(
        system_instruction="You are a friendly receptionist.",
        speech_config=types.SpeechConfig(
            voice_config=types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Kore")
            ),
            language_code="en-GB",
        ),
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(name="end_call", description="Hang up."),
                    types.FunctionDeclaration(name="transfer", description="Transfer."),
                ]
            )
        ],
        context_window_compression=types.ContextWindowCompressionConfig(
            sliding_window=types.SlidingWindow()
        ),
    )
    async with make_client(sim).aio.live.connect(model=MODEL, config=config):
        s = await sim.next_session()
        assert s.setup_completed
        assert s.model == f"models/{MODEL}"
        assert s.voice == "Kore"
        assert s.language == "en-GB"
        assert s.system_instruction == "You are a friendly receptionist."
        assert s.function_names == ["end_call", "transfer"]
        assert s.input_transcription and s.output_transcription
        assert s.context_window_compression == {"sliding_window": {}}
        assert s.session_resumption is None
        assert s.api_key == "test"
        assert s.path == "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"
    assert await s.wait_closed() == 1000
    assert sim.sessions == [s]


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


async def test_handshake_checks_path_and_api_key(sim: LiveSimulator) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with raw_connect(sim, path="/ws/nope"):
            pass
    assert info.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as info:
        async with raw_connect(sim, key=None):
            pass
    assert info.value.response.status_code == 401
    vertex = "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
    async with raw_connect(sim, path=vertex) as ws:
        await ws.send(orjson.dumps({"setup": {"model": "m"}}).decode())
        assert await raw_recv(ws) == {"setupComplete": {}}


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


def test_reply_for_text() -> None:
    assert reply_for_text('Say exactly: "Hi." then "Bye now."') == "Bye now."
    assert reply_for_text("Say \u201cHello there\u201d") == "Hello there"
    assert reply_for_text("The caller pressed # on their keypad.") == "You pressed #."
    assert reply_for_text("Hello?") == "Okay."


def test_synthetic_voice_sounds_like_speech_on_a_phone_line() -> None:
    speech = synthesize("Hello, thanks for calling. How can I help you today?", "Puck")
    assert speech is synthesize("Hello, thanks for calling. How can I help you today?", "Puck")
    assert "".join(p for p, _ in speech.words) == speech.text
    x = np.frombuffer(speech.pcm, "<i2").astype(np.float64)
    assert band_fraction(speech.pcm, OUTPUT_RATE) > 0.85
    assert np.abs(x).max() < 32767 * 0.6
    # Syllable rhythm: the 10 ms energy envelope switches between loud and quiet many times.
    env = np.sqrt(np.mean(x[: len(x) // 240 * 240].reshape(-1, 240) ** 2, axis=1))
    loud = env > env.max() * 0.1
    bursts = int(np.sum(loud[1:] & ~loud[:-1]))
    words = 10
    assert words <= bursts <= 25
    assert 2.5 <= words / speech.duration_s <= 4.5

    # Higher voices are higher: compare harmonic spacing within the first syllable.
    def f0(voice: str) -> float:
        x = np.frombuffer(synthesize("Okay.", voice).pcm, "<i2").astype(np.float64)
        seg = x[int(0.09 * OUTPUT_RATE) : int(0.19 * OUTPUT_RATE)]
        spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 8 * len(seg)))
        freqs = np.fft.rfftfreq(8 * len(seg), 1 / OUTPUT_RATE)
        inner = spectrum[1:-1]
        peaks = np.flatnonzero(
            (inner > spectrum[:-2]) & (inner > spectrum[2:]) & (inner > 0.03 * spectrum.max())
        )
        return float(np.median(np.diff(freqs[peaks + 1][freqs[peaks + 1] < 2000])))

    assert 100 < f0("Puck") < 180 < f0("Kore") < 300


# --- Barge-in and pacing -------------------------------------------------------------------


async def test_barge_in_interrupts_the_model_turn() -> None:
    behaviour = replace(FAST, pace=4.0, hold_turn_complete=True)
    async with LiveSimulator(behaviour=behaviour) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            speaking = asyncio.create_task(
                s.say("This is a long answer that the caller will not let me finish at all.")
            )
            messages: list[types.LiveServerMessage] = []
            barged_in = False
            async with asyncio.timeout(10):
                async for m in live.receive():
                    messages.append(m)
                    if not barged_in and len(audio_of(messages)) == 3:
                        barged_in = True
                        await send_pcm(live, voiced(0.3) + silence(0.6))
            assert await speaking is False
            first = flags(messages)
            assert first[-2:] == ["interrupted", "turn_complete"]
            assert "generation_complete" not in first
            sent_before = len(audio_of(messages))
            # The caller's interjection is then answered as usual, and nothing of the old turn.
            echo = await one_turn(live)
            assert input_text(echo) == "[caller speech 0.30 s]"
            assert output_text(echo) == "[echo 0.30 s]"
            assert [f for f in flags(echo) if f != "audio"] == [
                "generation_complete",
                "turn_complete",
            ]
        assert s.interruptions == 1
        assert s.turns_completed == 1
        assert sent_before < 12  # pacing stopped the long turn early


async def test_barge_in_after_generation_complete_while_audio_still_plays() -> None:
    behaviour = replace(FAST, pace=0, hold_turn_complete=True)
    async with LiveSimulator(behaviour=behaviour) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            assert await s.say("One two three four five six seven.") is True
            await send_pcm(live, voiced(0.3) + silence(0.6))
            messages = await one_turn(live)
            # All audio had been sent, so generationComplete came; playback was then cut.
            assert [f for f in flags(messages) if f != "audio"] == [
                "generation_complete",
                "interrupted",
                "turn_complete",
            ]
        assert s.interruptions == 1


async def test_barge_in_after_an_early_turn_complete(sim: LiveSimulator) -> None:
    # FAST sends turnComplete at once; the audio is still "playing" for a while after it.
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        s = await sim.next_session()
        assert await s.say("One two three four five six seven.") is True
        assert "turn_complete" in flags(await one_turn(live))
        await send_pcm(live, voiced(0.3) + silence(0.6))
        assert flags(await one_turn(live)) == ["interrupted", "turn_complete"]
        assert input_text(await one_turn(live)) == "[caller speech 0.30 s]"
    assert (s.interruptions, s.turns_completed) == (1, 2)


async def test_default_pacing_and_turn_complete_after_playback() -> None:
    async with (
        LiveSimulator(behaviour=SimBehaviour(think_ms=0, seed=1)) as sim,
        make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live,
    ):
        s = await sim.next_session()
        loop = asyncio.get_running_loop()
        times: dict[str, float] = {}
        audio = 0
        say = asyncio.create_task(s.say("One, two, three, four."))
        async with asyncio.timeout(10):
            async for m in live.receive():
                sc = m.server_content
                if sc and sc.model_turn:
                    times.setdefault("first", loop.time())
                    audio += len(audio_of([m])[0])
                if sc and sc.generation_complete:
                    times["generated"] = loop.time()
                if sc and sc.turn_complete:
                    times["complete"] = loop.time()
        await say
    seconds = audio / 2 / OUTPUT_RATE
    assert seconds > 1.0
    # Sent at ~4x real time; turnComplete once the audio would have played.
    assert times["generated"] - times["first"] == pytest.approx(seconds / 4, abs=0.15)
    assert times["complete"] - times["first"] == pytest.approx(seconds, abs=0.15)


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


# --- Random faults (soak runs) -------------------------------------------------------------

NO_FAULTS = FaultPlan(
    go_away_weight=0,
    close_weight=0,
    protocol_close_weight=0,
    stall_weight=0,
    refuse_resumption_weight=0,
)


def only(weight: str, **knobs: object) -> FaultPlan:
    """A plan with one kind of connection fault (weight is e.g. ``"stall_weight"``)."""
    return replace(NO_FAULTS, **{weight: 1.0}, **knobs)  # type: ignore[arg-type]


async def talk_until_closed(live: genai.live.AsyncSession, s: SimSession, seconds: float) -> None:
    """Speak in real time (20 ms frames) until done or the simulator closed the connection."""
    pcm = voiced(seconds)
    step = IN_RATE // 50 * 2
    for i in range(0, len(pcm), step):
        if s.closed:
            return
        blob = types.Blob(data=pcm[i : i + step], mime_type="audio/pcm;rate=16000")
        try:
            await live.send_realtime_input(audio=blob)
        except (errors.APIError, ConnectionClosed):
            return
        await asyncio.sleep(0.02)


def test_fault_schedule_draws_as_planned() -> None:
    plan = FaultPlan(mean_interval_s=2.0, go_away_time_left_s=(2, 10), stall_s=(3, 15))
    schedule = FaultSchedule(plan, np.random.default_rng(1))
    delays = [schedule.next_delay_s() for _ in range(4000)]
    assert np.mean(delays) == pytest.approx(2.0, rel=0.1)  # exponential waits, mean as planned
    assert min(delays) >= 0
    faults = [schedule.next_fault() for _ in range(4000)]
    kinds = [f.kind for f in faults]
    share = {k: kinds.count(k) / len(kinds) for k in set(kinds)}
    # Five equal weights; a protocol close is 1007 or 1008 at even odds.
    for kind in ("go_away", "close_1011", "stall", "refuse_resumption"):
        assert share[kind] == pytest.approx(0.2, abs=0.03)
    for kind in ("close_1007", "close_1008"):
        assert share[kind] == pytest.approx(0.1, abs=0.03)
    for f in faults:
        if f.kind == "go_away":
            assert 2 <= f.time_left_s <= 10 and f.close is None and f.ends_connection
        elif f.kind == "stall":
            assert 3 <= f.duration_s <= 15 and not f.ends_connection
        else:
            assert f.close == CLOSE_REASONS[f.kind] and f.ends_connection
    assert {f.close for f in faults if f.close} == {
        (1011, "Internal error encountered."),
        (1007, "Request contains an invalid argument."),
        (1008, "The operation was aborted."),
    }
    assert [f.revokes_handles for f in faults] == [k == "refuse_resumption" for k in kinds]

    # Seeded: the same draws again.
    again = FaultSchedule(plan, np.random.default_rng(1))
    assert [again.next_delay_s() for _ in range(4000)] == delays
    assert [again.next_fault() for _ in range(4000)] == faults

    # Weights of 0 are never drawn; a cap ends the schedule.
    capped = FaultSchedule(only("stall_weight", max_per_session=2), np.random.default_rng(2))
    assert [capped.next_fault().kind for _ in range(2)] == ["stall", "stall"]
    assert capped.exhausted
    with pytest.raises(RuntimeError):
        capped.next_fault()
    assert FaultSchedule(NO_FAULTS, np.random.default_rng(3)).exhausted


def test_setup_faults_hit_the_planned_fraction_of_connections() -> None:
    rng = np.random.default_rng(4)
    assert all(FaultSchedule(FaultPlan(), rng).setup_fault() is None for _ in range(500))
    plan = FaultPlan(setup_hang_probability=0.3, quota_probability=0.1)
    drawn = [FaultSchedule(plan, rng).setup_fault() for _ in range(4000)]
    kinds = [f.kind if f else None for f in drawn]
    assert kinds.count("quota") / len(kinds) == pytest.approx(0.1, abs=0.02)
    # A hang is drawn for connections that got through the quota check.
    assert kinds.count("setup_hang") / len(kinds) == pytest.approx(0.9 * 0.3, abs=0.03)
    assert {f.close for f in drawn if f and f.kind == "quota"} == {(1008, "Quota exceeded")}


@pytest.mark.parametrize(
    "knobs",
    [
        {"mean_interval_s": 0},
        {"mean_interval_s": float("inf")},
        {"stall_weight": -1},
        {"go_away_time_left_s": (5, 2)},
        {"stall_s": (-1, 2)},
        {"align_s": -1},
        {"max_per_session": -1},
        {"setup_hang_probability": 1.5},
        {"quota_probability": -0.1},
    ],
)
def test_fault_plan_rejects_nonsense(knobs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultPlan(**knobs)  # type: ignore[arg-type]


async def test_peer_port_is_the_clients_local_port(sim: LiveSimulator) -> None:
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        s = await sim.next_session()
        assert s.peer_port is not None
        assert s.peer_port == live._ws.local_address[1]
        assert s.faults_injected == [] and sim.fault_counts == {}


async def test_random_go_away_then_deadline_close() -> None:
    plan = only("go_away_weight", mean_interval_s=0.05, go_away_time_left_s=(0.2, 0.3))
    async with LiveSimulator(behaviour=replace(FAST, faults=plan)) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            async with asyncio.timeout(5):
                message = await anext(live.receive())
            assert message.go_away is not None and message.go_away.time_left
            assert 0.2 <= float(message.go_away.time_left.rstrip("s")) <= 0.3
            with pytest.raises(errors.APIError) as info:
                await one_turn(live)
        assert info.value.code == 1011 and "Deadline expired" in str(info.value)
        s = sim.sessions[0]
        assert [kind for _, kind in s.faults_injected] == ["go_away"]
        assert s.faults_injected[0][0] < 1.0
        assert sim.fault_counts == {"go_away": 1}


async def test_random_close_comes_mid_answer() -> None:
    plan = only("close_weight", mean_interval_s=0.01, align_s=10)
    # Paced at real time, so that the answer is still playing when the close comes.
    async with LiveSimulator(behaviour=replace(FAST, pace=1.0, faults=plan)) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            await asyncio.sleep(0.3)  # the fault is due, but nobody is speaking: it waits
            assert not s.closed and s.faults_injected == []
            await live.send_realtime_input(text='Say "this answer is cut off in the middle"')
            with pytest.raises(errors.APIError) as info:
                async with asyncio.timeout(5):
                    while True:
                        await one_turn(live)
        assert info.value.code == 1011 and "Internal error" in str(info.value)
        assert [kind for _, kind in s.faults_injected] == ["close_1011"]
        assert s.faults_injected[0][0] >= 0.3
        assert 0 < s.audio_out_ms < 1000 and s.turns_completed == 0


async def test_random_protocol_close_comes_mid_caller_speech() -> None:
    plan = only("protocol_close_weight", mean_interval_s=0.01, align_s=10)
    async with LiveSimulator(behaviour=replace(FAST, faults=plan)) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            await send_pcm(live, silence(0.3))
            await asyncio.sleep(0.2)  # due, but the caller is quiet: it waits
            assert not s.closed
            await talk_until_closed(live, s, 3.0)
            code = await s.wait_closed()
    assert code in (1007, 1008)
    assert [kind for _, kind in s.faults_injected] == [f"close_{code}"]
    assert s.close_reason == CLOSE_REASONS[f"close_{code}"][1]
    assert s.utterances == []  # cut off while the caller was still talking
    assert 300 < s.audio_in_ms < 1500


async def test_random_stall_goes_silent_then_recovers() -> None:
    plan = only("stall_weight", mean_interval_s=0.01, stall_s=(1.0, 1.0), max_per_session=1)
    async with LiveSimulator(behaviour=replace(FAST, faults=plan)) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            assert [kind for _, kind in await s.wait_faults(1)] == ["stall"]
            assert s.stalled
            await live.send_realtime_input(text='Say "lost in the stall"')
            await s.wait_text("lost in the stall")
            with pytest.raises(TimeoutError):
                await one_turn(live, within_s=0.3)
            async with asyncio.timeout(3):
                while s.stalled:  # noqa: ASYNC110 - polling a test-only view
                    await asyncio.sleep(0.02)
            await live.send_realtime_input(text='Say "back again"')
            assert output_text(await one_turn(live)) == "back again"
            assert not s.closed
    assert sim.fault_counts == {"stall": 1}


async def test_random_refused_resumption_forces_a_fresh_session() -> None:
    plan = only("refuse_resumption_weight", mean_interval_s=0.01, align_s=0)
    async with LiveSimulator(behaviour=replace(FAST, faults=plan)) as sim:
        client = make_client(sim)
        config = live_config(session_resumption=types.SessionResumptionConfig())
        with pytest.raises(errors.APIError) as info:
            async with client.aio.live.connect(model=MODEL, config=config) as live:
                await one_turn(live)
        assert info.value.code == 1011
        first = sim.sessions[0]
        assert [kind for _, kind in first.faults_injected] == ["refuse_resumption"]
        assert first.handles_issued

        sim.behaviour = FAST  # no faults on the next connections
        handle = first.handles_issued[-1]
        resume = live_config(session_resumption=types.SessionResumptionConfig(handle=handle))
        with pytest.raises(errors.APIError) as info:
            async with client.aio.live.connect(model=MODEL, config=resume):
                pass
        assert info.value.code == 1008
        assert sim.sessions[1].resumption_refused
        async with client.aio.live.connect(model=MODEL, config=config) as live:
            await live.send_realtime_input(text='Say "fresh start"')
            assert output_text(await one_turn(live)) == "fresh start"
        assert sim.fault_counts == {"refuse_resumption": 1}


async def test_setup_faults_hang_or_refuse_with_quota() -> None:
    hang = replace(NO_FAULTS, setup_hang_probability=1.0)
    async with LiveSimulator(behaviour=replace(FAST, faults=hang)) as sim:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()):
                    pytest.fail("connect() returned without setupComplete")
        s = await sim.next_session()
        assert not s.setup_completed
        assert [kind for _, kind in s.faults_injected] == ["setup_hang"]

        sim.behaviour = replace(FAST, faults=replace(NO_FAULTS, quota_probability=1.0))
        with pytest.raises(errors.APIError) as info:
            async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()):
                pass
        assert info.value.code == 1008 and "Quota exceeded" in str(info.value)
        assert sim.fault_counts == {"quota": 1, "setup_hang": 1}


# --- Wire details --------------------------------------------------------------------------


def test_base64_both_alphabets_with_or_without_padding() -> None:
    data = bytes(range(256)) * 3 + b"\xfb\xff"
    for encoded in (base64.b64encode(data), base64.urlsafe_b64encode(data)):
        assert decode_b64(encoded.decode()) == data
        assert decode_b64(encoded.decode().rstrip("=")) == data


async def test_raw_client_standard_base64_camel_case_and_legacy_chunks(sim: LiveSimulator) -> None:
    pcm = silence(0.1) + voiced(0.6) + silence(0.6)
    async with raw_connect(sim) as ws:
        await ws.send(orjson.dumps({"setup": {"model": "models/x"}}))  # binary frame
        assert await raw_recv(ws) == {"setupComplete": {}}
        for i in range(0, len(pcm), 640):
            b64 = base64.b64encode(pcm[i : i + 640]).decode()
            if i % 1280:
                message = {
                    "realtimeInput": {"audio": {"data": b64, "mimeType": "audio/pcm;rate=16000"}}
                }
            else:
                chunk = {"data": b64.rstrip("="), "mime_type": "audio/pcm"}
                message = {"realtime_input": {"mediaChunks": [chunk]}}
            await ws.send(orjson.dumps(message).decode())
        kinds = []
        while "turnComplete" not in kinds:
            message = await raw_recv(ws)
            assert next(iter(message)) in {"serverContent", "usageMetadata"}
            content = message["serverContent"]
            assert isinstance(content, dict)
            kinds.extend(content)
        s = await sim.next_session()
    assert s.audio_in_ms == pytest.approx(1300)
    assert [(u.start_ms, u.end_ms) for u in s.utterances] == [(100.0, 700.0)]
    assert "modelTurn" in kinds  # the raw client did not ask for transcriptions
    assert "inputTranscription" not in kinds and "outputTranscription" not in kinds


def test_live_paths() -> None:
    for version in ("v1", "v1beta", "v1alpha"):
        assert is_live_path(
            f"/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
        )
    assert is_live_path("/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent")
    assert not is_live_path(
        "/ws/google.ai.generativelanguage.v2.GenerativeService.BidiGenerateContent"
    )


def test_utterance_detector_keeps_preroll_and_caps_length() -> None:
    det = UtteranceDetector(IN_RATE, max_utterance_ms=1000)
    events = det.feed(silence(0.5) + voiced(0.4) + silence(0.6))
    assert isinstance(events[0], SpeechStarted) and events[0].at_ms == 500
    end = events[1]
    assert isinstance(end, SpeechEnded) and (end.start_ms, end.end_ms) == (500, 900)
    assert len(end.audio) == 2 * round(0.6 * IN_RATE)  # 100 ms pre-roll + 400 ms + 100 ms tail
    long = det.feed(voiced(2.5) + silence(0.6))
    ends = [e for e in long if isinstance(e, SpeechEnded)]
    assert [round(e.duration_s, 2) for e in ends] == [1.0, 1.0, 0.5]


# --- Robustness, standalone, SDK pass-through ----------------------------------------------


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


async def test_next_session_order_and_timeout(sim: LiveSimulator) -> None:
    with pytest.raises(TimeoutError):
        await sim.next_session(timeout=0.05)
    client = make_client(sim)
    async with (
        client.aio.live.connect(model=MODEL, config=live_config()),
        client.aio.live.connect(model=MODEL, config=live_config()),
    ):
        a = await sim.next_session()
        b = await sim.next_session()
    assert isinstance(a, SimSession) and (a.id, b.id) == ("s1", "s2")


async def test_async_client_args_reach_websockets(sim: LiveSimulator) -> None:
    # The SDK passes every async_client_args key that websockets.connect accepts.
    client = make_client(sim, ping_interval=7, ping_timeout=33, max_size=2**22)
    async with client.aio.live.connect(model=MODEL, config=live_config()) as live:
        ws = live._ws
        assert (ws.ping_interval, ws.ping_timeout) == (7, 33)
        assert ws.protocol.max_message_size == 2**22


class _Printed(io.StringIO):
    """A text stream that tells when something was written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)


async def test_standalone_prints_instructions_and_writes_ca(tmp_path: Path) -> None:
    stop = asyncio.Event()
    out = _Printed()
    ca = tmp_path / "sim-ca.pem"
    task = asyncio.create_task(run_standalone("127.0.0.1", 0, ca_out=ca, stop=stop, out=out))
    async with asyncio.timeout(5):
        await out.written.wait()
    assert ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert "GOOGLE_GEMINI_BASE_URL=https://127.0.0.1:" in out.getvalue()
    assert f"SSL_CERT_FILE={ca}" in out.getvalue()
    stop.set()
    await task
