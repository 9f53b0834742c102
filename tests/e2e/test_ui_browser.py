"""The operator page (/ui) in a real headless Chromium: token, call list, transcripts.

Debian's chromium and chromium-driver (installed by ``make test``) drive the page served by
the real server; the records come from the real database through the real API.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from support import run_stack
from telephony.call.summary import CallSummary, Interruption, Outcome, Turn
from telephony.ops.records import record_from_summary

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
API_TOKEN = "operator-token-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        # Not a skip: the README's test command installs them, so their absence is a failure.
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (make test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",  # we run as root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        # The machine has no internet: without these, Chromium keeps trying Google's hosts.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={profile}",
        "--window-size=1280,800",  # the smallest laptop screen the page must fit
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


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
