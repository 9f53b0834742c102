"""Opt-in call recording (``RECORD_CALLS=<dir>``): both legs as WAV plus the stream's events.

One directory per call, ``<dir>/<CallSid>/`` (the SID reduced to ``[A-Za-z0-9_-]``; ``-2``,
``-3``… appended when the directory already exists), holding:

- ``caller.wav``: 8 kHz 16-bit mono PCM, the caller's audio exactly as Twilio sent it (μ-law
  decoded), sample 0 = stream start. Frames are appended in arrival order; a frame whose
  ``media.timestamp`` lies more than ``GAP_TOLERANCE_MS`` past the end of the track means
  frames are missing, so the gap is filled with silence (and a ``media_gap`` event written)
  before it. The track's sample positions therefore follow Twilio's timestamps.
- ``agent.wav``: 8 kHz 16-bit mono PCM, the agent's audio *as the caller heard it*: the server
  sends faster than real time and Twilio queues, so each chunk is placed at
  max(time sent, end of the audio queued before it), and a ``clear`` drops whatever had not
  played yet. Runs to the end of the call (silence where the agent was quiet).
- ``events.jsonl``: a ``meta`` line, then one object per event with ``t`` (seconds since the
  stream's ``start`` reached the server, ms precision, never decreasing); see ``CallRecorder``.
  Written last: a directory without it is incomplete.

Costs: nothing at all when recording is off (no recorder). When on, a media frame costs one
bytearray append; audio is held as μ-law (8000 bytes/s per leg, ~58 MB per hour of call) and
capped at ``max_audio_s`` per leg; files are written once, at the end of the call, in a worker
thread, so the event loop never touches the disk.

The core (``CallRecorder`` without ``save``) is clock-agnostic like ``telephony.twilio.playback``:
every method takes ``now`` on any monotonic clock, so tests drive it with made-up times.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import wave
from pathlib import Path
from typing import Any, Final

import orjson

from agent.logs import fields
from telephony.audio import ulaw_decode
from telephony.twilio import media_stream as ms

log = logging.getLogger(__name__)

#: Version of the directory format above; bump on any change a reader would notice.
FORMAT_VERSION: Final = 1
RATE: Final = ms.SAMPLE_RATE
#: Default cap on recorded audio per leg (``RECORD_CALLS_MAX_S``).
DEFAULT_MAX_AUDIO_S: Final = 7200.0
#: A caller frame stamped this far past the end of the track means frames went missing. Half a
#: frame: one lost 20 ms frame is detected, millisecond jitter in the stamps is not a gap.
GAP_TOLERANCE_MS: Final = 10
#: Events kept per call; beyond this they are counted, not stored (a hostile stream could
#: send marks or digits without end).
MAX_EVENTS: Final = 100_000
#: The longest a call's teardown waits for its files to be written.
SAVE_TIMEOUT_S: Final = 60.0
#: Decoded and written this many μ-law bytes at a time (bounds the writer's peak memory).
_WRITE_CHUNK: Final = 80_000
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_dirname(call_sid: str) -> str:
    """A file-system-safe directory name for a call SID (Twilio's are already safe)."""
    name = _UNSAFE.sub("_", call_sid)[:64]
    return name or "unknown"


class CallRecorder:
    """Accumulates one call in memory; ``finish()`` writes it out at the end of the call.

    Events (besides ``meta``): ``media_gap`` (``at_ms``, ``missing_ms``), ``dtmf`` (``digit``),
    ``mark`` (``name``: an echo from Twilio, including those a ``clear`` triggers), ``clear``
    (``dropped_ms``: queued agent audio that never played), ``interrupted``, ``turn``,
    ``tool_call``, ``stop`` (Twilio's), ``recording_limit`` (``track``, ``max_s``) and ``end``
    (``outcome``, ``reason`` and counters). The call decides the fields of its own events.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, max_audio_s: float = DEFAULT_MAX_AUDIO_S
    ) -> None:
        self.root = Path(root)
        self.max_audio_s = max_audio_s
        self.call_sid = ""
        self.path: Path | None = None  # the call's directory, once written
        self.failed = False  # writing it failed or timed out (logged; counted in metrics)
        self._max_bytes = max(0, round(max_audio_s * RATE))
        self._meta: dict[str, Any] | None = None
        self._t0 = 0.0
        self._last_t = 0.0
        self._caller = bytearray()
        self._agent = bytearray()
        self._caller_full = False
        self._agent_full = False
        self._frames = 0
        self._gaps = 0
        self._missing_ms = 0
        self._events: list[dict[str, Any]] = []
        self._events_dropped = 0
        self._ended = False

    @property
    def started(self) -> bool:
        return self._meta is not None

    @property
    def caller_audio_ulaw(self) -> bytes:
        """The caller track so far (μ-law, 8 kHz)."""
        return bytes(self._caller)

    @property
    def agent_audio_ulaw(self) -> bytes:
        """The agent track so far as the caller heard it (μ-law, 8 kHz)."""
        return bytes(self._agent)

    @property
    def events(self) -> list[dict[str, Any]]:
        """``meta`` followed by the events so far (the lines of ``events.jsonl``)."""
        return ([self._meta] if self._meta is not None else []) + self._events

    # -- recording --------------------------------------------------------------------------

    def start(self, start: ms.Start, now: float, wall: float | None = None) -> None:
        """Twilio's ``start`` reached the server at ``now``: time zero of every track/event."""
        self.call_sid = start.call_sid
        self._t0 = now
        self._meta = {
            "type": "meta",
            "version": FORMAT_VERSION,
            "call_sid": start.call_sid,
            "stream_sid": start.stream_sid,
            "custom_parameters": dict(start.custom_parameters),
            "started_at": round(time.time() if wall is None else wall, 3),
            "caller_rate": RATE,
            "agent_rate": RATE,
            "max_audio_s": self.max_audio_s,
        }

    def caller_audio(self, ulaw: bytes, timestamp_ms: int) -> None:
        """One media frame from Twilio. Hot path (every 20 ms): no clock, no allocation."""
        self._frames += 1
        track = self._caller
        if self._caller_full or self._meta is None:
            return
        at = timestamp_ms * 8  # 8 samples (μ-law bytes) per millisecond
        if at > len(track) + GAP_TOLERANCE_MS * 8:
            self._gap(at)
            if self._caller_full:
                return
        if len(track) + len(ulaw) > self._max_bytes:
            self._limit("caller", track, timestamp_ms / 1000)
            return
        track += ulaw

    def _gap(self, at: int) -> None:
        # Twilio stamps every frame with its position in the stream: a jump means frames were
        # lost (or the stream's audio began late). Silence keeps the timeline true.
        track = self._caller
        missing = at - len(track)
        self._gaps += 1
        self._missing_ms += missing // 8
        self.event(
            "media_gap", self._t0 + at / RATE, at_ms=len(track) // 8, missing_ms=missing // 8
        )
        room = self._max_bytes - len(track)
        track += ms.ULAW_SILENCE * min(missing, room)
        if missing > room:
            self._limit("caller", track, at / RATE)

    def agent_audio(self, ulaw: bytes, now: float) -> None:
        """Agent audio sent to Twilio at ``now``: it plays once everything queued has played."""
        track = self._agent
        if self._agent_full or self._meta is None:
            return
        at = self._pos(now)
        if at > len(track):
            # Twilio's queue had run dry: this audio starts playing when it arrives.
            track += ms.ULAW_SILENCE * (min(at, self._max_bytes) - len(track))
        if len(track) + len(ulaw) > self._max_bytes:
            self._limit("agent", track, now - self._t0)
            return
        track += ulaw

    def clear(self, now: float) -> None:
        """A ``clear`` was sent at ``now``: agent audio not yet played is dropped."""
        dropped = self._cut_agent(now)
        self.event("clear", now, dropped_ms=round(dropped * 1000 / RATE))

    def event(self, kind: str, now: float, **values: Any) -> None:
        """Record an event at ``now`` (cheap: events are rare; JSON is made at save time)."""
        if self._meta is None or self._ended:
            return
        if len(self._events) >= MAX_EVENTS:
            self._events_dropped += 1
            return
        self._append(kind, now, values)

    def _append(self, kind: str, now: float, values: dict[str, Any]) -> None:
        # Hooks may pass a time taken a moment before an event already recorded; keep the
        # file's order and its clock agreeing (never decreasing).
        t = max(round(now - self._t0, 3), self._last_t)
        self._last_t = t
        self._events.append({"t": t, "type": kind, **values})

    def end(self, now: float, **values: Any) -> None:
        """The call is over: Twilio stops playing; the agent track ends here too."""
        if self._meta is None or self._ended:
            return
        self._cut_agent(now)
        if not self._agent_full:
            end = min(self._pos(now), self._max_bytes)
            self._agent += ms.ULAW_SILENCE * max(0, end - len(self._agent))
        # Not subject to MAX_EVENTS: a reader relies on the last line being the end.
        self._append(
            "end",
            now,
            {
                **values,
                "caller_frames": self._frames,
                "media_gaps": self._gaps,
                "missing_ms": self._missing_ms,
                "caller_s": round(len(self._caller) / RATE, 3),
                "agent_s": round(len(self._agent) / RATE, 3),
                "events_dropped": self._events_dropped,
            },
        )
        self._ended = True
        # The tracks are final (the writer thread reads them): no more audio, at no cost to
        # the per-frame path.
        self._caller_full = self._agent_full = True

    def _pos(self, now: float) -> int:
        return max(0, round((now - self._t0) * RATE))

    def _cut_agent(self, now: float) -> int:
        track = self._agent
        at = self._pos(now)
        dropped = max(0, len(track) - at)
        if dropped:
            del track[at:]
        return dropped

    def _limit(self, name: str, track: bytearray, t_s: float) -> None:
        del track[self._max_bytes :]
        if name == "caller":
            self._caller_full = True
        else:
            self._agent_full = True
        self._append("recording_limit", self._t0 + t_s, {"track": name, "max_s": self.max_audio_s})
        log.warning("recording.limit", extra=fields(track=name, max_s=self.max_audio_s))

    # -- output -----------------------------------------------------------------------------

    def write(self) -> Path:
        """Write the call's directory (blocking: run it off the event loop)."""
        if self._meta is None:
            raise RuntimeError("nothing to write: the stream never started")
        self.root.mkdir(parents=True, exist_ok=True)
        base = safe_dirname(self.call_sid)
        path = self.root / base
        suffix = 1
        while True:
            try:
                path.mkdir()  # atomic: two calls with one SID never share a directory
                break
            except FileExistsError:
                suffix += 1
                path = self.root / f"{base}-{suffix}"
        self.path = path
        _write_wav(path / "caller.wav", self._caller)
        _write_wav(path / "agent.wav", self._agent)
        lines = b"".join(
            orjson.dumps(e, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n"
            for e in self.events
        )
        _replace(path / "events.jsonl", lines)
        return path

    async def finish(self, now: float, *, timeout_s: float = SAVE_TIMEOUT_S, **values: Any) -> None:
        """End the recording and write it in a worker thread. Never raises for disk trouble."""
        if self._meta is None:
            return  # the stream never started: nothing to keep
        self.end(now, **values)
        try:
            async with asyncio.timeout(timeout_s):
                path = await asyncio.to_thread(self.write)
        except TimeoutError:
            self.failed = True
            # The thread carries on (and the process waits for it at exit); only we stop waiting.
            log.error(
                "recording.timeout", extra=fields(call_sid=self.call_sid, timeout_s=timeout_s)
            )
            return
        except Exception as exc:
            # Disk full, permissions, a bug: the recording is lost, the call is not affected.
            self.failed = True
            log.error(
                "recording.failed",
                extra=fields(call_sid=self.call_sid, root=str(self.root), error=repr(exc)),
                exc_info=not isinstance(exc, OSError),
            )
            return
        log.info(
            "recording.saved",
            extra=fields(call_sid=self.call_sid, path=str(path), events=len(self._events)),
        )


def _write_wav(path: Path, ulaw: bytearray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        view = memoryview(ulaw)
        for i in range(0, len(ulaw), _WRITE_CHUNK):
            out.writeframes(ulaw_decode(view[i : i + _WRITE_CHUNK]))
    os.replace(tmp, path)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
