"""The simulator's speech with espeak-ng (a Debian package), when it is installed.

``espeak-ng --stdout`` writes a 22.05 kHz WAV; it is resampled to the Live API's 24 kHz with
the project's resampler. espeak-ng does not report word timings on its command line, so each
word's offset is placed in proportion to its length in letters over the speech between the
leading and trailing silence: close enough to keep the transcript in step with the audio.
Without espeak-ng (or if it fails) :func:`synthesize` returns ``None`` and the caller uses the
numpy voice (:mod:`agent.simulator.voice`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import OrderedDict
from typing import Final

import numpy as np

from agent.pcm import StreamResampler
from agent.simulator.voice import _HIGH_VOICES, _PAUSE_S, _TOKENS, OUTPUT_RATE, Speech

__all__ = ["available", "synthesize"]

log = logging.getLogger(__name__)

_TIMEOUT_S: Final = 10.0
_MAX_CHARS: Final = 2000
_CACHE: OrderedDict[tuple[str, str], Speech] = OrderedDict()
_CACHE_SIZE: Final = 256
_warned = False


def available() -> bool:
    return shutil.which("espeak-ng") is not None


def _voice(name: str) -> str:
    return "en-us+f3" if name.lower() in _HIGH_VOICES else "en-us+m3"


async def synthesize(text: str, voice: str = "") -> Speech | None:
    """``text`` spoken by espeak-ng at 24 kHz, or ``None`` (not installed, or it failed)."""
    global _warned
    key = (text, voice)
    if (cached := _CACHE.get(key)) is not None:
        _CACHE.move_to_end(key)
        return cached
    exe = shutil.which("espeak-ng")
    if exe is None:
        if not _warned:
            _warned = True
            log.warning("espeak-ng is not installed: the simulator speaks with its numpy voice")
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            "--stdout",
            "-v",
            _voice(voice),
            "-s",
            "165",
            "--",
            text[:_MAX_CHARS],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                wav, _ = await proc.communicate()
        except (TimeoutError, asyncio.CancelledError):
            # A barge-in cancels the turn: leave no process (or transport) behind.
            proc.kill()
            await asyncio.shield(proc.wait())
            raise
    except (OSError, TimeoutError) as exc:
        log.warning("espeak-ng failed (%s): the numpy voice speaks instead", exc)
        return None
    speech = from_wav(text, wav)
    if speech is None:
        return None
    _CACHE[key] = speech
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return speech


def from_wav(text: str, wav: bytes) -> Speech | None:
    """The :class:`Speech` of espeak-ng's WAV output for ``text`` (``None`` if malformed)."""
    at = wav.find(b"data", 12)
    if not wav.startswith(b"RIFF") or at < 0 or wav.find(b"fmt ", 12) < 0:
        return None
    fmt = wav.find(b"fmt ", 12)
    rate = int.from_bytes(wav[fmt + 12 : fmt + 16], "little")
    pcm = wav[at + 8 :]
    pcm = pcm[: len(pcm) // 2 * 2]
    if not pcm or rate <= 0:
        return None
    resampler = StreamResampler(rate, OUTPUT_RATE)
    out = resampler.process(pcm) + resampler.flush()
    return Speech(text, out, word_offsets(text, out))


def word_offsets(text: str, pcm: bytes) -> tuple[tuple[str, int], ...]:
    """(piece, sample offset) per word, spread over the audible part of ``pcm`` by letters.

    The pieces concatenate back to ``text`` exactly (as :class:`Speech` promises)."""
    tokens = [m for m in _TOKENS.finditer(text) if m.group()[0] not in _PAUSE_S]
    if not tokens:
        return ((text, 0),) if text else ()
    x = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    loud = np.flatnonzero(x > 300)
    first, last = (int(loud[0]), int(loud[-1])) if loud.size else (0, len(x))
    weights = np.array([len(m.group()) + 1 for m in tokens], dtype=np.float64)
    starts = np.concatenate(([0.0], np.cumsum(weights)[:-1])) / weights.sum()
    pieces: list[tuple[str, int]] = []
    for i, m in enumerate(tokens):
        begin = 0 if i == 0 else m.start()
        end = tokens[i + 1].start() if i + 1 < len(tokens) else len(text)
        pieces.append((text[begin:end], first + round(starts[i] * (last - first))))
    return tuple(pieces)
