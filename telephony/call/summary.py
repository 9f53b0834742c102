"""What happened on a call: its summary, built by the bridge, read by records and metrics.

Pure data with no dependencies beyond the standard library, so the record store, the metrics
and ``voice-agent calls`` can use it without importing the bridge or the google-genai SDK.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PARAMETER_MAX_CHARS",
    "CallSummary",
    "Interruption",
    "Outcome",
    "Turn",
    "call_parameters",
    "clean_text",
    "join_fragments",
]

#: The longest ``from``/``to``/``direction`` kept from a stream's ``customParameters`` (what
#: the record's columns hold; an E.164 number is at most 16 characters, a SIP URI a few dozen).
PARAMETER_MAX_CHARS = 64


class Outcome(enum.StrEnum):
    """How a call ended (also what the ``<Connect action>`` answer is decided from)."""

    COMPLETED = "completed"  # the caller hung up / Twilio stopped the stream
    ENDED_BY_AGENT = "ended_by_agent"
    TRANSFER = "transfer"
    FAILED = "failed"  # the model could not be reached or was lost
    REJECTED = "rejected"  # the stream itself was invalid (never started, hostile)
    SHUTDOWN = "shutdown"  # the server stopped before the call ended


@dataclass(slots=True)
class Turn:
    """One exchange: what the caller said since the last turn, and the agent's answer.

    Times are seconds since the stream started. ``agent`` is what the model generated; when
    the caller talked over it (``interrupted``), ``agent_heard`` is the part they heard.
    """

    at_s: float  # when the turn completed
    caller: str = ""
    agent: str = ""
    interrupted: bool = False
    agent_audio_ms: int = 0  # agent audio of the turn sent to Twilio
    caller_at_s: float | None = None  # when the caller began this turn's words
    agent_at_s: float | None = None  # when the agent's first audio of the turn was sent
    response_ms: float | None = None  # end of the caller's speech → that first audio
    agent_heard: str | None = None

    def fields(self) -> dict[str, Any]:
        """As logged (``call.turn``) and recorded: the optional fields only when known."""
        out: dict[str, Any] = {
            "at_s": self.at_s,
            "caller": self.caller,
            "agent": self.agent,
            "interrupted": self.interrupted,
            "agent_audio_ms": self.agent_audio_ms,
        }
        for name in ("caller_at_s", "agent_at_s", "response_ms", "agent_heard"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass
class Interruption:
    """One barge-in: what the caller heard of the agent turn that was cut off."""

    at_s: float  # seconds since the stream started
    clear_latency_ms: float  # `interrupted` received → `clear` sent
    sent_ms: float  # agent audio of that turn sent to Twilio
    heard_ms: float  # of which the caller heard (confirmed by marks + estimate since the last)
    confirmed_ms: float  # of which confirmed by a mark echo
    transcript_heard: str  # the turn's transcript cut to what was heard (approximate)


@dataclass
class CallSummary:
    """What happened on a call (logged at the end; kept by the server for inspection)."""

    call_sid: str = ""
    stream_sid: str = ""
    direction: str = ""  # "inbound" or "outbound" (placed by us through Twilio REST)
    caller: str = ""
    callee: str = ""
    outcome: Outcome = Outcome.REJECTED
    reason: str = ""
    started_at: float = field(default_factory=time.time)
    duration_s: float = 0.0
    model_connect_ms: float | None = None
    first_audio_ms: float | None = None  # stream start → first agent audio sent to Twilio
    turns: list[Turn] = field(default_factory=list)
    interruptions: list[Interruption] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    frames_in: int = 0
    frames_out: int = 0
    bad_frames: int = 0
    model_audio_damaged: int = (
        0  # model audio chunks skipped or trimmed (agent.events.AudioDamaged)
    )
    dropped_pre_session_frames: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "response": 0, "total": 0})
    reconnects: int = 0
    stalls: int = 0
    stalls_recovered: int = 0
    silent_answers: int = 0  # answers at near-zero amplitude (recovered like stalls)
    rejected_answers: int = 0  # empty turns ending RESPONSE_REJECTED
    agent_audio_dropped_ms: float = 0.0  # held agent audio over its bound (should be 0)
    filler_ms: int = 0  # "working on it" sound played while blocking tools ran
    model_connections: list[dict[str, Any]] = field(default_factory=list)
    caller_audio_ms: float = 0.0
    caller_audio_dropped_ms: float = 0.0  # beyond the reconnect buffer (should be 0)
    max_buffered_ms: float = 0.0
    rest_failures: int = 0  # Twilio REST hang-up/redirect requests that failed
    recording_failed: bool = False  # RECORD_CALLS could not write this call


#: A fragment ending in one of these closes a unit (a sentence, a bracketed note).
_CLOSERS = frozenset(".!?]")


def join_fragments(parts: list[str]) -> str:
    """Transcript fragments as one text.

    The Live API streams transcriptions in pieces that carry their own spacing (" how",
    " are you"), so pieces are joined as they are, except where one piece ends a sentence or
    a bracketed note and the next starts without a space ("...today?" + "Yes"): then a space
    goes between them. Mid-word splits ("Hel" + "lo") are never separated.
    """
    out: list[str] = []
    for part in parts:
        if not part:
            continue
        if out and out[-1][-1] in _CLOSERS and not part[0].isspace() and part[0] not in _CLOSERS:
            out.append(" ")
        out.append(part)
    return "".join(out).strip()


def clean_text(value: object, limit: int) -> str:
    """``value`` as text of at most ``limit`` characters, without control characters (NUL is
    refused by PostgreSQL; newlines and escapes would forge log lines)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > 4 * limit:
        text = text[: 4 * limit]  # bound the work on hostile input before cleaning
    if not text.isprintable():
        text = "".join(c for c in text if c.isprintable())
    return text[:limit]


def call_parameters(params: Mapping[str, str]) -> tuple[str, str, str]:
    """``(from, to, direction)`` from a stream's ``customParameters``, cleaned and bounded.

    The parameters come from the TwiML we returned, but anyone who can open the stream can
    send any: they are never trusted to fit the record's columns or a log line.
    """
    return (
        clean_text(params.get("from", ""), PARAMETER_MAX_CHARS),
        clean_text(params.get("to", ""), PARAMETER_MAX_CHARS),
        clean_text(params.get("direction", ""), PARAMETER_MAX_CHARS),
    )
