"""The fast path reads and writes Live API messages exactly as the SDK would (golden wire
messages)."""

from __future__ import annotations

import base64
import binascii
import json
import random
from typing import Any

import pytest
from google.genai import _live_converters, types

from agent.events import AudioDamaged, AudioOut, GoAway, Interrupted, TurnComplete
from agent.live_wire import (
    AUDIO_PREFIX,
    AUDIO_SUFFIX,
    WireError,
    audio_message,
    b64decode,
    b64encode,
    events_from_wire,
)
from agent.session import events_from_sdk

PCM = bytes(range(256)) * 4

GOLDEN: list[dict[str, Any]] = [
    {"setupComplete": {}},
    {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": "audio/pcm;rate=24000",
                            "data": base64.b64encode(PCM).decode(),
                        }
                    },
                    {
                        "inlineData": {
                            "mimeType": "audio/pcm;rate=24000",
                            "data": base64.b64encode(b"\x01\x00").decode(),
                        }
                    },
                ]
            }
        }
    },
    {"serverContent": {"inputTranscription": {"text": "book a table"}}},
    {"serverContent": {"outputTranscription": {"text": "Sure."}}},
    {"serverContent": {"generationComplete": True}},
    {
        "serverContent": {"turnComplete": True},
        "usageMetadata": {"promptTokenCount": 12, "responseTokenCount": 30, "totalTokenCount": 42},
    },
    {"serverContent": {"interrupted": True}},
    {"serverContent": {"turnComplete": True, "turnCompleteReason": "RESPONSE_REJECTED"}},
    {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": "audio/pcm;rate=24000",
                            "data": base64.b64encode(PCM + b"\x07").decode(),
                        }
                    }
                ]
            }
        }
    },
    {
        "toolCall": {
            "functionCalls": [{"id": "fc-1", "name": "end_call", "args": {"reason": "done"}}]
        }
    },
    {"toolCallCancellation": {"ids": ["fc-1", "fc-2"]}},
    {"goAway": {"timeLeft": "50s"}},
    {"sessionResumptionUpdate": {"newHandle": "h-123", "resumable": True}},
    {"sessionResumptionUpdate": {"resumable": False}},
]


def sdk_events(message: dict[str, Any]) -> list[object]:
    converted = _live_converters._LiveServerMessage_from_mldev(message)
    return events_from_sdk(types.LiveServerMessage._from_response(response=converted, kwargs={}))


@pytest.mark.parametrize("message", GOLDEN, ids=lambda m: next(iter(m)))
def test_fast_path_matches_the_sdk(message: dict[str, Any]) -> None:
    raw = json.dumps(message).encode()
    assert events_from_wire(raw) == sdk_events(message)


def test_audio_in_url_safe_base64_is_accepted() -> None:
    data = base64.urlsafe_b64encode(PCM).decode()
    assert "-" in data or "_" in data
    msg = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": data}}]}}}
    assert events_from_wire(json.dumps(msg)) == [AudioOut(PCM)]


def test_interrupted_then_turn_complete_in_one_message() -> None:
    msg = {"serverContent": {"interrupted": True, "turnComplete": True}}
    assert events_from_wire(json.dumps(msg)) == [Interrupted(), TurnComplete()]


def test_go_away_with_fractional_seconds() -> None:
    assert events_from_wire('{"goAway":{"timeLeft":"1.5s"}}') == [GoAway(1.5)]


@pytest.mark.parametrize(
    "frame", [b"not json", b"[1,2]", b'{"error":{"code":8,"message":"quota"}}']
)
def test_unreadable_or_error_messages_raise(frame: bytes) -> None:
    with pytest.raises(WireError):
        events_from_wire(frame)


def test_audio_message_matches_what_the_sdk_sends() -> None:
    sent = json.loads(AUDIO_PREFIX + base64.b64encode(PCM).decode() + AUDIO_SUFFIX)
    sdk = {
        "realtime_input": {
            "audio": {
                "data": base64.urlsafe_b64encode(PCM).decode(),
                "mime_type": "audio/pcm;rate=16000",
            }
        }
    }
    assert sent.keys() == sdk.keys()
    assert sent["realtime_input"]["audio"].keys() == sdk["realtime_input"]["audio"].keys()
    assert sent["realtime_input"]["audio"]["mime_type"] == "audio/pcm;rate=16000"
    assert base64.b64decode(sent["realtime_input"]["audio"]["data"]) == PCM


def test_audio_message_is_the_prefix_payload_and_suffix() -> None:
    assert (
        audio_message(PCM)
        == (AUDIO_PREFIX + base64.b64encode(PCM).decode() + AUDIO_SUFFIX).encode()
    )


@pytest.mark.parametrize(
    "frame",
    [
        b'{"serverContent": "not an object"}',
        b'{"toolCall": {"functionCalls": [7]}}',
    ],
)
def test_fields_of_the_wrong_type_are_a_wire_error_not_a_crash(frame: bytes) -> None:
    with pytest.raises(WireError, match="malformed"):
        events_from_wire(frame)


def test_undecodable_audio_is_skipped_and_reported_not_a_lost_connection() -> None:
    good = base64.b64encode(PCM).decode()
    msg = {
        "serverContent": {
            "modelTurn": {
                "parts": [{"inlineData": {"data": "abcde"}}, {"inlineData": {"data": good}}]
            }
        }
    }
    assert events_from_wire(json.dumps(msg)) == [AudioDamaged("base64", 5), AudioOut(PCM)]


def test_an_odd_length_chunk_loses_its_dangling_byte_and_is_reported() -> None:
    msg = {
        "serverContent": {
            "modelTurn": {
                "parts": [{"inlineData": {"data": base64.b64encode(PCM + b"x").decode()}}]
            }
        }
    }
    assert events_from_wire(json.dumps(msg)) == [AudioOut(PCM), AudioDamaged("odd length", 1)]
    one = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": "eA=="}}]}}}
    assert events_from_wire(json.dumps(one)) == [AudioDamaged("odd length", 1)]


def test_the_reason_a_turn_completed_is_kept() -> None:
    frame = '{"serverContent":{"turnComplete":true,"turnCompleteReason":"RESPONSE_REJECTED"}}'
    assert events_from_wire(frame) == [TurnComplete("RESPONSE_REJECTED")]


def test_b64_codec_is_the_standard_librarys() -> None:
    # The fast codec (pybase64) must give exactly what binascii gives: for every length
    # (padding), and for strings binascii decodes tolerantly or refuses, which take its path.
    rng = random.Random(5)
    for n in range(64):
        data = rng.randbytes(n)
        assert b64encode(data) == binascii.b2a_base64(data, newline=False)
        text = b64encode(data).decode()
        assert b64decode(text) == data
        assert b64decode(base64.urlsafe_b64encode(data).decode()) == data
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n"
    samples = [
        "".join(rng.choice(alphabet if rng.random() < 0.6 else "A=+/") for _ in range(n))
        for n in rng.choices(range(16), k=20_000)
    ]
    samples += ["AA==AA==", " AAAA", "AAAA\n", "AA=", "é"]
    for text in samples:
        try:
            expected: bytes | type[Exception] = binascii.a2b_base64(
                text.replace("-", "+").replace("_", "/")
            )
        except ValueError as exc:
            expected = type(exc)
        try:
            got: bytes | type[Exception] = b64decode(text)
        except ValueError as exc:
            got = type(exc)
        assert got == expected, text
