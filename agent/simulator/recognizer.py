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

from agent.pcm import StreamResampler

__all__ = ["RATE", "RecognizerPool", "Transcription", "shared_pool"]

log = logging.getLogger(__name__)

#: The sample rate of pocketsphinx's bundled US-English model.
RATE: Final = 16_000
_END: Final = object()


class Transcription:
    """One utterance on its way through a recognizer (fed from the event loop).

    :attr:`result` resolves to the text ("" when nothing was recognised).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, rate: int) -> None:
        self._loop = loop
        self._rate = rate
        self._audio: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
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
        # The audio is gathered as it comes and decoded as a whole when the utterance ends:
        # in batch mode pocketsphinx normalises the cepstra over the utterance itself, which
        # on phone audio recognises far better than its live estimate does on a first
        # utterance, and makes the text the same whatever the decoder heard before.
        resampler = StreamResampler(self._rate, RATE) if self._rate != RATE else None
        pieces: list[bytes] = []
        while (item := self._audio.get()) is not _END:
            pieces.append(resampler.process(item) if resampler is not None else item)
        if resampler is not None:
            pieces.append(resampler.flush())
        pcm = b"".join(pieces)
        text = ""
        if len(pcm) >= 2 * RATE // 10:  # under 0.1 s there is nothing to recognise
            decoder.start_utt()
            try:
                decoder.process_raw(pcm, False, True)
            finally:
                decoder.end_utt()
            text = _text(decoder)
        self._loop.call_soon_threadsafe(self._finish, text)

    def _finish(self, text: str) -> None:
        if not self.result.done():
            self.result.set_result(text)


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
        decoder = self._pocketsphinx.Decoder(loglevel="FATAL")
        while True:
            job = self._waiting.get()
            started = time.thread_time()
            try:
                job._decode(decoder)
            except Exception:  # the boundary of one utterance: the pool keeps serving
                log.exception("simulator speech recognition failed")
                job._loop.call_soon_threadsafe(job._finish, "")
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
