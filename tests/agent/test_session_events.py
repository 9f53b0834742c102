"""SDK messages → agent events, including several parts in one message."""

from __future__ import annotations

from google.genai import types

from agent.config import Persona, VadSettings
from agent.events import (
    AudioOut,
    GoAway,
    InputTranscript,
    Interrupted,
    OutputTranscript,
    ResumptionUpdate,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
    Usage,
)
from agent.session import build_connect_config, events_from_sdk


def message(**kwargs: object) -> types.LiveServerMessage:
    return types.LiveServerMessage.model_validate(kwargs)


def test_audio_parts_and_transcripts_in_order() -> None:
    msg = message(
        server_content={
            "input_transcription": {"text": "hi"},
            "model_turn": {
                "parts": [
                    {"inline_data": {"mime_type": "audio/pcm;rate=24000", "data": b"\x01\x00"}},
                    {"inline_data": {"mime_type": "audio/pcm;rate=24000", "data": b"\x02\x00"}},
                ]
            },
            "output_transcription": {"text": "hello"},
        }
    )
    assert events_from_sdk(msg) == [
        InputTranscript("hi"),
        AudioOut(b"\x01\x00"),
        AudioOut(b"\x02\x00"),
        OutputTranscript("hello"),
    ]


def test_interrupted_comes_before_turn_complete() -> None:
    msg = message(server_content={"interrupted": True, "turn_complete": True})
    assert events_from_sdk(msg) == [Interrupted(), TurnComplete()]


def test_control_messages() -> None:
    assert events_from_sdk(message(go_away={"time_left": "50s"})) == [GoAway(50.0)]
    assert events_from_sdk(
        message(session_resumption_update={"new_handle": "h1", "resumable": True})
    ) == [ResumptionUpdate("h1", True)]
    calls = events_from_sdk(
        message(tool_call={"function_calls": [{"id": "fc-1", "name": "end_call", "args": {}}]})
    )
    assert isinstance(calls[0], ToolCall)
    assert calls[0].calls[0].name == "end_call"
    assert events_from_sdk(message(tool_call_cancellation={"ids": ["fc-1"]})) == [
        ToolCallCancellation(("fc-1",))
    ]
    usage = message(
        usage_metadata={
            "prompt_token_count": 10,
            "response_token_count": 5,
            "total_token_count": 15,
        }
    )
    assert events_from_sdk(usage) == [Usage(10, 5, 15)]


def test_connect_config_carries_the_persona() -> None:
    persona = Persona(
        instructions="Be brief.",
        voice="Kore",
        language="fr-FR",
        tools=("end_call", "transfer_call"),
        vad=VadSettings("high", "low", 700, 40),
    )
    config = build_connect_config(persona)
    assert config.system_instruction is not None
    assert config.speech_config is not None
    assert config.speech_config.language_code == "fr-FR"
    voice = config.speech_config.voice_config
    assert voice is not None and voice.prebuilt_voice_config is not None
    assert voice.prebuilt_voice_config.voice_name == "Kore"
    assert config.tools is not None
    names = [f.name for f in config.tools[0].function_declarations or []]  # type: ignore[union-attr]
    assert names == ["end_call", "transfer_call"]
    aad = config.realtime_input_config.automatic_activity_detection  # type: ignore[union-attr]
    assert aad is not None
    assert aad.start_of_speech_sensitivity == types.StartSensitivity.START_SENSITIVITY_HIGH
    assert aad.end_of_speech_sensitivity == types.EndSensitivity.END_SENSITIVITY_LOW
    assert (aad.silence_duration_ms, aad.prefix_padding_ms) == (700, 40)
    assert config.input_audio_transcription is not None
    assert config.output_audio_transcription is not None
    assert config.session_resumption is not None
    assert config.context_window_compression is not None
