"""What the simulated model says. Deliberately simple and honest: it is not a real model.

- caller speech is answered by playing the caller's own audio back ("[echo 1.42 s]");
- text is answered by speaking its last double-quoted passage (our bridge cues the greeting as
  ``Say exactly: "Hello, thanks for calling."``), "You pressed 4." for a keypad digit, and
  "Okay." otherwise.
"""

from __future__ import annotations

import re

__all__ = ["describe_caller_speech", "describe_echo", "reply_for_text"]

# Straight or curly double quotes; the passage must not be empty.
_QUOTED = re.compile(r"\"([^\"]+)\"|\u201c([^\u201d]+)\u201d")
_PRESSED = re.compile(
    r"\bpressed\s+(?:the\s+)?(?:key\s+|digit\s+|button\s+)?([0-9*#A-D])(?![0-9A-Za-z])"
)


def reply_for_text(text: str) -> str:
    """The sentence the simulator speaks in answer to a text input."""
    quotes = [(m.group(1) or m.group(2) or "").strip() for m in _QUOTED.finditer(text)]
    quotes = [q for q in quotes if q]
    if quotes:
        return quotes[-1]
    if m := _PRESSED.search(text):
        digit: str = m.group(1)
        return f"You pressed {digit}."
    return "Okay."


def describe_caller_speech(duration_s: float) -> str:
    """Input transcription of an utterance: the simulator has no speech recognition."""
    return f"[caller speech {duration_s:.2f} s]"


def describe_echo(duration_s: float) -> str:
    """Output transcription of an echoed utterance."""
    return f"[echo {duration_s:.2f} s]"
