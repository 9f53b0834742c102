"""Twilio Media Streams wire format (bidirectional ``<Connect><Stream>``), both directions.

Pure code: JSON text in, typed events out, and JSON text to send. No sockets, no asyncio.
The server parses what Twilio sends (``parse_inbound``) and builds what Twilio accepts
(``OutboundBuilder``); the caller simulator and the load tester play Twilio's part with
``InboundBuilder`` and ``parse_outbound``. Everyone shares this one module.

Facts this relies on (see the README's protocol notes):
- every frame is a JSON *text* frame; counters (``sequenceNumber``, ``chunk``, ``timestamp``)
  are strings; ``connected`` carries no ``sequenceNumber`` or ``streamSid``;
- one ``sequenceNumber`` counter spans every event type of a stream;
- media payloads are base64 of raw 8 kHz μ-law, 160 bytes per 20 ms frame;
- ``streamSid`` formats have changed over the years, so they are not validated strictly.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from telephony.errors import TelephonyError

#: Bytes of 8 kHz μ-law in one 20 ms Twilio frame.
FRAME_BYTES: Final = 160
#: Duration of one Twilio frame.
FRAME_MS: Final = 20
#: μ-law sample rate used by Twilio Media Streams.
SAMPLE_RATE: Final = 8000
#: The largest inbound text frame we accept. A real media frame is ~330 bytes and a ``start``
#: with the maximum custom parameters a few KiB; anything near this is hostile or broken.
MAX_FRAME_BYTES: Final = 64 * 1024
#: μ-law byte for digital silence (0 after decoding).
ULAW_SILENCE: Final = b"\xff"


class ProtocolError(TelephonyError, ValueError):
    """A frame that is not a valid Twilio Media Streams message."""


class UnknownEvent(ProtocolError):
    """A well-formed JSON message whose ``event`` we do not know (Twilio may add events)."""

    def __init__(self, event: str) -> None:
        super().__init__(f"unknown event {event!r}")
        self.event = event


# ---------------------------------------------------------------------------------------------
# Events Twilio sends to the server
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str = "audio/x-mulaw"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: Mapping[str, str]
    media_format: MediaFormat


@dataclass(frozen=True, slots=True)
class Media:
    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    stream_sid: str
    digit: str
    track: str


@dataclass(frozen=True, slots=True)
class Mark:
    sequence_number: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    call_sid: str
    account_sid: str


InboundEvent = Connected | Start | Media | Dtmf | Mark | Stop

#: The keys Twilio reports in ``dtmf`` events.
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")


def _load(frame: str | bytes) -> dict[str, Any]:
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message is not a JSON object")
    return msg


def _obj(msg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"{key!r} missing or not an object")
    return value


def _str(msg: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = msg.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"{key!r} missing or not a string")
    return value


def _int(msg: Mapping[str, Any], key: str, default: int | None = None) -> int:
    # Twilio sends counters as strings; accept numbers too, reject anything else.
    value = msg.get(key, default)
    # What Twilio sends first (media frames call this three times each). isascii():
    # str.isdigit() also accepts digits such as "²" that int() rejects.
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, bool):
        raise ProtocolError(f"{key!r} is not an integer")
    if isinstance(value, int):
        return value
    raise ProtocolError(f"{key!r} missing or not an integer: {value!r}")


def decode_payload(b64: str) -> bytes:
    """Decode a base64 media payload strictly (garbage is an error, not silently skipped)."""
    try:
        return binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"bad base64 payload: {exc}") from None


def parse_inbound(frame: str | bytes) -> InboundEvent:
    """Parse one frame Twilio sent to the server.

    Raises ``UnknownEvent`` for an event name we do not know and ``ProtocolError`` for
    anything malformed (too large, not JSON, missing fields, bad base64).
    """
    msg = _load(frame)
    event = msg.get("event")
    if event == "media":
        media = _obj(msg, "media")
        # Positional: 50 per call-second, and a frozen dataclass's keyword call costs more.
        return Media(
            _int(msg, "sequenceNumber"),
            _str(msg, "streamSid", ""),
            _str(media, "track", "inbound"),
            _int(media, "chunk", 0),
            _int(media, "timestamp", 0),
            decode_payload(_str(media, "payload")),
        )
    if event == "start":
        start = _obj(msg, "start")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise ProtocolError("'mediaFormat' is not an object")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError("'customParameters' is not an object")
        tracks = start.get("tracks") or ["inbound"]
        if not isinstance(tracks, list):
            raise ProtocolError("'tracks' is not a list")
        return Start(
            sequence_number=_int(msg, "sequenceNumber", 0),
            stream_sid=_str(start, "streamSid", _str(msg, "streamSid", "")),
            call_sid=_str(start, "callSid"),
            account_sid=_str(start, "accountSid", ""),
            tracks=tuple(str(t) for t in tracks),
            custom_parameters={str(k): str(v) for k, v in params.items()},
            media_format=MediaFormat(
                encoding=str(fmt.get("encoding", "audio/x-mulaw")),
                sample_rate=_int(fmt, "sampleRate", SAMPLE_RATE),
                channels=_int(fmt, "channels", 1),
            ),
        )
    if event == "connected":
        return Connected(protocol=str(msg.get("protocol", "")), version=str(msg.get("version", "")))
    if event == "dtmf":
        dtmf = _obj(msg, "dtmf")
        digit = _str(dtmf, "digit")
        if digit not in DTMF_DIGITS:
            raise ProtocolError(f"not a DTMF digit: {digit!r}")
        return Dtmf(
            sequence_number=_int(msg, "sequenceNumber", 0),
            stream_sid=_str(msg, "streamSid", ""),
            digit=digit,
            track=_str(dtmf, "track", "inbound_track"),
        )
    if event == "mark":
        return Mark(
            sequence_number=_int(msg, "sequenceNumber", 0),
            stream_sid=_str(msg, "streamSid", ""),
            name=_str(_obj(msg, "mark"), "name"),
        )
    if event == "stop":
        stop = msg.get("stop") or {}
        if not isinstance(stop, dict):
            raise ProtocolError("'stop' is not an object")
        return Stop(
            sequence_number=_int(msg, "sequenceNumber", 0),
            stream_sid=_str(msg, "streamSid", ""),
            call_sid=str(stop.get("callSid", "")),
            account_sid=str(stop.get("accountSid", "")),
        )
    if isinstance(event, str):
        raise UnknownEvent(event)
    raise ProtocolError("'event' missing or not a string")


# ---------------------------------------------------------------------------------------------
# Messages the server sends to Twilio
# ---------------------------------------------------------------------------------------------


class OutboundBuilder:
    """Builds the JSON text frames the server sends to Twilio for one stream.

    The ``streamSid`` is JSON-escaped once, so the per-frame media message is a single string
    concatenation around the base64 payload (this runs every 20 ms for every call).
    """

    __slots__ = ("_clear", "_mark_prefix", "_media_prefix", "stream_sid")

    def __init__(self, stream_sid: str) -> None:
        self.stream_sid = stream_sid
        sid = orjson.dumps(stream_sid).decode()
        self._media_prefix = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"

    def media(self, ulaw: bytes) -> str:
        """A ``media`` message carrying raw 8 kHz μ-law audio (any length)."""
        return self._media_prefix + binascii.b2a_base64(ulaw, newline=False).decode() + '"}}'

    def mark(self, name: str) -> str:
        """A ``mark``: Twilio echoes it once all audio sent before it has played."""
        return self._mark_prefix + orjson.dumps(name).decode() + "}}"

    def clear(self) -> str:
        """A ``clear``: Twilio drops buffered audio and echoes every pending mark at once."""
        return self._clear


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    stream_sid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboundMark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class OutboundClear:
    stream_sid: str


OutboundEvent = OutboundMedia | OutboundMark | OutboundClear


def parse_outbound(frame: str | bytes) -> OutboundEvent:
    """Parse a frame the server sent to Twilio (used by the caller simulator and tests)."""
    msg = _load(frame)
    event = msg.get("event")
    if event == "media":
        media = _obj(msg, "media")
        return OutboundMedia(_str(msg, "streamSid"), decode_payload(_str(media, "payload")))
    if event == "mark":
        return OutboundMark(_str(msg, "streamSid"), _str(_obj(msg, "mark"), "name"))
    if event == "clear":
        return OutboundClear(_str(msg, "streamSid"))
    # Checked before streamSid so that an unknown event is reported as such.
    if isinstance(event, str):
        raise UnknownEvent(event)
    raise ProtocolError("'event' missing or not a string")


# ---------------------------------------------------------------------------------------------
# Messages Twilio sends, built the way Twilio builds them (caller simulator, load tester)
# ---------------------------------------------------------------------------------------------


@dataclass
class InboundBuilder:
    """Builds the frames Twilio sends for one stream, with Twilio's counters.

    One ``sequenceNumber`` spans all events (``connected`` has none); ``chunk`` counts media
    frames from 1; all counters are strings on the wire, as Twilio sends them.
    """

    stream_sid: str
    call_sid: str
    account_sid: str = "AC" + "0" * 32
    _seq: int = field(default=0, init=False)
    _chunk: int = field(default=0, init=False)

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    def connected(self) -> str:
        return orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).decode()

    def start(self, custom_parameters: Mapping[str, str] | None = None) -> str:
        return orjson.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": dict(custom_parameters or {}),
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": SAMPLE_RATE,
                        "channels": 1,
                    },
                },
            }
        ).decode()

    def media(self, ulaw: bytes, timestamp_ms: int) -> str:
        self._chunk += 1
        return orjson.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(timestamp_ms),
                    "payload": binascii.b2a_base64(ulaw, newline=False).decode(),
                },
            }
        ).decode()

    def dtmf(self, digit: str) -> str:
        return orjson.dumps(
            {
                "event": "dtmf",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        ).decode()

    def mark(self, name: str) -> str:
        return orjson.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        ).decode()

    def stop(self) -> str:
        return orjson.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        ).decode()
