"""bench/uplink_blocks.py's accounting: what it prints for a known scene."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from support import ROOT

LOUD = b"\x10" * 160  # a loud μ-law frame (-13 dBFS peak)
QUIET = b"\xff" * 160  # line silence


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """bench/uplink_blocks.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_uplink", ROOT / "bench" / "uplink_blocks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_speech_blocks_hold_loud_frames_only_and_never_the_pause(bench: ModuleType) -> None:
    # 2 s of silence, 1 s of talk, 2 s of silence: 250 frames, 5 s.
    frames = [QUIET] * 100 + [LOUD] * 50 + [QUIET] * 100
    off = bench.measure(frames, 20, quiet_ms=100)
    on = bench.measure(frames, 60, quiet_ms=100)
    assert off["loud_held_max_ms"] == 0.0
    assert on["loud_held_max_ms"] == 40.0  # three frames per message: the first waits 40 ms
    assert on["pause_start_held_max_ms"] == off["pause_start_held_max_ms"] == 0.0
    # 15 loud frames alone (0.3 s), then 35 in 11 full 60 ms blocks, the last 2 going out
    # with the pause's first frame (one message either way): 24 messages fewer in 5 s.
    assert off["messages_per_s"] - on["messages_per_s"] == pytest.approx((35 - 11) / 5.0)


def test_the_turn_end_window_saves_messages_and_never_holds_the_turn_end(
    bench: ModuleType,
) -> None:
    frames = [QUIET] * 100 + [LOUD] * 50 + [QUIET] * 100
    on = bench.measure(frames, 60, window=True, quiet_ms=100)
    off = bench.measure(frames, 60, window=False, quiet_ms=100)
    assert on["turn_end_held_max_ms"] == off["turn_end_held_max_ms"] == 0.0
    # After the talk: the pause's first frame (with the loud frames held before it), 14
    # frames to 300 ms in 3 quiet blocks, the window's other 19 frames one by one, then 65
    # frames in 13 quiet blocks: 36 messages, against 1 + 73 (frame by frame to 1.5 s) + 5
    # quiet blocks = 79 without the window.
    assert off["messages_per_s"] - on["messages_per_s"] == pytest.approx((79 - 36) / 5.0)
