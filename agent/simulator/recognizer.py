"""Offline speech recognition of the caller for the simulator: pocketsphinx, off the event loop.

Optional (the ``simulator`` extra). Without pocketsphinx :func:`shared_pool` returns ``None``
(logged once) and the simulator transcribes an utterance as ``[caller speech N s]``.

Cost is bounded: one :class:`RecognizerPool` per process holds ``threads`` worker threads,
each with its own decoder (pocketsphinx decoders are not thread-safe, and each costs tens of
MB). An utterance is a :class:`Transcription`: the session opens it when the caller starts
speaking, feeds audio as it arrives and closes it when the utterance ends. A worker picks it
up and gathers the audio as it comes; the utterance is decoded when it ends (see
``Transcription._decode`` for why not while it comes). At most ``max_waiting`` transcriptions
wait for a worker; past that :meth:`RecognizerPool.open` returns ``None`` and that utterance
falls back to its label.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Final

import numpy as np

from agent.pcm import StreamResampler

__all__ = ["RATE", "Phrases", "RecognizerPool", "Transcription", "shared_pool"]

log = logging.getLogger(__name__)

#: The sample rate of pocketsphinx's bundled US-English model.
RATE: Final = 16_000
_END: Final = object()
#: The decoder's search, traded for speed. On the project's clips through the phone path
#: (``python bench/simulator.py``) pocketsphinx's defaults give WER 38.6 % at ~317 ms of CPU
#: per second of speech; one pass (no flat-lexicon rescoring, no lattice best path), at most
#: 2000 active HMMs and 5 word exits per frame, and every other frame scored: 29.5 % at
#: ~132 ms. (44 words: the WER difference is within noise; the CPU is not.)
DECODER: Final[dict[str, Any]] = {
    "fwdflat": False,
    "bestpath": False,
    "maxhmmpf": 2000,
    "maxwpf": 5,
    "ds": 2,
}


class Transcription:
    """One utterance on its way through a recognizer (fed from the event loop).

    Text comes out phrase by phrase, as the caller speaks: the worker cuts the utterance at
    its inner pauses and decodes each phrase when its pause is heard. Each phrase's text goes
    to :attr:`fragments` (in the loop's thread) and then ``None`` once the utterance is done;
    :attr:`result` resolves to the whole text ("" when nothing was recognised).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, rate: int) -> None:
        self._loop = loop
        self._rate = rate
        self._audio: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._texts: list[str] = []
        #: Each phrase's text as it is recognised, then ``None``.
        self.fragments: asyncio.Queue[str | None] = asyncio.Queue()
        #: The final text; set in the loop's thread.
        self.result: asyncio.Future[str] = loop.create_future()

    def feed(self, pcm16: bytes) -> None:
        """More of the utterance (PCM16 LE mono at the session's input rate)."""
        if pcm16 and not self._closed:
            self._audio.put(pcm16)

    def close(self) -> None:
        """The utterance ended: no more audio."""
        if not self._closed:
            self._closed = True
            self._audio.put(_END)

    # --- In a worker thread ------------------------------------------------------------------

    def _decode(self, decoder: Any) -> None:
        # Each phrase is decoded as a whole once its pause is heard (not frame by frame as
        # it comes): in batch mode pocketsphinx normalises the cepstra over the phrase
        # itself, which on phone audio recognises far better than its live estimate does on
        # a first utterance, and it makes the text depend only on that phrase's audio, never
        # on what the decoder heard before (tests rely on that). Each sample is decoded once.
        resampler = StreamResampler(self._rate, RATE) if self._rate != RATE else None
        phrases = Phrases()
        while (item := self._audio.get()) is not _END:
            for phrase in phrases.add(resampler.process(item) if resampler else item):
                self._phrase(decoder, phrase)
        tail = phrases.add(resampler.flush()) if resampler is not None else []
        for phrase in [*tail, phrases.rest()]:
            self._phrase(decoder, phrase)
        self._loop.call_soon_threadsafe(self._finish)

    def _phrase(self, decoder: Any, pcm: bytes) -> None:
        if len(pcm) < 2 * RATE // 10:  # under 0.1 s there is nothing to recognise
            return
        decoder.start_utt()
        try:
            decoder.process_raw(pcm, False, True)
        finally:
            decoder.end_utt()
        if text := _text(decoder):
            self._loop.call_soon_threadsafe(self._fragment, text)

    def _fragment(self, text: str) -> None:
        self._texts.append(text)
        self.fragments.put_nowait(text)

    def _finish(self) -> None:
        if not self.result.done():
            self.fragments.put_nowait(None)
            self.result.set_result(" ".join(self._texts))


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
        return out

    def rest(self) -> bytes:
        """The audio not yet cut into a phrase (the utterance's last phrase)."""
        rest, self._pcm, self._levels = bytes(self._pcm), bytearray(), []
        return rest

    def _cut(self) -> int | None:
        """The frame to cut the audio at, if a phrase has ended."""
        levels = self._levels
        least = int(self.MIN_PHRASE_S * 100)
        if len(levels) < least:
            return None
        quiet = max(self.QUIET * self._loudest, 1.0)
        need = self.PAUSE_MS // 10
        run = 0
        for i in range(least // 2, len(levels)):
            run = run + 1 if levels[i] < quiet else 0
            if run >= need and i - need // 2 >= least:
                return i - need // 2  # the middle of the pause
        if len(levels) >= int(self.MAX_PHRASE_S * 100):
            window = levels[-100:]
            return len(levels) - 100 + window.index(min(window)) + 1
        return None


def _text(decoder: Any) -> str:
    hyp = decoder.hyp()
    return " ".join(hyp.hypstr.split()) if hyp is not None and hyp.hypstr else ""


class RecognizerPool:
    """``threads`` pocketsphinx decoders, each in a daemon thread, shared by every session."""

    def __init__(self, threads: int = 2, max_waiting: int = 16) -> None:
        import pocketsphinx  # the simulator extra; ImportError says it is missing

        self._pocketsphinx = pocketsphinx
        self._waiting: queue.Queue[Transcription] = queue.Queue(maxsize=max_waiting)
        self._threads = [
            threading.Thread(target=self._work, name=f"sim-asr-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for thread in self._threads:
            thread.start()
        #: Utterances refused because too many were waiting.
        self.refused = 0
        #: CPU seconds the workers spent decoding (benchmarks read it).
        self.cpu_s = 0.0

    def open(self, loop: asyncio.AbstractEventLoop, rate: int) -> Transcription | None:
        """A new utterance to transcribe, or ``None`` when the pool is saturated."""
        job = Transcription(loop, rate)
        try:
            self._waiting.put_nowait(job)
        except queue.Full:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("simulator speech recognition saturated (%d refused)", self.refused)
            return None
        return job

    def _work(self) -> None:
        # Building a decoder loads the model (~0.4 s of CPU): once per thread, in the thread.
        decoder = self._pocketsphinx.Decoder(loglevel="FATAL", **DECODER)
        while True:
            job = self._waiting.get()
            started = time.thread_time()
            try:
                job._decode(decoder)
            except Exception:  # the boundary of one utterance: the pool keeps serving
                log.exception("simulator speech recognition failed")
                job._loop.call_soon_threadsafe(job._finish)
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
