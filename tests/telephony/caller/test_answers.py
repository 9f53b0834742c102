"""Expected answers: matching phrases, expectation files, and reading the server's record."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from telephony.caller.answers import (
    MAX_EXPECT_BYTES,
    RecordUnavailable,
    agent_words,
    api_base,
    expectations_for,
    fetch_record,
    missed,
    said,
)
from telephony.loadtest.metrics import CallRecord, Slo, check_slos, summarize


@pytest.mark.parametrize(
    ("expected", "spoken", "ok"),
    [
        ("9 am", "We open at 9 a.m. on weekdays.", True),
        ("9 AM", "we open at 9am", False),  # one word is not two
        ("Elm Street", "The entrance is on elm   street, behind us.", True),
        ("street elm", "The entrance is on Elm Street.", False),  # order matters
        ("we're open", "We\u2019re open all week.", True),
        ("nine", "We open at 9.", False),  # numbers are not spelled out
        ("", "anything", True),
        ("open", "", False),
    ],
)
def test_said_matches_words_in_order(expected: str, spoken: str, ok: bool) -> None:
    assert said(expected, spoken) is ok


def test_missed_lists_the_phrases_not_said() -> None:
    assert missed(["open", "Tuesday", "Elm Street"], "Open on Elm Street") == ["Tuesday"]


def test_agent_words_are_the_agent_entries_of_the_transcript() -> None:
    record = {
        "transcript": [
            {"role": "agent", "text": "Hello."},
            {"role": "caller", "text": "When do you open"},
            {"role": "agent", "text": "At nine", "interrupted": True, "generated": "At nine am"},
            {"role": "agent", "text": ""},
            "junk",
        ]
    }
    assert agent_words(record) == "Hello. At nine"
    assert agent_words({}) == ""


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("ws://127.0.0.1:8080/twilio/media", "http://127.0.0.1:8080"),
        ("wss://agent.example/twilio/media/i-1?x=1", "https://agent.example"),
        ("https://agent.example/twilio/voice", "https://agent.example"),
    ],
)
def test_api_base_is_the_server_of_the_url(url: str, base: str) -> None:
    assert api_base(url) == base


def test_api_base_refuses_what_is_not_a_server_url() -> None:
    with pytest.raises(ValueError, match="cannot tell"):
        api_base("/twilio/media")


def test_expectations_come_from_the_file_beside_the_recording(tmp_path: Path) -> None:
    wav = tmp_path / "hours.wav"
    assert expectations_for(wav) == ()
    (tmp_path / "hours.expect").write_text("# opening hours\n9 am\n\n  Monday to Friday  # both\n")
    assert expectations_for(wav) == ("9 am", "Monday to Friday")
    call = tmp_path / "CA1"
    call.mkdir()
    (call / "expect").write_text("goodbye\n")
    assert expectations_for(call) == ("goodbye",)


def test_an_expectations_file_that_is_not_a_few_phrases_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.expect").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        expectations_for(tmp_path / "a.wav")
    (tmp_path / "b.expect").write_bytes(b"x" * (MAX_EXPECT_BYTES + 1))
    with pytest.raises(ValueError, match="larger than"):
        expectations_for(tmp_path / "b.wav")


def _client(responses: list[httpx.Response], seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses.pop(0) if len(responses) > 1 else responses[0]

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_fetch_record_waits_until_the_record_is_final() -> None:
    final = {"call_sid": "CA1", "outcome": "completed", "ended_at": 1.0, "transcript": []}
    responses = [
        httpx.Response(404, json={"detail": "no such call"}),
        httpx.Response(200, json={"call_sid": "CA1", "outcome": "in_progress", "ended_at": None}),
        httpx.Response(200, json=final),
    ]
    seen: list[httpx.Request] = []
    async with _client(responses, seen) as client:
        record = await fetch_record(client, "http://srv:8080/", "CA1", "tok", poll_s=0.001)
    assert record == final
    assert len(seen) == 3
    assert str(seen[0].url) == "http://srv:8080/calls/CA1"
    assert seen[0].headers["authorization"] == "Bearer tok"


@pytest.mark.parametrize(
    ("status", "message"), [(401, "refused the API token"), (503, "operator API is off")]
)
async def test_fetch_record_says_why_it_cannot(status: int, message: str) -> None:
    async with _client([httpx.Response(status)], []) as client:
        with pytest.raises(RecordUnavailable, match=message):
            await fetch_record(client, "http://srv", "CA1", "tok", poll_s=0.001)


async def test_fetch_record_gives_up_at_its_deadline() -> None:
    async with _client([httpx.Response(404)], []) as client:
        with pytest.raises(RecordUnavailable, match=r"no final record of CA1 in 0.05 s"):
            await fetch_record(client, "http://srv", "CA1", "tok", timeout_s=0.05, poll_s=0.01)


def _record(
    index: int, expected: tuple[str, ...], miss: tuple[str, ...], answer: str | None
) -> CallRecord:
    return CallRecord(
        index, "r.wav", f"CA{index}", 0.0, 1.0, True, expected=expected, missed=miss, answer=answer
    )


def test_answer_accuracy_counts_unread_calls_as_missed() -> None:
    summary = summarize(
        [
            _record(0, ("a", "b"), (), "a b"),
            _record(1, ("a", "b"), ("b",), "a"),
            _record(2, ("a",), ("a",), None),  # its record could not be read
            _record(3, (), (), None),  # nothing expected
        ]
    )
    assert (summary.expected, summary.expected_said, summary.answers_unread) == (5, 3, 1)
    assert summary.answer_accuracy == pytest.approx(0.6)
    [verdict] = check_slos(summary, [Slo("answer_miss_rate", 0.3)])
    assert not verdict.passed
    assert summarize([_record(0, (), (), None)]).answer_accuracy is None
