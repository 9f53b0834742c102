"""The setup message: what the SDK sends, as the session records and parses it."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from google.genai import types

from agent.simulator import LiveSimulator, SimBehaviour
from agent.simulator.setup import SessionSetup
from agent.simulator.utterances import SpeechEnded
from support.sim import MODEL, live_config, make_client, silence, voiced

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


# --- SessionSetup --------------------------------------------------------------------------

CAMEL_SETUP = {
    "model": "models/m",
    "generationConfig": {
        "speechConfig": {
            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}},
            "languageCode": "en-GB",
        }
    },
    "systemInstruction": {"parts": [{"text": "Be "}, {"text": "brief."}, {"inlineData": {}}]},
    "tools": [
        {"functionDeclarations": [{"name": "end_call"}, {"name": "transfer"}]},
        {"googleSearch": {}},
    ],
    "inputAudioTranscription": {},
    "outputAudioTranscription": {},
    "sessionResumption": {"handle": "h1"},
    "contextWindowCompression": {"slidingWindow": {}},
    "realtimeInputConfig": {
        "activityHandling": "NO_INTERRUPTION",
        "automaticActivityDetection": {
            "disabled": True,
            "startOfSpeechSensitivity": "START_SENSITIVITY_HIGH",
            "prefixPaddingMs": 40,
            "silenceDurationMs": 800,
        },
    },
}


def _snake(value: object) -> object:
    """``value`` with every key in snake_case, as the SDK sends some of them."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): _snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


@pytest.mark.parametrize("spelling", ["camelCase", "snake_case", "mixed"])
def test_session_setup_reads_either_key_spelling(spelling: str) -> None:
    message: dict[str, object] = dict(CAMEL_SETUP)
    if spelling == "snake_case":
        message = _snake(message)  # type: ignore[assignment]
    elif spelling == "mixed":  # e.g. snake_case sections with camelCase keys inside
        message["generation_config"] = message.pop("generationConfig")
        message["realtime_input_config"] = _snake(message.pop("realtimeInputConfig"))
    setup = SessionSetup.parse(message)
    assert setup.model == "models/m"
    assert setup.voice == "Kore"
    assert setup.language == "en-GB"
    assert setup.system_instruction == "Be brief."
    assert setup.function_names == ["end_call", "transfer"]
    assert len(setup.tools) == 2
    assert setup.input_transcription and setup.output_transcription
    assert setup.session_resumption is not None and setup.resumption_handle == "h1"
    assert setup.context_window_compression is not None
    assert setup.activity_handling == "NO_INTERRUPTION"
    assert setup.start_of_speech_sensitivity == "START_SENSITIVITY_HIGH"
    assert (setup.prefix_padding_ms, setup.silence_duration_ms) == (40.0, 800.0)
    assert setup.manual_activity


def test_session_setup_before_setup_and_with_odd_values() -> None:
    empty = SessionSetup.parse(None)
    assert empty == SessionSetup() == SessionSetup.parse({})
    assert empty.model is None and empty.tools == () and empty.function_names == []
    assert not empty.input_transcription and empty.session_resumption is None
    odd = SessionSetup.parse(
        {
            "model": 3,
            "systemInstruction": "Plain text.",
            "tools": {"functionDeclarations": []},
            "outputAudioTranscription": {},
            "sessionResumption": {"handle": ""},
            "realtimeInputConfig": {
                "automaticActivityDetection": {"prefixPaddingMs": True, "silenceDurationMs": "9"}
            },
        }
    )
    assert odd.model is None
    assert odd.system_instruction == "Plain text."
    assert odd.tools == ()
    assert not odd.input_transcription and odd.output_transcription
    assert odd.session_resumption == {"handle": ""} and odd.resumption_handle is None
    assert odd.prefix_padding_ms is None and odd.silence_duration_ms is None
    assert SessionSetup.parse({"systemInstruction": {"parts": "x"}}).system_instruction is None
    # Only a string can be a valid handle, but whatever was sent is kept (and refused).
    assert SessionSetup.parse({"sessionResumption": {"handle": 7}}).resumption_handle == 7


def test_session_setup_vad_settings_override_the_behaviour() -> None:
    behaviour = SimBehaviour(vad_threshold_dbfs=-40, vad_start_ms=100, silence_ms=500)
    default = SessionSetup().utterance_detector(16_000, behaviour)
    assert default.sample_rate == 16_000 and not default.manual
    tuned = SessionSetup.parse(CAMEL_SETUP).utterance_detector(8_000, behaviour)
    assert tuned.sample_rate == 8_000 and tuned.manual
    # Quiet speech: heard at -40 dBFS + HIGH sensitivity (-6 dB), not at the behaviour's -40.
    quiet = voiced(0.6, rate=16_000, dbfs=-43) + silence(0.9)
    auto = replace(SessionSetup.parse(CAMEL_SETUP), manual_activity=False)
    assert auto.utterance_detector(16_000, behaviour).feed(quiet)
    assert SessionSetup().utterance_detector(16_000, behaviour).feed(quiet) == []
    # silenceDurationMs 800: a 600 ms pause does not end the utterance.
    paused = voiced(0.4) + silence(0.6) + voiced(0.4) + silence(1.0)
    events = auto.utterance_detector(16_000, behaviour).feed(paused)
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert [(e.start_ms, e.end_ms) for e in ends] == [(0.0, 1400.0)]
