"""The Live API's hot messages as raw JSON, both directions (pure: no SDK, no sockets).

The SDK builds and parses every message through pydantic models: for the two messages a call
exchanges every few tens of milliseconds (caller audio out, model messages in) that costs more
CPU than the audio conversion and the socket together. The fast path (``agent.session``) writes
and reads the same JSON with these functions instead; ``tests/agent/test_live_wire.py`` checks
them against the SDK's own parsing, message by message.
"""

from __future__ import annotations

import binascii
from typing import Any, Final

import orjson
import pybase64

from agent.events import (
    AgentError,
    AgentEvent,
    AudioDamaged,
    AudioOut,
    FunctionCall,
    GenerationComplete,
    GoAway,
    InputTranscript,
    InteractionStatus,
    Interrupted,
    OutputTranscript,
    ResumptionUpdate,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
    Usage,
)

__all__ = [
    "INPUT_MIME",
    "INPUT_RATE",
    "OUTPUT_RATE",
    "WireError",
    "audio_events",
    "audio_message",
    "b64decode",
    "b64encode",
    "events_from_wire",
    "parse_duration",
]

#: Audio formats of the Live API: 16 kHz PCM16 in, 24 kHz PCM16 out (little-endian, mono).
INPUT_RATE: Final = 16_000
OUTPUT_RATE: Final = 24_000
INPUT_MIME: Final = f"audio/pcm;rate={INPUT_RATE}"
# The realtime-audio message, pre-built around the base64 payload (what the SDK sends).
AUDIO_PREFIX: Final = '{"realtime_input":{"audio":{"mime_type":"' + INPUT_MIME + '","data":"'
AUDIO_SUFFIX: Final = '"}}}'


_AUDIO_PREFIX_BYTES: Final = AUDIO_PREFIX.encode()
_AUDIO_SUFFIX_BYTES: Final = AUDIO_SUFFIX.encode()


def audio_message(pcm16k: bytes) -> bytes:
    """The ``realtime_input`` message for one chunk of caller audio, as the UTF-8 bytes of its
    text frame (no str round trip: this is the message sent most often)."""
    return b"".join((_AUDIO_PREFIX_BYTES, b64encode(pcm16k), _AUDIO_SUFFIX_BYTES))


def b64encode(data: bytes) -> bytes:
    """Standard base64, padded: ``binascii.b2a_base64(data, newline=False)``, ~25 times faster.

    Audio is most of the bytes a call moves, and all of it crosses the Live API as base64:
    16 kHz caller audio out (43 KB of base64 per call-second) and 24 kHz agent audio in
    (64 KB per second of speech). The standard library codes it at ~0.5-1 GB/s, which
    made base64 ~3.5 % of the server's CPU under load; ``pybase64`` (SIMD) codes it at
    10-30 GB/s.
    """
    return pybase64.b64encode(data)


def b64decode(data: str) -> bytes:
    """Standard or URL-safe base64 (the SDK accepts both) → bytes; ``binascii.Error`` if it is
    neither. Exactly what ``binascii.a2b_base64`` gives after mapping the URL-safe alphabet.

    Valid standard base64 (what the Live API sends) takes ``pybase64``'s strict SIMD decoder;
    anything else (the URL-safe alphabet, characters ``a2b_base64`` skips) takes the standard
    library's tolerant path, so nothing decodes differently.
    """
    try:
        return pybase64.b64decode(data, validate=True)
    except ValueError:  # binascii.Error included; a non-ASCII str too
        pass
    if "-" in data or "_" in data:
        data = data.replace("-", "+").replace("_", "/")
    return binascii.a2b_base64(data)


def parse_duration(value: str | None) -> float:
    """'50s' / '1.5s' (protobuf Duration JSON) → seconds."""
    if not value:
        return 0.0
    try:
        return float(value.rstrip("s"))
    except ValueError:
        return 0.0


class WireError(AgentError, ValueError):
    """A server message we cannot read, or an error the server reported in-band."""


def audio_events(pcm: bytes) -> list[AgentEvent]:
    """One audio part as events: whole samples only (see ``AudioDamaged``)."""
    if len(pcm) % 2:
        return (
            [AudioOut(pcm[:-1]), AudioDamaged("odd length", 1)]
            if len(pcm) > 1
            else [AudioDamaged("odd length", 1)]
        )
    return [AudioOut(pcm)]


def events_from_wire(frame: bytes | str) -> list[AgentEvent]:
    """One raw Live API server message (JSON, camelCase) → our events, like ``events_from_sdk``.

    Raises ``WireError`` for a message that is not JSON, that reports an error, or whose
    fields are not the types the protocol gives them.
    """
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"unreadable message from the Live API: {exc}") from None
    if not isinstance(msg, dict):
        raise WireError("Live API message is not an object")
    if "error" in msg:
        raise WireError(f"Live API error: {msg['error']}")
    try:
        return _events(msg)
    except (AttributeError, TypeError, ValueError) as exc:  # a field of the wrong type
        raise WireError(f"malformed message from the Live API: {exc!r}") from None


def _events(msg: dict[str, Any]) -> list[AgentEvent]:
    out: list[AgentEvent] = []
    content = msg.get("serverContent")
    if content:
        text = (content.get("inputTranscription") or {}).get("text")
        if text:
            out.append(InputTranscript(text))
        if content.get("interrupted"):
            out.append(Interrupted())
        for part in (content.get("modelTurn") or {}).get("parts") or ():
            data = (part.get("inlineData") or {}).get("data")
            if data:
                try:
                    pcm = b64decode(data)
                except binascii.Error:
                    out.append(AudioDamaged("base64", len(data)))
                    continue
                out.extend(audio_events(pcm))
        text = (content.get("outputTranscription") or {}).get("text")
        if text:
            out.append(OutputTranscript(text))
        if content.get("generationComplete"):
            out.append(GenerationComplete())
        if content.get("turnComplete"):
            reason = content.get("turnCompleteReason")
            out.append(TurnComplete(reason if isinstance(reason, str) else None))
        status = content.get("interactionStatus")
        if isinstance(status, str) and status:
            out.append(InteractionStatus(status))
    calls = (msg.get("toolCall") or {}).get("functionCalls")
    if calls:
        out.append(
            ToolCall(
                tuple(
                    FunctionCall(c.get("id") or "", c.get("name") or "", dict(c.get("args") or {}))
                    for c in calls
                )
            )
        )
    ids = (msg.get("toolCallCancellation") or {}).get("ids")
    if ids:
        out.append(ToolCallCancellation(tuple(ids)))
    if "goAway" in msg:
        out.append(GoAway(parse_duration((msg["goAway"] or {}).get("timeLeft"))))
    if "sessionResumptionUpdate" in msg:
        upd = msg["sessionResumptionUpdate"] or {}
        out.append(ResumptionUpdate(upd.get("newHandle"), bool(upd.get("resumable"))))
    usage = msg.get("usageMetadata")
    if usage is not None:
        out.append(
            Usage(
                usage.get("promptTokenCount") or 0,
                usage.get("responseTokenCount") or 0,
                usage.get("totalTokenCount") or 0,
            )
        )
    return out
