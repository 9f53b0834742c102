"""An emulation of Twilio's outbound playback buffer, for anything that plays Twilio's part.

Twilio queues the audio a stream sends and plays it at 8000 bytes/s (8 kHz μ-law). A ``mark``
is echoed once every byte queued before it has played (at once if nothing is queued). A
``clear`` drops the queue and echoes every pending mark at once, so an echo that follows a
clear does not prove the audio before it was heard.

Pure and clock-agnostic: every method takes ``now`` (seconds on any monotonic clock), so
tests drive it with made-up times and the simulators with ``time.monotonic()``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from telephony.twilio.media_stream import SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Played:
    """A run of audio that played without a break, starting at ``start`` (seconds)."""

    start: float
    audio: bytes

    @property
    def end(self) -> float:
        return self.start + len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """A mark Twilio echoes back at ``time``; ``cleared`` when the echo came from a clear."""

    time: float
    name: str
    cleared: bool = False


class Playback:
    """Twilio's per-stream playback queue."""

    def __init__(self, bytes_per_second: int = SAMPLE_RATE) -> None:
        self._rate = bytes_per_second
        self._queue: deque[bytes | str] = deque()  # bytes = audio, str = mark name
        self._queued_bytes = 0
        self._cursor = 0.0  # time up to which the queue has been played

    @property
    def queued_bytes(self) -> int:
        """Audio bytes still waiting to play (at the last ``advance``)."""
        return self._queued_bytes

    @property
    def idle(self) -> bool:
        return not self._queue

    def push_media(self, now: float, audio: bytes) -> None:
        if not audio:
            return
        if not self._queue:
            # Nothing is playing: this audio starts now, not where the last one ended.
            self._cursor = max(self._cursor, now)
        self._queue.append(audio)
        self._queued_bytes += len(audio)

    def push_mark(self, now: float, name: str) -> None:
        if not self._queue:
            self._cursor = max(self._cursor, now)
        self._queue.append(name)

    def advance(self, now: float) -> tuple[list[Played], list[MarkEcho]]:
        """Play everything due up to ``now``; return what played and the marks echoed."""
        played: list[Played] = []
        echoes: list[MarkEcho] = []
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, str):
                queue.popleft()
                echoes.append(MarkEcho(self._cursor, head))
                continue
            budget = round((now - self._cursor) * self._rate)
            if budget <= 0:
                break
            take = head[:budget]
            if len(take) == len(head):
                queue.popleft()
            else:
                queue[0] = head[len(take) :]
            start = self._cursor
            self._cursor += len(take) / self._rate
            self._queued_bytes -= len(take)
            if played and abs(played[-1].end - start) < 1e-9:
                played[-1] = Played(played[-1].start, played[-1].audio + take)
            else:
                played.append(Played(start, take))
        if not queue:
            self._cursor = max(self._cursor, now)
        return played, echoes

    def clear(self, now: float) -> tuple[list[Played], list[MarkEcho]]:
        """Play what was due before ``now``, then drop the rest and echo every pending mark."""
        played, echoes = self.advance(now)
        for item in self._queue:
            if isinstance(item, str):
                echoes.append(MarkEcho(now, item, cleared=True))
        self._queue.clear()
        self._queued_bytes = 0
        self._cursor = max(self._cursor, now)
        return played, echoes
