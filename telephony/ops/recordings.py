"""Finding a call's ``RECORD_CALLS`` files for the operator API, and the two legs as one file.

A recording's directory is named by the recorder (``telephony.call.recorder``: the SID made
safe, ``-2``… on a clash); the record keeps that name (``detail.recording``). Only names
made of ``[A-Za-z0-9_-]`` are looked up, and only directly under the recordings root, so a
request can never reach another file.

``both.wav`` (made on first request, next to the legs): stereo, the caller on the left and
the agent on the right, on their shared timeline.
"""

from __future__ import annotations

import os
import re
import wave
from pathlib import Path
from typing import Final, Literal

__all__ = ["LEGS", "Leg", "recording_file"]

Leg = Literal["caller", "agent", "both"]
LEGS: Final = ("caller", "agent", "both")
_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
#: Frames mixed per step (bounds memory for a two-hour recording).
_CHUNK_FRAMES: Final = 64_000


def recording_file(root: Path, name: str, leg: Leg) -> Path | None:
    """The WAV file of ``leg`` of the recording ``name`` under ``root``, or None (no such
    recording, or a name that is not one). May write ``both.wav``: call off the loop."""
    if not _NAME.match(name) or leg not in LEGS:
        return None
    base = root.resolve()
    directory = (base / name).resolve()
    if directory.parent != base or not directory.is_dir():
        return None
    if not (directory / "events.jsonl").is_file():
        return None  # still being written (or incomplete)
    if leg != "both":
        path = directory / f"{leg}.wav"
        return path if path.is_file() else None
    both = directory / "both.wav"
    if not both.is_file():
        caller, agent = directory / "caller.wav", directory / "agent.wav"
        if not (caller.is_file() and agent.is_file()):
            return None
        _stereo(caller, agent, both)
    return both


def _stereo(left: Path, right: Path, out: Path) -> None:
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    with wave.open(str(left), "rb") as a, wave.open(str(right), "rb") as b:
        if a.getsampwidth() != 2 or b.getsampwidth() != 2 or a.getframerate() != b.getframerate():
            raise ValueError("the legs are not 16-bit PCM at one rate")
        frames = max(a.getnframes(), b.getnframes())
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(a.getframerate())
            done = 0
            while done < frames:
                n = min(_CHUNK_FRAMES, frames - done)
                x = a.readframes(n).ljust(2 * n, b"\0")
                y = b.readframes(n).ljust(2 * n, b"\0")
                mixed = bytearray(4 * n)
                mixed[0::4], mixed[1::4] = x[0::2], x[1::2]
                mixed[2::4], mixed[3::4] = y[0::2], y[1::2]
                w.writeframes(bytes(mixed))
                done += n
    os.replace(tmp, out)
