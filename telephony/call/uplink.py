"""How much caller audio goes into each message to the model: pure, per call.

Every WebSocket message to the model costs the server about the same (a JSON envelope,
base64, a TLS record, a syscall), whatever its length, and one message per 20 ms Twilio frame
is half of all the messages a call makes. Larger messages would cost less, but while the
caller speaks, or may be starting to, they delay what the model hears: its voice activity
detection sees a barge-in later, and the end of a turn later.

So the size depends on what the caller is doing. :class:`UplinkBlocks` hands the call its
μ-law audio in blocks:

- *prompt* (``chunk_ms``, 20 ms by default: every frame at once) while the caller may be
  starting to talk (a frame whose peak reaches :data:`ONSET_PEAK`), and around the end of
  their turn (below);
- *speech* (``speech_chunk_ms``) once the caller has been talking for :data:`SPEECH_AFTER_MS`
  (loud frames, with no pause of :data:`SPEECH_GAP_MS` or more): only loud frames are held,
  and the first frame below the onset ends the block at once (it and what was held go out
  together), so the model hears at once that speech paused. By then the model has had the
  onset frame by frame for longer than its start-of-speech padding
  (``AGENT_VAD_PREFIX_PADDING_MS``, 100 ms by default), so a barge-in is seen as early as
  before; holding loud frames later in an utterance only delays what the model's VAD
  already calls speech;
- *quiet* (``quiet_chunk_ms``) during silence: while the agent talks and the caller
  listens, or while the model thinks, and in the silence after the caller stops, except
  around the moment the model ends their turn (below). The first frame that reaches
  :data:`ONSET_PEAK` ends the block at once (it and what was held go out together, oldest
  first), so the model hears the start of speech as soon as it would have in prompt mode.

After the caller stops, what the model does with the silence depends on one moment: when it
has heard ``turn_end_ms`` of it (its end-of-speech silence, ``AGENT_VAD_SILENCE_MS``), it
ends the turn and answers. Silence before that only counts towards it, and the model hears
it in the same order whether it comes frame by frame or in blocks. So the silence goes in
quiet blocks, except in a window around that moment (from :data:`TURN_END_EARLY_MS` before
it to :data:`TURN_END_LATE_MS` after it, measured from the last loud frame; a block ends at
the window's start), where frames go out one by one: the model's own VAD may place the end
of speech a little earlier or later than the peak test here does, and within the window
the frame that completes its silence is never held. After the window the turn has ended
(or the caller spoke again, an onset): quiet blocks. The first quiet frame after speech
blocks still goes out at once, with the loud frames held before it.

The onset test is on the frame's *peak*, which is never below its RMS: every frame the
call's own VAD (RMS at -40 dBFS, :mod:`agent.vad`) counts as loud ends a quiet block. On a
line whose noise peaks above -40 dBFS every frame is loud, and inside a speech block the
model would hear both a barge-in and the end of a turn up to ``speech_chunk_ms - chunk_ms``
later. So speech blocks last only while an utterance is younger than ``speech_run_max_ms``
(:data:`SPEECH_RUN_MAX_MS` by default): a run of loud frames longer than that, with no pause
of :data:`SPEECH_GAP_MS`, is more likely a noisy line than a caller's turn, and from there
to the next pause its frames go out one by one again. A noisy line pays the delay for its
first seconds only; a caller who talks on for longer costs more messages, nothing else.
(``speech_chunk_ms`` equal to ``chunk_ms`` turns speech blocks off.) What the model
receives is the same audio, in order, only grouped differently.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ONSET_PEAK",
    "SPEECH_AFTER_MS",
    "SPEECH_GAP_MS",
    "SPEECH_RUN_MAX_MS",
    "TURN_END_EARLY_MS",
    "TURN_END_LATE_MS",
    "UplinkBlocks",
    "is_onset",
]

#: μ-law bytes per millisecond (8 kHz, one byte per sample).
_BYTES_PER_MS: Final = 8
#: How long the caller must have been talking before loud frames go in speech blocks: three
#: times the model's default start-of-speech padding (100 ms), so that its VAD has committed
#: to the utterance frame by frame first.
SPEECH_AFTER_MS: Final = 300
#: A pause this long ends an utterance: the next loud frame is an onset again (prompt). Well
#: under the model's end-of-speech silence (``AGENT_VAD_SILENCE_MS``, 500 ms by default).
SPEECH_GAP_MS: Final = 200
#: Speech blocks end when an utterance (loud frames, no pause of SPEECH_GAP_MS) gets this
#: long: most turns on the phone are shorter, and a line whose noise passes the onset test
#: looks like one endless utterance, which must not keep its barge-ins and turn ends late.
SPEECH_RUN_MAX_MS: Final = 4000
#: The window around the model's end of turn (``turn_end_ms`` of silence after the last loud
#: frame) where frames go out one by one: from this long before it...
TURN_END_EARLY_MS: Final = 200
#: ...to this long after it. Generous on both sides: the model's VAD is not this peak test.
TURN_END_LATE_MS: Final = 200


def _ulaw_magnitude(byte: int) -> int:
    """The linear magnitude (0..32124) of one G.711 μ-law byte."""
    b = ~byte & 0xFF
    exponent = (b >> 4) & 0x07
    mantissa = b & 0x0F
    return ((mantissa << 3) + 0x84 << exponent) - 0x84


_SPEECH_AFTER_BYTES: Final = SPEECH_AFTER_MS * _BYTES_PER_MS
_SPEECH_GAP_BYTES: Final = SPEECH_GAP_MS * _BYTES_PER_MS

#: -40 dBFS, the call VAD's loudness threshold, as a peak (full scale 32768).
_ONSET_LINEAR: Final = round(32768 * 10 ** (-40 / 20))
#: The same, as the smallest μ-law magnitude class at or above it (classes are monotonic).
ONSET_PEAK: Final = min((~b & 0x7F) for b in range(256) if _ulaw_magnitude(b) >= _ONSET_LINEAR)
#: The μ-law bytes whose magnitude class (``~byte & 0x7F``: 0 = silence .. 127 = full scale)
#: is below the onset. Deleting them from a frame (``bytes.translate``, in C) leaves its loud
#: samples: a frame is an onset when anything is left. Without decoding it, and ten times
#: faster than taking the frame's peak class in Python (50 frames per call-second).
_QUIET_BYTES: Final = bytes(b for b in range(256) if (~b & 0x7F) < ONSET_PEAK)


def is_onset(ulaw: bytes) -> bool:
    """Whether a μ-law frame's peak reaches :data:`ONSET_PEAK` (the test ``push`` makes)."""
    return bool(ulaw.translate(None, _QUIET_BYTES))


class UplinkBlocks:
    """Groups a call's μ-law frames into the blocks sent to the model (see the module doc).

    ``push`` takes each frame as it arrives and returns the block to convert and send now,
    or ``None`` to hold it. ``quiet_chunk_ms`` equal to ``chunk_ms`` disables quiet blocks;
    ``speech_chunk_ms`` equal to ``chunk_ms`` (the default) disables speech blocks.
    ``turn_end_ms`` is the model's end-of-speech silence; the window of prompt frames around
    it ends at ``quiet_after_ms`` of silence (default ``turn_end_ms`` +
    :data:`TURN_END_LATE_MS`). ``speech_run_max_ms`` (``None``: no limit) ends speech blocks
    in an utterance that has gone on that long.
    """

    __slots__ = (
        "_chunk",
        "_held",
        "_quiet",
        "_quiet_after",
        "_since_loud",
        "_speech",
        "_speech_until",
        "_talking",
        "_uniform",
        "_window_start",
    )

    def __init__(
        self,
        chunk_ms: int = 20,
        quiet_chunk_ms: int = 200,
        quiet_after_ms: int | None = None,
        speech_chunk_ms: int | None = None,
        turn_end_ms: int = 500,
        speech_run_max_ms: int | None = SPEECH_RUN_MAX_MS,
    ):
        speech_ms = chunk_ms if speech_chunk_ms is None else speech_chunk_ms
        if quiet_after_ms is None:
            quiet_after_ms = turn_end_ms + TURN_END_LATE_MS
        if (
            chunk_ms <= 0
            or quiet_chunk_ms < chunk_ms
            or quiet_after_ms < 0
            or speech_ms < chunk_ms
            or turn_end_ms < 0
            or (speech_run_max_ms is not None and speech_run_max_ms < 0)
        ):
            raise ValueError(
                f"need 0 < chunk_ms ({chunk_ms}) <= quiet_chunk_ms ({quiet_chunk_ms}), "
                f"speech_chunk_ms ({speech_ms}) and quiet_after_ms ({quiet_after_ms}), "
                f"turn_end_ms ({turn_end_ms}) and speech_run_max_ms ({speech_run_max_ms}) >= 0"
            )
        self._chunk = chunk_ms * _BYTES_PER_MS
        self._quiet = quiet_chunk_ms * _BYTES_PER_MS
        self._speech = speech_ms * _BYTES_PER_MS
        # Loud frames go in speech blocks while the utterance is in [SPEECH_AFTER, this).
        self._speech_until = (
            float("inf") if speech_run_max_ms is None else speech_run_max_ms * _BYTES_PER_MS
        )
        self._quiet_after = quiet_after_ms * _BYTES_PER_MS
        # Silence from here to _quiet_after goes out frame by frame (the turn-end window).
        self._window_start = max(0, turn_end_ms - TURN_END_EARLY_MS) * _BYTES_PER_MS
        # Every block the same size: no need to look at the audio.
        self._uniform = self._quiet == self._chunk == self._speech
        self._held = bytearray()
        # Audio since the last loud frame, in bytes; starts "long ago": a call begins quiet.
        self._since_loud = self._quiet_after
        # Audio since the current utterance began (its first loud frame after a pause of
        # SPEECH_GAP_MS or more), in bytes; 0 when there is none.
        self._talking = 0

    @property
    def quiet(self) -> bool:
        """Whether the caller has been quiet for longer than the turn-end window."""
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

    def _step(self, ulaw: bytes) -> tuple[int, int, int]:
        """This frame's block limit, and ``_talking`` and ``_since_loud`` after it (pure)."""
        n = len(ulaw)
        talking, since_loud = self._talking, self._since_loud
        if self._uniform:
            return self._chunk, talking, since_loud
        if ulaw.translate(None, _QUIET_BYTES):  # a loud sample: see is_onset
            # Well into an utterance the model already hears it: a speech block. Otherwise
            # speech may be starting: out at once, with whatever was held.
            # Past the run limit: a noisy line, most likely (SPEECH_RUN_MAX_MS).
            limit = self._speech if _SPEECH_AFTER_BYTES <= talking < self._speech_until else 0
            return limit, talking + n, 0
        # A pause in speech blocks: its first frame ends the block at once.
        flush = talking >= _SPEECH_AFTER_BYTES and not since_loud
        since_loud += n
        if since_loud >= _SPEECH_GAP_BYTES:
            talking = 0  # a pause: the next loud frame is an onset again
        elif talking:
            talking += n
        if flush:
            return 0, talking, since_loud
        if self._window_start <= since_loud < self._quiet_after:
            return self._chunk, talking, since_loud  # the model may be ending the turn now
        return self._quiet, talking, since_loud

    def push(self, ulaw: bytes) -> bytes | None:
        """The next frame; the block to send now (``None``: held for a larger block)."""
        limit, self._talking, self._since_loud = self._step(ulaw)
        if not self._held and len(ulaw) >= limit:
            return ulaw  # the common case: a whole block in one frame, no copy
        self._held += ulaw
        if len(self._held) < max(limit, 1):
            return None
        block = bytes(self._held)
        self._held.clear()
        return block
