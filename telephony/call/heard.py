"""What of the agent's speech the caller has actually heard, from Twilio's mark echoes (pure).

Agent audio sent to Twilio is followed by ``mark`` messages; Twilio echoes a mark once the
audio queued before it has played. That is the only way to know what reached the caller's
ear, and it decides what a barge-in cut off and when an ending call may hang up.
"""

from __future__ import annotations

from typing import Final

from telephony.twilio import media_stream as ms

__all__ = ["MARK_INTERVAL_BYTES", "Heard"]

#: A mark follows at most this much agent audio (200 ms): fine enough to know what the caller
#: heard, coarse enough not to double the messages to Twilio (model chunks are often 40 ms).
MARK_INTERVAL_BYTES: Final = 1600


class Heard:
    """What of the agent's speech the caller has actually heard, from Twilio's mark echoes.

    Agent audio is followed by marks (``mark()``: one per ``MARK_INTERVAL_BYTES``, and a final
    one with ``force``) named after their end offset in the turn. An echo proves the audio
    before it played, unless a ``clear`` came first: ``clear`` echoes every pending mark at
    once, so marks pending at a clear are remembered and their echoes ignored.
    """

    def __init__(self) -> None:
        self.turn = 0
        self.sent_bytes = 0  # μ-law bytes of this turn sent
        self.confirmed_bytes = 0  # of which confirmed played
        self.confirmed_at = 0.0  # monotonic time of that confirmation
        self.first_sent_at = 0.0
        self._seq = 0
        self._unmarked = 0  # bytes sent since the last mark
        self._pending: dict[str, tuple[int, int]] = {}  # mark → (turn, end offset)
        self._cleared: set[str] = set()
        self.last_mark: str | None = None

    def new_turn(self) -> None:
        self.turn += 1
        self.sent_bytes = 0
        self.confirmed_bytes = 0

    def sent(self, nbytes: int, now: float) -> None:
        """Record audio sent to Twilio."""
        if self.sent_bytes == 0:
            self.first_sent_at = now
            self.confirmed_at = now
        self.sent_bytes += nbytes
        self._unmarked += nbytes

    def mark(self, force: bool = False) -> str | None:
        """The name of a mark to send now, if one is due (``force``: any unmarked audio)."""
        if self._unmarked == 0 or (not force and self._unmarked < MARK_INTERVAL_BYTES):
            return None
        self._unmarked = 0
        self._seq += 1
        name = f"{self.turn}:{self.sent_bytes}:{self._seq}"
        self._pending[name] = (self.turn, self.sent_bytes)
        self.last_mark = name
        return name

    def echoed(self, name: str, now: float) -> bool:
        """A mark came back; True if it proves audio was heard (not a clear's echo)."""
        if name in self._cleared:
            self._cleared.discard(name)
            return False
        entry = self._pending.pop(name, None)
        if entry is None:
            return False
        turn, offset = entry
        if turn == self.turn and offset > self.confirmed_bytes:
            self.confirmed_bytes = offset
            self.confirmed_at = now
        if name == self.last_mark:
            self.last_mark = None
        return True

    @property
    def all_played(self) -> bool:
        """All audio sent is marked and every mark was echoed (so all of it has played)."""
        return not self._pending and self._unmarked == 0

    def cleared(self, now: float) -> tuple[float, float, float]:
        """Twilio was told to clear: (sent_ms, heard_ms, confirmed_ms) of this turn."""
        self._cleared.update(self._pending)
        self._pending.clear()
        self._unmarked = 0
        self.last_mark = None
        # Between the last echo and now, audio kept playing (if there was any left to play).
        since = max(0.0, now - max(self.confirmed_at, self.first_sent_at))
        estimate = min(self.sent_bytes, self.confirmed_bytes + round(since * ms.SAMPLE_RATE))
        to_ms = 1000.0 / ms.SAMPLE_RATE
        return self.sent_bytes * to_ms, estimate * to_ms, self.confirmed_bytes * to_ms
