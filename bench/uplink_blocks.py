"""How many messages caller audio takes to reach the model, and how late it gets there.

Run ``python bench/uplink_blocks.py`` (``--clips DIR`` for other WAV files, ``--noise-dbfs``
for a noisy line, ``--json``).

Each clip (read speech; by default the shared fixtures, else the caller's own samples) is
taken to 8 kHz μ-law in 20 ms frames, as Twilio sends it, with ``--pause`` seconds of line
silence before and after it (a caller who listens, then talks); ``--noise-dbfs`` adds white
noise of that RMS to all of it (a line whose noise may pass the onset test). The frames go
through :class:`telephony.call.uplink.UplinkBlocks` with 20 ms prompt blocks and the
turn-end window around 500 ms of silence, in these configurations (speech block ms / quiet
block ms / the speech-run limit):

- 20/200/-: speech blocks off;
- 60/100/none: the defaults before December 3, 2026;
- 60/200/4000 and 100/200/4000 (the server's defaults now);
- 100/200/none: the same without the limit on an utterance's speech blocks;
- 60/100/none with the window off (every frame at once for 1.5 s after speech, as before
  December 2026).

For each it prints the messages per second of audio and how long frames were held before
going out: over all frames, over the loud ones (speech), over the first frame of each pause,
and over the frame that completes 500 ms of silence after speech (when the model ends the
turn: it must be 0 ms, or the answer starts later).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import wave
from typing import Any

import numpy as np

from agent.pcm import resample
from telephony.audio import ulaw_encode
from telephony.call.uplink import SPEECH_RUN_MAX_MS, TURN_END_EARLY_MS, UplinkBlocks, is_onset

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_CLIPS = ROOT.parent / "shared" / "fixtures" / "speech"
OWN_CLIPS = ROOT / "telephony" / "caller" / "samples"
FRAME = 160  # μ-law bytes per 20 ms frame
#: (speech block ms, quiet block ms, speech-run limit ms or None, turn-end window on).
CONFIGS: tuple[tuple[int, int, int | None, bool], ...] = (
    (20, 200, SPEECH_RUN_MAX_MS, True),
    (60, 100, None, True),
    (60, 200, SPEECH_RUN_MAX_MS, True),
    (100, 200, SPEECH_RUN_MAX_MS, True),
    (100, 200, None, True),
    (60, 100, None, False),
)
TURN_END_MS = 500  # AGENT_VAD_SILENCE_MS's default


def frames_of(path: pathlib.Path, pause_s: float, noise_dbfs: float | None = None) -> list[bytes]:
    """The clip as Twilio's 20 ms μ-law frames, with line silence (or noise) around it."""
    with wave.open(str(path)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: need mono 16-bit PCM")
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    phone = pcm if rate == 8000 else resample(pcm, rate, 8000)
    silence = np.zeros(int(pause_s * 8000), dtype=np.int16)
    line = np.concatenate([silence, phone, silence]).astype(np.float64)
    if noise_dbfs is not None:
        rms = 32768.0 * 10 ** (noise_dbfs / 20)
        line += np.random.default_rng(1).normal(0.0, rms, line.shape[0])
    line = np.clip(np.rint(line), -32768, 32767).astype("<i2")
    ulaw = ulaw_encode(line.tobytes())
    return [ulaw[i : i + FRAME] for i in range(0, len(ulaw) - FRAME + 1, FRAME)]


def measure(
    frames: list[bytes],
    speech_ms: int,
    window: bool = True,
    quiet_ms: int = 200,
    run_max_ms: int | None = SPEECH_RUN_MAX_MS,
) -> dict[str, Any]:
    """Messages per second and hold times (ms) for one configuration."""
    if window:
        blocks = UplinkBlocks(
            chunk_ms=20,
            quiet_chunk_ms=quiet_ms,
            speech_chunk_ms=speech_ms,
            turn_end_ms=TURN_END_MS,
            speech_run_max_ms=run_max_ms,
        )
    else:  # the window from the first quiet frame to 1.5 s: every frame at once
        blocks = UplinkBlocks(
            20,
            quiet_ms,
            1500,
            speech_chunk_ms=speech_ms,
            turn_end_ms=TURN_END_EARLY_MS,
            speech_run_max_ms=run_max_ms,
        )
    held: list[int] = []  # indexes of frames not yet sent
    waits: list[float] = []
    loud_waits: list[float] = []
    pause_waits: list[float] = []
    turn_end_waits: list[float] = []
    messages = 0
    was_loud = False
    pause_starts: set[int] = set()
    turn_ends: set[int] = set()
    loud: set[int] = set()
    since_loud = len(frames)
    for i, frame in enumerate(frames):
        is_loud = is_onset(frame)
        if is_loud:
            loud.add(i)
        elif was_loud:
            pause_starts.add(i)
        was_loud = is_loud
        since_loud = 0 if is_loud else since_loud + 1
        if since_loud * 20 == TURN_END_MS:
            turn_ends.add(i)
        held.append(i)
        if blocks.push(frame) is None:
            continue
        messages += 1
        for j in held:
            wait = 20.0 * (i - j)
            waits.append(wait)
            if j in loud:
                loud_waits.append(wait)
            if j in pause_starts:
                pause_waits.append(wait)
            if j in turn_ends:
                turn_end_waits.append(wait)
        held.clear()
    seconds = len(frames) * 0.02
    return {
        "speech_chunk_ms": speech_ms,
        "quiet_chunk_ms": quiet_ms,
        "speech_run_max_ms": run_max_ms,
        "turn_end_window": window,
        "messages_per_s": messages / seconds,
        "held_mean_ms": statistics.fmean(waits),
        "loud_held_mean_ms": statistics.fmean(loud_waits) if loud_waits else 0.0,
        "loud_held_max_ms": max(loud_waits, default=0.0),
        "pause_start_held_max_ms": max(pause_waits, default=0.0),
        "turn_end_held_max_ms": max(turn_end_waits, default=0.0),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = SHARED_CLIPS if SHARED_CLIPS.is_dir() else OWN_CLIPS
    ap.add_argument("--clips", type=pathlib.Path, default=default, help="WAV folder")
    ap.add_argument("--pause", type=float, default=3.0, help="line silence around each clip (s)")
    ap.add_argument(
        "--noise-dbfs", type=float, help="white line noise of this RMS (dBFS), e.g. -38"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    clips = sorted(args.clips.glob("*.wav"))
    if not clips:
        print(f"no WAV files in {args.clips}", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    for path in clips:
        frames = frames_of(path, args.pause, args.noise_dbfs)
        for speech, quiet, run_max, window in CONFIGS:
            row = measure(frames, speech, window, quiet, run_max)
            results.append({"clip": path.name, **row})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    noise = "silence" if args.noise_dbfs is None else f"noise at {args.noise_dbfs:g} dBFS"
    print(f"clips: {args.clips} ({len(clips)} files), {args.pause:g} s of {noise} around each")
    header = (
        f"{'clip':<22}{'speech/quiet/run':>17}{'window':>7}{'msgs/s':>8}{'held mean':>11}"
        f"{'loud mean':>11}{'loud max':>10}{'pause start max':>17}{'turn end max':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['clip']:<22}{config_name(r):>17}"
            f"{'on' if r['turn_end_window'] else 'off':>7}{r['messages_per_s']:>8.1f}"
            f"{r['held_mean_ms']:>9.1f}ms{r['loud_held_mean_ms']:>9.1f}ms"
            f"{r['loud_held_max_ms']:>8.0f}ms{r['pause_start_held_max_ms']:>15.0f}ms"
            f"{r['turn_end_held_max_ms']:>12.0f}ms"
        )
    for speech, quiet, run_max, window in CONFIGS:
        rows = [
            r
            for r in results
            if (r["speech_chunk_ms"], r["quiet_chunk_ms"], r["speech_run_max_ms"])
            == (speech, quiet, run_max)
            and r["turn_end_window"] == window
        ]
        rate = statistics.fmean(r["messages_per_s"] for r in rows)
        loud = statistics.fmean(r["loud_held_mean_ms"] for r in rows)
        turn_end = max(r["turn_end_held_max_ms"] for r in rows)
        print(
            f"mean over clips, {config_name(rows[0])}, turn-end window "
            f"{'on' if window else 'off'}: {rate:.1f} messages per second, loud frames held "
            f"{loud:.1f} ms on average (turn-end frame held at most {turn_end:.0f} ms)"
        )
    return 0


def config_name(row: dict[str, Any]) -> str:
    run = row["speech_run_max_ms"]
    return f"{row['speech_chunk_ms']}/{row['quiet_chunk_ms']}/{'none' if run is None else run}"


if __name__ == "__main__":
    raise SystemExit(main())
