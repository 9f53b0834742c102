"""Twilio's playback buffer emulation: timing, marks, clear, idle gaps."""

from __future__ import annotations

import pytest

from telephony.twilio.playback import MarkEcho, Playback, Played


def _audio(seconds: float, byte: int = 0x10) -> bytes:
    return bytes([byte]) * round(seconds * 8000)


def test_plays_at_8000_bytes_per_second() -> None:
    p = Playback()
    p.push_media(10.0, _audio(1.0))
    played, echoes = p.advance(10.25)
    assert echoes == []
    assert len(played) == 1 and played[0].start == 10.0 and len(played[0].audio) == 2000
    assert p.queued_bytes == 6000 and not p.idle
    played, _ = p.advance(12.0)
    assert played == [Played(10.25, _audio(0.75))]
    assert played[0].end == pytest.approx(11.0)
    assert p.queued_bytes == 0 and p.idle


def test_advance_with_no_time_passed_plays_nothing() -> None:
    p = Playback()
    p.push_media(1.0, _audio(0.1))
    assert p.advance(1.0) == ([], [])
    assert p.advance(0.5) == ([], [])


def test_mark_echoed_after_preceding_audio_played() -> None:
    p = Playback()
    p.push_media(0.0, _audio(0.5))
    p.push_mark(0.0, "a")
    p.push_media(0.1, _audio(0.5))
    p.push_mark(0.1, "b")
    assert p.advance(0.49)[1] == []
    _, echoes = p.advance(0.6)
    assert echoes == [MarkEcho(pytest.approx(0.5), "a")]  # type: ignore[arg-type]
    _, echoes = p.advance(0.99)
    assert echoes == []
    _, echoes = p.advance(1.2)
    assert [(e.name, e.cleared) for e in echoes] == [("b", False)]
    assert echoes[0].time == pytest.approx(1.0)


def test_mark_on_empty_queue_echoed_at_once() -> None:
    p = Playback()
    p.push_mark(3.0, "now")
    assert p.advance(3.0) == ([], [MarkEcho(3.0, "now")])
    # Also after earlier audio has fully played out.
    p.push_media(4.0, _audio(0.1))
    p.advance(5.0)
    p.push_mark(5.0, "later")
    assert p.advance(5.0)[1] == [MarkEcho(5.0, "later")]


def test_consecutive_marks_echo_together() -> None:
    p = Playback()
    p.push_media(0.0, _audio(0.2))
    p.push_mark(0.0, "x")
    p.push_mark(0.0, "y")
    _, echoes = p.advance(0.3)
    assert [e.name for e in echoes] == ["x", "y"]
    assert all(e.time == pytest.approx(0.2) for e in echoes)


def test_clear_drops_audio_and_echoes_pending_marks() -> None:
    p = Playback()
    p.push_media(0.0, _audio(1.0))
    p.push_mark(0.0, "m1")
    p.push_media(0.0, _audio(1.0))
    p.push_mark(0.0, "m2")
    played, echoes = p.clear(0.3)
    assert len(played) == 1 and len(played[0].audio) == 2400
    assert echoes == [MarkEcho(0.3, "m1", cleared=True), MarkEcho(0.3, "m2", cleared=True)]
    assert p.idle and p.queued_bytes == 0
    assert p.advance(5.0) == ([], [])


def test_clear_after_mark_already_played_echoes_it_normally() -> None:
    p = Playback()
    p.push_media(0.0, _audio(0.1))
    p.push_mark(0.0, "done")
    p.push_media(0.0, _audio(1.0))
    p.push_mark(0.0, "pending")
    _, echoes = p.clear(0.5)
    assert [(e.name, e.cleared) for e in echoes] == [("done", False), ("pending", True)]
    assert echoes[0].time == pytest.approx(0.1)


def test_idle_gap_then_new_audio_starts_when_pushed() -> None:
    p = Playback()
    p.push_media(0.0, _audio(0.2))
    assert p.advance(1.0)[0] == [Played(0.0, _audio(0.2))]
    p.push_media(2.0, _audio(0.2, 0x20))
    played, _ = p.advance(3.0)
    assert played == [Played(2.0, _audio(0.2, 0x20))]


def test_audio_after_clear_plays_from_clear_time() -> None:
    p = Playback()
    p.push_media(0.0, _audio(1.0))
    p.clear(0.4)
    p.push_media(0.45, _audio(0.1))
    played, _ = p.advance(1.0)
    assert [(r.start, len(r.audio)) for r in played] == [(0.45, 800)]


def test_contiguous_runs_merged() -> None:
    p = Playback()
    for i in range(10):
        p.push_media(i * 0.001, bytes([i]) * 160)
    played, _ = p.advance(1.0)
    assert len(played) == 1
    assert played[0].start == 0.0
    assert played[0].audio == b"".join(bytes([i]) * 160 for i in range(10))


def test_runs_split_by_idle_gap_within_one_advance() -> None:
    p = Playback()
    p.push_media(0.0, _audio(0.1))
    p.push_mark(0.0, "m")
    played, _ = p.advance(0.05)
    assert len(played) == 1
    played, echoes = p.advance(0.5)
    assert [(r.start, len(r.audio)) for r in played] == [(0.05, 400)]
    assert [e.name for e in echoes] == ["m"]


def test_push_while_playing_appends_at_end_of_queue() -> None:
    p = Playback()
    p.push_media(0.0, _audio(0.5))
    p.advance(0.2)
    p.push_media(0.2, _audio(0.5, 0x30))
    played, _ = p.advance(2.0)
    assert len(played) == 1
    assert played[0].start == pytest.approx(0.2)
    assert played[0].end == pytest.approx(1.0)


def test_other_rates_and_empty_media() -> None:
    p = Playback(bytes_per_second=16000)
    p.push_media(0.0, b"")
    assert p.idle
    p.push_media(0.0, bytes(16000))
    p.push_mark(0.0, "m")
    _, echoes = p.advance(1.5)
    assert echoes[0].time == pytest.approx(1.0)
