"""How caller audio is grouped into messages to the model (pure)."""

from __future__ import annotations

import audioop

import numpy as np
import pytest

from telephony.audio import pcm16_to_ulaw_8k
from telephony.call.uplink import (
    ONSET_PEAK,
    SPEECH_AFTER_MS,
    SPEECH_GAP_MS,
    SPEECH_RUN_MAX_MS,
    TURN_END_EARLY_MS,
    TURN_END_LATE_MS,
    UplinkBlocks,
    _ulaw_magnitude,
    is_onset,
)

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


def test_an_onset_is_a_frame_whose_decoded_peak_reaches_minus_40_dbfs() -> None:
    def decoded_peak(ulaw: bytes) -> int:
        return int(np.abs(np.frombuffer(audioop.ulaw2lin(ulaw, 2), "<i2").astype(int)).max())

    for byte in range(256):
        assert is_onset(bytes([byte])) == (decoded_peak(bytes([byte])) >= 328)
    rng = np.random.default_rng(2)
    for _ in range(500):  # quiet frames with now and then one louder sample
        frame = bytearray(rng.choice(np.arange(0xE8, 0x100), FRAME).astype(np.uint8).tobytes())
        if rng.random() < 0.5:
            frame[int(rng.integers(FRAME))] = int(rng.integers(256))
        assert is_onset(bytes(frame)) == (decoded_peak(bytes(frame)) >= 328)
    assert not is_onset(b"")


def test_a_call_starts_quiet_and_sends_quiet_blocks() -> None:
    blocks = UplinkBlocks(20, 100)
    out = feed(blocks, [QUIET] * 10)
    assert out == [None] * 4 + [QUIET * 5] + [None] * 4 + [QUIET * 5]


def test_the_first_loud_frame_goes_out_at_once_with_what_was_held() -> None:
    blocks = UplinkBlocks(20, 100)
    assert feed(blocks, [QUIET, QUIET, LOUD]) == [None, None, QUIET + QUIET + LOUD]


def test_the_silence_after_speech_is_prompt_only_around_the_end_of_the_turn() -> None:
    blocks = UplinkBlocks(20, 100, turn_end_ms=500)
    assert feed(blocks, [LOUD]) == [LOUD]
    # Up to 200 ms before the model ends the turn (500 ms of silence), silence only counts
    # towards it: 100 ms blocks, the last one ending where the window starts (300 ms).
    assert feed(blocks, [QUIET] * 15) == ([None] * 4 + [QUIET * 5]) * 3
    # From 300 to 700 ms every frame at once: the one completing 500 ms is never held.
    assert feed(blocks, [QUIET] * 19) == [QUIET] * 19
    assert not blocks.quiet
    assert blocks.push(QUIET) is None  # 700 ms: quiet blocks again
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


@pytest.mark.parametrize(
    ("chunk", "quiet", "after", "speech"),
    [(0, 100, 0, None), (40, 20, 0, None), (20, 100, -1, None), (40, 100, 0, 20)],
)
def test_bad_sizes_are_refused(chunk: int, quiet: int, after: int, speech: int | None) -> None:
    with pytest.raises(ValueError, match="need 0 < chunk_ms"):
        UplinkBlocks(chunk, quiet, after, speech_chunk_ms=speech)
    with pytest.raises(ValueError, match="turn_end_ms"):
        UplinkBlocks(20, 100, turn_end_ms=-1)


ONSET_FRAMES = SPEECH_AFTER_MS // 20


def test_speech_blocks_start_only_once_the_caller_has_talked_for_a_while() -> None:
    blocks = UplinkBlocks(20, 100, speech_chunk_ms=60)
    # The onset goes out frame by frame: the model's VAD sees a barge-in as early as ever.
    assert feed(blocks, [LOUD] * ONSET_FRAMES) == [LOUD] * ONSET_FRAMES
    # Then loud frames go three at a time.
    assert feed(blocks, [LOUD] * 6) == [None, None, LOUD * 3, None, None, LOUD * 3]


def test_a_pause_in_speech_blocks_goes_out_at_once_with_what_was_held() -> None:
    blocks = UplinkBlocks(20, 100, speech_chunk_ms=100)
    feed(blocks, [LOUD] * ONSET_FRAMES)
    assert feed(blocks, [LOUD, LOUD, QUIET]) == [None, None, LOUD + LOUD + QUIET]
    # The rest of a short pause only counts towards the end of the turn: it is held...
    assert feed(blocks, [QUIET, QUIET]) == [None, None]
    # ...and a short pause does not end the utterance: speech blocks go on after it, the
    # pause first.
    assert feed(blocks, [LOUD] * 5) == [None, None, QUIET * 2 + LOUD * 3, None, None]


def test_a_long_pause_makes_the_next_loud_frame_an_onset_again() -> None:
    blocks = UplinkBlocks(20, 100, speech_chunk_ms=60)
    feed(blocks, [LOUD] * (ONSET_FRAMES + 3))
    gap = SPEECH_GAP_MS // 20
    out = feed(blocks, [QUIET] * gap)
    assert out[0] == QUIET  # the pause's first frame at once (it ends the speech block)
    held = blocks.held_bytes
    # After the gap every loud frame goes at once again (an onset), the first with the
    # pause held before it.
    assert feed(blocks, [LOUD] * ONSET_FRAMES) == [QUIET * (held // FRAME) + LOUD] + [LOUD] * (
        ONSET_FRAMES - 1
    )
    # One frame short of the gap is still the same utterance: speech blocks go on (the
    # second loud frame after the pause is held).
    feed(blocks, [LOUD] * 3)
    out = feed(blocks, [QUIET] * (gap - 1) + [LOUD, LOUD])
    assert out[0] == QUIET and out[-2] is not None and out[-1] is None


def test_a_noisy_line_goes_in_speech_blocks_after_the_onset() -> None:
    rng = np.random.default_rng(5)
    noise = (rng.normal(0, 400, 16000)).astype("<i2").tobytes()  # about -38 dBFS RMS
    ulaw = pcm16_to_ulaw_8k(noise, 8000)
    frames = [ulaw[i : i + FRAME] for i in range(0, len(ulaw), FRAME)]
    blocks = UplinkBlocks(20, 100, speech_chunk_ms=60)
    out = feed(blocks, frames)
    assert all(b is not None for b in out[:ONSET_FRAMES])
    later = len(frames) - ONSET_FRAMES  # 85 frames: 28 blocks of 3, and 1 frame held
    assert [len(b) for b in out[ONSET_FRAMES:] if b is not None] == [3 * FRAME] * (later // 3)
    assert b"".join(b for b in out if b is not None) + blocks.flush() == ulaw


def test_speech_blocks_end_when_an_utterance_runs_past_the_limit() -> None:
    # A line whose noise passes the onset test looks like one endless utterance: after
    # SPEECH_RUN_MAX_MS its frames go one by one again, so its barge-ins and turn ends reach
    # the model frame by frame from then on.
    rng = np.random.default_rng(7)
    noise = (rng.normal(0, 400, 8 * 8000)).astype("<i2").tobytes()  # 8 s, about -38 dBFS
    ulaw = pcm16_to_ulaw_8k(noise, 8000)
    frames = [ulaw[i : i + FRAME] for i in range(0, len(ulaw), FRAME)]
    blocks = UplinkBlocks(20, 200, speech_chunk_ms=100)
    out = feed(blocks, frames)
    limit = SPEECH_RUN_MAX_MS // 20
    assert all(b == f for b, f in zip(out[:ONSET_FRAMES], frames, strict=False))
    blocked = [b for b in out[ONSET_FRAMES:limit] if b is not None]
    assert {len(b) for b in blocked} == {5 * FRAME}  # (200 - 15) frames: 37 blocks of 5
    # The frame at the limit takes what was held along; every later frame goes at once.
    assert out[limit] == b"".join(frames[ONSET_FRAMES + 5 * len(blocked) : limit + 1])
    assert out[limit + 1 :] == frames[limit + 1 :]
    assert b"".join(b for b in out if b is not None) == ulaw
    # A pause of SPEECH_GAP_MS starts a new utterance: its speech blocks come back.
    feed(blocks, [QUIET] * (SPEECH_GAP_MS // 20))
    after = feed(blocks, [LOUD] * (ONSET_FRAMES + 5))
    assert after[ONSET_FRAMES:] == [None] * 4 + [LOUD * 5]
    # Without a limit, the noise stays in speech blocks.
    unlimited = feed(UplinkBlocks(20, 200, speech_chunk_ms=100, speech_run_max_ms=None), frames)
    assert sum(b is not None for b in unlimited[limit:]) == (len(frames) - limit) // 5


@pytest.mark.parametrize("speech", [20, 60, 200])
def test_speech_blocks_never_reorder_or_lose_audio(speech: int) -> None:
    rng = np.random.default_rng(11)
    frames: list[bytes] = []
    while len(frames) < 2000:  # utterances and pauses of random lengths
        frames += [LOUD] * int(rng.integers(1, 60)) + [QUIET] * int(rng.integers(1, 90))
    blocks = UplinkBlocks(20, 100, quiet_after_ms=600, speech_chunk_ms=speech)
    out = [b for b in feed(blocks, frames) if b is not None]
    sent = b"".join(out)
    assert sent == b"".join(frames)[: len(sent)]
    assert len(sent) + blocks.held_bytes == len(frames) * FRAME
    assert max(map(len, out)) <= max(speech, 100) * 8
    if speech > 20:  # fewer messages than in prompt mode
        prompt = [b for b in feed(UplinkBlocks(20, 100, quiet_after_ms=600), frames) if b]
        assert len(out) < len(prompt)


def test_with_larger_prompt_chunks_a_loud_frame_after_silence_still_goes_out_alone() -> None:
    blocks = UplinkBlocks(40, 100)
    # The silence after it waits for a quiet block (the turn-end window is 300 ms away).
    assert feed(blocks, [LOUD, QUIET, QUIET]) == [LOUD, None, None]


@pytest.mark.parametrize("turn_end_ms", [200, 500, 800])
@pytest.mark.parametrize("speech", [20, 60])
def test_the_frame_that_ends_the_turn_is_never_held(turn_end_ms: int, speech: int) -> None:
    rng = np.random.default_rng(turn_end_ms + speech)
    frames: list[bytes] = []
    while len(frames) < 2000:  # utterances and pauses of random lengths
        frames += [LOUD] * int(rng.integers(1, 60)) + [QUIET] * int(rng.integers(1, 90))
    out = feed(UplinkBlocks(20, 100, speech_chunk_ms=speech, turn_end_ms=turn_end_ms), frames)
    # Every frame of the window around the turn's end (its silence counted from the last
    # loud frame) goes out as it arrives, with whatever was held before it.
    early = max(0, turn_end_ms - TURN_END_EARLY_MS) // 20
    late = (turn_end_ms + TURN_END_LATE_MS) // 20
    since_loud = late  # frames since the last loud one
    checked = 0
    for frame, block in zip(frames, out, strict=True):
        since_loud = 0 if frame == LOUD else since_loud + 1
        if frame != LOUD and early <= since_loud < late:
            assert block is not None and block.endswith(frame)
            checked += 1
    assert checked > 200
    # And fewer messages than sending the whole silence after speech frame by frame.
    old = UplinkBlocks(20, 100, 1500, speech_chunk_ms=speech, turn_end_ms=TURN_END_EARLY_MS)
    assert sum(b is not None for b in out) < sum(b is not None for b in feed(old, frames))


def test_flush_gives_what_is_held_once() -> None:
    blocks = UplinkBlocks(20, 100)
    assert feed(blocks, [QUIET] * 3) == [None, None, None]
    assert blocks.flush() == QUIET * 3
    assert blocks.held_bytes == 0 and blocks.flush() == b""
