"""The console (/console) in a real headless Chromium with a fake microphone: a call from the
browser through the real server, the real SDK and the simulator.

Chromium's fake capture device plays a WAV made here from the simulator's synthesizer: a
pause, then the caller talking over the greeting (barge-in), then silence while the agent
answers. ``CONSOLE_SCREENSHOT=<path>`` saves the page at 1280x800 mid-call (docs/console.png).
"""

from __future__ import annotations

import asyncio
import os
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from agent.simulator.voice import synthesize
from support import run_stack
from support.browser import headless_chromium

API_TOKEN = "operator-token-0123456789"
RATE = 24_000


def caller_wav(path: Path) -> Path:
    """1.5 s of silence, a sentence (over the greeting), then 20 s of silence; loud enough
    for the simulator's VAD after the page's μ-law."""
    speech = np.frombuffer(
        synthesize("Hello, I would like to book a table for two tonight.", "Charon").pcm, "<i2"
    )
    gain = 0.5 * 32767 / max(1, int(np.abs(speech.astype(np.int32)).max()))
    loud = np.clip(speech.astype(np.float64) * gain, -32768, 32767).astype("<i2")
    pcm = np.concatenate([np.zeros(int(1.5 * RATE), "<i2"), loud, np.zeros(20 * RATE, "<i2")])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    wav = caller_wav(tmp_path_factory.mktemp("mic") / "caller.wav")
    # A microphone that plays our WAV once, granted without asking.
    with headless_chromium(
        (
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
        )
    ) as driver:
        yield driver


def wait(driver: WebDriver, condition: Any, timeout_s: float = 15) -> Any:
    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(condition)


def texts(driver: WebDriver, selector: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


async def test_a_call_from_the_browser(monkeypatch: pytest.MonkeyPatch, browser: WebDriver) -> None:
    env = {"API_TOKEN": API_TOKEN, "AGENT_TOOLS_MODULE": "support.sample_tools"}
    async with run_stack(monkeypatch, env) as stack:
        loop = asyncio.get_running_loop()

        def drive() -> dict[str, Any]:
            d = browser
            # A wrong token: the server refuses the WebSocket, and the page says so.
            d.get(f"{stack.http_url}/console#token=wrong-token-0000000000")
            d.find_element(By.ID, "call").click()
            wait(d, ec.text_to_be_present_in_element((By.ID, "status"), "refused"))
            refused = d.find_element(By.ID, "status").text
            box = d.find_element(By.ID, "token")
            box.clear()
            box.send_keys(API_TOKEN)
            call = d.find_element(By.ID, "call")
            assert "Call" in call.text
            call.click()
            wait(d, lambda d: d.find_element(By.ID, "sid").text.startswith("CO"))
            sid = d.find_element(By.ID, "sid").text
            # The caller talks over the greeting: the server clears the agent's audio.
            wait(d, lambda d: d.find_element(By.ID, "clears").text != "0")
            # Their words reach the model, whose transcription shows up; then the answer.
            wait(d, lambda d: any("caller speech" in t for t in texts(d, ".line.caller")))
            wait(d, lambda d: any("[echo" in t for t in texts(d, ".line.agent")))
            wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#turns tbody tr")) >= 2)
            # A typed turn gets an answer, in audio and transcript.
            d.find_element(By.ID, "say").send_keys('Please say "Your table is booked."')
            d.find_element(By.ID, "send").click()
            wait(d, lambda d: any("Your table is booked." in t for t in texts(d, ".line.agent")))
            wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#turns tbody tr")) >= 3)
            wait(d, lambda d: float(d.find_element(By.ID, "played").text.split()[0]) > 1.0)
            # The model calls a tool: the page shows it with its arguments and result.
            [session] = stack.sim.sessions
            asyncio.run_coroutine_threadsafe(
                session.send_tool_call("opening_hours", {"day": "saturday"}), loop
            ).result(5)
            wait(d, lambda d: any("→ ok" in t for t in texts(d, ".line.tool")))
            shot = os.environ.get("CONSOLE_SCREENSHOT")
            if shot:
                d.execute_cdp_cmd(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
                )
                d.save_screenshot(shot)
                d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            seen = {
                "refused": refused,
                "sid": sid,
                "lines": [
                    (e.get_attribute("class"), e.text)
                    for e in d.find_elements(By.CSS_SELECTOR, "#transcript .line")
                ],
                "latencies": texts(d, "#turns tbody td.num"),
                "interrupted": [
                    (
                        e.find_element(By.CLASS_NAME, "text").text,
                        e.find_element(By.CLASS_NAME, "generated").text,
                    )
                    for e in d.find_elements(By.CSS_SELECTOR, ".line.agent.interrupted")
                ],
                "tools": texts(d, ".line.tool .text"),
                "clears": int(d.find_element(By.ID, "clears").text),
                "frames": int(d.find_element(By.ID, "frames-sent").text),
                "overflow": d.execute_script(
                    "return document.documentElement.scrollWidth - window.innerWidth"
                ),
            }
            hang_up = d.find_element(By.ID, "hangup")
            assert "Hang up" in hang_up.text
            hang_up.click()
            wait(d, ec.text_to_be_present_in_element((By.ID, "status"), "Call ended"))
            seen["ended"] = d.find_element(By.ID, "status").text
            seen["errors"] = [
                e
                for e in d.get_log("browser")
                if e["level"] == "SEVERE" and "console/media" not in e["message"]
            ]
            return seen

        seen = await asyncio.to_thread(drive)
        summary = await stack.summary()
        [session] = stack.sim.sessions
        async with stack.client() as http:
            headers = {"authorization": f"Bearer {API_TOKEN}"}
            for _ in range(50):  # the record is written off the loop, a moment later
                listed = (
                    await http.get("/calls", params={"direction": "browser"}, headers=headers)
                ).json()["calls"]
                if listed and listed[0]["outcome"] != "in_progress":
                    break
                await asyncio.sleep(0.1)

    assert "refused" in seen["refused"]
    assert seen["errors"] == []
    assert seen["overflow"] == 0
    # The model heard the caller (the simulator's VAD found the utterance in the page's audio).
    assert session.utterances
    assert seen["frames"] > 100
    # The same call path as a phone call: barge-in, turns, latency, the record.
    assert summary.call_sid == seen["sid"]
    assert summary.direction == "browser"
    [cut] = summary.interruptions
    # The page shows what the caller heard of the greeting, and what was generated.
    [greeting] = [t for t in summary.turns if t.interrupted]
    assert seen["interrupted"] == [(greeting.agent_heard, greeting.agent)]
    assert cut.transcript_heard == greeting.agent_heard
    assert seen["clears"] == 1
    assert ("line note", "Barge-in: the agent's audio was cleared") in seen["lines"]
    assert any(t.caller == 'Please say "Your table is booked."' for t in summary.turns)
    assert any(t.agent == "Your table is booked." for t in summary.turns)
    assert any(t.response_ms is not None for t in summary.turns)
    assert any(v.endswith(" ms") for v in seen["latencies"])
    assert summary.reason == "caller hung up"
    assert [c["call_sid"] for c in listed] == [seen["sid"]]
    assert listed[0]["direction"] == "browser"
    assert "Call ended" in seen["ended"]
    [tool] = seen["tools"]
    assert tool.startswith('opening_hours {"day":"saturday"} → ok, ')
    assert '"hours":"9 am to 1 pm"' in tool
    assert [r["name"] for r in summary.tool_calls] == ["opening_hours"]
