"""Outbound calls: has a person answered? (Pure: audio and time in, a decision out.)

Twilio's answering-machine detection holds the callee in silence for seconds while it
decides, and costs extra. Instead the agent waits as a person placing a call does: until the
callee's first words have ended (they said "hello?" and paused), or they stayed silent for
``timeout_s``, or they have talked for ``max_speech_s`` (a long voicemail greeting). Until
then their audio is not passed to the model and the agent says nothing.
"""

from __future__ import annotations

from typing import Final

from agent.live_wire import INPUT_RATE
from agent.vad import EnergyVad

__all__ = ["ANSWER_MAX_SPEECH_S", "AnswerDetector"]

#: The callee's first words may run this long (a voicemail greeting) before the agent speaks.
ANSWER_MAX_SPEECH_S: Final = 30.0


class AnswerDetector:
    """Decides when the callee has answered; ``push`` and ``check`` return how, once."""

    def __init__(
        self, started_at: float, timeout_s: float, *, max_speech_s: float = ANSWER_MAX_SPEECH_S
    ) -> None:
        self._vad = EnergyVad(INPUT_RATE)
        self._started_at = started_at
        self._timeout_s = timeout_s
        self._max_speech_s = max_speech_s
        self._speech_at: float | None = None
        self.answered: str | None = None

    def push(self, pcm16k: bytes, now: float) -> str | None:
        """The callee's audio (16 kHz PCM16); ``"callee spoke"`` once their first words end."""
        if self.answered is not None:
            return None
        for event in self._vad.push(pcm16k):
            if event.is_start:
                self._speech_at = now
            else:
                return self._answer("callee spoke")
        return None

    def check(self, now: float) -> str | None:
        """``"silence"`` or ``"long speech"`` once the callee has been either for too long."""
        if self.answered is not None:
            return None
        if self._speech_at is None:
            if now - self._started_at >= self._timeout_s:
                return self._answer("silence")
        elif now - self._speech_at >= self._max_speech_s:
            return self._answer("long speech")
        return None

    def _answer(self, how: str) -> str:
        self.answered = how
        return how
