"""The Live API wire format as the simulator sees it: pure functions, no I/O.

Clients (the google-genai SDK among them) mix snake_case and camelCase keys, so every lookup
goes through :func:`field`, which accepts both. Server messages are built with camelCase keys
throughout: the SDK maps only camelCase top-level keys and fails on anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import orjson

from agent.live_wire import INPUT_RATE, OUTPUT_RATE, b64decode, b64encode

__all__ = [
    "DEFAULT_INPUT_RATE",
    "audio_chunk",
    "credential",
    "decode_b64",
    "encode",
    "field",
    "format_duration",
    "generation_complete",
    "go_away",
    "input_transcription",
    "interrupted",
    "is_live_path",
    "nested",
    "output_transcription",
    "parse_rate",
    "resumption_update",
    "setup_complete",
    "tool_call",
    "tool_call_cancellation",
    "turn_complete",
    "usage",
]

JsonDict = dict[str, Any]

#: Output audio format of the Live API.
OUTPUT_MIME = f"audio/pcm;rate={OUTPUT_RATE}"
#: Rate of caller audio whose MIME type does not say (``audio/pcm``).
DEFAULT_INPUT_RATE = INPUT_RATE

# Method "BidiGenerateContentConstrained" is what the SDK uses with ephemeral tokens.
_GEMINI_PATH = re.compile(
    r"/ws/google\.ai\.generativelanguage\.(?:v1|v1beta|v1alpha)"
    r"\.GenerativeService\.BidiGenerateContent(?:Constrained)?"
)
_VERTEX_PATH = re.compile(
    r"/ws/google\.cloud\.aiplatform\.(?:v1|v1beta1)\.LlmBidiService/BidiGenerateContent"
)
_RATE = re.compile(r"rate=(\d+)")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def is_live_path(path: str) -> bool:
    """True for the Gemini API and Vertex AI Live endpoints (query string ignored)."""
    path = path.partition("?")[0]
    return bool(_GEMINI_PATH.fullmatch(path) or _VERTEX_PATH.fullmatch(path))


@cache
def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.capitalize() for word in rest)


def field(obj: object, name: str) -> Any:
    """``obj[name]`` where ``name`` is snake_case and the key may be spelled either way.

    Returns ``None`` when ``obj`` is not a mapping or has neither spelling.
    """
    if not isinstance(obj, Mapping):
        return None
    value = obj.get(name)
    if value is None:
        value = obj.get(_camel(name))
    return value


def nested(obj: object, *path: str) -> Any:
    """:func:`field` applied along a path of snake_case names (``None`` if any step is missing)."""
    for name in path:
        obj = field(obj, name)
        if obj is None:
            return None
    return obj


def decode_b64(data: str | bytes) -> bytes:
    """Decode base64 in either alphabet (standard or URL-safe), padded or not.

    The SDK encodes client audio with the URL-safe alphabet; other clients use the standard
    one. A plain standard decoder would silently drop ``-`` and ``_`` and corrupt the audio.
    """
    text = data.decode("ascii") if isinstance(data, bytes) else data
    if "-" in text or "_" in text:
        text = text.translate(_URLSAFE_TO_STANDARD)
    missing = -len(text) % 4
    if missing:
        text += "=" * missing
    return b64decode(text)


def parse_rate(mime_type: object, default: int = DEFAULT_INPUT_RATE) -> int:
    """The ``rate=`` parameter of an ``audio/pcm`` MIME type."""
    if isinstance(mime_type, str) and (m := _RATE.search(mime_type)):
        return int(m.group(1))
    return default


def format_duration(seconds: float) -> str:
    """Seconds as a protobuf Duration JSON string: ``"50s"``, ``"0.500s"``."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


def encode(message: Mapping[str, Any]) -> bytes:
    """A server message as UTF-8 JSON."""
    return orjson.dumps(message)


# --- Server messages ---------------------------------------------------------------------


def setup_complete() -> JsonDict:
    return {"setupComplete": {}}


def audio_chunk(pcm24k: bytes, transcript: str | None = None) -> JsonDict:
    """One chunk of reply audio; with ``transcript``, its output transcription rides in the
    same message (as ``gemini-3.8-live`` may send them)."""
    data = b64encode(pcm24k).decode("ascii")
    content: JsonDict = {
        "modelTurn": {"parts": [{"inlineData": {"mimeType": OUTPUT_MIME, "data": data}}]}
    }
    if transcript:
        content["outputTranscription"] = {"text": transcript}
    return {"serverContent": content}


def interaction_status(status: str) -> JsonDict:
    """``IN_PROGRESS`` (the model still works; more may follow) or ``IDLE``."""
    return {"serverContent": {"interactionStatus": status}}


def input_transcription(text: str) -> JsonDict:
    return {"serverContent": {"inputTranscription": {"text": text}}}


def output_transcription(text: str) -> JsonDict:
    return {"serverContent": {"outputTranscription": {"text": text}}}


def generation_complete() -> JsonDict:
    return {"serverContent": {"generationComplete": True}}


def interrupted() -> JsonDict:
    return {"serverContent": {"interrupted": True}}


def usage(*, prompt_text: int, prompt_audio: int, response_audio: int) -> JsonDict:
    """``usageMetadata`` with per-modality details, as the Live API reports it."""
    prompt = prompt_text + prompt_audio
    return {
        "promptTokenCount": prompt,
        "responseTokenCount": response_audio,
        "totalTokenCount": prompt + response_audio,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": prompt_text},
            {"modality": "AUDIO", "tokenCount": prompt_audio},
        ],
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": response_audio}],
    }


def turn_complete(usage_metadata: JsonDict | None = None, reason: str | None = None) -> JsonDict:
    message: JsonDict = {"serverContent": {"turnComplete": True}}
    if reason is not None:
        message["serverContent"]["turnCompleteReason"] = reason
    if usage_metadata is not None:
        message["usageMetadata"] = usage_metadata
    return message


def tool_call(calls: list[JsonDict]) -> JsonDict:
    """``calls``: ``{"id", "name", "args"}`` dicts."""
    return {"toolCall": {"functionCalls": calls}}


def tool_call_cancellation(ids: list[str]) -> JsonDict:
    return {"toolCallCancellation": {"ids": ids}}


def resumption_update(handle: str | None, resumable: bool) -> JsonDict:
    update: JsonDict = {"resumable": resumable}
    if handle:
        update["newHandle"] = handle
    return {"sessionResumptionUpdate": update}


def go_away(time_left_s: float) -> JsonDict:
    return {"goAway": {"timeLeft": format_duration(time_left_s)}}


def credential(headers: Mapping[str, str], path: str) -> str | None:
    """The API key or token a client presented, if any.

    ``x-goog-api-key`` is what the SDK sends for the Gemini API; ephemeral tokens come as
    ``Authorization: Token …``, OAuth as ``Authorization: Bearer …``; old clients used ``?key=``.
    """
    key = headers.get("x-goog-api-key")
    if key and key.strip():
        return key.strip()
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in {"bearer", "token"} and value.strip():
        return value.strip()
    query = path.partition("?")[2]
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "key" and value:
            return value
    return None
