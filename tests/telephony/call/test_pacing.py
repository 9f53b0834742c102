"""The pacer: a bounded lead over Twilio's playback, marks in place, bounded memory."""

from __future__ import annotations

import pytest

from telephony.call.pacing import MARK, Pacer
from telephony.twilio.playback import Playback


def audio(seconds: float) -> bytes:
    return b"\x55" * round(seconds * 8000)


def test_the_first_audio_leaves_at_once_and_the_lead_is_bounded() -> None:
    p = Pacer(lead_s=1.0, message_bytes=1600)
    p.add(audio(0.04))
    assert p.release(0.0) == [audio(0.04)]  # the start of an answer is never delayed
    p.add(audio(5.0))
    sent = p.release(0.0)
    assert sum(len(x) for x in sent if isinstance(x, bytes)) == 8000 - 320
    assert all(len(x) <= 1600 for x in sent if isinstance(x, bytes))
    assert p.lead(0.0) == pytest.approx(1.0)
    assert p.held_bytes == 40_000 - (8000 - 320)


def test_playback_frees_room_for_more() -> None:
    p = Pacer(lead_s=1.0, message_bytes=1600)
    p.add(audio(3.0))
    p.release(0.0)
    assert p.next_release(0.0) == pytest.approx(0.2)  # room for a whole message after 200 ms
    assert p.release(0.1) == [audio(0.1)]
    assert p.release(0.3) == [audio(0.2)]
    assert p.lead(0.3) == pytest.approx(1.0)


def test_marks_leave_right_after_the_audio_they_follow() -> None:
    p = Pacer(lead_s=0.5, message_bytes=1600)
    p.add(audio(0.3))
    p.add_mark()
    p.add(audio(0.6))
    first = p.release(0.0)
    assert first == [audio(0.2), audio(0.1), MARK, audio(0.2)]
    assert p.release(0.2) == [audio(0.2)]


def test_a_clear_drops_what_is_held() -> None:
    p = Pacer(lead_s=1.0)
    p.add(audio(4.0))
    p.release(0.0)
    p.add_mark()
    assert p.clear() == 24_000
    assert p.idle and p.held_bytes == 0
    p.reset_playback(0.5)
    assert p.lead(0.5) == 0.0


def test_held_audio_is_bounded_and_the_oldest_goes() -> None:
    p = Pacer(lead_s=1.0, max_held_s=2.0)
    p.add(b"\x01" * 8000)
    p.add(b"\x02" * 16000)
    p.add(b"\x03" * 8000)
    assert p.held_bytes == 16000 and p.dropped_bytes == 16000
    out = b"".join(x for x in p.release(0.0) if isinstance(x, bytes))
    assert out == b"\x02" * 8000  # the oldest 16000 bytes went


def test_against_twilios_playback_the_queue_there_never_exceeds_the_lead() -> None:
    """A model 20 times faster than real time, paced into the playback emulation."""
    p, twilio, worst = Pacer(lead_s=1.0), Playback(), 0.0
    now = 0.0
    while now < 30.0:
        if now < 10.0:
            p.add(audio(0.4))  # 400 ms of speech every 20 ms: 20 times real time
        for item in p.release(now):
            if isinstance(item, bytes):
                twilio.push_media(now, item)
        twilio.advance(now)
        worst = max(worst, twilio.queued_bytes / 8000)
        now = round(now + 0.02, 6)
    assert worst <= 1.0 + 1e-6
    assert (p.dropped_bytes == 0 and p.idle is False) or p.held_bytes >= 0


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        Pacer(lead_s=0)
