"""The sans-I/O call on a fake clock (deterministic timing): the frame schedule, marks and
clears, barge-in, and turn-aware replay against a scripted agent playing the server."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from support.caller import SILENCE, flat, tone
from telephony.caller.recordings import RecordedCall
from telephony.caller.result import CallResult
from telephony.caller.script import BargeIn, CallerTurn, TurnTaking
from telephony.caller.simulated import SimulatedCall, simulated_call
from telephony.twilio.media_stream import (
    FRAME_BYTES,
    InboundBuilder,
    OutboundBuilder,
    parse_inbound,
)


def _decode_all(frames: list[str]) -> list[Any]:
    return [parse_inbound(f) for f in frames]


def test_schedule_is_absolute_and_catches_up_when_late() -> None:
    call = SimulatedCall(tone(0.1), stream_sid="MZ1", call_sid="CA1", lead_silence_s=0.04)
    t0 = 100.0
    opened = call.open(t0)
    assert [json.loads(f)["event"] for f in opened] == ["connected", "start"]
    assert call.due(t0 + 0.019) == []
    assert call.next_wakeup() == pytest.approx(t0 + 0.02)
    one = _decode_all(call.due(t0 + 0.0201))
    assert [(m.chunk, m.timestamp_ms) for m in one] == [(1, 0)]
    # A tick 75 ms late sends every frame that fell due, with their own timestamps.
    late = _decode_all(call.due(t0 + 0.0951))
    assert [(m.chunk, m.timestamp_ms, m.sequence_number) for m in late] == [
        (2, 20, 3),
        (3, 40, 4),
        (4, 60, 5),
    ]
    assert call.next_wakeup() == pytest.approx(t0 + 0.1)
    assert late[0].payload == SILENCE and late[1].payload == tone(0.1)[:FRAME_BYTES]


def test_dtmf_interleaves_with_media_on_one_counter() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", call_sid="CA1", dtmf=[(0.05, "7")])
    call.open(0.0)
    events = _decode_all(call.due(0.1))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Media", "Media", "Dtmf", "Media", "Media", "Media"]
    assert [e.sequence_number for e in events] == [2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError):
        SimulatedCall(b"", dtmf=[(1.0, "x")])


def test_marks_echo_after_audio_played_and_clear_flushes() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", call_sid="CA1", linger_s=0.5)
    out = OutboundBuilder("MZ1")
    call.open(0.0)
    assert call.receive(0.0, out.mark("first")) != []  # nothing queued: echoed at once
    call.receive(0.01, out.media(tone(0.2)))
    assert call.receive(0.01, out.mark("a")) == []
    assert not [f for f in call.due(0.2) if '"mark"' in f]
    echoes = [f for f in call.due(0.22) if '"mark"' in f]
    assert [json.loads(f)["mark"]["name"] for f in echoes] == ["a"]
    call.receive(0.4, out.media(tone(1.0)))
    call.receive(0.4, out.mark("b"))
    flushed = call.receive(0.6, out.clear())
    assert [json.loads(f)["mark"]["name"] for f in flushed] == ["b"]
    assert call.should_end(1.0) is None
    assert call.should_end(1.11) == "caller"  # quiet for linger_s since the clear
    assert [json.loads(f)["event"] for f in call.finish(1.11)] == ["stop"]
    result = call.result()
    assert [(e.name, e.cleared) for e in result.marks_echoed] == [
        ("first", False),
        ("a", False),
        ("b", True),
    ]
    assert result.marks_echoed[1].due_s == pytest.approx(0.21)
    assert result.clears[0].dropped_s == pytest.approx(0.8)
    assert result.clears[0].marks == ("b",)
    assert flat(result.agent_spurts) == pytest.approx([0.01, 0.21, 0.4, 0.6])
    (it,) = result.interruptions
    assert (it.speech_start_s, it.clear_s) == (None, 0.6)
    assert it.dropped_s == pytest.approx(0.8)
    assert result.duration_s == pytest.approx(1.11, abs=1e-3)


def test_bad_server_frames_are_counted_not_fatal() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", call_sid="CA1")
    call.open(0.0)
    call.receive(0.0, '{"event":"dance","streamSid":"MZ1"}')
    call.receive(0.0, "not json")
    call.receive(0.0, b"\x00\x01")
    call.receive(0.0, OutboundBuilder("MZ-other").media(b"\x00" * 10))
    call.receive(0.0, OutboundBuilder("MZ1").media(b"\x00" * 10))
    call.server_closed(0.1, 1011, "oops")
    r = call.result()
    assert (r.unknown_frames, r.malformed_frames, r.media_bytes_received) == (1, 3, 10)
    assert (r.ended_by, r.close_code, r.close_reason) == ("server", 1011, "oops")


def test_barge_in_starts_once_agent_audible_long_enough() -> None:
    barge = BargeIn(tone(0.2), after_s=0.1)
    call = SimulatedCall(b"", stream_sid="MZ1", call_sid="CA1", barge_in=barge, linger_s=0.1)
    call.open(0.0)
    call.receive(0.0, OutboundBuilder("MZ1").media(tone(1.0)))
    t = 0.0
    while t < 0.5:
        t += 0.02
        call.due(t)
    call.receive(0.5, OutboundBuilder("MZ1").clear())
    while call.should_end(t) is None:
        t += 0.02
        call.due(t)
    call.finish(t)
    r = call.result()
    ((start, _end),) = r.caller_segments
    assert start == pytest.approx(0.1, abs=0.021)
    assert r.interruptions[0].speech_start_s == pytest.approx(start)
    assert r.interruptions[0].latency_ms == pytest.approx((0.5 - start) * 1000)


def test_inbound_builder_is_what_is_sent() -> None:
    # The simulator sends nothing the shared builder would not produce.
    call = SimulatedCall(b"", stream_sid="MZ9", call_sid="CA9", account_sid="AC9")
    twin = InboundBuilder("MZ9", "CA9", "AC9")
    assert call.open(0.0) == [twin.connected(), twin.start({})]
    assert call.due(0.02) == [twin.media(SILENCE, 0)]


class FakeAgent:
    """Greets at ``greet_at_s``; answers every caller utterance ``answer_after_s`` after its
    last loud frame (sending the whole answer at once, faster than real time, as the real
    server does); with ``clear_after_frames`` it clears when the caller talks over it."""

    def __init__(
        self,
        *,
        greeting_s: float = 1.0,
        greet_at_s: float = 0.3,
        answer_s: float = 1.0,
        answer_after_s: float = 0.5,
        answers: bool = True,
        clear_after_frames: int | None = None,
    ) -> None:
        self.out = OutboundBuilder("MZ1")
        self.greeting_s, self.greet_at_s = greeting_s, greet_at_s
        self.answer_s, self.answer_after_s, self.answers = answer_s, answer_after_s, answers
        self.clear_after_frames = clear_after_frames
        self.loud_run = 0
        self.quiet_since: float | None = None
        self.spoke = False
        self.busy_until = 0.0  # end of the audio it has queued, as played

    def step(self, t: float, frames: list[str]) -> list[str]:
        out: list[str] = []
        if self.greeting_s and t >= self.greet_at_s:
            out.append(self.out.media(tone(self.greeting_s, hz=300)))
            self.busy_until = t + self.greeting_s
            self.greeting_s = 0.0
        for raw in frames:
            msg = json.loads(raw)
            if msg["event"] != "media":
                continue
            loud = base64.b64decode(msg["media"]["payload"]) != SILENCE
            if loud:
                self.loud_run += 1
                self.spoke, self.quiet_since = True, None
                if self.loud_run == self.clear_after_frames and t < self.busy_until:
                    out.append(self.out.clear())
                    self.busy_until = t
            else:
                self.loud_run = 0
                if self.spoke and self.quiet_since is None:
                    self.quiet_since = t
        if self.quiet_since is not None and t - self.quiet_since >= self.answer_after_s - 1e-9:
            self.spoke, self.quiet_since = False, None
            if self.answers:
                out.append(self.out.media(tone(self.answer_s, hz=500)))
                self.busy_until = max(t, self.busy_until) + self.answer_s
        return out


def run_fake(call: SimulatedCall, agent: FakeAgent, until_s: float = 60.0) -> CallResult:
    """Drive ``call`` against ``agent`` on exact 20 ms ticks of a made-up clock."""
    call.open(0.0)
    for k in range(1, round(until_s * 50)):
        t = k / 50
        for frame in agent.step(t, call.due(t)):
            call.receive(t, frame)
        reason = call.should_end(t)
        if reason is not None:
            call.finish(t, reason)
            break
    return call.result()


def _starts(result: CallResult) -> list[float]:
    return [round(s, 3) for s, _ in result.caller_segments]


THREE_TURNS = [CallerTurn(tone(1.0)), CallerTurn(tone(0.5)), CallerTurn(tone(0.7))]


def test_turns_wait_for_the_greeting_and_each_answer_plus_think_time() -> None:
    call = SimulatedCall(
        b"", stream_sid="MZ1", turns=THREE_TURNS, turn_taking=TurnTaking(think_s=0.6), linger_s=0.5
    )
    r = run_fake(call, FakeAgent())
    # Greeting 0.3-1.3 s; turn 1 at 1.3 + 0.6. The agent sees the first quiet frame 20 ms
    # after the turn ends and answers 0.5 s later; the next turn starts 0.6 s after the
    # answer has played.
    assert flat(r.caller_segments) == pytest.approx([1.9, 2.9, 5.02, 5.52, 7.64, 8.34])
    assert flat(r.agent_spurts) == pytest.approx([0.3, 1.3, 3.42, 4.42, 6.04, 7.04, 8.86, 9.86])
    assert [t.latency_s for t in r.turns] == pytest.approx([0.52, 0.52, 0.52])
    # After the last turn the caller waits for its answer, then lingers.
    assert r.ended_by == "caller" and r.caller_done
    assert r.duration_s == pytest.approx(9.86 + 0.5)
    assert r.time_to_first_audio_s == pytest.approx(0.3)
    assert r.interruptions == [] and r.gaps == []
    notes = [n.text for n in r.notes if "caller starts talking" in n.text]
    assert notes == [f"caller starts talking (turn {i} of 3)" for i in (1, 2, 3)]


def test_turns_think_time_is_measured_from_the_end_of_the_answer_as_played() -> None:
    fast = SimulatedCall(
        b"", stream_sid="MZ1", turns=THREE_TURNS[:2], turn_taking=TurnTaking(think_s=0.2)
    )
    r = run_fake(fast, FakeAgent(answer_s=2.0))
    # The 2 s answer arrives in one message at 3.02 s: the caller hears it until 5.02 s.
    assert _starts(r) == [1.5, 5.22]


def test_no_greeting_and_unanswered_turns_time_out() -> None:
    taking = TurnTaking(greeting_timeout_s=2.0, answer_timeout_s=1.5)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=THREE_TURNS, turn_taking=taking, linger_s=0.3)
    r = run_fake(call, FakeAgent(greeting_s=0.0, answers=False))
    assert _starts(r) == [2.0, 4.5, 6.5]  # each 1.5 s after the previous turn ended
    assert r.time_to_first_audio_s is None
    assert [t.response_s for t in r.turns] == [None, None, None]
    # The last turn's answer is awaited for answer_timeout_s too (linger_s has passed by
    # then: the line has been quiet since the caller stopped).
    assert r.duration_s == pytest.approx(7.2 + 1.5)
    texts = [n.text for n in r.notes]
    assert "caller starts talking (turn 1 of 3, no greeting after 2 s)" in texts
    assert "caller starts talking (turn 2 of 3, no answer after 1.5 s)" in texts


def test_barge_in_mode_talks_over_each_answer_but_not_the_greeting() -> None:
    taking = TurnTaking(think_s=0.6, barge_in_after_s=0.4)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=THREE_TURNS, turn_taking=taking)
    r = run_fake(call, FakeAgent(answer_s=2.0, clear_after_frames=3))
    # Turn 1 after the greeting (1.3 + 0.6); answer 1 plays from 3.42 s: turn 2 at 3.82 s;
    # it ends at 4.32 s, answer 2 plays from 4.84 s: turn 3 at 5.24 s.
    assert _starts(r) == [1.9, 3.82, 5.24]
    cleared = [it for it in r.interruptions if it.clear_s is not None]
    assert [it.speech_start_s for it in cleared] == pytest.approx([3.82, 5.24])
    # Three loud frames: the third leaves 60 ms after the caller starts talking.
    assert [it.latency_ms for it in cleared] == pytest.approx([60.0, 60.0])
    assert [t.latency_s for t in r.turns] == pytest.approx([0.52, 0.52, 0.52])
    assert "over the agent" in "\n".join(n.text for n in r.notes)


def test_barge_in_mode_waits_out_a_short_answer() -> None:
    taking = TurnTaking(think_s=0.6, barge_in_after_s=0.8)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=THREE_TURNS[:2], turn_taking=taking)
    r = run_fake(call, FakeAgent(answer_s=0.3))
    # The answer (3.42-3.72 s) is over before 0.8 s into it: talk after it as in turns mode.
    assert _starts(r) == [1.9, 4.32]
    assert r.interruptions == []


def test_stale_answer_going_on_over_a_turn_is_not_its_answer() -> None:
    # The agent never clears: its first answer goes on after the caller's barge-in turn ends.
    # That audio started before the turn, so the turn still waits for its own answer.
    taking = TurnTaking(think_s=0.6, barge_in_after_s=0.4)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=THREE_TURNS, turn_taking=taking)
    r = run_fake(call, FakeAgent(answer_s=1.0))
    assert _starts(r) == [1.9, 3.82, 5.24]


def test_turn_keys_keep_their_spacing_and_hold_the_next_turn() -> None:
    turns = [CallerTurn(b"", dtmf=((0.0, "1"), (0.3, "2"))), CallerTurn(tone(0.4))]
    taking = TurnTaking(think_s=0.6, answer_timeout_s=1.0)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=turns, turn_taking=taking)
    r = run_fake(call, FakeAgent(answer_s=0.5))
    assert [(round(t, 3), d) for t, d in r.dtmf_sent] == [(1.9, "1"), (2.2, "2")]
    # Keys are a turn: their answer is awaited like any other (this agent never answers).
    assert _starts(r) == [3.2]
    with pytest.raises(ValueError):
        SimulatedCall(b"", turns=[CallerTurn(b"", dtmf=((0.0, "x"),))])
    with pytest.raises(ValueError):
        SimulatedCall(b"", turns=THREE_TURNS, after_greeting_s=1.0)
    with pytest.raises(ValueError):
        TurnTaking(think_s=-1)


def test_realtime_replay_keeps_recorded_timing() -> None:
    audio = SILENCE * 25 + tone(0.4) + SILENCE * 100 + tone(0.3)
    recording = RecordedCall("rec", audio, dtmf=((1.0, "5"),), custom_parameters={"k": "v"})
    call = simulated_call(recording, "realtime", stream_sid="MZ1", linger_s=0.2)
    r = run_fake(call, FakeAgent(greeting_s=0.0, answers=False))
    assert flat(r.caller_segments) == pytest.approx([0.5, 0.9, 2.9, 3.2])
    assert r.dtmf_sent == [(1.0, "5")]
    assert r.caller_audio[: len(audio)] == audio
    assert r.caller_done


def test_media_received_counts_bytes_before_each_message() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", linger_s=0.1)
    out = OutboundBuilder("MZ1")
    call.open(0.0)
    call.receive(0.1, out.media(b"\x00" * 400))
    call.receive(0.1, out.mark("m"))
    call.receive(0.2, out.media(b"\x00" * 160))
    call.receive(0.3, out.media(b""))
    call.server_closed(0.4, 1000, "")
    r = call.result()
    assert r.media_received == [(0.1, 0), (0.2, 400), (0.3, 560)]
    assert r.media_bytes_received == 560


def test_simulated_call_modes() -> None:
    words = tone(0.5) + SILENCE * 50 + tone(0.5)
    recording = RecordedCall("r", SILENCE * 50 + words, custom_parameters={"a": "b"})
    taking = TurnTaking(barge_in_after_s=0.3)
    # Turns mode ignores barge_in_after_s; barge-in mode uses it (0.5 s when unset).
    turns = run_fake(
        simulated_call(recording, "turns", turn_taking=taking, stream_sid="MZ1"), FakeAgent()
    )
    barge = run_fake(
        simulated_call(recording, "barge-in", turn_taking=taking, stream_sid="MZ1"), FakeAgent()
    )
    default = run_fake(simulated_call(recording, "barge-in", stream_sid="MZ1"), FakeAgent())
    # The words (not their lead-in) start on time: 0.6 s after the greeting; the answer
    # comes 0.52 s after the words end and lasts 1 s.
    answer_1 = 1.9 + 0.5 + 0.52
    assert _starts(turns) == pytest.approx([1.9, answer_1 + 1.0 + 0.6])
    assert _starts(barge) == pytest.approx([1.9, answer_1 + 0.3])
    assert _starts(default) == pytest.approx([1.9, answer_1 + 0.5])
    call = simulated_call(recording, "realtime", call_sid="CA5", custom_parameters={"x": "y"})
    start = json.loads(call.open(0.0)[1])["start"]
    assert (start["callSid"], start["customParameters"]) == ("CA5", {"x": "y"})
    default_params = json.loads(simulated_call(recording, "turns").open(0.0)[1])["start"]
    assert default_params["customParameters"] == {"a": "b"}
