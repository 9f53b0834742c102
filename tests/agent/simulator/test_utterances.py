"""The simulator's utterance detector."""

from __future__ import annotations

from agent.simulator.utterances import SpeechEnded, SpeechStarted, UtteranceDetector
from support.sim import IN_RATE, silence, voiced


def test_utterance_detector_keeps_preroll_and_caps_length() -> None:
    det = UtteranceDetector(IN_RATE, max_utterance_ms=1000)
    events = det.feed(silence(0.5) + voiced(0.4) + silence(0.6))
    assert isinstance(events[0], SpeechStarted) and events[0].at_ms == 500
    end = events[1]
    assert isinstance(end, SpeechEnded) and (end.start_ms, end.end_ms) == (500, 900)
    assert len(end.audio) == 2 * round(0.6 * IN_RATE)  # 100 ms pre-roll + 400 ms + 100 ms tail
    long = det.feed(voiced(2.5) + silence(0.6))
    ends = [e for e in long if isinstance(e, SpeechEnded)]
    assert [round(e.duration_s, 2) for e in ends] == [1.0, 1.0, 0.5]
