"""Redaction of phone numbers (``REDACT_PHONE_NUMBERS=true``), for logs and call records.

Two kinds of text carry phone numbers:

- *Number fields* (caller, callee, a dialled number): always a number, usually E.164. They are
  masked whole except the last ``KEEP_DIGITS`` digits, so an operator can still tell calls
  apart ("+*******0100") without holding the number.
- *Free text* (transcripts, tool arguments, log messages): a caller may say "my number is
  415 555 0100". Any run of at least ``MIN_DIGITS`` digits, possibly split by spaces, dots,
  dashes or parentheses and with an optional leading ``+``, is masked the same way. Shorter
  runs (a PIN, an amount, a time) are left alone: this is a phone-number redactor, not a
  general PII scrubber.

Pure functions, no state: the same input always gives the same output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MASK", "mask_number", "redact_text", "redact_value"]

MASK = "*"
#: Digits left visible at the end of a masked number.
KEEP_DIGITS = 4
#: The shortest digit run taken for a phone number in free text (7: a local number).
MIN_DIGITS = 7

# A "+" or digit, then digits with at most two separator characters between them ("(415) 555"),
# ending on a digit.
_CANDIDATE = re.compile(r"(?<![\w+])\+?\(?\d(?:[ .\-()]{0,2}\d)+(?!\w)")


def mask_number(number: str) -> str:
    """Mask a number field: every digit but the last ``KEEP_DIGITS`` becomes ``*``.

    ``+14155550100`` → ``+*******0100``. Non-digits (``+``, ``client:``, spaces) are kept so
    the kind of address stays visible. Numbers of ``KEEP_DIGITS`` digits or fewer are masked
    entirely (the last digits would be all of it).
    """
    digits = sum(c.isdigit() for c in number)
    keep = KEEP_DIGITS if digits > KEEP_DIGITS else 0
    seen = 0
    out = []
    for c in number:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - keep else MASK)
        else:
            out.append(c)
    return "".join(out)


def _mask_match(match: re.Match[str]) -> str:
    text = match.group(0)
    if sum(c.isdigit() for c in text) < MIN_DIGITS:
        return text
    return mask_number(text)


def redact_text(text: str) -> str:
    """Mask every phone-number-like run of digits in free text."""
    if not any(c.isdigit() for c in text):
        return text  # the common case (most transcript text), without the regex
    return _CANDIDATE.sub(_mask_match, text)


def redact_value(value: Any) -> Any:
    """``redact_text`` applied to every string inside nested dicts/lists (keys are kept)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [redact_value(v) for v in value]
    return value
