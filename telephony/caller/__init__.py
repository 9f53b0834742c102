"""Caller simulator: places a call against a running server exactly as Twilio would.

It connects to the server's Media Streams WebSocket, sends ``connected`` and ``start``, then
one 160-byte μ-law frame every 20 ms on an absolute schedule (the caller's audio, silence when
the caller is not talking), DTMF at the scheduled times and ``stop`` at the end. What the
server sends back goes through Twilio's playback buffer (:mod:`telephony.twilio.playback`);
marks are echoed when the audio before them has played. The result says what the caller heard
and when.

Layers, so that the load tester (:mod:`telephony.loadtest`) reuses the middle ones:

- :class:`SimulatedCall` is sans-I/O: frames in, frames out, every method takes ``now``;
- :func:`talk_spurts`, :func:`response_turns`, :func:`match_interruptions`,
  :func:`find_gaps` and :func:`assemble_heard` are the pure bookkeeping behind
  :class:`CallResult`;
- :func:`open_stream` + :func:`drive_call` (asyncio; :func:`run_call` and :func:`place_call`
  wrap them) only move frames between a WebSocket and a :class:`SimulatedCall`; the Locust
  integration drives the same object synchronously (:mod:`telephony.loadtest.sync_call`).

Time zero everywhere in a result is the moment ``start`` was sent (stream start). Caller
audio at byte ``i`` of the track is spoken at ``i / 8000`` s; the frame carrying it leaves
when the frame is complete, 20 ms after its first sample, as a phone would send it.

What the caller says comes from audio files or from calls our server recorded
(``RECORD_CALLS``): :func:`load_recording` reads either as a :class:`RecordedCall`. It is
replayed exactly as recorded (``realtime``), or turn by turn: :func:`split_turns` cuts it
into :class:`CallerTurn` objects and :class:`TurnTaking` says when each one starts (after
the agent's answer has played, or over it, for barge-in). :func:`simulated_call` builds
the call for a replay mode.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import sys
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State

from agent.vad import speech_segments
from telephony.audio import pcm16_to_ulaw_8k, ulaw_8k_to_pcm16
from telephony.call.recorder import FORMAT_VERSION as RECORDING_FORMAT_VERSION
from telephony.twilio.media_stream import (
    DTMF_DIGITS,
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE,
    ULAW_SILENCE,
    InboundBuilder,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    ProtocolError,
    UnknownEvent,
    parse_outbound,
)
from telephony.twilio.playback import MarkEcho, Playback, Played
from telephony.twilio.signature import SIGNATURE_HEADER, sign

__all__ = [
    "SIMULATED_FROM",
    "SIMULATED_TO",
    "AudioGap",
    "BargeIn",
    "CallFailed",
    "CallResult",
    "CallerTurn",
    "ClearRecord",
    "EchoRecord",
    "Interruption",
    "Note",
    "RecordedCall",
    "RecordingError",
    "ReplayMode",
    "ResponseTurn",
    "SimulatedCall",
    "TurnTaking",
    "assemble_heard",
    "caller_identity",
    "connect_failure",
    "connect_headers",
    "drive_call",
    "find_gaps",
    "load_caller_audio",
    "load_recorded_call",
    "load_recording",
    "main",
    "match_interruptions",
    "merge_runs",
    "open_stream",
    "place_call",
    "response_turns",
    "run_call",
    "signature_url_for",
    "simulated_call",
    "split_turns",
    "talk_spurts",
    "websocket_url",
    "write_wav",
]

FRAME_S: Final = FRAME_MS / 1000
#: Agent audio separated by less than this is one talk spurt (servers that pace their output
#: at real time leave tiny gaps between chunks; that is not the agent pausing).
SPURT_GAP_S: Final = 0.1
#: With after_greeting_s, the caller starts talking once the agent has been quiet this long.
GREETING_GAP_S: Final = 0.6
#: A hole in the agent's audio longer than this, inside one answer, is an audio gap.
GAP_MIN_S: Final = 0.1
#: Agent audio that resumes within this long, with no caller input in between, continues the
#: same answer (so the hole before it is a gap); later, it is a new answer.
ANSWER_RESUME_S: Final = 2.0
#: Around each utterance cut out of a recording, keep this much of the quiet before and after
#: it (soft onsets and tails sit below the VAD threshold), never past half the pause.
TURN_LEAD_PAD_S: Final = 0.1
TURN_TAIL_PAD_S: Final = 0.2
#: Key presses closer than this to the previous part of a turn belong to that turn (a PIN is
#: one turn, not four).
DTMF_GROUP_S: Final = 1.5
_EPS: Final = 1e-9
#: Caller and callee of simulated calls that name none: Twilio's documented test numbers.
SIMULATED_FROM: Final = "+15005550006"
SIMULATED_TO: Final = "+15005550001"

EndReason = Literal["caller", "server", "max_duration", "error"]
#: How a recording is replayed: ``realtime`` = exactly as recorded/in the file, from stream
#: start; ``turns`` = utterance by utterance, each after the agent's answer to the previous
#: one has played; ``barge-in`` = like ``turns``, but each next utterance starts over the
#: agent's answer.
ReplayMode = Literal["realtime", "turns", "barge-in"]
#: Why a call could not be placed (:attr:`CallFailed.kind`).
FailureKind = Literal[
    "connect_refused", "connect_timeout", "connect_error", "handshake_rejected", "handshake_error"
]


class CallFailed(Exception):
    """The call could not be placed (connection refused, handshake rejected, timeout).

    ``kind`` classifies it; ``status`` is the HTTP status of a rejected handshake.
    """

    def __init__(
        self, message: str, kind: FailureKind = "connect_error", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.status = status


class RecordingError(ValueError):
    """A recorded call or audio file that cannot be replayed."""


@dataclass(frozen=True, slots=True)
class CallerTurn:
    """One turn of the caller: ``audio`` (8 kHz μ-law) and key presses at ``dtmf`` offsets
    (seconds from the turn's start). ``recorded_at_s`` is where it started in its source.

    ``lead_s``: the quiet lead-in at the start of ``audio``. A turn is placed so that its
    words start on time (after the think time, at the barge-in point); the lead-in goes
    before them, as much of it as has not already been sent.
    """

    audio: bytes
    dtmf: tuple[tuple[float, str], ...] = ()
    recorded_at_s: float = 0.0
    lead_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return max(len(self.audio) / SAMPLE_RATE, max((at for at, _ in self.dtmf), default=0.0))


@dataclass(frozen=True, slots=True)
class TurnTaking:
    """When the caller says its next :class:`CallerTurn` (turn-aware replay).

    The first turn waits for the greeting: once the agent has been heard and then quiet for
    ``think_s`` (or ``greeting_timeout_s`` passed with no agent audio at all). Every later
    turn waits for the agent's answer to the previous one the same way (or
    ``answer_timeout_s`` after the previous turn ended with no answer). The caller cannot know
    that an answer is over except by the agent going quiet, so ``think_s`` is measured from
    the end of the agent's audio as played. With ``barge_in_after_s``, a turn instead starts
    once the answer has been playing that long, over the agent (if the answer is shorter,
    the turn starts after it as usual). The greeting is never interrupted.
    After the last turn the call waits for its answer, bounded by ``answer_timeout_s``.
    """

    think_s: float = GREETING_GAP_S
    answer_timeout_s: float = 8.0
    greeting_timeout_s: float = 5.0
    barge_in_after_s: float | None = None

    def __post_init__(self) -> None:
        if min(self.think_s, self.answer_timeout_s, self.greeting_timeout_s) < 0 or (
            self.barge_in_after_s is not None and self.barge_in_after_s < 0
        ):
            raise ValueError("turn-taking times must be >= 0")


@dataclass(frozen=True, slots=True)
class AudioGap:
    """A hole in the agent's audio inside one answer, as played (see :func:`find_gaps`)."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """What a caller said in a recorded call or an audio file, ready to replay.

    ``audio`` is the caller's track as 8 kHz μ-law from stream start (real timing, silences
    included); ``dtmf`` the key presses as ``(seconds since stream start, digit)``;
    ``custom_parameters`` those of the recorded ``start`` (empty for audio files).
    """

    source: str
    audio: bytes
    dtmf: tuple[tuple[float, str], ...] = ()
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    call_sid: str | None = None
    stream_sid: str | None = None

    @property
    def duration_s(self) -> float:
        return max(len(self.audio) / SAMPLE_RATE, max((at for at, _ in self.dtmf), default=0.0))

    def turns(self) -> list[CallerTurn]:
        """The caller's utterances and key presses, one :class:`CallerTurn` each."""
        return split_turns(self.audio, self.dtmf)


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller talks over the agent: ``audio`` (8 kHz μ-law) starts once the agent has
    been audible for ``after_s`` without a break, at or after ``not_before_s`` (stream time).
    Fires once."""

    audio: bytes
    after_s: float = 0.5
    not_before_s: float = 0.0


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

    def timeline(self) -> list[str]:
        """Printable lines ``t=  1.234 s: event``, in time order."""
        notes = list(self.notes)
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
        if group and abs(run.start - end) < _EPS:
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
        j = bisect.bisect_left(starts, u_end - _EPS)
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
    barge_ins = [s for s, _ in caller_segments if any(a - _EPS <= s < b for a, b in agent_spurts)]
    matched: dict[float, ClearRecord] = {}
    lone: list[Interruption] = []
    for clear in sorted(clears, key=lambda c: c.time_s):
        open_ = [s for s in barge_ins if s <= clear.time_s + _EPS and s not in matched]
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
        if hole <= min_s + _EPS or hole > resume_within_s + _EPS:
            continue
        if any(s < end and e > start for s, e in caller_segments):
            continue
        if _any_within(clear_times, start - _EPS, end + _EPS) or _any_within(inputs, start, end):
            continue
        gaps.append(AudioGap(start, end))
    return gaps


def _any_within(sorted_times: Sequence[float], lo: float, hi: float) -> bool:
    i = bisect.bisect_left(sorted_times, lo)
    return i < len(sorted_times) and sorted_times[i] <= hi


@dataclass
class _TurnDraft:
    start: float
    end: float
    audio_end: float | None  # None: a turn of key presses only
    keys: list[tuple[float, str]] = field(default_factory=list)
    lead: float = 0.0


def split_turns(
    audio_ulaw: bytes,
    dtmf: Sequence[tuple[float, str]] = (),
    *,
    lead_pad_s: float = TURN_LEAD_PAD_S,
    tail_pad_s: float = TURN_TAIL_PAD_S,
    dtmf_group_s: float = DTMF_GROUP_S,
) -> list[CallerTurn]:
    """Cut a caller track (8 kHz μ-law, real timing) into turns.

    Utterances are found with the shared VAD (:func:`agent.vad.speech_segments`, the same
    settings the result's ``caller_segments`` use), so a replayed turn is one utterance to
    whoever listens with it. Each keeps ``lead_pad_s``/``tail_pad_s`` of the audio around
    it (never past the middle of the pause to its neighbour). A key press joins the turn
    before it when it comes within ``dtmf_group_s`` of that turn's end, else it starts a
    new, audio-less turn; offsets inside a turn keep their recorded spacing.
    """
    segments = speech_segments(ulaw_8k_to_pcm16(audio_ulaw), SAMPLE_RATE)
    total = len(audio_ulaw) / SAMPLE_RATE
    turns: list[_TurnDraft] = []
    for i, (start, end) in enumerate(segments):
        prev_end = segments[i - 1][1] if i else -math.inf
        next_start = segments[i + 1][0] if i + 1 < len(segments) else math.inf
        lo = max(0.0, start - lead_pad_s, (prev_end + start) / 2)
        hi = min(total, end + tail_pad_s, (end + next_start) / 2)
        turns.append(_TurnDraft(lo, hi, hi, lead=start - lo))
    # Key presses in recording order join the latest turn begun by then, if close enough.
    for at, digit in sorted(dtmf):
        last = max((d for d in turns if d.start <= at + _EPS), key=lambda d: d.start, default=None)
        if last is not None and at - last.end <= dtmf_group_s + _EPS:
            last.keys.append((at - last.start, digit))
            last.end = max(last.end, at)
        else:
            turns.append(_TurnDraft(at, at, None, [(0.0, digit)]))
    turns.sort(key=lambda d: d.start)
    result: list[CallerTurn] = []
    for draft in turns:
        audio = b""
        if draft.audio_end is not None:
            audio = audio_ulaw[
                round(draft.start * SAMPLE_RATE) : round(draft.audio_end * SAMPLE_RATE)
            ]
        result.append(CallerTurn(audio, tuple(draft.keys), draft.start, draft.lead))
    return result


# ---------------------------------------------------------------------------------------------
# Sans-I/O call
# ---------------------------------------------------------------------------------------------


def _new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


class SimulatedCall:
    """Twilio's side of one Media Stream, without I/O.

    ``open(now)`` returns ``connected`` + ``start``; then call ``due(now)`` no later than
    ``next_wakeup()`` and ``receive(now, frame)`` for every server frame; each returns the
    frames to send. ``should_end(now)`` says when the caller hangs up; ``finish`` returns the
    ``stop``; ``server_closed`` records the server closing first. ``now`` is any monotonic
    clock in seconds.

    What the caller says: ``audio_ulaw`` after ``lead_silence_s``, at fixed times (realtime
    replay), with ``dtmf`` at their stream times; then ``turns``, each placed when
    ``turn_taking`` says (turn-aware replay); ``barge_in`` talks over the agent once.
    ``after_greeting_s`` is shorthand for ``turns=[CallerTurn(audio_ulaw)]`` with the greeting
    timeout it gives (and no wait for an answer at the end).
    """

    def __init__(
        self,
        audio_ulaw: bytes,
        *,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        dtmf: Sequence[tuple[float, str]] = (),
        lead_silence_s: float = 0.0,
        linger_s: float = 3.0,
        max_duration_s: float = 120.0,
        barge_in: BargeIn | None = None,
        after_greeting_s: float | None = None,
        turns: Sequence[CallerTurn] = (),
        turn_taking: TurnTaking | None = None,
    ) -> None:
        if after_greeting_s is not None and turns:
            raise ValueError("after_greeting_s and turns are exclusive")
        for at, digit in [*dtmf, *((at, d) for turn in turns for at, d in turn.dtmf)]:
            if digit not in DTMF_DIGITS or at < 0:
                raise ValueError(f"bad DTMF entry {(at, digit)!r}")
        if lead_silence_s < 0 or linger_s < 0 or max_duration_s <= 0:
            raise ValueError("lead_silence_s and linger_s must be >= 0, max_duration_s > 0")
        self.stream_sid = stream_sid or _new_sid("MZ")
        self.call_sid = call_sid or _new_sid("CA")
        self._builder = InboundBuilder(
            self.stream_sid, self.call_sid, account_sid or _new_sid("AC")
        )
        self._params = dict(custom_parameters or {})
        self._track = bytearray(ULAW_SILENCE * round(lead_silence_s * SAMPLE_RATE))
        # Turns wait in _turns until turn-taking places them on the track; the caller holds
        # its words until the agent has spoken, like a person who listens first.
        self._turns: deque[CallerTurn] = deque(turns)
        self._taking = turn_taking or TurnTaking()
        if after_greeting_s is None:
            self._track += audio_ulaw
        else:
            self._turns.append(CallerTurn(audio_ulaw))
            self._taking = TurnTaking(
                think_s=GREETING_GAP_S, greeting_timeout_s=after_greeting_s, answer_timeout_s=0.0
            )
        self._turns_total = len(self._turns)
        self._answer_start: float | None = None  # of the answer the next turn waits for
        self._turn_start_s: float | None = None  # of the last turn placed
        self._turn_keys_done_s = 0.0
        self._dtmf = sorted(dtmf)
        self._last_dtmf_s = max((at for at, _ in dtmf), default=0.0)
        self._linger_s = linger_s
        self._max_duration_s = max_duration_s
        self._barge_in = barge_in
        self._playback = Playback()
        self._t0: float | None = None
        self._sent = bytearray()
        self._played: list[Played] = []
        self._spurt: tuple[float, float] | None = None
        self._last_media_s = -math.inf
        self._media_bytes = 0
        self._media_received: list[tuple[float, int]] = []
        self._max_lag_s = 0.0
        self._clears: list[ClearRecord] = []
        self._marks_received: list[tuple[float, str]] = []
        self._echoes: list[EchoRecord] = []
        self._dtmf_sent: list[tuple[float, str]] = []
        self._notes: list[Note] = []
        self._unknown = 0
        self._malformed = 0
        self._end_s: float | None = None
        self._ended_by: EndReason | None = None
        self._close_code: int | None = None
        self._close_reason = ""
        self._caller_done = False
        self._error = ""

    # -- state --------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._t0 is not None

    @property
    def ended(self) -> bool:
        return self._ended_by is not None

    @property
    def frames_sent(self) -> int:
        return len(self._sent) // FRAME_BYTES

    @property
    def max_duration_s(self) -> float:
        return self._max_duration_s

    @property
    def opened_at(self) -> float | None:
        """The ``now`` given to :meth:`open` (stream start on the driver's clock)."""
        return self._t0

    def _t(self, now: float) -> float:
        if self._t0 is None:
            raise RuntimeError("call not opened")
        return now - self._t0

    def _note(self, t: float, text: str) -> None:
        self._notes.append(Note(t, text))

    # -- caller -> server ---------------------------------------------------------------------

    def open(self, now: float) -> list[str]:
        """Stream start: the ``connected`` and ``start`` frames."""
        if self._t0 is not None:
            raise RuntimeError("call already opened")
        self._t0 = now
        params = ", ".join(f"{k}={v}" for k, v in self._params.items())
        self._note(0.0, f"connected; start sent (callSid {self.call_sid}, params: {params or '-'})")
        return [self._builder.connected(), self._builder.start(self._params)]

    def next_wakeup(self) -> float:
        """Absolute time by which ``due`` must be called next (the next frame or DTMF)."""
        t0 = self._t0 if self._t0 is not None else 0.0
        at = (self.frames_sent + 1) * FRAME_S
        if self._dtmf:
            at = min(at, self._dtmf[0][0])
        return t0 + at

    def due(self, now: float) -> list[str]:
        """Frames due by ``now``: media (catching up if late, never drifting), DTMF, echoes."""
        t = self._t(now)
        out: list[str] = []
        if self.ended:
            return out
        # Playback first: turn-taking decides on what the caller has heard up to now.
        out += self._advance(t)
        self._release_turn(t)
        while True:
            frame_at = (self.frames_sent + 1) * FRAME_S
            dtmf_at = self._dtmf[0][0] if self._dtmf else math.inf
            if min(frame_at, dtmf_at) > t + _EPS:
                break
            # How late this tick is: the load generator's own health (a late caller skews
            # every latency it measures).
            self._max_lag_s = max(self._max_lag_s, t - min(frame_at, dtmf_at))
            if dtmf_at <= frame_at:
                _, digit = self._dtmf.pop(0)
                out.append(self._builder.dtmf(digit))
                self._dtmf_sent.append((t, digit))
                self._note(t, f"dtmf {digit} sent")
            else:
                k = self.frames_sent
                frame = bytes(self._track[k * FRAME_BYTES : (k + 1) * FRAME_BYTES])
                frame += ULAW_SILENCE * (FRAME_BYTES - len(frame))
                # timestamp: when the frame's first sample was spoken, ms since stream start.
                out.append(self._builder.media(frame, k * FRAME_MS))
                self._sent += frame
        out += self._advance(t)
        return out

    def _answer_heard(self) -> bool:
        """The agent has answered the last turn: a talk spurt began after the turn began
        (before the first turn: any agent audio, the greeting). Audio of an earlier answer
        that goes on over the turn (no ``clear``) is not an answer to it."""
        if self._spurt is None:
            return False
        return self._turn_start_s is None or self._spurt[0] >= self._turn_start_s - _EPS

    def _turn_done_s(self) -> float:
        """When the caller's last placed words (or keys of a turn) are out: turns wait for it.
        Fixed-time DTMF does not count, so ``--dtmf`` does not hold the caller's words back."""
        return max(len(self._track) / SAMPLE_RATE, self._turn_keys_done_s)

    def _awaiting_answer(self, t: float) -> bool:
        """The caller's last turn is out and its answer has neither started nor timed out."""
        if self._turns_total == 0 or self._turns or self._taking.answer_timeout_s <= 0:
            return False
        done = self._turn_done_s()
        return not self._answer_heard() and t < done + self._taking.answer_timeout_s - _EPS

    def _release_turn(self, t: float) -> None:
        """Place the next turn on the track once turn-taking allows it (see TurnTaking)."""
        if not self._turns:
            return
        done = self._turn_done_s()
        if t < done - _EPS:
            return  # still saying the previous turn
        taking = self._taking
        first = self._turn_start_s is None
        if not self._answer_heard():
            timeout = taking.greeting_timeout_s if first else taking.answer_timeout_s
            if t >= done + timeout - _EPS:
                what = "greeting" if first else "answer"
                self._place_turn(t, f"no {what} after {timeout:g} s")
            return
        assert self._spurt is not None
        spurt_start, spurt_end = self._spurt
        if self._answer_start is None:
            self._answer_start = spurt_start
        if self._playback.idle and t >= spurt_end + taking.think_s - _EPS:
            self._place_turn(spurt_end + taking.think_s, "")
        elif (
            taking.barge_in_after_s is not None
            and not first
            and spurt_end >= t - _EPS  # the agent is audible right now
            and t >= self._answer_start + taking.barge_in_after_s - _EPS
        ):
            self._place_turn(self._answer_start + taking.barge_in_after_s, "over the agent")

    def _place_turn(self, at_s: float, why: str) -> None:
        turn = self._turns.popleft()
        self._answer_start = None
        # Never before what was already said, and never in a frame that already left.
        floor = max(len(self._sent), len(self._track))
        words_at = max(floor, round(at_s * SAMPLE_RATE))
        lead = min(round(turn.lead_s * SAMPLE_RATE), len(turn.audio))
        at = max(floor, words_at - lead)
        self._track += ULAW_SILENCE * (at - len(self._track)) + turn.audio[lead - (words_at - at) :]
        start_s = self._turn_start_s = at / SAMPLE_RATE
        for offset, digit in turn.dtmf:
            bisect.insort(self._dtmf, (start_s + offset, digit))
            self._last_dtmf_s = max(self._last_dtmf_s, start_s + offset)
            self._turn_keys_done_s = max(self._turn_keys_done_s, start_s + offset)
        n = self._turns_total - len(self._turns)
        what = "caller starts talking" if turn.audio else "caller starts keying"
        turn_of = f"turn {n} of {self._turns_total}" if self._turns_total > 1 else ""
        detail = ", ".join(x for x in (turn_of, why) if x)
        self._note(start_s, what + (f" ({detail})" if detail else ""))

    def _advance(self, t: float) -> list[str]:
        played, echoes = self._playback.advance(t)
        self._on_played(played, t)
        return self._echo(t, echoes)

    def _on_played(self, played: list[Played], t: float) -> None:
        # Runs are merged once, in result(): merging per tick would copy the audio each time.
        self._played += played
        for run in played:
            if self._spurt is not None and run.start - self._spurt[1] < SPURT_GAP_S:
                self._spurt = (self._spurt[0], run.end)
            else:
                self._spurt = (run.start, run.end)
        barge = self._barge_in
        if (
            barge is not None
            and self._spurt is not None
            and t >= barge.not_before_s
            and self._spurt[1] >= t - _EPS  # the agent is audible right now
            and t - self._spurt[0] >= barge.after_s
        ):
            self._barge_in = None
            at = max(len(self._sent), round(t * SAMPLE_RATE))
            end = at + len(barge.audio)
            if len(self._track) < end:
                self._track += ULAW_SILENCE * (end - len(self._track))
            self._track[at:end] = barge.audio
            self._note(at / SAMPLE_RATE, "caller barges in")

    def _echo(self, t: float, echoes: list[MarkEcho]) -> list[str]:
        out: list[str] = []
        for echo in echoes:
            out.append(self._builder.mark(echo.name))
            self._echoes.append(EchoRecord(echo.name, echo.time, t, echo.cleared))
            how = " (flushed by clear)" if echo.cleared else ""
            self._note(t, f"mark {echo.name!r} echoed{how}")
        return out

    # -- server -> caller ---------------------------------------------------------------------

    def receive(self, now: float, frame: str | bytes) -> list[str]:
        """Handle one server frame; return the mark echoes it caused."""
        t = self._t(now)
        if self.ended:
            return []
        # Bring playback up to now first, so new audio queues behind what really is left.
        out = self._advance(t)
        if isinstance(frame, bytes):
            self._malformed += 1
            self._note(t, f"binary frame ({len(frame)} bytes) ignored")
            return out
        try:
            event = parse_outbound(frame)
        except UnknownEvent as exc:
            self._unknown += 1
            self._note(t, f"unknown event {exc.event!r} ignored")
            return out
        except ProtocolError as exc:
            self._malformed += 1
            self._note(t, f"malformed frame ignored: {exc}")
            return out
        if event.stream_sid != self.stream_sid:
            self._malformed += 1
            self._note(t, f"frame for another stream {event.stream_sid!r} ignored")
            return out
        if isinstance(event, OutboundMedia):
            self._media_received.append((t, self._media_bytes))
            self._playback.push_media(t, event.payload)
            self._media_bytes += len(event.payload)
            if event.payload:
                self._last_media_s = t
        elif isinstance(event, OutboundMark):
            self._playback.push_mark(t, event.name)
            self._marks_received.append((t, event.name))
            self._note(t, f"mark {event.name!r} received")
        elif isinstance(event, OutboundClear):
            dropped = self._playback.queued_bytes / SAMPLE_RATE
            played, echoes = self._playback.clear(t)
            self._on_played(played, t)
            marks = tuple(e.name for e in echoes if e.cleared)
            self._clears.append(ClearRecord(t, dropped, marks))
            self._note(t, f"clear received: {dropped * 1000:.0f} ms of agent audio dropped")
            out += self._echo(t, echoes)
        return out + self._advance(t)

    # -- the end ------------------------------------------------------------------------------

    def caller_done_s(self) -> float:
        """Stream time when the caller's audio and DTMF are all out (grows on barge-in)."""
        return max(len(self._track) / SAMPLE_RATE, self._last_dtmf_s)

    def should_end(self, now: float) -> EndReason | None:
        """``caller`` once the caller is done and the agent has been quiet for ``linger_s``;
        ``max_duration`` at the limit; else None."""
        t = self._t(now)
        if self.ended:
            return None
        if t >= self._max_duration_s - _EPS:
            return "max_duration"
        if (
            self._turns
            or len(self._sent) < len(self._track)
            or self._dtmf
            or not self._playback.idle
            or self._awaiting_answer(t)
        ):
            return None
        spurt_end = self._spurt[1] if self._spurt is not None else -math.inf
        quiet_since = max(self.caller_done_s(), spurt_end, self._last_media_s)
        return "caller" if t >= quiet_since + self._linger_s - _EPS else None

    def finish(self, now: float, reason: EndReason = "caller") -> list[str]:
        """The caller ends the call: the ``stop`` frame (the socket is closed after it)."""
        t = self._t(now)
        if self.ended:
            return []
        self._advance(t)  # echoes due now would arrive after stop: Twilio drops them too
        self._end(t, reason)
        self._note(t, f"stop sent ({reason})")
        return [self._builder.stop()]

    def server_closed(self, now: float, code: int | None, reason: str) -> None:
        """The socket closed; when the caller had not ended the call, the server did."""
        t = self._t(now) if self._t0 is not None else 0.0
        self._close_code, self._close_reason = code, reason
        if not self.ended:
            if self._t0 is not None:
                self._advance(t)
            self._end(t, "server")
            self._note(
                t, f"server closed the socket (code {code}{', ' + reason if reason else ''})"
            )

    def abort(self, now: float, why: str) -> None:
        """The call broke off (I/O error, overall timeout)."""
        if not self.ended:
            t = self._t(now) if self._t0 is not None else 0.0
            self._end(t, "error")
            self._error = why
            self._note(t, f"call aborted: {why}")

    def _end(self, t: float, reason: EndReason) -> None:
        self._end_s = t
        self._ended_by = reason
        # Done when nothing the caller meant to say is left: unsent silence (the quiet end
        # of a recording, say) does not count.
        rest = ulaw_8k_to_pcm16(self._track[len(self._sent) :])
        self._caller_done = (
            not self._turns and not self._dtmf and not speech_segments(rest, SAMPLE_RATE)
        )

    def result(self) -> CallResult:
        """The call as the caller experienced it (call after it ended)."""
        end_s = self._end_s if self._end_s is not None else 0.0
        length = max(len(self._sent), round(end_s * SAMPLE_RATE))
        caller_audio = bytes(self._sent) + ULAW_SILENCE * (length - len(self._sent))
        segments = speech_segments(ulaw_8k_to_pcm16(caller_audio), SAMPLE_RATE)
        played = merge_runs(self._played)
        spurts = talk_spurts(played)
        gaps = find_gaps(
            played,
            segments,
            [c.time_s for c in self._clears],
            [at for at, _ in self._dtmf_sent],
        )
        return CallResult(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            duration_s=length / SAMPLE_RATE,
            ended_by=self._ended_by or "error",
            caller_audio=caller_audio,
            heard_audio=assemble_heard(played, length),
            played=played,
            time_to_first_audio_s=played[0].start if played else None,
            caller_segments=segments,
            agent_spurts=spurts,
            turns=response_turns(segments, spurts),
            interruptions=match_interruptions(segments, spurts, self._clears),
            clears=list(self._clears),
            marks_received=list(self._marks_received),
            marks_echoed=list(self._echoes),
            dtmf_sent=list(self._dtmf_sent),
            frames_sent=self.frames_sent,
            media_bytes_received=self._media_bytes,
            unknown_frames=self._unknown,
            malformed_frames=self._malformed,
            close_code=self._close_code,
            close_reason=self._close_reason,
            notes=list(self._notes),
            media_received=list(self._media_received),
            started_at=self._t0 if self._t0 is not None else 0.0,
            gaps=gaps,
            max_send_lag_s=self._max_lag_s,
            caller_done=self._caller_done,
            error=self._error,
        )


# ---------------------------------------------------------------------------------------------
# I/O: WebSocket, files, CLI
# ---------------------------------------------------------------------------------------------


def _with_scheme(url: str, mapping: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=mapping.get(parts.scheme, parts.scheme)))


def signature_url_for(url: str) -> str:
    """The URL Twilio signs the upgrade with: the secure form, as written in ``<Stream url>``."""
    return _with_scheme(url, {"ws": "wss", "http": "https"})


async def place_call(
    url: str,
    audio_ulaw: bytes,
    *,
    auth_token: str | None = None,
    signature_url: str | None = None,
    custom_parameters: Mapping[str, str] | None = None,
    call_sid: str | None = None,
    stream_sid: str | None = None,
    account_sid: str | None = None,
    dtmf: Sequence[tuple[float, str]] = (),
    lead_silence_s: float = 0.0,
    linger_s: float = 3.0,
    max_duration_s: float = 120.0,
    barge_in: BargeIn | None = None,
    after_greeting_s: float | None = None,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
) -> CallResult:
    """Call the Media Streams endpoint at ``url`` as Twilio would and report what was heard.

    ``audio_ulaw`` (8 kHz μ-law) is what the caller says, after ``lead_silence_s`` of silence
    (and, with ``after_greeting_s``, once the agent's greeting has played, or that many
    seconds have passed without one);
    ``dtmf`` holds ``(seconds since stream start, digit)``; ``barge_in`` makes the caller talk
    over the agent. Once the caller is done, the line stays open (silence frames) until the
    agent has been quiet for ``linger_s``; the server may hang up first; ``max_duration_s``
    caps the call. With ``auth_token`` the upgrade carries ``X-Twilio-Signature`` over
    ``signature_url`` (default: the ``wss://`` form of ``url``).

    Raises :class:`CallFailed` when the connection cannot be established; once connected,
    every ending (including an abnormal close) is reported in the :class:`CallResult`.
    """
    call = SimulatedCall(
        audio_ulaw,
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=account_sid,
        custom_parameters=custom_parameters,
        dtmf=dtmf,
        lead_silence_s=lead_silence_s,
        linger_s=linger_s,
        max_duration_s=max_duration_s,
        barge_in=barge_in,
        after_greeting_s=after_greeting_s,
    )
    return await run_call(
        url,
        call,
        headers=connect_headers(url, auth_token, signature_url),
        connect_timeout_s=connect_timeout_s,
        close_timeout_s=close_timeout_s,
    )


async def run_call(
    url: str,
    call: SimulatedCall,
    *,
    headers: Mapping[str, str] | None = None,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
) -> CallResult:
    """Connect to ``url`` (:func:`open_stream`), play ``call`` (:func:`drive_call`) and
    return its result. Raises :class:`CallFailed` when the connection cannot be made."""
    ws = await open_stream(
        url, headers=headers, connect_timeout_s=connect_timeout_s, close_timeout_s=close_timeout_s
    )
    await drive_call(ws, call, close_timeout_s=close_timeout_s)
    return call.result()


def connect_headers(
    url: str, auth_token: str | None = None, signature_url: str | None = None
) -> dict[str, str]:
    """Headers of Twilio's upgrade request: ``X-Twilio-Signature`` over ``signature_url``
    (default: the ``wss://`` form of ``url``) when ``auth_token`` is given."""
    if auth_token is None:
        return {}
    return {SIGNATURE_HEADER: sign(auth_token, signature_url or signature_url_for(url), {})}


async def open_stream(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
) -> ClientConnection:
    """Open the Media Stream WebSocket as Twilio does (no compression).

    Raises :class:`CallFailed`, classified: refused, timed out, handshake rejected (with the
    HTTP status, e.g. 403 for a bad signature) or another connection/handshake error.
    """
    try:
        return await connect(
            websocket_url(url), **connect_options(headers, connect_timeout_s, close_timeout_s)
        )
    except (OSError, WebSocketException) as exc:
        raise connect_failure(url, exc) from exc


def connect_options(
    headers: Mapping[str, str] | None, connect_timeout_s: float, close_timeout_s: float
) -> dict[str, Any]:
    """websockets client options for a Media Stream (shared by the asyncio and sync drivers)."""
    return {
        "additional_headers": dict(headers or {}),
        "open_timeout": connect_timeout_s,
        "close_timeout": close_timeout_s,
        "compression": None,  # Twilio doesn't compress
        # Servers may send long utterances in one media message.
        "max_size": MAX_SERVER_MESSAGE,
    }


#: The largest server message accepted (servers may send a long utterance in one message).
MAX_SERVER_MESSAGE: Final = 2**24


def websocket_url(url: str) -> str:
    """``url`` with an ``http``/``https`` scheme turned into ``ws``/``wss``."""
    return _with_scheme(url, {"http": "ws", "https": "wss"})


def connect_failure(url: str, exc: OSError | WebSocketException) -> CallFailed:
    """Why opening the stream at ``url`` failed, as a classified :class:`CallFailed`
    (shared by the asyncio and the synchronous drivers)."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return CallFailed(
            f"{url} rejected the upgrade with HTTP {status}", "handshake_rejected", status
        )
    if isinstance(exc, ConnectionRefusedError):
        return CallFailed(f"could not connect to {url}: {exc!r}", "connect_refused")
    if isinstance(exc, TimeoutError):
        return CallFailed(f"could not connect to {url}: timed out", "connect_timeout")
    if isinstance(exc, OSError):
        return CallFailed(f"could not connect to {url}: {exc!r}", "connect_error")
    return CallFailed(f"could not connect to {url}: {exc!r}", "handshake_error")


async def drive_call(
    ws: ClientConnection, call: SimulatedCall, *, close_timeout_s: float = 5.0
) -> None:
    """Play ``call`` over the open socket ``ws`` until it ends (the caller hangs up, the
    server closes, or the call's ``max_duration_s`` plus the close handshake has passed).

    Cancelling it drops the TCP connection at once; the caller then records how the call
    ended with :meth:`SimulatedCall.abort` and still gets its :meth:`~SimulatedCall.result`.
    """
    loop = asyncio.get_running_loop()
    try:
        # The overall bound: the caller ends the call at max_duration_s in any case.
        async with asyncio.timeout(call.max_duration_s + close_timeout_s + 5.0):
            try:
                for frame in call.open(loop.time()):
                    await ws.send(frame)
            except ConnectionClosed:
                pass
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_send_loop(ws, call))
                tg.create_task(_receive_loop(ws, call))
    except TimeoutError:
        call.abort(loop.time(), "overall timeout")
    finally:
        if ws.state is not State.CLOSED:
            # Cancelled or timed out mid-call: drop the TCP connection, do not wait for it.
            ws.transport.abort()


async def _send_loop(ws: ClientConnection, call: SimulatedCall) -> None:
    loop = asyncio.get_running_loop()
    try:
        while not call.ended:
            now = loop.time()
            for frame in call.due(now):
                await ws.send(frame)
            reason = call.should_end(now)
            if reason is not None:
                for frame in call.finish(now, reason):
                    await ws.send(frame)
                await ws.close()  # bounded by close_timeout
                return
            await asyncio.sleep(max(0.0, call.next_wakeup() - loop.time()))
    except ConnectionClosed:
        pass  # the receive loop records how it closed


async def _receive_loop(ws: ClientConnection, call: SimulatedCall) -> None:
    loop = asyncio.get_running_loop()
    try:
        async for frame in ws:
            for reply in call.receive(loop.time(), frame):
                await ws.send(reply)
    except ConnectionClosed:
        pass
    call.server_closed(loop.time(), ws.close_code, ws.close_reason or "")


def load_caller_audio(path: str | Path, channel: int | None = None) -> bytes:
    """Read any audio file soundfile can (WAV, FLAC, OGG; any rate, mono or multichannel)
    as 8 kHz μ-law: channels are mixed down, or ``channel`` (0-based) is picked."""
    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    if channel is not None:
        if not 0 <= channel < data.shape[1]:
            raise ValueError(f"{path}: no channel {channel} (it has {data.shape[1]})")
        mono = data[:, channel]
    elif data.shape[1] == 1:
        mono = data[:, 0]
    else:
        mono = np.round(data.mean(axis=1, dtype=np.float64)).astype("<i2")
    return pcm16_to_ulaw_8k(np.ascontiguousarray(mono, dtype="<i2").tobytes(), int(rate))


def load_recorded_call(path: str | Path) -> RecordedCall:
    """Read a call our server recorded (``RECORD_CALLS``; see :mod:`telephony.call.recorder`).

    The directory holds ``caller.wav`` (the caller's audio from stream start, 8 kHz 16-bit:
    read back as μ-law, bit-exact) and ``events.jsonl`` (a ``meta`` line with the call's SIDs
    and ``custom_parameters``, then timed events, of which ``dtmf`` is replayed). A last line
    cut short (a crash while writing) is ignored; any other bad line is an error.
    """
    root = Path(path)
    events_path, caller_path = root / "events.jsonl", root / "caller.wav"
    if not events_path.is_file() or not caller_path.is_file():
        raise RecordingError(
            f"{root}: not a recorded call (needs caller.wav and events.jsonl; "
            "events.jsonl is written last, so a directory without it is incomplete)"
        )
    lines = events_path.read_bytes().split(b"\n")
    events: list[dict[str, object]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            if number == len(lines):  # no newline after it: cut short
                break
            raise RecordingError(f"{events_path}:{number}: not JSON") from None
        if not isinstance(event, dict):
            raise RecordingError(f"{events_path}:{number}: not a JSON object")
        events.append(event)
    meta = events[0] if events and events[0].get("type") == "meta" else None
    if meta is None:
        raise RecordingError(f"{events_path}: the first line must be the meta line")
    version = meta.get("version")
    if not isinstance(version, int) or version > RECORDING_FORMAT_VERSION:
        raise RecordingError(
            f"{events_path}: format version {version!r}, this reader knows up to "
            f"{RECORDING_FORMAT_VERSION}"
        )
    dtmf: list[tuple[float, str]] = []
    for event in events[1:]:
        t, digit = event.get("t"), event.get("digit")
        if event.get("type") != "dtmf":
            continue
        if not isinstance(t, int | float) or t < 0 or not isinstance(digit, str):
            raise RecordingError(f"{events_path}: bad dtmf event {event!r}")
        if digit not in DTMF_DIGITS:
            raise RecordingError(f"{events_path}: not a DTMF digit {digit!r}")
        dtmf.append((float(t), digit))
    params = meta.get("custom_parameters") or {}
    if not isinstance(params, dict):
        raise RecordingError(f"{events_path}: custom_parameters is not an object")
    try:
        audio = load_caller_audio(caller_path)
    except (OSError, sf.LibsndfileError, ValueError) as exc:
        raise RecordingError(f"{caller_path}: {exc}") from exc
    call_sid, stream_sid = meta.get("call_sid"), meta.get("stream_sid")
    return RecordedCall(
        source=str(root),
        audio=audio,
        dtmf=tuple(sorted(dtmf)),
        custom_parameters={str(k): str(v) for k, v in params.items()},
        call_sid=call_sid if isinstance(call_sid, str) else None,
        stream_sid=stream_sid if isinstance(stream_sid, str) else None,
    )


def load_recording(path: str | Path, channel: int | None = None) -> RecordedCall:
    """A recorded call directory (:func:`load_recorded_call`) or an audio file of what the
    caller says (:func:`load_caller_audio`: any rate; ``channel`` picks the caller's channel
    of a multichannel file, else channels are mixed)."""
    p = Path(path)
    if p.is_dir():
        return load_recorded_call(p)
    try:
        return RecordedCall(source=str(p), audio=load_caller_audio(p, channel))
    except (OSError, sf.LibsndfileError, ValueError) as exc:
        raise RecordingError(f"{p}: cannot read audio: {exc}") from exc


def simulated_call(
    recording: RecordedCall,
    mode: ReplayMode,
    *,
    turn_taking: TurnTaking | None = None,
    turns: Sequence[CallerTurn] | None = None,
    custom_parameters: Mapping[str, str] | None = None,
    call_sid: str | None = None,
    stream_sid: str | None = None,
    account_sid: str | None = None,
    linger_s: float = 3.0,
    max_duration_s: float = 120.0,
) -> SimulatedCall:
    """A :class:`SimulatedCall` that replays ``recording`` in ``mode``.

    ``realtime``: the caller's track and key presses exactly as recorded, from stream start.
    ``turns``/``barge-in``: the recording's turns (``turns``, default
    :meth:`RecordedCall.turns`) placed by ``turn_taking``; ``barge-in`` talks over each
    answer after ``turn_taking.barge_in_after_s`` (0.5 s when unset), ``turns`` never does.
    The recording's ``custom_parameters`` go into ``start`` unless others are given.
    """
    common: dict[str, Any] = {
        "custom_parameters": (
            recording.custom_parameters if custom_parameters is None else custom_parameters
        ),
        "call_sid": call_sid,
        "stream_sid": stream_sid,
        "account_sid": account_sid,
        "linger_s": linger_s,
        "max_duration_s": max_duration_s,
    }
    if mode == "realtime":
        return SimulatedCall(recording.audio, dtmf=recording.dtmf, **common)
    taking = turn_taking or TurnTaking()
    if mode == "barge-in" and taking.barge_in_after_s is None:
        taking = replace(taking, barge_in_after_s=0.5)
    elif mode == "turns" and taking.barge_in_after_s is not None:
        taking = replace(taking, barge_in_after_s=None)
    script = recording.turns() if turns is None else turns
    return SimulatedCall(b"", turns=script, turn_taking=taking, **common)


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


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected k=v, got {text!r}")
    return key, value


def _parse_dtmf(text: str) -> tuple[float, str]:
    at, sep, digits = text.partition(":")
    try:
        seconds = float(at)
    except ValueError:
        seconds = -1.0
    if not sep or seconds < 0 or len(digits) != 1 or digits not in DTMF_DIGITS:
        raise argparse.ArgumentTypeError(f"expected SECONDS:DIGIT (e.g. 3.5:4), got {text!r}")
    return seconds, digits


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voice-agent call",
        description="Place a simulated Twilio call against a running server and report it.",
    )
    p.add_argument(
        "audio",
        nargs="?",
        default=None,
        help="what the caller says: an audio file (WAV/FLAC/OGG, any rate) or a call the "
        "server recorded (a RECORD_CALLS directory); default: a bundled sample of read "
        "speech (public domain)",
    )
    p.add_argument("--url", default="ws://127.0.0.1:8080/twilio/media")
    p.add_argument("--out", default="heard.wav", help="WAV of what the caller heard")
    p.add_argument("--stereo", action="store_true", help="caller on the right channel")
    p.add_argument("--channel", type=int, default=None, help="pick one input channel")
    p.add_argument("--auth-token", default=None, help="sign the upgrade like Twilio")
    p.add_argument("--signature-url", default=None, help="URL to sign (default: wss:// form)")
    p.add_argument("--param", type=_parse_param, action="append", default=[], metavar="K=V")
    p.add_argument(
        "--replay",
        choices=["whole", "realtime", "turns", "barge-in"],
        default=None,
        help="whole: say all of it after the greeting (default for audio files); realtime: "
        "exactly as recorded (default for recorded calls); turns: utterance by utterance, "
        "each after the agent's answer; barge-in: each over the agent's answer",
    )
    p.add_argument("--think-time", type=float, default=GREETING_GAP_S, metavar="S")
    p.add_argument("--answer-timeout", type=float, default=8.0, metavar="S")
    p.add_argument("--dtmf", type=_parse_dtmf, action="append", default=[], metavar="S:DIGIT")
    p.add_argument(
        "--lead-silence",
        type=float,
        default=None,
        metavar="S",
        help="talk after S seconds (default: after the agent's greeting, or 5 s without one)",
    )
    p.add_argument("--verbose", action="store_true", help="also list every mark sent and echoed")
    p.add_argument("--linger", type=float, default=3.0, metavar="S")
    p.add_argument("--max-duration", type=float, default=120.0, metavar="S")
    p.add_argument("--barge-in", default=None, metavar="AUDIO", help="talk over the agent")
    p.add_argument(
        "--barge-in-after",
        type=float,
        default=0.5,
        metavar="S",
        help="with --barge-in or --replay barge-in: once the agent has spoken for S seconds",
    )
    p.add_argument("--barge-in-not-before", type=float, default=0.0, metavar="S")
    return p


_REPLAY_MODES: Final[dict[str, ReplayMode]] = {
    "realtime": "realtime",
    "turns": "turns",
    "barge-in": "barge-in",
}


def caller_identity(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with Twilio-like ``from``/``to``/``direction`` where they are missing, as
    the server's own webhook would have passed them (Twilio's test numbers)."""
    return {"from": SIMULATED_FROM, "to": SIMULATED_TO, "direction": "inbound", **params}


def _call_from_args(args: argparse.Namespace) -> SimulatedCall:
    recording = load_recording(args.audio, args.channel)
    name = args.replay or ("realtime" if Path(args.audio).is_dir() else "whole")
    mode = _REPLAY_MODES.get(name)
    if mode is not None:
        if args.dtmf or args.lead_silence is not None or args.barge_in is not None:
            raise ValueError("--dtmf, --lead-silence and --barge-in go with --replay whole")
        taking = TurnTaking(
            think_s=args.think_time,
            answer_timeout_s=args.answer_timeout,
            barge_in_after_s=args.barge_in_after,
        )
        return simulated_call(
            recording,
            mode,
            turn_taking=taking,
            custom_parameters=caller_identity({**recording.custom_parameters, **dict(args.param)}),
            linger_s=args.linger,
            max_duration_s=args.max_duration,
        )
    barge_in = None
    if args.barge_in is not None:
        barge_in = BargeIn(
            load_caller_audio(args.barge_in, args.channel),
            after_s=args.barge_in_after,
            not_before_s=args.barge_in_not_before,
        )
    return SimulatedCall(
        recording.audio,
        custom_parameters=caller_identity({**recording.custom_parameters, **dict(args.param)}),
        dtmf=[*recording.dtmf, *args.dtmf],
        lead_silence_s=args.lead_silence or 0.0,
        # By default the caller listens to the greeting first, as people do.
        after_greeting_s=None if args.lead_silence is not None else 5.0,
        linger_s=args.linger,
        max_duration_s=args.max_duration,
        barge_in=barge_in,
    )


def main(argv: list[str] | None = None) -> int:
    """``voice-agent call``: 0 for a normal call, 1 for an abnormal close, 2 when the call
    could not be placed (or the input could not be read)."""
    args = _build_parser().parse_args(argv)
    if args.audio is None:
        from telephony.caller import samples

        args.audio = str(samples.DEFAULT)
        print(f"caller says: {samples.transcript(samples.DEFAULT)!r} (bundled sample)")
    try:
        call = _call_from_args(args)
    except (OSError, ValueError, sf.LibsndfileError) as exc:
        print(f"error: cannot read audio: {exc}", file=sys.stderr)
        return 2
    headers = connect_headers(args.url, args.auth_token, args.signature_url)
    try:
        result = asyncio.run(run_call(args.url, call, headers=headers))
    except CallFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in result.timeline():
        if args.verbose or " mark '" not in line:
            print(line)
    print()
    for line in result.summary():
        print(line)
    result.write_wav(args.out, stereo=args.stereo)
    print(f"heard audio written to {args.out}")
    normal = result.ended_by != "error" and result.close_code in (None, 1000, 1001)
    return 0 if normal else 1
