"""The model side's whole interface: the events a conversation yields and the errors it raises.

A call talks to the model through a conversation (``agent.resilient.ResilientSession``, or
one ``agent.session.AgentSession``): 16 kHz PCM16 and text in, these events out. Nothing here
knows about Twilio, HTTP or the SDK, so a fake conversation in a unit test, another transport,
or another model provider can stand behind the same types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "AgentError",
    "AgentEvent",
    "AudioDamaged",
    "AudioOut",
    "ConversationEvent",
    "FunctionCall",
    "GenerationComplete",
    "GoAway",
    "InputTranscript",
    "Interrupted",
    "ModelUnavailable",
    "OutputTranscript",
    "Reconnected",
    "ResumptionUpdate",
    "SessionClosed",
    "ToolCall",
    "ToolCallCancellation",
    "TurnComplete",
    "Usage",
]

# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioOut:
    """Model speech: 24 kHz PCM16 LE mono."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The caller spoke over the model: its current generation was cancelled."""


@dataclass(frozen=True, slots=True)
class GenerationComplete:
    """The model finished generating this turn (its audio may still be playing)."""


@dataclass(frozen=True, slots=True)
class TurnComplete:
    """The model's turn is over; it now waits for the caller.

    ``reason`` is the Live API's ``turnCompleteReason`` when it gave one (e.g.
    ``RESPONSE_REJECTED``: the model produced no answer)."""

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AudioDamaged:
    """Model audio that could not be used as sent: ``reason`` is ``"base64"`` (undecodable,
    skipped) or ``"odd length"`` (a chunk of PCM16 with a dangling byte, which was dropped).

    Each Live API message carries whole samples, so a dangling byte is damage, not the first
    half of a sample that the next chunk completes: carrying it over would shift every later
    sample by a byte and turn the rest of the turn into noise.
    """

    reason: str
    nbytes: int


@dataclass(frozen=True, slots=True)
class InputTranscript:
    """A piece of the transcript of what the caller said."""

    text: str


@dataclass(frozen=True, slots=True)
class OutputTranscript:
    """A piece of the transcript of what the model said."""

    text: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    calls: tuple[FunctionCall, ...]


@dataclass(frozen=True, slots=True)
class ToolCallCancellation:
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GoAway:
    """The server will close this connection in ``time_left_s`` seconds."""

    time_left_s: float


@dataclass(frozen=True, slots=True)
class ResumptionUpdate:
    handle: str | None
    resumable: bool


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    response_tokens: int
    total_tokens: int


AgentEvent = (
    AudioOut
    | AudioDamaged
    | Interrupted
    | GenerationComplete
    | TurnComplete
    | InputTranscript
    | OutputTranscript
    | ToolCall
    | ToolCallCancellation
    | GoAway
    | ResumptionUpdate
    | Usage
)

ReconnectReason = Literal["initial", "go_away", "error", "stall"]


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The conversation moved to a new Live connection."""

    reason: ReconnectReason
    resumed: bool  # continued with a resumption handle
    primed: bool  # a fresh session primed with the transcript
    pause_ms: float  # time without a connection (caller audio was buffered meanwhile)


#: What a conversation across connections yields: the model's events, and its own switches.
ConversationEvent = AgentEvent | Reconnected


# ---------------------------------------------------------------------------------------------
# Errors: one root, carrying the call's id where there is one
# ---------------------------------------------------------------------------------------------


class AgentError(Exception):
    """A problem on the model side, of one call (``call_id``) or of the process (None).

    ``code`` is the WebSocket close code or HTTP status when there was one; ``retryable``
    says whether trying again may help (quota, permission and bad requests will not).
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        retryable: bool = True,
        call_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.call_id = call_id


class ModelUnavailable(AgentError):
    """The session could not be opened (unreachable, setup timed out, refused)."""


class SessionClosed(AgentError):
    """The model closed or lost the connection during the call."""
