"""Twilio Media Streams wire format: golden messages both ways, parse errors, round trips."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from telephony.twilio.media_stream import (
    FRAME_BYTES,
    FRAME_MS,
    MAX_FRAME_BYTES,
    ULAW_SILENCE,
    Connected,
    Dtmf,
    InboundBuilder,
    Mark,
    Media,
    MediaFormat,
    OutboundBuilder,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    ProtocolError,
    Start,
    Stop,
    UnknownEvent,
    parse_inbound,
    parse_outbound,
)

SID = "MZ" + "a" * 32
CALL = "CA" + "b" * 32
ACCOUNT = "AC" + "c" * 32
AUDIO = bytes(range(256))[:FRAME_BYTES]
AUDIO_B64 = base64.b64encode(AUDIO).decode()


def test_constants() -> None:
    assert (FRAME_BYTES, FRAME_MS, ULAW_SILENCE) == (160, 20, b"\xff")


# --- Twilio -> server: golden frames as Twilio writes them -----------------------------------


def test_inbound_builder_golden_frames() -> None:
    b = InboundBuilder(stream_sid=SID, call_sid=CALL, account_sid=ACCOUNT)
    assert b.connected() == '{"event":"connected","protocol":"Call","version":"1.0.0"}'
    assert b.start({"k": "v"}) == (
        '{"event":"start","sequenceNumber":"1","streamSid":"' + SID + '","start":{'
        '"accountSid":"' + ACCOUNT + '","streamSid":"' + SID + '","callSid":"' + CALL + '",'
        '"tracks":["inbound"],"customParameters":{"k":"v"},'
        '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}'
    )
    assert b.media(AUDIO, 52) == (
        '{"event":"media","sequenceNumber":"2","streamSid":"' + SID + '","media":{'
        '"track":"inbound","chunk":"1","timestamp":"52","payload":"' + AUDIO_B64 + '"}}'
    )
    assert b.dtmf("1") == (
        '{"event":"dtmf","sequenceNumber":"3","streamSid":"' + SID + '",'
        '"dtmf":{"track":"inbound_track","digit":"1"}}'
    )
    assert b.media(AUDIO, 72) == (
        '{"event":"media","sequenceNumber":"4","streamSid":"' + SID + '","media":{'
        '"track":"inbound","chunk":"2","timestamp":"72","payload":"' + AUDIO_B64 + '"}}'
    )
    assert b.mark("m1") == (
        '{"event":"mark","sequenceNumber":"5","streamSid":"' + SID + '","mark":{"name":"m1"}}'
    )
    assert b.stop() == (
        '{"event":"stop","sequenceNumber":"6","streamSid":"' + SID + '",'
        '"stop":{"accountSid":"' + ACCOUNT + '","callSid":"' + CALL + '"}}'
    )


def test_connected_has_no_sequence_number_and_counters_are_strings() -> None:
    b = InboundBuilder(stream_sid=SID, call_sid=CALL)
    connected = json.loads(b.connected())
    assert "sequenceNumber" not in connected and "streamSid" not in connected
    frames = [json.loads(f) for f in (b.start(), b.media(AUDIO, 20), b.dtmf("#"), b.stop())]
    assert [f["sequenceNumber"] for f in frames] == ["1", "2", "3", "4"]
    assert frames[1]["media"]["chunk"] == "1" and frames[1]["media"]["timestamp"] == "20"


def test_inbound_round_trip() -> None:
    b = InboundBuilder(stream_sid=SID, call_sid=CALL, account_sid=ACCOUNT)
    assert parse_inbound(b.connected()) == Connected("Call", "1.0.0")
    assert parse_inbound(b.start({"caller": "+15550100", "x": "1"})) == Start(
        sequence_number=1,
        stream_sid=SID,
        call_sid=CALL,
        account_sid=ACCOUNT,
        tracks=("inbound",),
        custom_parameters={"caller": "+15550100", "x": "1"},
        media_format=MediaFormat("audio/x-mulaw", 8000, 1),
    )
    assert parse_inbound(b.media(AUDIO, 40).encode()) == Media(2, SID, "inbound", 1, 40, AUDIO)
    assert parse_inbound(b.dtmf("*")) == Dtmf(3, SID, "*", "inbound_track")
    assert parse_inbound(b.mark("done")) == Mark(4, SID, "done")
    assert parse_inbound(b.stop()) == Stop(5, SID, CALL, ACCOUNT)


def test_inbound_accepts_numeric_counters() -> None:
    msg = {
        "event": "media",
        "sequenceNumber": 7,
        "media": {"chunk": 3, "timestamp": 60, "payload": AUDIO_B64},
    }
    event = parse_inbound(json.dumps(msg))
    assert isinstance(event, Media)
    assert (event.sequence_number, event.chunk, event.timestamp_ms) == (7, 3, 60)


# --- Server -> Twilio ------------------------------------------------------------------------


def test_outbound_builder_golden_frames() -> None:
    b = OutboundBuilder(SID)
    assert b.media(AUDIO) == (
        '{"event":"media","streamSid":"' + SID + '","media":{"payload":"' + AUDIO_B64 + '"}}'
    )
    assert b.mark("m-1") == '{"event":"mark","streamSid":"' + SID + '","mark":{"name":"m-1"}}'
    assert b.clear() == '{"event":"clear","streamSid":"' + SID + '"}'


@pytest.mark.parametrize("sid", [SID, 'odd"sid\\with\u00e9'])
def test_outbound_builder_output_is_json_and_parses(sid: str) -> None:
    b = OutboundBuilder(sid)
    expected: list[tuple[str, dict[str, Any], object]] = [
        (
            b.media(AUDIO),
            {"event": "media", "streamSid": sid, "media": {"payload": AUDIO_B64}},
            OutboundMedia(sid, AUDIO),
        ),
        (
            b.media(b""),
            {"event": "media", "streamSid": sid, "media": {"payload": ""}},
            OutboundMedia(sid, b""),
        ),
        (
            b.mark('na"me'),
            {"event": "mark", "streamSid": sid, "mark": {"name": 'na"me'}},
            OutboundMark(sid, 'na"me'),
        ),
        (b.clear(), {"event": "clear", "streamSid": sid}, OutboundClear(sid)),
    ]
    for frame, as_dict, event in expected:
        assert json.loads(frame) == as_dict
        assert parse_outbound(frame) == event


# --- Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        b"\xff\xfe",
        "[1, 2]",
        '"media"',
        "{}",
        '{"event": 5}',
        '{"event":"media","sequenceNumber":"1"}',
        '{"event":"media","sequenceNumber":"1","media":{}}',
        '{"event":"media","media":{"payload":""}}',
        '{"event":"media","sequenceNumber":"x1","media":{"payload":""}}',
        '{"event":"media","sequenceNumber":"\u00b2","media":{"payload":""}}',
        '{"event":"media","sequenceNumber":true,"media":{"payload":""}}',
        '{"event":"media","sequenceNumber":"1","media":{"payload":"@@@@"}}',
        '{"event":"media","sequenceNumber":"1","media":{"payload":"AAA"}}',
        '{"event":"start","sequenceNumber":"1","start":{}}',
        '{"event":"start","start":{"callSid":"CA1","customParameters":["k"]}}',
        '{"event":"start","start":{"callSid":"CA1","mediaFormat":"x"}}',
        '{"event":"start","start":{"callSid":"CA1","tracks":"inbound"}}',
        '{"event":"dtmf","dtmf":{"digit":"x"}}',
        '{"event":"dtmf","dtmf":{"digit":"12"}}',
        '{"event":"dtmf"}',
        '{"event":"mark","mark":{}}',
        '{"event":"stop","stop":[1]}',
    ],
)
def test_parse_inbound_errors(frame: str | bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_inbound(frame)
    assert not isinstance(info.value, UnknownEvent)


def test_oversized_frame_rejected_before_parsing() -> None:
    big = '{"event":"media","sequenceNumber":"1","media":{"payload":"' + "A" * MAX_FRAME_BYTES
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_inbound(big + '"}}')
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_outbound(big.encode() + b'"}}')


def test_unknown_events() -> None:
    with pytest.raises(UnknownEvent) as info:
        parse_inbound('{"event":"transcription","sequenceNumber":"9"}')
    assert info.value.event == "transcription"
    with pytest.raises(UnknownEvent) as info2:
        parse_outbound('{"event":"dance"}')
    assert info2.value.event == "dance"
    # Server -> Twilio events are not Twilio -> server events, and vice versa.
    with pytest.raises(UnknownEvent):
        parse_inbound(OutboundBuilder(SID).clear())
    with pytest.raises(UnknownEvent):
        parse_outbound(InboundBuilder(SID, CALL).dtmf("1"))


@pytest.mark.parametrize(
    "frame",
    [
        "nope",
        "[]",
        '{"event":null}',
        '{"event":"media","media":{"payload":""}}',
        '{"event":"media","streamSid":"MZ1"}',
        '{"event":"media","streamSid":"MZ1","media":{"payload":"A"}}',
        '{"event":"mark","streamSid":"MZ1","mark":{"name":3}}',
        '{"event":"clear"}',
    ],
)
def test_parse_outbound_errors(frame: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_outbound(frame)
    assert not isinstance(info.value, UnknownEvent)


def test_all_dtmf_digits_accepted() -> None:
    b = InboundBuilder(SID, CALL)
    for digit in "0123456789*#ABCD":
        event = parse_inbound(b.dtmf(digit))
        assert isinstance(event, Dtmf) and event.digit == digit
