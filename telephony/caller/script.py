"""What the caller says and when: the script of a simulated call, pure (no I/O, no clock).
:class:`CallerTurn` is one turn of the caller (audio and key presses), :func:`split_turns`
cuts a caller track into turns, :class:`TurnTaking` says when each turn starts (after the
agent's answer has played, or over it) and :class:`BargeIn` talks over the agent once;
``ReplayMode`` names how a recording is replayed, and :func:`caller_identity` gives a
simulated call the Twilio-like numbers the server's webhook would have passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from agent.vad import speech_segments
from telephony.audio import ulaw_8k_to_pcm16
from telephony.twilio.media_stream import SAMPLE_RATE

__all__ = [
    "DTMF_GROUP_S",
    "EPS",
    "GREETING_GAP_S",
    "SIMULATED_FROM",
    "SIMULATED_TO",
    "TURN_LEAD_PAD_S",
    "TURN_TAIL_PAD_S",
    "BargeIn",
    "CallerTurn",
    "ReplayMode",
    "TurnTaking",
    "caller_identity",
    "split_turns",
]

#: With after_greeting_s, the caller starts talking once the agent has been quiet this long.
GREETING_GAP_S: Final = 0.6
#: Around each utterance cut out of a recording, keep this much of the quiet before and after
#: it (soft onsets and tails sit below the VAD threshold), never past half the pause.
TURN_LEAD_PAD_S: Final = 0.1
TURN_TAIL_PAD_S: Final = 0.2
#: Key presses closer than this to the previous part of a turn belong to that turn (a PIN is
#: one turn, not four).
DTMF_GROUP_S: Final = 1.5
#: Tolerance of comparisons between times in seconds (shared by the whole simulator).
EPS: Final = 1e-9
#: Caller and callee of simulated calls that name none: Twilio's documented test numbers.
SIMULATED_FROM: Final = "+15005550006"
SIMULATED_TO: Final = "+15005550001"

#: How a recording is replayed: ``realtime`` = exactly as recorded/in the file, from stream
#: start; ``turns`` = utterance by utterance, each after the agent's answer to the previous
#: one has played; ``barge-in`` = like ``turns``, but each next utterance starts over the
#: agent's answer.
ReplayMode = Literal["realtime", "turns", "barge-in"]


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
class BargeIn:
    """The caller talks over the agent: ``audio`` (8 kHz μ-law) starts once the agent has
    been audible for ``after_s`` without a break, at or after ``not_before_s`` (stream time).
    Fires once."""

    audio: bytes
    after_s: float = 0.5
    not_before_s: float = 0.0


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
        last = max((d for d in turns if d.start <= at + EPS), key=lambda d: d.start, default=None)
        if last is not None and at - last.end <= dtmf_group_s + EPS:
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


def caller_identity(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with Twilio-like ``from``/``to``/``direction`` where they are missing, as
    the server's own webhook would have passed them (Twilio's test numbers)."""
    return {"from": SIMULATED_FROM, "to": SIMULATED_TO, "direction": "inbound", **params}
