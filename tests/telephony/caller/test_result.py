"""Result bookkeeping (pure): what played, talk spurts, turns, interruptions, audio gaps,
and how they reach the result's summary."""

from __future__ import annotations

import pytest

from support.caller import tone
from telephony.caller.result import (
    ClearRecord,
    Interruption,
    ResponseTurn,
    assemble_heard,
    find_gaps,
    match_interruptions,
    merge_runs,
    response_turns,
    talk_spurts,
)
from telephony.caller.simulated import SimulatedCall
from telephony.twilio.media_stream import OutboundBuilder
from telephony.twilio.playback import Played


def test_assemble_heard_places_runs_on_silence() -> None:
    heard = assemble_heard([Played(0.5, b"\x01" * 800), Played(2.0, b"\x02" * 8000)], 20000)
    assert len(heard) == 20000
    assert heard[:4000] == b"\xff" * 4000
    assert heard[4000:4800] == b"\x01" * 800
    assert heard[4800:16000] == b"\xff" * 11200
    assert heard[16000:] == b"\x02" * 4000  # cut at the end of the call


def test_merge_runs_joins_only_contiguous_runs() -> None:
    runs = [Played(0.0, b"a" * 80), Played(0.01, b"b" * 80), Played(0.5, b"c" * 8)]
    assert merge_runs(runs) == [Played(0.0, b"a" * 80 + b"b" * 80), Played(0.5, b"c" * 8)]
    assert merge_runs([]) == []


def test_talk_spurts_merge_small_gaps() -> None:
    runs = [Played(0.0, bytes(800)), Played(0.15, bytes(800)), Played(1.0, bytes(400))]
    assert talk_spurts(runs) == [(0.0, 0.25), (1.0, 1.05)]
    assert talk_spurts(runs, max_gap_s=0.01) == [(0.0, 0.1), (0.15, 0.25), (1.0, 1.05)]


def test_response_turns() -> None:
    caller = [(1.0, 2.0), (3.0, 4.0), (6.0, 7.0)]
    agent = [(0.0, 0.8), (2.5, 2.9), (4.5, 5.5)]
    turns = response_turns(caller, agent)
    assert turns == [
        ResponseTurn(1.0, 2.0, 2.5),
        ResponseTurn(3.0, 4.0, 4.5),
        ResponseTurn(6.0, 7.0, None),
    ]
    assert turns[0].latency_s == pytest.approx(0.5)
    assert turns[2].latency_s is None
    # A reply that only starts after the caller spoke again answers the later utterance.
    assert response_turns([(1.0, 2.0), (2.5, 3.0)], [(3.2, 4.0)])[0].response_s is None


def test_match_interruptions() -> None:
    agent = [(0.0, 1.2), (3.0, 5.0), (8.0, 9.0)]
    caller = [(1.0, 1.5), (2.0, 2.5), (4.0, 4.4), (8.5, 8.7)]
    clears = [
        ClearRecord(6.0, 0.0, ()),  # late: the agent had finished, still the reply to 4.0
        ClearRecord(0.5, 0.3, ()),  # nobody talked over the agent before it
        ClearRecord(1.2, 0.8, ("m",)),
    ]
    got = match_interruptions(caller, agent, clears)
    assert got == [
        Interruption(None, 0.5, 0.3),
        Interruption(1.0, 1.2, 0.8),
        Interruption(4.0, 6.0, 0.0),
        Interruption(8.5, None),  # talked over the agent, no clear came
    ]
    assert got[0].latency_ms is None
    assert got[1].latency_ms == pytest.approx(200)
    assert got[3].latency_ms is None


def _runs(*spans: tuple[float, float]) -> list[Played]:
    return [Played(a, b"\x00" * round((b - a) * 8000)) for a, b in spans]


def test_find_gaps_inside_one_answer() -> None:
    played = _runs((0.0, 1.0), (1.05, 2.0), (2.3, 3.0), (5.5, 6.0), (6.5, 7.0))
    gaps = find_gaps(played)
    # 50 ms: not a gap; 300 ms: a gap; 2.5 s: a new answer; 500 ms: a gap.
    assert [x for g in gaps for x in (g.start_s, g.end_s)] == pytest.approx([2.0, 2.3, 6.0, 6.5])
    assert gaps[0].duration_s == pytest.approx(0.3)
    # Exactly at the limits: > min_s and <= resume_within_s.
    assert find_gaps(_runs((0, 1), (1.1, 2))) == []
    assert len(find_gaps(_runs((0, 1), (3.0, 4)))) == 1
    assert find_gaps(_runs((0, 1), (3.01, 4))) == []


def test_find_gaps_ignores_holes_the_caller_or_a_clear_explains() -> None:
    played = _runs((0.0, 1.0), (1.5, 2.0), (2.5, 3.0), (3.5, 4.0), (4.5, 5.0))
    assert len(find_gaps(played)) == 4
    gaps = find_gaps(
        played,
        caller_segments=[(0.9, 1.2)],  # the caller spoke into the first hole
        clears=[2.0],  # a clear at the start of the second
        dtmf=[3.2],  # a key press in the third
    )
    assert [x for g in gaps for x in (g.start_s, g.end_s)] == pytest.approx([4.0, 4.5])


def test_gaps_reach_the_result_and_summary() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", linger_s=0.1)
    out = OutboundBuilder("MZ1")
    call.open(0.0)
    call.receive(0.0, out.media(tone(0.4)))
    t = 0.0
    for k in range(1, 40):
        t = k / 50
        if k == 35:  # 0.7 s: the rest of the answer comes 300 ms late
            call.receive(t, out.media(tone(0.2)))
        call.due(t)
    call.server_closed(t, 1000, "")
    r = call.result()
    assert [x for g in r.gaps for x in (g.start_s, g.end_s)] == pytest.approx([0.4, 0.7])
    assert "audio gap at 0.40 s: agent silent for 300 ms" in r.summary()
