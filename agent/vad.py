"""A small energy-based voice activity detector for 16-bit PCM.

Pure and synchronous: the caller simulator, the load tester and the Live API simulator feed it
PCM16 (little-endian, mono) in chunks of any size and get speech start/end events back.

A frame is "loud" when its RMS level is at or above ``threshold_dbfs`` (0 dBFS = a full-scale
square wave; a full-scale sine is about -3 dBFS). Two hysteresis knobs turn loud frames into
utterances:

- ``start_ms``: speech starts only after this much uninterrupted loudness, so clicks and pops
  are ignored. The event is reported when that is decided, but it carries the position of the
  first loud frame, i.e. where speech actually began.
- ``end_ms``: speech ends only after this much uninterrupted quiet, so pauses between words
  do not split an utterance. The event carries the position where the last loud frame ended.

Positions are sample counts since the detector was created or reset; boundaries are exact to
one frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from agent.g711 import audioop

__all__ = ["EnergyVad", "VadEvent", "speech_segments"]

_FULL_SCALE = 32768.0


@dataclass(frozen=True, slots=True)
class VadEvent:
    """Speech started or ended at ``sample`` (``time_s`` = ``sample / sample_rate``)."""

    kind: Literal["start", "end"]
    sample: int
    time_s: float

    @property
    def is_start(self) -> bool:
        return self.kind == "start"


class EnergyVad:
    """Streaming energy VAD with start/end hysteresis (see the module docstring)."""

    def __init__(
        self,
        sample_rate: int,
        frame_ms: float = 20,
        threshold_dbfs: float = -40.0,
        start_ms: float = 100,
        end_ms: float = 500,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        self.sample_rate = sample_rate
        self.frame_samples = max(1, round(sample_rate * frame_ms / 1000))
        self.threshold_dbfs = threshold_dbfs
        # Compare levels, not decibels: no log per frame. audioop's RMS is a whole number
        # (rounded down), so the threshold is the first whole level at or above it.
        self._threshold_rms = math.ceil(_FULL_SCALE * 10 ** (threshold_dbfs / 20))
        frame_s = self.frame_samples / sample_rate
        # A run shorter than one frame still needs one frame to be seen at all.
        self._start_frames = max(1, math.ceil(start_ms / 1000 / frame_s - 1e-9))
        self._end_frames = max(1, math.ceil(end_ms / 1000 / frame_s - 1e-9))
        self.reset()

    def reset(self) -> None:
        """Forget all state; positions count from zero again."""
        self._pending = b""  # bytes of an incomplete frame (and possibly an odd byte)
        self._position = 0  # samples consumed in whole frames
        self._in_speech = False
        self._run = 0  # consecutive frames contradicting the current state
        self._run_start = 0  # sample where that run began

    @property
    def in_speech(self) -> bool:
        """True between a reported start and the matching end."""
        return self._in_speech

    @property
    def position(self) -> int:
        """Samples analysed so far (whole frames only)."""
        return self._position

    def push(self, pcm16: bytes | bytearray | memoryview) -> list[VadEvent]:
        """Analyse more audio; return the speech starts/ends that became certain."""
        frame_bytes = self.frame_samples * 2
        events: list[VadEvent] = []
        if not self._pending and len(pcm16) % frame_bytes == 0:
            # The live case (whole frames, every call): no buffering. audioop's RMS is C
            # over the bytes, several times cheaper than NumPy's per-call overhead here.
            for start in range(0, len(pcm16), frame_bytes):
                rms = audioop.rms(pcm16[start : start + frame_bytes], 2)
                self._step(rms >= self._threshold_rms, self.frame_samples, events)
            return events
        data = self._pending + bytes(pcm16)
        whole = len(data) // frame_bytes
        self._pending = data[whole * frame_bytes :]
        for start in range(0, whole * frame_bytes, frame_bytes):
            rms = audioop.rms(data[start : start + frame_bytes], 2)
            self._step(rms >= self._threshold_rms, self.frame_samples, events)
        return events

    def flush(self) -> list[VadEvent]:
        """End of audio: analyse a trailing partial frame and close an open utterance."""
        events: list[VadEvent] = []
        tail = self._pending[: len(self._pending) // 2 * 2]
        self._pending = b""
        if tail:
            rms = audioop.rms(tail, 2)
            self._step(rms >= self._threshold_rms, len(tail) // 2, events)
        if self._in_speech:
            # Quiet frames already counted after the last loud one are not speech.
            end = self._run_start if self._run else self._position
            events.append(self._event("end", end))
            self._in_speech = False
        # A resumed stream starts afresh: half-counted runs do not carry over the gap.
        self._run = 0
        return events

    def _step(self, loud: bool, n: int, events: list[VadEvent]) -> None:
        if loud != self._in_speech:
            if self._run == 0:
                self._run_start = self._position
            self._run += 1
            needed = self._end_frames if self._in_speech else self._start_frames
            if self._run >= needed:
                self._in_speech = loud
                events.append(self._event("start" if loud else "end", self._run_start))
                self._run = 0
        else:
            self._run = 0
        self._position += n

    def _event(self, kind: Literal["start", "end"], sample: int) -> VadEvent:
        return VadEvent(kind, sample, sample / self.sample_rate)


def speech_segments(
    pcm16: bytes | bytearray | memoryview,
    sample_rate: int,
    *,
    frame_ms: float = 20,
    threshold_dbfs: float = -40.0,
    start_ms: float = 100,
    end_ms: float = 500,
) -> list[tuple[float, float]]:
    """The ``(start_s, end_s)`` of every utterance in a whole clip of PCM16 mono."""
    vad = EnergyVad(sample_rate, frame_ms, threshold_dbfs, start_ms, end_ms)
    events = vad.push(pcm16) + vad.flush()
    segments: list[tuple[float, float]] = []
    start: float | None = None
    for event in events:
        if event.is_start:
            start = event.time_s
        elif start is not None:
            segments.append((start, event.time_s))
            start = None
    return segments
