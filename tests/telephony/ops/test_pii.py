"""Phone-number redaction (REDACT_PHONE_NUMBERS): number fields and free text."""

from __future__ import annotations

import pytest

from telephony.ops.pii import mask_number, redact_text, redact_value


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+14155550100", "+*******0100"),
        ("+442079460958", "+********0958"),
        ("4155550100", "******0100"),
        ("1234", "****"),  # too short to keep any digits
        ("", ""),
        ("client:alice", "client:alice"),  # not a number: nothing to mask
        ("sip:+14155550100@example.com", "sip:+*******0100@example.com"),
    ],
)
def test_number_fields_keep_only_the_last_four_digits(number: str, masked: str) -> None:
    assert mask_number(number) == masked


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("my number is 415 555 0100, thanks", "my number is *** *** 0100, thanks"),
        ("call me on (415) 555-0100", "call me on (***) ***-0100"),
        ("it's +44 20 7946 0958", "it's +** ** **** 0958"),
        ("+14155550100", "+*******0100"),
        ("4155550100.", "******0100."),
    ],
)
def test_spoken_numbers_in_free_text_are_masked(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "table for 4 at 7:30",
        "my PIN is 1234",
        "order number 123456",  # six digits: not a phone number
        "call sid CA0123456789abcdef0123456789abcdef",  # digits inside an identifier
        "no digits at all",
        "",
    ],
)
def test_short_numbers_and_identifiers_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_nested_values_are_redacted_and_keys_and_non_strings_kept() -> None:
    value = {
        "args": {"number": "+14155550100", "count": 4155550100, "note": "ok"},
        "list": ["415-555-0100", 3.5, None, True],
    }
    assert redact_value(value) == {
        "args": {"number": "+*******0100", "count": 4155550100, "note": "ok"},
        "list": ["***-***-0100", 3.5, None, True],
    }


def test_redaction_is_idempotent() -> None:
    once = redact_text("reach me at 415 555 0100 or +14155550199")
    assert redact_text(once) == once


@pytest.mark.parametrize("redact", [True, False])
def test_logs_mask_numbers_only_when_asked(
    redact: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import logging

    from agent.logs import fields
    from telephony.server import logs

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", "json", redact_numbers=redact)
        logging.getLogger("t").info(
            "call.started %s", "+14155550100", extra=fields(caller="+14155550100", turns=3)
        )
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    if redact:
        assert line["caller"] == "+*******0100"
        assert line["event"] == "call.started +*******0100"
        assert "4155550100" not in json.dumps(line)
    else:
        assert line["caller"] == "+14155550100"
    assert line["turns"] == 3
