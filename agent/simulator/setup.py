"""What a client asked for in its ``setup`` message, parsed once into a frozen value.

The Live API's first client message configures the whole connection: model, voice, language,
system instruction, tools, transcriptions, voice activity detection, barge-in, session
resumption and context window compression. :meth:`SessionSetup.parse` reads it with
:func:`~agent.simulator.wire.field`, so snake_case and camelCase keys (the google-genai SDK
mixes both) mean the same, and anything missing or of the wrong type reads as "not asked for".
The session (:mod:`agent.simulator.session`) exposes these values as its own properties and
builds its caller VAD from them (:meth:`SessionSetup.utterance_detector`); the reply player
reads the voice and the output transcription.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.simulator.behaviour import SimBehaviour
from agent.simulator.utterances import UtteranceDetector
from agent.simulator.wire import JsonDict, nested
from agent.simulator.wire import field as wfield

__all__ = ["SessionSetup"]


@dataclass(frozen=True, slots=True)
class SessionSetup:
    """The settings of one connection, from its ``setup`` message (all empty before it)."""

    model: str | None = None
    #: ``generationConfig.speechConfig.voiceConfig.prebuiltVoiceConfig.voiceName``.
    voice: str | None = None
    language: str | None = None
    #: The text of the system instruction's parts, joined.
    system_instruction: str | None = None
    tools: tuple[JsonDict, ...] = ()
    input_transcription: bool = False
    output_transcription: bool = False
    session_resumption: JsonDict | None = None
    #: ``sessionResumption.handle`` as sent (``None`` if none; only a string can be valid).
    resumption_handle: object = None
    context_window_compression: JsonDict | None = None
    #: ``realtimeInputConfig.activityHandling`` (``"NO_INTERRUPTION"`` turns barge-in off).
    activity_handling: str | None = None
    #: ``realtimeInputConfig.automaticActivityDetection``: the VAD settings asked for.
    start_of_speech_sensitivity: str | None = None
    prefix_padding_ms: float | None = None
    silence_duration_ms: float | None = None
    #: Automatic activity detection disabled: ``activityStart``/``activityEnd`` delimit speech.
    manual_activity: bool = False

    @classmethod
    def parse(cls, setup: Mapping[str, Any] | None) -> SessionSetup:
        """The settings in a ``setup`` message's body (``None``: nothing received yet)."""
        if setup is None:
            return cls()
        model = wfield(setup, "model")
        voice = nested(
            setup,
            "generation_config",
            "speech_config",
            "voice_config",
            "prebuilt_voice_config",
            "voice_name",
        )
        language = nested(setup, "generation_config", "speech_config", "language_code")
        tools = wfield(setup, "tools")
        resumption = wfield(setup, "session_resumption")
        compression = wfield(setup, "context_window_compression")
        handling = nested(setup, "realtime_input_config", "activity_handling")
        aad = nested(setup, "realtime_input_config", "automatic_activity_detection")
        sensitivity = wfield(aad, "start_of_speech_sensitivity")
        return cls(
            model=model if isinstance(model, str) else None,
            voice=voice if isinstance(voice, str) else None,
            language=language if isinstance(language, str) else None,
            system_instruction=_system_instruction(wfield(setup, "system_instruction")),
            tools=tuple(tools) if isinstance(tools, list) else (),
            input_transcription=wfield(setup, "input_audio_transcription") is not None,
            output_transcription=wfield(setup, "output_audio_transcription") is not None,
            session_resumption=resumption if isinstance(resumption, dict) else None,
            resumption_handle=wfield(resumption, "handle") or None,
            context_window_compression=compression if isinstance(compression, dict) else None,
            activity_handling=handling if isinstance(handling, str) else None,
            start_of_speech_sensitivity=sensitivity if isinstance(sensitivity, str) else None,
            prefix_padding_ms=_number(wfield(aad, "prefix_padding_ms")),
            silence_duration_ms=_number(wfield(aad, "silence_duration_ms")),
            manual_activity=bool(wfield(aad, "disabled")),
        )

    @property
    def function_names(self) -> list[str]:
        """Names of all declared functions."""
        names: list[str] = []
        for tool in self.tools:
            for decl in wfield(tool, "function_declarations") or []:
                if isinstance(name := wfield(decl, "name"), str):
                    names.append(name)
        return names

    def blocking_functions(self) -> set[str]:
        """Functions declared ``behavior: BLOCKING``."""
        names: set[str] = set()
        for tool in self.tools:
            for decl in wfield(tool, "function_declarations") or []:
                if wfield(decl, "behavior") == "BLOCKING" and isinstance(wfield(decl, "name"), str):
                    names.add(wfield(decl, "name"))
        return names

    def utterance_detector(self, rate: int, behaviour: SimBehaviour) -> UtteranceDetector:
        """A detector for caller audio at ``rate``: the behaviour's VAD settings, as the
        setup's ``automaticActivityDetection`` overrides them."""
        threshold = behaviour.vad_threshold_dbfs
        if self.start_of_speech_sensitivity == "START_SENSITIVITY_HIGH":
            threshold -= 6.0
        elif self.start_of_speech_sensitivity == "START_SENSITIVITY_LOW":
            threshold += 6.0
        prefix_ms, silence_ms = self.prefix_padding_ms, self.silence_duration_ms
        return UtteranceDetector(
            rate,
            threshold_dbfs=threshold,
            start_ms=prefix_ms if prefix_ms is not None else behaviour.vad_start_ms,
            silence_ms=silence_ms if silence_ms is not None else behaviour.silence_ms,
            manual=self.manual_activity,
        )


def _system_instruction(si: object) -> str | None:
    if isinstance(si, str):
        return si
    parts = wfield(si, "parts")
    if not isinstance(parts, list):
        return None
    return "".join(t for p in parts if isinstance(t := wfield(p, "text"), str))


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
