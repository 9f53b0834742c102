"""Cut the caller's audio stream into utterances, keeping their audio.

The boundaries come from the shared :class:`agent.vad.EnergyVad`; this module adds what the
simulator needs on top: the audio of each utterance (with a little pre-roll, because speech
start is only decided ``start_ms`` after it began), a cap on utterance length, and the manual
mode driven by ``activityStart``/``activityEnd``. Pure and synchronous.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.vad import EnergyVad

__all__ = ["SpeechEnded", "SpeechStarted", "Utterance", "UtteranceDetector", "UtteranceEvent"]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Caller speech began at ``at_ms`` (ms of caller audio since the session started)."""

    at_ms: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """An utterance ended. ``audio`` is PCM16 at the detector's rate, pre-roll and tail included."""

    start_ms: float
    end_ms: float
    audio: bytes
    #: Sample index (since the session started) of ``audio``'s first sample.
    audio_at: int = 0

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


UtteranceEvent = SpeechStarted | SpeechEnded


@dataclass(frozen=True, slots=True)
class Utterance:
    """A caller utterance found by the simulator's VAD (ms of caller audio since connect)."""

    start_ms: float
    end_ms: float

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


class UtteranceDetector:
    """Streaming utterance segmentation of PCM16 LE mono.

    With ``manual=True`` loudness is ignored and only :meth:`activity_start` /
    :meth:`activity_end` delimit utterances (the Live API's ``automaticActivityDetection``
    disabled mode).
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        threshold_dbfs: float = -40.0,
        start_ms: float = 100.0,
        silence_ms: float = 500.0,
        preroll_ms: float = 100.0,
        tail_ms: float = 100.0,
        max_utterance_ms: float = 30_000.0,
        manual: bool = False,
    ) -> None:
        self.sample_rate = sample_rate
        self.manual = manual
        self._vad = EnergyVad(
            sample_rate, threshold_dbfs=threshold_dbfs, start_ms=start_ms, end_ms=silence_ms
        )
        self._preroll = round(preroll_ms * sample_rate / 1000)
        self._tail = round(min(tail_ms, silence_ms) * sample_rate / 1000)
        self._max = max(1, round(max_utterance_ms * sample_rate / 1000))
        self._piece_bytes = 2 * max(1, round(0.2 * sample_rate))
        # Idle audio we must keep: speech start is reported start_ms late, plus the pre-roll.
        self._idle_keep = self._preroll + round((start_ms + 100) * sample_rate / 1000)
        self._buf = bytearray()
        self._buf_start = 0  # sample index of _buf[0]
        self._total = 0  # samples received
        self._utt_start: int | None = None

    @property
    def position_ms(self) -> float:
        """Caller audio received so far, in ms."""
        return self._total * 1000 / self.sample_rate

    @property
    def in_speech(self) -> bool:
        return self._utt_start is not None

    def utterance_audio(self, since: int | None = None) -> tuple[bytes, int]:
        """(audio of the utterance in progress from sample ``since`` (default: its start,
        pre-roll included) up to now, the sample index where it ends); empty outside one."""
        if self._utt_start is None:
            return b"", self._total
        lo = max(self._utt_start - self._preroll, self._buf_start)
        if since is not None:
            lo = max(lo, since)
        lo = min(lo, self._total)
        return bytes(self._buf[(lo - self._buf_start) * 2 :]), self._total

    def feed(self, pcm16: bytes) -> list[UtteranceEvent]:
        """Take more caller audio; return the starts/ends that became certain."""
        if len(pcm16) <= self._piece_bytes:
            return self._feed(pcm16)
        # Big buffers go in pieces so that the length cap splits where it should.
        events: list[UtteranceEvent] = []
        for i in range(0, len(pcm16), self._piece_bytes):
            events += self._feed(pcm16[i : i + self._piece_bytes])
        return events

    def _feed(self, pcm16: bytes) -> list[UtteranceEvent]:
        self._buf += pcm16
        self._total += len(pcm16) // 2
        if self.manual:
            if self._utt_start is None:
                self._trim(self._total)
            return []
        events: list[UtteranceEvent] = []
        for ev in self._vad.push(pcm16):
            if ev.is_start:
                self._utt_start = ev.sample
                events.append(SpeechStarted(self._ms(ev.sample)))
            elif self._utt_start is not None:
                if ev.sample > self._utt_start:
                    events.append(self._end(ev.sample, ev.sample + self._tail))
                else:  # speech ended right at a forced split (below): nothing left to answer
                    self._utt_start = None
        while self._utt_start is not None and self._total - self._utt_start >= self._max:
            # Endless "speech" (music on hold, a noisy line): answer in pieces, like a model
            # that stops waiting for a pause, instead of buffering forever.
            split = self._utt_start + self._max
            events.append(self._end(split, split))
            self._utt_start = split
        self._trim(self._total if self._utt_start is None else self._utt_start)
        return events

    def end_of_stream(self) -> list[UtteranceEvent]:
        """``audioStreamEnd``: the caller's stream paused; end an utterance in progress."""
        if self.manual:
            return []
        events: list[UtteranceEvent] = []
        for ev in self._vad.flush():
            if not ev.is_start and self._utt_start is not None:
                events.append(self._end(ev.sample, ev.sample + self._tail))
        return events

    def activity_start(self) -> list[UtteranceEvent]:
        """Manual mode: the client says the caller started speaking."""
        if not self.manual or self._utt_start is not None:
            return []
        self._utt_start = self._total
        return [SpeechStarted(self._ms(self._total))]

    def activity_end(self) -> list[UtteranceEvent]:
        """Manual mode: the client says the caller stopped speaking."""
        if not self.manual or self._utt_start is None:
            return []
        return [self._end(self._total, self._total)]

    def _end(self, end: int, audio_end: int) -> SpeechEnded:
        start = self._utt_start if self._utt_start is not None else end
        lo = max(start - self._preroll, self._buf_start) - self._buf_start
        hi = min(audio_end, self._total) - self._buf_start
        audio = bytes(self._buf[lo * 2 : max(lo, hi) * 2])
        self._utt_start = None
        return SpeechEnded(self._ms(start), self._ms(end), audio, lo + self._buf_start)

    def _trim(self, keep_from: int) -> None:
        # Drop audio nobody can need any more; amortised so small feeds don't memmove often.
        keep_from = max(self._buf_start, min(keep_from, self._total) - self._idle_keep)
        drop = keep_from - self._buf_start
        if drop * 2 > len(self._buf) // 2 and drop > self._idle_keep:
            del self._buf[: drop * 2]
            self._buf_start = keep_from

    def _ms(self, sample: int) -> float:
        return sample * 1000 / self.sample_rate
