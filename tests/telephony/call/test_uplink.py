"""How caller audio is grouped into messages to the model (pure)."""

from __future__ import annotations

import audioop

import numpy as np
import pytest

from telephony.audio import pcm16_to_ulaw_8k
from telephony.call.uplink import ONSET_PEAK, UplinkBlocks, _ulaw_magnitude

FRAME = 160


def tone_frame(dbfs: float) -> bytes:
    """One 20 ms μ-law frame of a 440 Hz tone peaking at ``dbfs``."""
    t = np.arange(FRAME) / 8000
    pcm = (32768 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    return audioop.lin2ulaw(pcm.tobytes(), 2)


QUIET = tone_frame(-60.0)
LOUD = tone_frame(-20.0)


def feed(blocks: UplinkBlocks, frames: list[bytes]) -> list[bytes | None]:
    return [blocks.push(f) for f in frames]


def test_the_magnitude_table_matches_g711_decoding() -> None:
    for byte in range(256):
        sample = int.from_bytes(audioop.ulaw2lin(bytes([byte]), 2), "little", signed=True)
        assert _ulaw_magnitude(byte) == abs(sample)
    # The onset class is the quietest μ-law step at or above -40 dBFS (328 of 32768).
    assert _ulaw_magnitude(~ONSET_PEAK & 0x7F) >= 328 > _ulaw_magnitude(~(ONSET_PEAK - 1) & 0x7F)


def test_a_call_starts_quiet_and_sends_quiet_blocks() -> None:
    blocks = UplinkBlocks(20, 100)
    out = feed(blocks, [QUIET] * 10)
    assert out == [None] * 4 + [QUIET * 5] + [None] * 4 + [QUIET * 5]


def test_the_first_loud_frame_goes_out_at_once_with_what_was_held() -> None:
    blocks = UplinkBlocks(20, 100)
    assert feed(blocks, [QUIET, QUIET, LOUD]) == [None, None, QUIET + QUIET + LOUD]
    # Then every frame at once, until 1.5 s of frames below the onset.
    assert feed(blocks, [QUIET] * 74) == [QUIET] * 74
    assert not blocks.quiet
    assert blocks.push(QUIET) is None  # 75 quiet frames = 1.5 s: quiet blocks again
    assert blocks.quiet


def test_speech_keeps_it_prompt_and_the_audio_is_never_reordered_or_lost() -> None:
    rng = np.random.default_rng(3)
    frames = [LOUD if rng.random() < 0.2 else QUIET for _ in range(500)]
    blocks = UplinkBlocks(20, 100, quiet_after_ms=200)
    out = [b for b in feed(blocks, frames) if b is not None]
    assert b"".join(out) == b"".join(frames)[: sum(map(len, out))]
    assert sum(map(len, out)) + blocks.held_bytes == 500 * FRAME
    assert max(map(len, out)) <= 5 * FRAME


def test_prompt_chunks_larger_than_a_frame() -> None:
    blocks = UplinkBlocks(40, 40)  # quiet blocks off: always 40 ms
    assert feed(blocks, [LOUD, QUIET, QUIET, LOUD]) == [None, LOUD + QUIET, None, QUIET + LOUD]


def test_a_noisy_line_stays_prompt() -> None:
    rng = np.random.default_rng(5)
    noise = (rng.normal(0, 400, 8000)).astype("<i2").tobytes()  # about -38 dBFS RMS
    frames = [pcm16_to_ulaw_8k(noise, 8000)[i : i + FRAME] for i in range(0, 8000, FRAME)]
    blocks = UplinkBlocks(20, 100)
    assert all(b is not None for b in feed(blocks, frames))


@pytest.mark.parametrize(("chunk", "quiet", "after"), [(0, 100, 0), (40, 20, 0), (20, 100, -1)])
def test_bad_sizes_are_refused(chunk: int, quiet: int, after: int) -> None:
    with pytest.raises(ValueError, match="need 0 < chunk_ms"):
        UplinkBlocks(chunk, quiet, after)


def test_with_larger_prompt_chunks_a_loud_frame_after_silence_still_goes_out_alone() -> None:
    blocks = UplinkBlocks(40, 100)
    assert feed(blocks, [LOUD, QUIET, QUIET]) == [LOUD, None, QUIET + QUIET]


def test_flush_gives_what_is_held_once() -> None:
    blocks = UplinkBlocks(20, 100)
    assert feed(blocks, [QUIET] * 3) == [None, None, None]
    assert blocks.flush() == QUIET * 3
    assert blocks.held_bytes == 0 and blocks.flush() == b""
