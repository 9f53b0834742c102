"""What the caller heard, from mark echoes (and why a clear's echoes prove nothing)."""

from __future__ import annotations

from telephony.call import Heard


def test_echoes_confirm_audio_in_order() -> None:
    heard = Heard()
    heard.new_turn()
    m1 = heard.sent(800, now=0.0)  # 100 ms
    m2 = heard.sent(800, now=0.01)
    assert not heard.all_played
    assert heard.echoed(m1, now=0.1)
    assert heard.confirmed_bytes == 800
    assert heard.echoed(m2, now=0.2)
    assert heard.confirmed_bytes == 1600
    assert heard.all_played


def test_clear_echoes_are_not_proof() -> None:
    heard = Heard()
    heard.new_turn()
    m1 = heard.sent(1600, now=0.0)  # 200 ms
    m2 = heard.sent(1600, now=0.0)
    m3 = heard.sent(1600, now=0.0)
    assert heard.echoed(m1, now=0.2)
    sent_ms, heard_ms, confirmed_ms = heard.cleared(now=0.25)
    assert sent_ms == 600
    assert confirmed_ms == 200
    # 50 ms more played after the last echo before the clear.
    assert abs(heard_ms - 250) < 1e-6
    # Twilio now echoes m2 and m3 because of the clear: they prove nothing.
    assert not heard.echoed(m2, now=0.26)
    assert not heard.echoed(m3, now=0.26)
    assert heard.confirmed_bytes == 1600
    assert heard.all_played


def test_estimate_never_exceeds_what_was_sent() -> None:
    heard = Heard()
    heard.new_turn()
    heard.sent(800, now=0.0)
    sent_ms, heard_ms, confirmed_ms = heard.cleared(now=5.0)
    assert (sent_ms, heard_ms, confirmed_ms) == (100, 100, 0)


def test_turns_are_counted_separately() -> None:
    heard = Heard()
    heard.new_turn()
    old = heard.sent(800, now=0.0)
    heard.new_turn()
    new = heard.sent(400, now=1.0)
    # A late echo of the previous turn doesn't count for this one.
    assert heard.echoed(old, now=1.05)
    assert heard.confirmed_bytes == 0
    assert heard.echoed(new, now=1.1)
    assert heard.confirmed_bytes == 400


def test_unknown_marks_are_ignored() -> None:
    heard = Heard()
    assert not heard.echoed("not-ours", now=0.0)
    assert heard.all_played
