"""``voice-agent call``: real calls from the command line against the in-test server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from support.caller import SILENCE, Bot, running, tone, write_recorded_call
from telephony.audio import ulaw_decode
from telephony.caller.cli import main


async def test_cli_places_a_call_and_writes_wav(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = tmp_path / "say.wav"
    sf.write(wav, np.frombuffer(ulaw_decode(tone(0.2)), "<i2"), 8000, subtype="PCM_16")
    out = tmp_path / "heard.wav"
    bot = Bot(greeting=tone(0.2), reply=tone(0.1), reply_after_quiet_frames=3)
    async with running(bot) as url:
        argv = [str(wav), "--url", url, "--out", str(out), "--stereo", "--linger", "0.2"]
        argv += ["--param", "lang=en", "--dtmf", "0.05:9", "--lead-silence", "0.3"]
        code = await asyncio.to_thread(main, argv)
    assert code == 0
    text = capsys.readouterr().out
    assert "time to first agent audio" in text and "turn 1" in text and "dtmf 9 sent" in text
    assert sf.info(str(out)).channels == 2
    # Like a call through the webhook: Twilio-like numbers unless the caller gives its own.
    assert bot.received[1][1]["start"]["customParameters"] == {
        "lang": "en",
        "from": "+15005550006",
        "to": "+15005550001",
        "direction": "inbound",
    }


def test_cli_connection_failure_exit_code(tmp_path: Path) -> None:
    wav = tmp_path / "say.wav"
    sf.write(wav, np.zeros(800, dtype=np.int16), 8000)
    assert (
        main([str(wav), "--url", "ws://127.0.0.1:9/nothing", "--out", str(tmp_path / "x.wav")]) == 2
    )
    assert main([str(tmp_path / "missing.wav")]) == 2


async def test_cli_replays_a_recorded_call_turn_by_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_recorded_call(tmp_path / "CA9", SILENCE * 50 + tone(0.3) + SILENCE * 10, [])
    bot = Bot(greeting=tone(0.2), reply=tone(0.1), reply_after_quiet_frames=3)
    async with running(bot) as url:
        argv = [str(path), "--url", url, "--out", str(tmp_path / "h.wav"), "--linger", "0.2"]
        code = await asyncio.to_thread(main, [*argv, "--replay", "turns", "--think-time", "0.2"])
        assert code == 0
        assert await asyncio.to_thread(main, [*argv, "--replay", "turns", "--dtmf", "1:1"]) == 2
    text = capsys.readouterr().out
    assert "caller starts talking" in text and "turn 1" in text
    # The recording's parameters reach start (what it lacks is filled in like Twilio's).
    assert bot.received[1][1]["start"]["customParameters"] == {
        "from": "+15550100",
        "to": "+15550199",
        "direction": "inbound",
    }
