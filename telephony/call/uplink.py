"""How much caller audio goes into each message to the model: pure, per call.

Every WebSocket message to the model costs the server about the same (a JSON envelope,
base64, a TLS record, a syscall), whatever its length, and one message per 20 ms Twilio frame
is half of all the messages a call makes. Larger messages would cost less, but while the
caller speaks, or may be starting to, they delay what the model hears: its voice activity
detection sees a barge-in later, and the end of a turn later.

So the size depends on what the caller is doing. :class:`UplinkBlocks` hands the call its
μ-law audio in blocks:

- *prompt* (``chunk_ms``, 20 ms by default: every frame at once) while the caller may be
  talking: from the first frame whose peak reaches :data:`ONSET_PEAK` until
  ``quiet_after_ms`` of frames below it;
- *quiet* (``quiet_chunk_ms``) during longer silence: while the agent talks and the caller
  listens, or while the model thinks. The first frame that reaches :data:`ONSET_PEAK` ends
  the block at once (it and what was held go out together, oldest first), so the model hears
  the start of speech as soon as it would have in prompt mode.

The onset test is on the frame's *peak*, which is never below its RMS: every frame the
call's own VAD (RMS at -40 dBFS, :mod:`agent.vad`) counts as loud ends a quiet block, and a
noisy line merely stays in prompt mode. What the model receives is the same audio, in order,
only grouped differently.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ONSET_PEAK", "UplinkBlocks"]

#: μ-law bytes per millisecond (8 kHz, one byte per sample).
_BYTES_PER_MS: Final = 8


def _ulaw_magnitude(byte: int) -> int:
    """The linear magnitude (0..32124) of one G.711 μ-law byte."""
    b = ~byte & 0xFF
    exponent = (b >> 4) & 0x07
    mantissa = b & 0x0F
    return ((mantissa << 3) + 0x84 << exponent) - 0x84


#: -40 dBFS, the call VAD's loudness threshold, as a peak (full scale 32768).
_ONSET_LINEAR: Final = round(32768 * 10 ** (-40 / 20))
#: The same, as the smallest μ-law magnitude class at or above it (classes are monotonic).
ONSET_PEAK: Final = min((~b & 0x7F) for b in range(256) if _ulaw_magnitude(b) >= _ONSET_LINEAR)
#: μ-law byte → its magnitude class (0 = silence .. 127 = full scale): one ``translate`` and
#: one ``max`` give a frame's peak without decoding it.
_CLASS: Final = bytes((~b & 0x7F) for b in range(256))


class UplinkBlocks:
    """Groups a call's μ-law frames into the blocks sent to the model (see the module doc).

    ``push`` takes each frame as it arrives and returns the block to convert and send now,
    or ``None`` to hold it. ``quiet_chunk_ms`` equal to ``chunk_ms`` disables quiet blocks.
    """

    __slots__ = ("_chunk", "_held", "_quiet", "_quiet_after", "_since_loud")

    def __init__(self, chunk_ms: int = 20, quiet_chunk_ms: int = 100, quiet_after_ms: int = 1500):
        if chunk_ms <= 0 or quiet_chunk_ms < chunk_ms or quiet_after_ms < 0:
            raise ValueError(
                f"need 0 < chunk_ms ({chunk_ms}) <= quiet_chunk_ms ({quiet_chunk_ms}) "
                f"and quiet_after_ms ({quiet_after_ms}) >= 0"
            )
        self._chunk = chunk_ms * _BYTES_PER_MS
        self._quiet = quiet_chunk_ms * _BYTES_PER_MS
        self._quiet_after = quiet_after_ms * _BYTES_PER_MS
        self._held = bytearray()
        # Audio since the last loud frame, in bytes; starts "long ago": a call begins quiet.
        self._since_loud = self._quiet_after

    @property
    def quiet(self) -> bool:
        """Whether the caller has been quiet long enough for quiet blocks."""
        return self._since_loud >= self._quiet_after

    @property
    def held_bytes(self) -> int:
        return len(self._held)

    def flush(self) -> bytes:
        """What is held (a block not yet full), now: the stream ends, and every frame Twilio
        sent is either sent on or counted."""
        block = bytes(self._held)
        self._held.clear()
        return block

    def push(self, ulaw: bytes) -> bytes | None:
        """The next frame; the block to send now (``None``: held for a larger block)."""
        if self._quiet == self._chunk:
            limit = self._chunk
        elif ulaw and max(ulaw.translate(_CLASS)) >= ONSET_PEAK:
            self._since_loud = 0
            limit = 0  # speech may be starting: out at once, with whatever was held
        else:
            self._since_loud += len(ulaw)
            limit = self._quiet if self.quiet else self._chunk
        if not self._held and len(ulaw) >= limit:
            return ulaw  # the common case: a whole block in one frame, no copy
        self._held += ulaw
        if len(self._held) < max(limit, 1):
            return None
        block = bytes(self._held)
        self._held.clear()
        return block
