"""Reading what a caller says: audio files (anything soundfile reads, any rate, mono or
multichannel) and calls our server recorded (``RECORD_CALLS``, :mod:`telephony.call.recorder`),
each read as a :class:`RecordedCall` (8 kHz μ-law from stream start, key presses, the
recorded ``start``'s parameters) ready to replay, or refused with a :class:`RecordingError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import soundfile as sf

from telephony.audio import pcm16_to_ulaw_8k
from telephony.call.recorder import FORMAT_VERSION as RECORDING_FORMAT_VERSION
from telephony.caller.script import CallerTurn, split_turns
from telephony.errors import TelephonyError
from telephony.twilio.media_stream import DTMF_DIGITS, SAMPLE_RATE

__all__ = [
    "RecordedCall",
    "RecordingError",
    "load_caller_audio",
    "load_recorded_call",
    "load_recording",
]


class RecordingError(TelephonyError, ValueError):
    """A recorded call or audio file that cannot be replayed."""


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
