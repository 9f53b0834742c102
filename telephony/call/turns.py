"""The turn log: what each side said, when, and what a barge-in cut off (pure).

The Live API streams an agent turn as audio chunks and transcript fragments, then ends it
with ``turnComplete``; the caller's words arrive as input-transcript fragments in between.
``TurnLog`` turns that stream into ``Turn`` records. An agent turn opens lazily, with its
first output, because a late ``turnComplete`` (after a clear) must not open an empty one.

Times are seconds since the stream started (``t0`` on the caller's monotonic clock).
"""

from __future__ import annotations

from typing import Final

from telephony.call.summary import Turn, join_fragments

__all__ = ["RESPONSE_WINDOW_S", "TurnLog"]

#: An agent answer starting later than this after the caller stopped talking is not counted
#: as a response to it (the model let that utterance pass; something else prompted it).
RESPONSE_WINDOW_S: Final = 10.0


class TurnLog:
    """The agent turn in progress and the caller's words since the last one."""

    def __init__(self, t0: float, turns: list[Turn]) -> None:
        self._t0 = t0
        #: Completed turns, in order (the call's summary holds the same list).
        self.turns = turns
        #: The last agent turn is complete; the next output starts a new one.
        self.closed = True
        #: Dropping the rest of an interrupted turn, until its ``turnComplete``.
        self.discarding = False
        #: Turns completed so far, empty ones included (an ending call waits for one more).
        self.completed = 0
        self._caller: list[str] = []
        self._caller_at: float | None = None
        self._agent: list[str] = []
        self._audio_started = False
        self._response_ms: float | None = None

    # -- the caller -----------------------------------------------------------------------

    def caller_words(self, text: str, began_at: float) -> None:
        """An input-transcript fragment; ``began_at``: when the words began (monotonic)."""
        if self._caller_at is None:
            self._caller_at = began_at
        self._caller.append(text)

    # -- the agent ------------------------------------------------------------------------

    def open(self) -> bool:
        """Start an agent turn if none is open (True: a new one, its audio counts afresh)."""
        if not self.closed:
            return False
        self.closed = False
        self._agent.clear()
        self._audio_started = False
        self._response_ms = None
        return True

    def agent_words(self, text: str) -> bool:
        """An output-transcript fragment (dropped while discarding); True if it opened a turn."""
        if self.discarding:
            return False
        opened = self.open()
        self._agent.append(text)
        return opened

    def first_audio(self, now: float, speech_end: float | None) -> None:
        """The turn's audio started leaving for the caller at ``now``; ``speech_end``: when
        the caller's last utterance ended (unclaimed), the start of a response latency."""
        if self._audio_started:
            return
        self._audio_started = True
        if speech_end is not None and now - speech_end <= RESPONSE_WINDOW_S:
            self._response_ms = round((now - speech_end) * 1000, 1)

    @property
    def audio_started(self) -> bool:
        return self._audio_started

    def agent_text(self) -> str:
        """What the agent has said so far in this (or the last) turn."""
        return join_fragments(self._agent)

    # -- barge-in and turn ends -----------------------------------------------------------

    def interrupted(self, heard_ms: float, sent_ms: float) -> str:
        """The caller talked over the agent: what of the turn they heard (the transcript cut
        in proportion to the audio heard, an approximation), and start discarding the rest of
        the turn if it is still being generated."""
        text = self.agent_text()
        # Cut between words leaves a dangling space; the record and the summary agree without it.
        cut = text[: round(len(text) * heard_ms / sent_ms)].rstrip() if sent_ms else ""
        # If the turn had already completed (its audio was still playing at Twilio), nothing
        # more of it will come, and discarding would swallow the next answer instead.
        self.discarding = not self.closed
        if self.closed and self.turns:
            last = self.turns[-1]
            last.interrupted = True
            last.agent_heard = cut
        return cut

    def complete(
        self, now: float, *, agent_audio_ms: int, agent_at: float | None, heard: str | None
    ) -> Turn | None:
        """``turnComplete``: the finished turn, or None when nothing new happened since the
        last one (e.g. the turnComplete that follows a clear). ``heard``: what the caller
        heard of an interrupted turn."""
        interrupted = self.discarding
        self.discarding = False
        self.completed += 1
        if self.closed and not self._caller:
            return None
        caller, agent = join_fragments(self._caller), join_fragments(self._agent)
        turn = Turn(
            at_s=round(now - self._t0, 3),
            caller=caller,
            agent=agent,
            interrupted=interrupted,
            agent_audio_ms=agent_audio_ms,
            caller_at_s=(
                round(self._caller_at - self._t0, 3)
                if self._caller_at is not None and caller
                else None
            ),
            agent_at_s=round(agent_at - self._t0, 3) if agent_at is not None and agent else None,
            response_ms=self._response_ms,
            agent_heard=heard if interrupted else None,
        )
        self.turns.append(turn)
        # The agent's text stays until its next turn starts: a barge-in can still arrive for
        # this turn while its audio plays at Twilio.
        self._caller.clear()
        self._caller_at = None
        self.closed = True
        return turn
