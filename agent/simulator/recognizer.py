"""Offline speech recognition of the caller for the simulator: pocketsphinx, off the event loop.

Optional (the ``simulator`` extra). Without pocketsphinx :func:`shared_pool` returns ``None``
(logged once) and the simulator transcribes an utterance as ``[caller speech N s]``.

An utterance is a :class:`Transcription`: the session opens it when the caller starts
speaking, feeds audio as it arrives and closes it when the utterance ends. On the event loop
(cheap: a level per 10 ms) :class:`Phrases` cuts the audio at the caller's pauses; each phrase
goes to the process's :class:`RecognizerPool` and its text comes back, in order, while the
caller goes on speaking. Each phrase is decoded once, as a whole: in batch mode pocketsphinx
normalises the cepstra over the phrase itself, which on phone audio recognises far better
than its live estimate does on a first utterance, and makes the text depend only on that
phrase's audio, never on what a decoder heard before (tests rely on that).

Cost is bounded: the pool holds ``threads`` worker threads, each with its own decoder
(pocketsphinx decoders are not thread-safe, and each costs tens of MB), and a worker is busy
only while it decodes. At most ``max_waiting`` phrases wait for a worker; past that a phrase
is skipped (counted in :attr:`RecognizerPool.refused`, logged) rather than delaying every
caller's words without bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import numpy as np

from agent.pcm import StreamResampler

__all__ = ["RATE", "Phrases", "RecognizerPool", "Transcription", "shared_pool"]

log = logging.getLogger(__name__)

#: The sample rate of pocketsphinx's bundled US-English model.
RATE: Final = 16_000
#: The decoder's search, traded for speed. On the project's clips through the phone path
#: (``python bench/simulator.py``) pocketsphinx's defaults give WER 38.6 % at ~317 ms of CPU
#: per second of speech; one pass (no flat-lexicon rescoring, no lattice best path), at most
#: 2000 active HMMs and 5 word exits per frame, and every other frame scored: 29.5 % at
#: ~110 ms. (44 words: the WER difference is within noise; the CPU is not.)
DECODER: Final[dict[str, Any]] = {
    "fwdflat": False,
    "bestpath": False,
    "maxhmmpf": 2000,
    "maxwpf": 5,
    "ds": 2,
}
#: Under 0.1 s of audio there is nothing to recognise.
_MIN_PHRASE_BYTES: Final = 2 * RATE // 10


class Transcription:
    """One utterance on its way through the recognizer (used on the event loop).

    :meth:`texts` yields each phrase's text as it is recognised, in the order said, and ends
    once the utterance is closed and decoded.
    """

    def __init__(self, pool: RecognizerPool, rate: int) -> None:
        self._pool = pool
        self._resampler = StreamResampler(rate, RATE) if rate != RATE else None
        self._phrases = Phrases()
        self._closed = False
        self._pending: asyncio.Queue[asyncio.Future[str] | None] = asyncio.Queue()

    def feed(self, pcm16: bytes) -> None:
        """More of the utterance (PCM16 LE mono at the session's input rate)."""
        if not pcm16 or self._closed:
            return
        pcm = self._resampler.process(pcm16) if self._resampler is not None else pcm16
        for phrase in self._phrases.add(pcm):
            self._decode(phrase)

    def close(self) -> None:
        """The utterance ended: decode what is left; no more audio."""
        if self._closed:
            return
        self._closed = True
        if self._resampler is not None:
            for phrase in self._phrases.add(self._resampler.flush()):
                self._decode(phrase)
        self._decode(self._phrases.rest())
        self._pending.put_nowait(None)

    async def texts(self) -> AsyncIterator[str]:
        """Each phrase's words (phrases with none, or skipped under load, are left out)."""
        while (decoding := await self._pending.get()) is not None:
            if text := await decoding:
                yield text

    async def text(self) -> str:
        """The whole utterance's words, once it is closed and decoded."""
        return " ".join([t async for t in self.texts()])

    def _decode(self, pcm: bytes) -> None:
        if len(pcm) >= _MIN_PHRASE_BYTES:
            self._pending.put_nowait(self._pool.decode(pcm))


class Phrases:
    """Cuts 16 kHz speech into phrases at its pauses (pure; used by the worker threads).

    A pause is :data:`PAUSE_MS` of 10 ms frames quieter than :data:`QUIET` of the loudest
    frame so far; a phrase needs :data:`MIN_PHRASE_S` of audio before it can end at one, and
    one that runs :data:`MAX_PHRASE_S` without a pause is cut at its quietest frame of the
    last second (rarely mid-word: between words speech dips even when it does not stop).
    """

    FRAME: Final = RATE // 100
    PAUSE_MS: Final = 250
    QUIET: Final = 0.1
    MIN_PHRASE_S: Final = 1.0
    MAX_PHRASE_S: Final = 8.0

    def __init__(self) -> None:
        self._pcm = bytearray()
        self._levels: list[float] = []  # RMS of each whole frame of _pcm
        self._loudest = 0.0
        self._scanned = 0  # frames of _levels looked at for a pause
        self._run = 0  # quiet frames in a row up to there

    def add(self, pcm16: bytes) -> list[bytes]:
        """Take more audio; return the phrases it completed."""
        self._pcm += pcm16
        frame = 2 * self.FRAME
        start, whole = len(self._levels), len(self._pcm) // frame
        if whole > start:
            # A copy: a view would pin the bytearray, which the cuts below resize.
            new = bytes(self._pcm[start * frame : whole * frame])
            frames = np.frombuffer(new, dtype="<i2").reshape(-1, self.FRAME).astype(np.float32)
            levels = np.sqrt(np.mean(frames * frames, axis=1))
            self._levels.extend(levels.tolist())
            self._loudest = max(self._loudest, float(levels.max()))
        out: list[bytes] = []
        while (cut := self._cut()) is not None:
            out.append(bytes(self._pcm[: cut * frame]))
            del self._pcm[: cut * frame]
            del self._levels[:cut]
            self._scanned = self._run = 0
        return out

    def rest(self) -> bytes:
        """The audio not yet cut into a phrase (the utterance's last phrase)."""
        rest, self._pcm, self._levels = bytes(self._pcm), bytearray(), []
        self._scanned = self._run = 0
        return rest

    def _cut(self) -> int | None:
        """The frame to cut the audio at, if a phrase has ended (each frame looked at once)."""
        levels = self._levels
        least = int(self.MIN_PHRASE_S * 100)
        quiet = max(self.QUIET * self._loudest, 1.0)
        need = self.PAUSE_MS // 10
        for i in range(max(self._scanned, least // 2), len(levels)):
            self._scanned = i + 1
            self._run = self._run + 1 if levels[i] < quiet else 0
            if self._run >= need and i - need // 2 >= least:
                return i - need // 2  # the middle of the pause
        if len(levels) >= int(self.MAX_PHRASE_S * 100):
            window = levels[-100:]
            return len(levels) - 100 + window.index(min(window)) + 1
        return None


def _text(decoder: Any) -> str:
    hyp = decoder.hyp()
    return " ".join(hyp.hypstr.split()) if hyp is not None and hyp.hypstr else ""


class RecognizerPool:
    """``threads`` pocketsphinx decoders, each in its own worker thread, shared by every
    session of the process."""

    def __init__(self, threads: int = 2, max_waiting: int = 16) -> None:
        import pocketsphinx  # the simulator extra; ImportError says it is missing

        self._pocketsphinx = pocketsphinx
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max(1, threads), thread_name_prefix="sim-asr")
        self._max_waiting = max_waiting
        self._waiting = 0
        #: Phrases skipped because too many were waiting.
        self.refused = 0
        #: CPU seconds the workers spent decoding (benchmarks read it).
        self.cpu_s = 0.0

    def open(self, rate: int) -> Transcription:
        """A new utterance to transcribe (call on the event loop)."""
        return Transcription(self, rate)

    def decode(self, pcm16: bytes) -> asyncio.Future[str]:
        """The text of one phrase (16 kHz PCM16), decoded by a worker; "" when skipped."""
        loop = asyncio.get_running_loop()
        if self._waiting >= self._max_waiting:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("simulator speech recognition saturated (%d refused)", self.refused)
            done: asyncio.Future[str] = loop.create_future()
            done.set_result("")
            return done
        self._waiting += 1
        future = loop.run_in_executor(self._executor, self._work, pcm16)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: asyncio.Future[str]) -> None:
        self._waiting -= 1

    def _work(self, pcm16: bytes) -> str:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            # Building a decoder loads the model (~0.4 s of CPU): once per thread.
            decoder = self._local.decoder = self._pocketsphinx.Decoder(loglevel="FATAL", **DECODER)
        started = time.thread_time()
        try:
            decoder.start_utt()
            try:
                decoder.process_raw(pcm16, False, True)
            finally:
                decoder.end_utt()
            return _text(decoder)
        except Exception:  # the boundary of one phrase: the pool keeps serving
            log.exception("simulator speech recognition failed")
            return ""
        finally:
            with _lock:
                self.cpu_s += time.thread_time() - started


_lock = threading.Lock()
_pool: RecognizerPool | None = None
_missing = False


def shared_pool(threads: int = 2) -> RecognizerPool | None:
    """The process's recognizer pool (made on first use), or ``None`` without pocketsphinx."""
    global _pool, _missing
    with _lock:
        if _pool is None and not _missing:
            try:
                _pool = RecognizerPool(threads)
            except ImportError:
                _missing = True
                log.warning(
                    "pocketsphinx is not installed: the simulator transcribes the caller as "
                    "'[caller speech N s]' (pip install 'gemini-phone-agent[simulator]')"
                )
        return _pool
