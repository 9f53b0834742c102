"""When the caller speaks, from their 16 kHz audio: one owner per call, shared by its readers.

The call feeds every frame it sends to the model into one ``CallerActivity`` (``push``), and
everything that needs to know about the caller reads it: the call's silence policy, its
response-latency measurement and turn timestamps, and the stall watchdog of the conversation
(``agent.resilient``). Pure: no clock of its own (``now`` is passed in), no I/O.

Times are monotonic seconds, dated back to the audio: the VAD decides that speech started
``start_ms`` after its first loud frame and that it ended ``end_ms`` after its last, so each
event is placed where the audio says, not where the decision was made.
"""

from __future__ import annotations

from typing import Final

from agent.live_wire import INPUT_RATE
from agent.vad import EnergyVad

__all__ = ["CallerActivity"]

#: Quiet that ends an utterance by default (the Live API's end-of-speech default here).
DEFAULT_END_MS: Final = 500


class CallerActivity:
    """The caller's speech, utterance by utterance (see the module docstring)."""

    def __init__(self, now: float, *, end_ms: int = DEFAULT_END_MS) -> None:
        self._vad = EnergyVad(INPUT_RATE, end_ms=end_ms)
        #: True between the start of an utterance and its end.
        self.speaking = False
        #: The last moment the caller was heard speaking (the call's start until then).
        self.last_speech_at = now
        #: When the latest utterance started; None before the caller has spoken.
        self.started_at: float | None = None
        #: When the latest utterance ended; None before one has.
        self.ended_at: float | None = None
        #: When that end was decided (``end_ms`` of quiet later): what a watchdog times from.
        self.end_decided_at: float | None = None
        self._unclaimed_end: float | None = None

    def push(self, pcm16k: bytes, now: float) -> None:
        """The caller's next audio (16 kHz PCM16), as sent to the model at ``now``."""
        vad = self._vad
        for event in vad.push(pcm16k):
            # ``now`` is when the audio up to vad.position arrived: date each event back.
            at = now - (vad.position - event.sample) / INPUT_RATE
            if event.is_start:
                self.speaking = True
                self.started_at = at
            else:
                self.speaking = False
                self.ended_at = at
                self.end_decided_at = now
                self._unclaimed_end = at
        if self.speaking:
            self.last_speech_at = now

    def take_speech_end(self) -> float | None:
        """When the caller's last utterance ended, if not claimed yet (then it is claimed).

        The call claims it when the agent's answer starts playing: their difference is the
        response latency the caller experienced (give or take Twilio's and the network's).
        """
        ended, self._unclaimed_end = self._unclaimed_end, None
        if ended is not None and self.speaking:
            return None  # the caller is talking again: this answer is not to that utterance
        return ended
