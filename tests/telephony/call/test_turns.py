"""The turn log: turns open lazily, a barge-in cuts the text to what was heard."""

from __future__ import annotations

from telephony.call.summary import Turn
from telephony.call.turns import RESPONSE_WINDOW_S, TurnLog


def log() -> TurnLog:
    return TurnLog(100.0, [])


def test_a_turn_opens_with_its_first_output_and_closes_on_turn_complete() -> None:
    t = log()
    assert t.closed and t.open() and not t.open()
    t.agent_words("Hello")
    t.agent_words(" there.")
    t.first_audio(101.0, None)
    turn = t.complete(103.0, agent_audio_ms=1500, agent_at=101.0, heard=None)
    assert turn == Turn(
        at_s=3.0, caller="", agent="Hello there.", agent_audio_ms=1500, agent_at_s=1.0
    )
    assert t.turns == [turn] and t.closed and t.completed == 1


def test_an_empty_turn_complete_records_nothing_but_counts() -> None:
    t = log()
    assert t.complete(101.0, agent_audio_ms=0, agent_at=None, heard=None) is None
    assert t.turns == [] and t.completed == 1


def test_caller_words_are_dated_by_when_they_began() -> None:
    t = log()
    t.caller_words("what time", began_at=104.2)
    t.caller_words(" do you open", began_at=105.0)
    t.open()
    t.agent_words("At nine.")
    t.first_audio(107.0, speech_end=106.2)
    turn = t.complete(108.0, agent_audio_ms=800, agent_at=107.0, heard=None)
    assert turn is not None
    assert (turn.caller, turn.caller_at_s, turn.agent_at_s) == ("what time do you open", 4.2, 7.0)
    assert turn.response_ms == 800.0


def test_a_late_answer_is_not_a_response() -> None:
    t = log()
    t.open()
    t.first_audio(100.0 + RESPONSE_WINDOW_S + 1, speech_end=100.0)
    turn = t.complete(115.0, agent_audio_ms=100, agent_at=111.0, heard=None)
    assert turn is not None and turn.response_ms is None


def test_barge_in_mid_generation_discards_the_rest_then_records_what_was_heard() -> None:
    t = log()
    t.agent_words("Sure, for how many people?")
    cut = t.interrupted(heard_ms=500, sent_ms=1000)
    assert cut == "Sure, for how "[: round(26 * 0.5)]
    assert t.discarding
    assert not t.agent_words(" and when?")  # dropped
    turn = t.complete(102.0, agent_audio_ms=1000, agent_at=100.5, heard=cut)
    assert turn is not None and turn.interrupted and turn.agent_heard == cut
    assert turn.agent == "Sure, for how many people?"
    assert not t.discarding


def test_a_cut_between_words_has_no_dangling_space() -> None:
    t = log()
    t.agent_words("Hello! Thanks for calling. How can I help?")
    # 31 of 42 characters: the cut falls just after "How ".
    assert t.interrupted(heard_ms=31, sent_ms=42) == "Hello! Thanks for calling. How"


def test_barge_in_after_the_turn_completed_marks_that_turn() -> None:
    t = log()
    t.agent_words("A long answer.")
    done = t.complete(101.0, agent_audio_ms=3000, agent_at=100.2, heard=None)
    assert done is not None and not done.interrupted
    cut = t.interrupted(heard_ms=1000, sent_ms=3000)
    assert not t.discarding  # nothing more of it will come: the next answer must play
    assert done.interrupted and done.agent_heard == cut == "A lon"


def test_fields_are_logged_in_order_with_only_the_known_optional_ones() -> None:
    turn = Turn(at_s=2.0, caller="hi", agent="Hello", agent_audio_ms=900, response_ms=640.0)
    assert list(turn.fields()) == [
        "at_s",
        "caller",
        "agent",
        "interrupted",
        "agent_audio_ms",
        "response_ms",
    ]
