"""The operator page (/ui) in a real headless Chromium: token, call list, transcripts.

Debian's chromium and chromium-driver (installed by ``make test``) drive the page served by
the real server; the records come from the real database through the real API.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from support import run_stack, speech
from support.browser import headless_chromium
from telephony.call.summary import CallSummary, Interruption, Outcome, Turn
from telephony.ops.records import record_from_summary

API_TOKEN = "operator-token-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        yield driver


def seeded(sid: str, started_at: float, **changes: Any) -> dict[str, Any]:
    s = CallSummary(
        call_sid=sid,
        stream_sid="MZ" + sid,
        direction="inbound",
        caller="+14155550100",
        callee="+14155550199",
        outcome=Outcome.COMPLETED,
        reason="caller hung up",
        started_at=started_at,
        duration_s=31.0,
        first_audio_ms=300.0,
        turns=[
            Turn(
                at_s=2.0,
                caller="",
                agent="Hello! Thanks for calling. How can I help you today?",
                interrupted=True,
                agent_heard="Hello! Thanks",
            ),
            Turn(
                at_s=6.0,
                caller="I'd like to book a table <img src=x onerror=alert(1)>",
                agent="Sure, for how many?",
                response_ms=640.0,
            ),
        ],
        interruptions=[Interruption(1.5, 0.03, 2400, 800, 800, "Hello! Thanks")],
        dtmf=["5"],
        tool_calls=[
            {
                "id": "t",
                "name": "end_call",
                "args": {},
                "result": {"result": "ok"},
                "at_s": 7.0,
                "outcome": "ok",
                "latency_ms": 12.4,
            }
        ],
    )
    for key, value in changes.items():
        setattr(s, key, value)
    return record_from_summary(s, now=started_at + 31)


def wait(driver: WebDriver, condition: Any, timeout_s: float = 10) -> Any:
    return WebDriverWait(driver, timeout_s).until(condition)


async def test_the_page_lists_calls_and_shows_transcripts(
    monkeypatch: pytest.MonkeyPatch, browser: WebDriver
) -> None:
    async with run_stack(monkeypatch, {"API_TOKEN": API_TOKEN}) as stack:
        records = stack.service.records
        assert records is not None
        records.store.upsert(seeded("CAolder", 1_700_000_000.0))
        records.store.upsert(
            seeded(
                "CAnewer",
                1_700_000_100.0,
                outcome=Outcome.ENDED_BY_AGENT,
                reason="agent ended the call",
            )
        )

        def drive() -> dict[str, Any]:
            d = browser
            d.get(f"{stack.http_url}/ui")
            # A wrong token: the API says no, and the page says why.
            d.find_element(By.ID, "token").send_keys("wrong-token")
            d.find_element(By.ID, "load").click()
            wait(d, ec.text_to_be_present_in_element((By.ID, "status"), "wrong bearer token"))
            refused = d.find_element(By.ID, "status").text
            box = d.find_element(By.ID, "token")
            box.clear()
            box.send_keys(API_TOKEN)
            d.find_element(By.ID, "load").click()
            wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#calls tbody tr")) == 2)
            rows = [
                [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in d.find_elements(By.CSS_SELECTOR, "#calls tbody tr")
            ]
            started_title = d.find_element(By.CSS_SELECTOR, "#calls tbody td").get_attribute(
                "title"
            )
            # At 1280 px the list needs no horizontal scrollbar, nor does the page.
            overflow = d.execute_script(
                "const s = document.querySelector('main > section');"
                "return [s.scrollWidth - s.clientWidth,"
                " document.documentElement.scrollWidth - window.innerWidth];"
            )
            d.find_element(By.CSS_SELECTOR, "tr[data-sid='CAolder']").click()
            wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, "#transcript .turn")))
            turns = [
                {
                    "class": t.get_attribute("class"),
                    "who": t.find_element(By.CLASS_NAME, "who").text,
                    "text": t.find_element(By.CLASS_NAME, "text").text,
                }
                for t in d.find_elements(By.CSS_SELECTOR, "#transcript .turn")
            ]
            generated = d.find_element(By.CSS_SELECTOR, ".turn.interrupted .generated").text
            detail = d.find_element(By.ID, "detail").text
            injected = d.find_elements(By.CSS_SELECTOR, "#transcript img")
            errors = [
                e
                for e in d.get_log("browser")
                if e["level"] == "SEVERE" and "401" not in e["message"]
            ]
            return {
                "refused": refused,
                "rows": rows,
                "started_title": started_title,
                "overflow": overflow,
                "turns": turns,
                "generated": generated,
                "detail": detail,
                "injected": injected,
                "errors": errors,
            }

        # Selenium is blocking: drive the browser from a thread while the server runs here.
        seen = await asyncio.to_thread(drive)
    assert "wrong bearer token" in seen["refused"]
    # Newest first, with the columns an operator scans.
    assert [r[1:] for r in seen["rows"]] == [
        ["in", "+14155550100", "+14155550199", "ended by agent", "31.0 s", "2"],
        ["in", "+14155550100", "+14155550199", "completed", "31.0 s", "2"],
    ]
    assert seen["rows"][0][0] == "11-14 22:15:00"
    assert seen["started_title"] == "2023-11-14 22:15:00"
    assert seen["overflow"] == [0, 0]
    # The interrupted greeting shows what the caller heard, flagged, with what was generated.
    first, caller, answer, tool = seen["turns"]
    assert "interrupted" in first["class"] and "interrupted" in first["who"]
    assert first["text"] == "Hello! Thanks"
    assert seen["generated"] == "Hello! Thanks for calling. How can I help you today?"
    assert caller["who"] == "Caller"
    # Transcript text is shown as text, never interpreted as HTML.
    assert caller["text"] == "I'd like to book a table <img src=x onerror=alert(1)>"
    assert seen["injected"] == []
    assert answer == {"class": "turn agent", "who": "Agent", "text": "Sure, for how many?"}
    # Tool calls take their place in the conversation, with outcome and latency.
    assert tool == {"class": "turn tool", "who": "Tool", "text": "end_call {} → ok, 12 ms"}
    assert "DTMF\n5" in seen["detail"]
    assert seen["errors"] == []


def history(now: float) -> list[dict[str, Any]]:
    """A day of calls for the dashboard: outcomes, latencies, barge-ins, tool errors."""
    rows = []
    outcomes = [Outcome.COMPLETED] * 6 + [Outcome.ENDED_BY_AGENT] * 2 + [Outcome.FAILED]
    for i in range(40):
        started = now - 3600 * (i % 20) - 60 * i
        row = seeded(f"CAhist{i:02d}", started, outcome=outcomes[i % len(outcomes)])
        row["greeting_ms"] = 250.0 + 17 * (i % 9)
        row["detail"]["latency"]["response_ms"] = [500.0 + 23 * (i % 13), 700.0 + 41 * (i % 7)]
        if i % 5 == 0:
            row["detail"]["tool_calls"][0]["outcome"] = "error"
        row["reconnects"] = 1 if i % 11 == 0 else 0
        rows.append(row)
    return rows


async def test_the_page_updates_live_plays_the_recording_and_takes_feedback(
    monkeypatch: pytest.MonkeyPatch, browser: WebDriver, tmp_path: Path
) -> None:
    env = {"API_TOKEN": API_TOKEN, "RECORD_CALLS": str(tmp_path / "rec")}
    async with run_stack(monkeypatch, env) as stack:
        records = stack.service.records
        assert records is not None
        for row in history(time.time()):
            records.store.upsert(row)
        d = browser

        def open_page() -> None:
            d.get(f"{stack.http_url}/ui")
            box = d.find_element(By.ID, "token")
            box.clear()
            box.send_keys(API_TOKEN)
            d.find_element(By.ID, "load").click()
            wait(d, ec.text_to_be_present_in_element((By.ID, "live"), "live"))
            wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-calls rect"))

        await asyncio.to_thread(open_page)
        assert stack.service.events.clients == 1
        call = asyncio.create_task(stack.call(speech("I would like a table for two"), linger_s=3.0))

        def row_outcome() -> tuple[str, str]:
            def outcome(d: WebDriver) -> str:
                rows = [
                    r
                    for r in d.find_elements(By.CSS_SELECTOR, "#calls tbody tr")
                    if not (r.get_attribute("data-sid") or "").startswith("CAhist")
                ]
                return rows[0].get_attribute("data-outcome") if rows else ""

            first = wait(d, lambda d: outcome(d) == "in_progress" and "in_progress")
            last = wait(d, lambda d: outcome(d) == "completed" and "completed", timeout_s=30)
            return first, last

        # Without a reload: the call appears when it starts, and its end when it ends.
        seen = await asyncio.to_thread(row_outcome)
        result = await call
        assert seen == ("in_progress", "completed")

        def listen() -> dict[str, Any]:
            row = d.find_element(By.CSS_SELECTOR, f"tr[data-sid='{result.call_sid}']")
            cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            row.click()
            wait(
                d,
                lambda d: d.execute_script("const a = $('player'); return a && a.readyState >= 2;"),
            )
            duration = d.execute_script("return $('player').duration;")
            d.execute_script("$('player').play();")
            wait(d, lambda d: d.execute_script("return $('player').currentTime > 0.5;"))
            playing = [t.text for t in d.find_elements(By.CSS_SELECTOR, ".turn.playing")]
            d.execute_script("$('player').pause();")
            # Clicking a turn plays from where it was spoken.
            turns = d.find_elements(By.CSS_SELECTOR, "#transcript .turn[data-at]")
            target = turns[-1]
            target.click()
            at = float(target.get_attribute("data-at") or 0)
            wait(d, lambda d: abs(d.execute_script("return $('player').currentTime;") - at) < 0.6)
            wait(d, lambda d: "playing" in (target.get_attribute("class") or ""))
            d.execute_script("$('player').pause();")
            # Feedback from the page, kept with the record.
            d.find_element(By.CSS_SELECTOR, "#feedback button[data-rating='4']").click()
            d.find_element(By.ID, "feedback-comment").send_keys("good, a little slow to greet")
            d.find_element(By.ID, "feedback-save").click()
            wait(d, ec.text_to_be_present_in_element((By.ID, "feedback-said"), "saved"))
            overflow = d.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth;"
            )
            d.execute_script("window.scrollTo(0, 0);")
            shot = tmp_path / "operator-page.png"
            d.save_screenshot(str(shot))
            errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
            return {
                "cells": cells,
                "duration": duration,
                "playing": playing,
                "turns": len(turns),
                "overflow": overflow,
                "shot": shot,
                "errors": errors,
            }

        heard = await asyncio.to_thread(listen)
        got = records.store.get(result.call_sid)
        d.get("about:blank")  # the page's event stream ends with it
    assert heard["cells"][4] == "completed"
    assert heard["duration"] > 2
    assert heard["playing"], "a turn is highlighted while the recording plays"
    assert heard["turns"] >= 2
    assert heard["overflow"] <= 0  # no horizontal scrollbar at 1280 px
    assert heard["errors"] == []
    assert got is not None and got["feedback_rating"] == 4
    assert got["feedback_comment"] == "good, a little slow to greet"
    png = heard["shot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1280
    if os.environ.get("OPERATOR_SCREENSHOT"):  # to refresh docs/operator-page.png
        shutil.copy(heard["shot"], os.environ["OPERATOR_SCREENSHOT"])
