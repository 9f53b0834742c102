"""What the caller experienced: :class:`CallResult` and the records it is made of
(:class:`ResponseTurn`, :class:`Interruption`, :class:`ClearRecord`, :class:`EchoRecord`,
:class:`AudioGap`, :class:`Note`), the pure bookkeeping that derives them from what played
(:func:`talk_spurts`, :func:`response_turns`, :func:`match_interruptions`, :func:`find_gaps`,
:func:`assemble_heard`, :func:`merge_runs`) and :func:`write_wav`. Times are seconds since
stream start.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Final, Literal

import numpy as np
import soundfile as sf

from telephony.audio import ulaw_8k_to_pcm16
from telephony.caller.script import EPS
from telephony.twilio.media_stream import SAMPLE_RATE, ULAW_SILENCE
from telephony.twilio.playback import Played

__all__ = [
    "ANSWER_RESUME_S",
    "GAP_MIN_S",
    "SPURT_GAP_S",
    "AudioGap",
    "CallResult",
    "ClearRecord",
    "EchoRecord",
    "EndReason",
    "Interruption",
    "Note",
    "ResponseTurn",
    "assemble_heard",
    "find_gaps",
    "match_interruptions",
    "merge_runs",
    "response_turns",
    "talk_spurts",
    "write_wav",
]

#: Agent audio separated by less than this is one talk spurt (servers that pace their output
#: at real time leave tiny gaps between chunks; that is not the agent pausing).
SPURT_GAP_S: Final = 0.1
#: A hole in the agent's audio longer than this, inside one answer, is an audio gap.
GAP_MIN_S: Final = 0.1
#: Agent audio that resumes within this long, with no caller input in between, continues the
#: same answer (so the hole before it is a gap); later, it is a new answer.
ANSWER_RESUME_S: Final = 2.0

#: Who or what ended the call (:attr:`CallResult.ended_by`).
EndReason = Literal["caller", "server", "max_duration", "error"]


@dataclass(frozen=True, slots=True)
class AudioGap:
    """A hole in the agent's audio inside one answer, as played (see :func:`find_gaps`)."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class ResponseTurn:
    """A caller utterance and when the agent's answer started playing (None: no answer)."""

    utterance_start_s: float
    utterance_end_s: float
    response_s: float | None

    @property
    def latency_s(self) -> float | None:
        if self.response_s is None:
            return None
        return self.response_s - self.utterance_end_s


@dataclass(frozen=True, slots=True)
class ClearRecord:
    """A ``clear`` from the server: the queued audio it dropped and the marks it flushed."""

    time_s: float
    dropped_s: float
    marks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Interruption:
    """A barge-in and the ``clear`` that honoured it.

    ``speech_start_s`` is None for a clear with no caller speech over the agent before it;
    ``clear_s`` is None when the caller talked over the agent and no clear came.
    """

    speech_start_s: float | None
    clear_s: float | None
    dropped_s: float = 0.0

    @property
    def latency_ms(self) -> float | None:
        if self.speech_start_s is None or self.clear_s is None:
            return None
        return (self.clear_s - self.speech_start_s) * 1000


@dataclass(frozen=True, slots=True)
class EchoRecord:
    """A mark echoed back to the server: ``due_s`` when Twilio would echo it, ``sent_s`` when
    this simulator did (on its next 20 ms tick at the latest)."""

    name: str
    due_s: float
    sent_s: float
    cleared: bool


@dataclass(frozen=True, slots=True)
class Note:
    """One line of the call's timeline."""

    time_s: float
    text: str


@dataclass
class CallResult:
    """What the caller experienced. Times are seconds since the stream started."""

    call_sid: str
    stream_sid: str
    duration_s: float
    ended_by: EndReason
    #: 8 kHz μ-law, same length as ``heard_audio``: exactly what the caller sent, then silence.
    caller_audio: bytes
    #: 8 kHz μ-law timeline of the call: agent audio where it played, silence elsewhere.
    heard_audio: bytes
    played: list[Played]
    time_to_first_audio_s: float | None
    caller_segments: list[tuple[float, float]]
    agent_spurts: list[tuple[float, float]]
    turns: list[ResponseTurn]
    interruptions: list[Interruption]
    clears: list[ClearRecord]
    marks_received: list[tuple[float, str]]
    marks_echoed: list[EchoRecord]
    dtmf_sent: list[tuple[float, str]]
    frames_sent: int
    media_bytes_received: int
    unknown_frames: int
    malformed_frames: int
    close_code: int | None
    close_reason: str
    notes: list[Note] = field(default_factory=list, repr=False)
    #: For every server media message: when it arrived, and the agent audio bytes received
    #: before it (so ``bytes / 8000`` is how far into the agent's audio that message starts).
    media_received: list[tuple[float, int]] = field(default_factory=list, repr=False)
    #: Holes in the agent's audio inside one answer, as played (see :func:`find_gaps`).
    gaps: list[AudioGap] = field(default_factory=list)
    #: The latest this caller sent a frame or key after it fell due: above ~20 ms the load
    #: generator itself is overloaded and every latency it measures is inflated.
    max_send_lag_s: float = 0.0
    #: Everything the caller meant to say and key had been sent when the call ended.
    caller_done: bool = True
    #: Why the call broke off, when ``ended_by`` is ``error``.
    error: str = ""
    #: The driver's clock at stream start (``place_call``: the event loop's monotonic clock),
    #: so stream times can be compared with other events on the same clock.
    started_at: float = 0.0

    def timeline(self, words: Sequence[tuple[float, str]] = ()) -> list[str]:
        """Printable lines ``t=  1.234 s: event``, in time order; ``words`` adds lines of
        what was said (e.g. from the server's record of the call) at their times."""
        notes = list(self.notes)
        notes += [Note(at, text) for at, text in words]
        for start, end in self.caller_segments:
            notes.append(Note(start, "caller starts speaking"))
            notes.append(Note(end, f"caller stops speaking ({end - start:.2f} s)"))
        for start, end in self.agent_spurts:
            notes.append(Note(start, "agent audio starts playing"))
            notes.append(Note(end, f"agent audio stops playing ({end - start:.2f} s)"))
        notes.sort(key=lambda n: n.time_s)  # stable: recording order breaks ties
        return [f"t={n.time_s:8.3f} s: {n.text}" for n in notes]

    def summary(self) -> list[str]:
        """Printable lines: greeting time, latency per turn, interruptions, counters."""
        lines = [
            f"call {self.call_sid} stream {self.stream_sid}: {self.duration_s:.2f} s, "
            f"ended by {self.ended_by} (close code {self.close_code}"
            + (f' "{self.close_reason}")' if self.close_reason else ")"),
        ]
        if self.time_to_first_audio_s is None:
            lines.append("time to first agent audio: never")
        else:
            lines.append(f"time to first agent audio: {self.time_to_first_audio_s:.3f} s")
        for i, turn in enumerate(self.turns, 1):
            head = f"turn {i}: caller {turn.utterance_start_s:.2f}-{turn.utterance_end_s:.2f} s"
            if turn.latency_s is None:
                lines.append(f"{head}, no agent response")
            else:
                lines.append(f"{head}, agent at {turn.response_s:.2f} s ({turn.latency_s:.3f} s)")
        for it in self.interruptions:
            if it.speech_start_s is None:
                lines.append(
                    f"clear at {it.clear_s:.2f} s without caller barge-in "
                    f"(dropped {it.dropped_s:.2f} s of audio)"
                )
            elif it.clear_s is None:
                lines.append(f"caller talked over agent at {it.speech_start_s:.2f} s: no clear")
            else:
                lines.append(
                    f"interruption at {it.speech_start_s:.2f} s: clear after "
                    f"{it.latency_ms:.0f} ms (dropped {it.dropped_s:.2f} s of audio)"
                )
        for gap in self.gaps:
            lines.append(
                f"audio gap at {gap.start_s:.2f} s: agent silent for {gap.duration_s * 1000:.0f} ms"
            )
        cleared = sum(e.cleared for e in self.marks_echoed)
        lines.append(
            f"frames sent {self.frames_sent}, agent audio received "
            f"{self.media_bytes_received / SAMPLE_RATE:.2f} s, marks received "
            f"{len(self.marks_received)} / echoed {len(self.marks_echoed)} ({cleared} by clear), "
            f"unknown frames {self.unknown_frames}, malformed frames {self.malformed_frames}"
        )
        return lines

    def write_wav(self, path: str | Path, *, stereo: bool = False) -> None:
        """Same as :func:`write_wav`."""
        write_wav(path, self, stereo=stereo)


# ---------------------------------------------------------------------------------------------
# Pure bookkeeping
# ---------------------------------------------------------------------------------------------


def assemble_heard(played: Sequence[Played], length: int) -> bytes:
    """Place played runs (start in seconds from stream start) on a μ-law silence timeline."""
    out = bytearray(ULAW_SILENCE * length)
    for run in played:
        at = max(0, round(run.start * SAMPLE_RATE))
        chunk = run.audio[: max(0, length - at)]
        out[at : at + len(chunk)] = chunk
    return bytes(out)


def merge_runs(played: Sequence[Played]) -> list[Played]:
    """Join runs that follow each other without a gap (in time order)."""
    merged: list[Played] = []
    group: list[bytes] = []
    start = end = -math.inf
    for run in played:
        if group and abs(run.start - end) < EPS:
            group.append(run.audio)
        else:
            if group:
                merged.append(Played(start, b"".join(group)))
            group, start = [run.audio], run.start
        end = run.end
    if group:
        merged.append(Played(start, b"".join(group)))
    return merged


def talk_spurts(
    played: Sequence[Played], max_gap_s: float = SPURT_GAP_S
) -> list[tuple[float, float]]:
    """Merge played runs closer than ``max_gap_s`` into ``(start_s, end_s)`` talk spurts."""
    spurts: list[tuple[float, float]] = []
    for run in sorted(played, key=lambda r: r.start):
        if spurts and run.start - spurts[-1][1] < max_gap_s:
            spurts[-1] = (spurts[-1][0], max(spurts[-1][1], run.end))
        else:
            spurts.append((run.start, run.end))
    return spurts


def response_turns(
    caller_segments: Sequence[tuple[float, float]], agent_spurts: Sequence[tuple[float, float]]
) -> list[ResponseTurn]:
    """Pair each caller utterance with the first agent spurt that starts after it ends and
    before the caller speaks again."""
    starts = [s for s, _ in agent_spurts]
    turns: list[ResponseTurn] = []
    for i, (u_start, u_end) in enumerate(caller_segments):
        next_utterance = caller_segments[i + 1][0] if i + 1 < len(caller_segments) else math.inf
        j = bisect.bisect_left(starts, u_end - EPS)
        response = starts[j] if j < len(starts) and starts[j] < next_utterance else None
        turns.append(ResponseTurn(u_start, u_end, response))
    return turns


def match_interruptions(
    caller_segments: Sequence[tuple[float, float]],
    agent_spurts: Sequence[tuple[float, float]],
    clears: Sequence[ClearRecord],
) -> list[Interruption]:
    """Pair barge-ins (caller speech starting while the agent was audible) with clears.

    Each clear answers the latest barge-in before it that no earlier clear answered; clears
    left over had no barge-in, barge-ins left over got no clear.
    """
    barge_ins = [s for s, _ in caller_segments if any(a - EPS <= s < b for a, b in agent_spurts)]
    matched: dict[float, ClearRecord] = {}
    lone: list[Interruption] = []
    for clear in sorted(clears, key=lambda c: c.time_s):
        open_ = [s for s in barge_ins if s <= clear.time_s + EPS and s not in matched]
        if open_:
            matched[open_[-1]] = clear
        else:
            lone.append(Interruption(None, clear.time_s, clear.dropped_s))
    result = lone + [
        Interruption(s, matched[s].time_s, matched[s].dropped_s)
        if s in matched
        else Interruption(s, None)
        for s in barge_ins
    ]
    result.sort(key=_interruption_time)
    return result


def _interruption_time(it: Interruption) -> float:
    if it.speech_start_s is not None:
        return it.speech_start_s
    return it.clear_s if it.clear_s is not None else 0.0


def find_gaps(
    played: Sequence[Played],
    caller_segments: Sequence[tuple[float, float]] = (),
    clears: Iterable[float] = (),
    dtmf: Iterable[float] = (),
    *,
    min_s: float = GAP_MIN_S,
    resume_within_s: float = ANSWER_RESUME_S,
) -> list[AudioGap]:
    """Holes in the agent's audio inside one answer, as the caller heard it.

    Between two consecutive played runs (``played`` in time order, e.g. from
    :func:`merge_runs`), the hole is a gap when it lasts more than ``min_s`` and at most
    ``resume_within_s``, and nothing in it explains the silence: no caller speech overlaps
    it (``caller_segments``), no key was pressed in it (``dtmf`` times) and no ``clear``
    came in it or at its edges (``clears`` times). Anything else is the agent's answer
    stalling: the server or the model did not deliver audio in time.
    """
    clear_times = sorted(clears)
    inputs = sorted(dtmf)
    gaps: list[AudioGap] = []
    for before, after in pairwise(played):
        start, end = before.end, after.start
        hole = end - start
        if hole <= min_s + EPS or hole > resume_within_s + EPS:
            continue
        if any(s < end and e > start for s, e in caller_segments):
            continue
        if _any_within(clear_times, start - EPS, end + EPS) or _any_within(inputs, start, end):
            continue
        gaps.append(AudioGap(start, end))
    return gaps


def _any_within(sorted_times: Sequence[float], lo: float, hi: float) -> bool:
    i = bisect.bisect_left(sorted_times, lo)
    return i < len(sorted_times) and sorted_times[i] <= hi


def write_wav(path: str | Path, result: CallResult, *, stereo: bool = False) -> None:
    """Write what the caller heard as 16-bit PCM at 8 kHz: mono = the agent as heard;
    ``stereo`` = agent on channel 0 (left), the caller on channel 1 (right)."""
    agent = np.frombuffer(ulaw_8k_to_pcm16(result.heard_audio), dtype="<i2")
    if stereo:
        caller = np.frombuffer(ulaw_8k_to_pcm16(result.caller_audio), dtype="<i2")
        n = max(len(agent), len(caller))
        data = np.zeros((n, 2), dtype=np.int16)
        data[: len(agent), 0] = agent
        data[: len(caller), 1] = caller
        sf.write(str(path), data, SAMPLE_RATE, subtype="PCM_16")
    else:
        sf.write(str(path), agent, SAMPLE_RATE, subtype="PCM_16")
