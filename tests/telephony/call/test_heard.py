"""What the caller heard, from mark echoes (and why a clear's echoes prove nothing)."""

from __future__ import annotations

from telephony.call.heard import Heard


def test_echoes_confirm_audio_in_order() -> None:
    heard = Heard()
    heard.new_turn()
    heard.sent(800, now=0.0)
    m1 = heard.mark(force=True)  # 100 ms
    heard.sent(800, now=0.01)
    m2 = heard.mark(force=True)
    assert not heard.all_played
    assert heard.echoed(m1, now=0.1)
    assert heard.confirmed_bytes == 800
    assert heard.echoed(m2, now=0.2)
    assert heard.confirmed_bytes == 1600
    assert heard.all_played


def test_clear_echoes_are_not_proof() -> None:
    heard = Heard()
    heard.new_turn()
    heard.sent(1600, now=0.0)
    m1 = heard.mark(force=True)  # 200 ms
    heard.sent(1600, now=0.0)
    m2 = heard.mark(force=True)
    heard.sent(1600, now=0.0)
    m3 = heard.mark(force=True)
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
    heard.sent(800, now=0.0)
    old = heard.mark(force=True)
    heard.new_turn()
    heard.sent(400, now=1.0)
    new = heard.mark(force=True)
    # A late echo of the previous turn doesn't count for this one.
    assert heard.echoed(old, now=1.05)
    assert heard.confirmed_bytes == 0
    assert heard.echoed(new, now=1.1)
    assert heard.confirmed_bytes == 400


def test_unknown_marks_are_ignored() -> None:
    heard = Heard()
    assert not heard.echoed("not-ours", now=0.0)
    assert heard.all_played


def test_marks_are_coalesced_but_the_tail_is_always_marked() -> None:
    heard = Heard()
    heard.new_turn()
    names = []
    for _ in range(10):  # 10 chunks of 40 ms (320 bytes)
        heard.sent(320, now=0.0)
        names.append(heard.mark())
    sent = [n for n in names if n is not None]
    assert len(sent) == 2  # one per 200 ms of audio
    assert heard.all_played is False
    for name in sent:
        assert heard.echoed(name, now=1.0)
    assert heard.all_played is True  # 3200 bytes: the last mark covered everything
    heard.sent(320, now=1.0)
    assert heard.mark() is None  # not due yet...
    assert heard.all_played is False  # ...and unmarked audio is not "played"
    tail = heard.mark(force=True)
    assert tail is not None and heard.mark(force=True) is None
    assert heard.echoed(tail, now=1.1)
    assert heard.all_played and heard.confirmed_bytes == 3520
