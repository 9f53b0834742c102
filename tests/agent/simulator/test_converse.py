"""The converse policy (pure) and espeak-ng's word timing."""

from __future__ import annotations

import shutil

import pytest

from agent.simulator import converse, espeak

KNOWLEDGE = {
    "functionDeclarations": [
        {"name": "search_knowledge", "description": "Search the documents."},
        {"name": "end_call", "description": "Hang up."},
    ]
}
ORDERS = {
    "functionDeclarations": [
        {
            "name": "order_status",
            "description": "Look up where a parcel is.",
            "parameters": {
                "type": "OBJECT",
                "properties": {"number": {"type": "STRING"}},
                "required": ["number"],
            },
        }
    ]
}


def test_goodbye_says_goodbye_then_ends_the_call() -> None:
    plan = converse.decide("okay thanks bye bye", [KNOWLEDGE])
    assert plan.say == converse.GOODBYE
    assert plan.tool == "end_call"


def test_goodbye_without_end_call_only_says_goodbye() -> None:
    assert converse.decide("Goodbye!", []) == converse.Plan(say=converse.GOODBYE)


def test_a_tool_named_by_the_caller_is_called_with_their_words() -> None:
    plan = converse.decide("what is the status of my order", [KNOWLEDGE, ORDERS])
    assert plan.tool == "order_status"
    assert plan.args == {"number": "what is the status of my order"}


def test_other_words_search_the_knowledge_base() -> None:
    plan = converse.decide("rather cold hearted", [KNOWLEDGE, ORDERS])
    assert plan.tool == "search_knowledge"
    assert plan.args == {"query": "rather cold hearted"}
    assert plan.then_say == "You said: rather cold hearted."


def test_without_tools_it_says_what_it_heard() -> None:
    assert converse.decide("he was not", []).say == "You said: he was not."
    assert converse.decide("  ", [KNOWLEDGE]).say == converse.NOTHING_HEARD


def test_speakable_takes_the_first_sentences_of_the_first_passage() -> None:
    passage = "Free parking is behind the building. The entrance is on Elm Street. " * 5
    response = {"response": {"result": "ok", "passages": [{"text": passage}]}}
    spoken = converse.speakable(response)
    assert spoken.startswith("Free parking is behind the building. The entrance")
    assert len(spoken) <= converse.MAX_SPOKEN_CHARS
    assert converse.speakable({"response": {"result": "no_results"}}) == ""
    assert converse.speakable({"response": {"message": "Your parcel is in Leeds."}}) == (
        "Your parcel is in Leeds."
    )


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
async def test_espeak_speech_is_24_khz_with_the_transcript_in_step() -> None:
    speech = await espeak.synthesize("Hello, thanks for calling.", "Kore")
    assert speech is not None
    assert 1.0 < speech.duration_s < 4.0
    assert "".join(piece for piece, _ in speech.words) == "Hello, thanks for calling."
    offsets = [at for _, at in speech.words]
    assert offsets == sorted(offsets) and offsets[-1] < len(speech.pcm) // 2


HOURS = {
    "functionDeclarations": [
        {
            "name": "opening_hours",
            "description": "When the clinic is open.",
            "behavior": "NON_BLOCKING",
            "parametersJsonSchema": {
                "type": "object",
                "properties": {"day": {"type": "string", "enum": ["monday", "saturday"]}},
                "required": ["day"],
            },
        }
    ]
}


def test_a_parameter_with_allowed_values_gets_the_one_the_caller_said() -> None:
    plan = converse.decide("Are you open on Saturday, opening hours?", [HOURS])
    assert plan.tool == "opening_hours" and plan.args == {"day": "saturday"}


@pytest.mark.parametrize(
    "text", ["What are your opening hours?", "Opening hours monday or saturday"]
)
def test_no_value_or_two_values_said_means_no_call(text: str) -> None:
    assert converse.decide(text, [HOURS]).tool is None


def test_behavior_and_scheduling_are_read_as_declared_and_answered() -> None:
    assert converse.behavior("opening_hours", [HOURS]) == "NON_BLOCKING"
    assert converse.behavior("order_status", [ORDERS]) == "BLOCKING"
    assert converse.behavior("unknown", [HOURS]) == "BLOCKING"
    assert converse.scheduling({"response": {}, "scheduling": "SILENT"}) == "SILENT"
    assert converse.scheduling({"response": {}, "scheduling": "INTERRUPT"}) == "INTERRUPT"
    assert converse.scheduling({"response": {}}) == "WHEN_IDLE"
    assert converse.scheduling({"scheduling": "nonsense"}) == "WHEN_IDLE"


def test_a_response_without_words_is_read_out_by_its_plain_values() -> None:
    response = {
        "response": {"day": "saturday", "hours": "9 am to 1 pm", "caller": "+1500", "open": True}
    }
    assert converse.speakable(response) == "day saturday, hours 9 am to 1 pm."
    assert converse.speakable({"response": {"items": [1, 2]}}) == ""
