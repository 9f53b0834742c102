"""What the simulated model says."""

from __future__ import annotations

from agent.simulator.dialogue import reply_for_text


def test_reply_for_text() -> None:
    assert reply_for_text('Say exactly: "Hi." then "Bye now."') == "Bye now."
    assert reply_for_text("Say \u201cHello there\u201d") == "Hello there"
    assert reply_for_text("The caller pressed # on their keypad.") == "You pressed #."
    assert reply_for_text("Hello?") == "Okay."
