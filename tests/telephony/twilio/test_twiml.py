"""TwiML documents: the stream connect, the busy answer, and what follows a stream."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from telephony.twilio import twiml


def parse(doc: str) -> ET.Element:
    return ET.fromstring(doc)


def test_connect_stream_golden() -> None:
    doc = twiml.connect_stream(
        "wss://agent.example.com/twilio/media",
        "https://agent.example.com/twilio/after",
        {"from": "+14155550100", "to": "+14155550111"},
    )
    assert doc == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Connect action="https://agent.example.com/twilio/after" method="POST">'
        '<Stream url="wss://agent.example.com/twilio/media">'
        '<Parameter name="from" value="+14155550100" />'
        '<Parameter name="to" value="+14155550111" />'
        "</Stream></Connect></Response>"
    )


def test_stream_url_with_query_is_refused() -> None:
    with pytest.raises(ValueError, match="query"):
        twiml.connect_stream("wss://a/twilio/media?x=1", "https://a/twilio/after", {})


def test_parameter_values_are_bounded_and_escaped() -> None:
    doc = parse(twiml.connect_stream("wss://a/m", "https://a/after", {"note": '<&">' + "x" * 900}))
    param = doc.find("./Connect/Stream/Parameter")
    assert param is not None
    value = param.get("value") or ""
    assert value.startswith('<&">')
    assert len("note") + len(value) < 500


def test_busy_says_and_hangs_up() -> None:
    doc = parse(twiml.say_and_hang_up("All lines are busy.", "en-US"))
    assert [child.tag for child in doc] == ["Say", "Hangup"]
    assert doc[0].text == "All lines are busy."
    assert doc[0].get("language") == "en-US"


@pytest.mark.parametrize("outcome", ["completed", "ended_by_agent", None, "rejected"])
def test_after_normal_end_hangs_up(outcome: str | None) -> None:
    doc = parse(twiml.after_stream(outcome, unavailable_message="sorry", transfer_number=None))
    assert [child.tag for child in doc] == ["Hangup"]


def test_after_failure_apologises_then_hangs_up() -> None:
    doc = parse(twiml.after_stream("failed", unavailable_message="Sorry.", transfer_number=None))
    assert [child.tag for child in doc] == ["Say", "Hangup"]
    assert doc[0].text == "Sorry."


def test_after_failure_with_transfer_number_dials_it() -> None:
    doc = parse(
        twiml.after_stream("failed", unavailable_message="Sorry.", transfer_number="+14155550100")
    )
    assert [child.tag for child in doc] == ["Say", "Dial"]
    assert doc.findtext("./Dial/Number") == "+14155550100"


def test_after_transfer_dials() -> None:
    doc = parse(
        twiml.after_stream("transfer", unavailable_message="x", transfer_number="+14155550100")
    )
    assert [child.tag for child in doc] == ["Dial"]
    assert doc.findtext("./Dial/Number") == "+14155550100"
