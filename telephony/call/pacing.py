"""Agent audio on its way to Twilio: a bounded lead over playback, the rest held here (pure).

The Live API generates speech faster than real time, and Twilio buffers whatever it is sent
(up to ten minutes). Sending everything at once would put the whole answer at Twilio: a
model gone wrong (20 times real time for a minute) would queue twenty minutes of audio nobody can
stop but a ``clear``, and every byte queued there is a byte we no longer control. So the call
keeps at most ``lead_s`` of audio ahead of Twilio's playback and holds the rest, bounded by
``max_held_s`` (beyond that the oldest held audio is dropped and counted).

Twilio plays at 8000 bytes/s from the moment audio arrives after it went idle; the pacer
tracks that playback position from what it released (``play_end``), exactly as
``telephony.twilio.playback`` emulates it. Marks ride in the queue between the audio, so a
mark leaves right after the audio it follows: heard-tracking is unchanged. A barge-in clears
the held audio with Twilio's.

Releases merge held audio into messages of up to ``message_bytes`` (fewer, larger messages
than the model's 40 ms chunks), and the first audio of an answer leaves at once: the lead is
empty then.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from telephony.twilio.media_stream import SAMPLE_RATE

__all__ = ["DEFAULT_LEAD_S", "MARK", "Pacer"]

#: At most this much agent audio is queued at Twilio, ahead of what the caller has heard.
DEFAULT_LEAD_S: Final = 1.0
#: Held agent audio per call, at most (8 kHz μ-law: 8 KB/s, so 120 s is under 1 MB).
DEFAULT_MAX_HELD_S: Final = 120.0
#: The most audio one media message carries: 200 ms, the marks' own granularity.
DEFAULT_MESSAGE_BYTES: Final = 1600


class _Mark:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MARK"


#: A point in the audio where the call wants a mark sent (the end of a turn).
MARK: Final = _Mark()

Item = bytes | _Mark


class Pacer:
    """See the module docstring. Every method takes ``now`` (seconds, monotonic)."""

    def __init__(
        self,
        *,
        lead_s: float = DEFAULT_LEAD_S,
        max_held_s: float = DEFAULT_MAX_HELD_S,
        message_bytes: int = DEFAULT_MESSAGE_BYTES,
    ) -> None:
        if lead_s <= 0 or max_held_s <= 0 or message_bytes <= 0:
            raise ValueError("lead_s, max_held_s and message_bytes must be > 0")
        self.lead_s = lead_s
        self._max_held = round(max_held_s * SAMPLE_RATE)
        self._message = message_bytes
        self._queue: deque[Item] = deque()
        self._held = 0  # audio bytes in the queue
        self.play_end = 0.0  # when Twilio will have played all we released
        #: Audio dropped because the held audio was over its bound (bytes).
        self.dropped_bytes = 0

    @property
    def held_bytes(self) -> int:
        return self._held

    @property
    def idle(self) -> bool:
        """Nothing held (everything released; a mark included)."""
        return not self._queue

    def lead(self, now: float) -> float:
        """Seconds of released audio Twilio has not played yet."""
        return max(0.0, self.play_end - now)

    def add(self, ulaw: bytes) -> None:
        """Agent audio to send when the lead allows."""
        if not ulaw:
            return
        self._queue.append(ulaw)
        self._held += len(ulaw)
        while self._held > self._max_held:
            self._drop_oldest_audio()

    def add_mark(self) -> None:
        """A mark to send once the audio before it has been released (one is enough)."""
        if not self._queue or not isinstance(self._queue[-1], _Mark):
            self._queue.append(MARK)

    def release(self, now: float) -> list[Item]:
        """What may be sent now, in order: audio merged into messages, and marks."""
        out: list[Item] = []
        pending = bytearray()

        def flush() -> None:
            if pending:
                out.append(self._emit(pending, now))
                pending.clear()

        while self._queue:
            head = self._queue[0]
            if isinstance(head, _Mark):
                flush()
                self._queue.popleft()
                out.append(MARK)
                continue
            room = round((self.lead_s - self.lead(now)) * SAMPLE_RATE) - len(pending)
            if room <= 0:
                break
            take = head[: min(room, self._message - len(pending))]
            pending += take
            self._held -= len(take)
            if len(take) == len(head):
                self._queue.popleft()
            else:
                self._queue[0] = head[len(take) :]
            if len(pending) >= self._message:
                flush()
        flush()
        return out

    def next_release(self, now: float) -> float | None:
        """Seconds until a full message (or the rest) fits in the lead; None if nothing is
        held, 0 if something may go now."""
        if not self._queue:
            return None
        if isinstance(self._queue[0], _Mark):
            return 0.0
        want = min(self._message, self._held) / SAMPLE_RATE
        return max(0.0, self.lead(now) + want - self.lead_s)

    def clear(self) -> int:
        """Barge-in: drop everything held (marks too); the audio bytes dropped."""
        dropped = self._held
        self._queue.clear()
        self._held = 0
        return dropped

    def reset_playback(self, now: float) -> None:
        """Twilio's buffer was cleared: nothing released is queued there any more."""
        self.play_end = now

    def _emit(self, audio: bytearray, now: float) -> bytes:
        self.play_end = max(self.play_end, now) + len(audio) / SAMPLE_RATE
        return bytes(audio)

    def _drop_oldest_audio(self) -> None:
        for i, item in enumerate(self._queue):
            if isinstance(item, bytes):
                over = self._held - self._max_held
                if len(item) <= over:
                    del self._queue[i]
                    self._held -= len(item)
                    self.dropped_bytes += len(item)
                else:
                    self._queue[i] = item[over:]
                    self._held -= over
                    self.dropped_bytes += over
                return
