"""The reply player: the simulated model's turns, spoken as timed 24 kHz chunks.

A :class:`ModelTurn` is one thing the model says: synthesized speech for a text, or an echo of
a caller utterance. :class:`ReplyPlayer` speaks a session's queued turns one at a time: it
renders a turn into 24 kHz PCM with transcript pieces (:func:`render`), cuts it into chunks of
random sizes (:func:`chunk_sizes`), sends them paced at ``SimBehaviour.pace`` times real time
with the output transcription in step, then ``generationComplete`` and, once the audio would
have played, ``turnComplete`` with ``usageMetadata`` (:class:`ContextTokens`). It sends through
a callable and starts its tasks through the session's ``spawn``, so they live in the session's
TaskGroup; the session decides what is queued and when a turn is cut short (barge-in), and
calls :meth:`ReplyPlayer.interrupt`, :meth:`ReplyPlayer.cancel` or
:meth:`ReplyPlayer.drop_queued` to carry it out.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from agent.pcm import StreamResampler
from agent.simulator import espeak, wire
from agent.simulator.behaviour import ModelTraits, SimBehaviour, model_traits
from agent.simulator.setup import SessionSetup
from agent.simulator.voice import OUTPUT_RATE, synthesize
from agent.simulator.wire import DEFAULT_INPUT_RATE, JsonDict

__all__ = [
    "AUDIO_TOKENS_PER_S",
    "ContextTokens",
    "ModelTurn",
    "Phase",
    "ReplyPlayer",
    "Send",
    "Spawn",
    "chunk_sizes",
    "render",
]

#: The extended-thinking model's pause between the two halves of a split answer.
SPLIT_PAUSE_S = 0.8

#: Documented token rate of audio in the Gemini API.
AUDIO_TOKENS_PER_S = 25

#: Sends one server message; ``False`` when the connection is closed or stalled (never raises).
Send = Callable[[Mapping[str, Any]], Awaitable[bool]]
#: Starts a task in the session's TaskGroup.
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class Phase(enum.Enum):
    """Where a :class:`ModelTurn` is in its life."""

    QUEUED = enum.auto()
    THINKING = enum.auto()
    SPEAKING = enum.auto()  # sending audio
    HOLDING = enum.auto()  # all audio sent; turnComplete waits for real-time playback
    DONE = enum.auto()
    INTERRUPTED = enum.auto()
    DROPPED = enum.auto()  # superseded, stalled or closed before it finished


@dataclass(eq=False, slots=True)
class ModelTurn:
    """One model turn: an echo of a caller utterance or synthesized speech."""

    done: asyncio.Future[bool]  # True once all its audio was sent
    think_s: float
    speech_text: str | None = None  # synthesized speech
    echo_pcm: bytes = b""  # or caller audio to play back ...
    echo_rate: int = DEFAULT_INPUT_RATE  # ... at this rate
    echo_label: str = ""
    #: Speech that answers the caller (``dialogue="converse"``): superseded like an echo.
    answers_caller: bool = False
    phase: Phase = Phase.QUEUED
    task: asyncio.Task[None] | None = None
    first_chunk_at: float | None = None  # loop time
    audio_sent_s: float = 0.0

    @classmethod
    def speech(cls, text: str, *, think_s: float = 0.0, answers_caller: bool = False) -> ModelTurn:
        """A turn that speaks ``text`` with the synthetic voice."""
        return cls(_future(), think_s=think_s, speech_text=text, answers_caller=answers_caller)

    @classmethod
    def echo(cls, pcm: bytes, rate: int, label: str, *, think_s: float = 0.0) -> ModelTurn:
        """A turn that plays caller audio (PCM16 at ``rate``) back, transcribed as ``label``."""
        return cls(_future(), think_s=think_s, echo_pcm=pcm, echo_rate=rate, echo_label=label)

    @property
    def is_echo(self) -> bool:
        return self.speech_text is None

    @property
    def is_answer(self) -> bool:
        """An answer to the caller's last turn (an echo, or a converse answer): moot once the
        caller speaks again."""
        return self.is_echo or self.answers_caller

    def playing_until(self) -> float:
        """Loop time at which the audio sent so far has finished playing for the caller."""
        if self.first_chunk_at is None:
            return -math.inf
        return self.first_chunk_at + self.audio_sent_s

    def is_heard(self, now: float) -> bool:
        """At loop time ``now`` the caller hears this turn: audio was sent and has not finished
        playing in real time (the moment a barge-in would interrupt)."""
        return (
            self.phase in (Phase.SPEAKING, Phase.HOLDING, Phase.DONE) and now < self.playing_until()
        )

    def finish(self, complete: bool) -> None:
        if not self.done.done():
            self.done.set_result(complete)


class ContextTokens:
    """Tokens in the conversation's context, as ``usageMetadata`` reports them."""

    def __init__(self) -> None:
        self.text = 0
        self.audio = 0

    def add_text(self, text: str) -> None:
        self.text += (len(text) + 3) // 4  # ~4 characters per token

    def add_audio(self, seconds: float) -> None:
        self.audio += round(seconds * AUDIO_TOKENS_PER_S)

    def account(self, turn: ModelTurn) -> JsonDict:
        """``usageMetadata`` for a finished turn; its audio joins the context."""
        response = round(turn.audio_sent_s * AUDIO_TOKENS_PER_S)
        usage = wire.usage(
            prompt_text=self.text,
            prompt_audio=self.audio,
            response_audio=response,
        )
        self.audio += response
        return usage


#: An echo is heard through the phone line, which carries nothing above 4 kHz: a filter flat
#: to 4 kHz only (not to 85 % of the input's band) has a third of the default's taps, and
#: rendering echoes was a fifth of the simulator's CPU under load.
ECHO_PASSBAND_HZ: Final = 4000.0


def echo_resampler(rate: int) -> StreamResampler:
    """The resampler that brings echoed caller audio at ``rate`` to the output rate."""
    if rate < 2 * ECHO_PASSBAND_HZ + 2000:  # too narrow a band for the phone filter
        return StreamResampler(rate, OUTPUT_RATE)
    return StreamResampler(
        rate,
        OUTPUT_RATE,
        passband_hz=ECHO_PASSBAND_HZ,
        stopband_hz=min(rate, OUTPUT_RATE) / 2,
    )


def render(turn: ModelTurn, voice: str = "") -> tuple[bytes, list[tuple[str, int]]]:
    """(24 kHz PCM, transcript pieces with their sample offsets) of a turn."""
    if turn.speech_text is not None:
        speech = synthesize(turn.speech_text, voice)
        return speech.pcm, list(speech.words)
    resampler = echo_resampler(turn.echo_rate)
    pcm = resampler.process(turn.echo_pcm) + resampler.flush()
    return pcm, [(turn.echo_label, 0)]


def chunk_sizes(total: int, chunk_ms: tuple[float, float], rng: np.random.Generator) -> list[int]:
    """``total`` 24 kHz samples cut into chunks of ``chunk_ms`` (drawn uniformly) each."""
    lo_ms, hi_ms = chunk_ms
    lo = max(1, round(lo_ms * OUTPUT_RATE / 1000))
    hi = max(lo, round(hi_ms * OUTPUT_RATE / 1000))
    sizes = rng.integers(lo, hi + 1, size=total // lo + 1)
    ends = np.cumsum(sizes)
    count = int(np.searchsorted(ends, total)) + 1
    sizes = sizes[:count]
    sizes[-1] -= int(ends[count - 1]) - total  # the last chunk takes what is left
    return [int(n) for n in sizes if n > 0]


#: Gain of a "silent" answer: -66 dBFS for a loud voice, the near-zero turns seen on real lines.
SILENT_GAIN = 0.0005


class ReplyPlayer:
    """Speaks one session's model turns, one at a time, in the order they were queued.

    ``behaviour`` is read live (the session's may be replaced mid-call); ``on_change`` is called
    when something observable changed (a turn became audible), ``on_turn_end`` after each
    ``turnComplete`` (of a spoken or an interrupted turn).
    """

    def __init__(
        self,
        send: Send,
        *,
        spawn: Spawn,
        behaviour: Callable[[], SimBehaviour],
        rng: np.random.Generator,
        on_change: Callable[[], None],
        on_turn_end: Callable[[ModelTurn], Awaitable[None]],
    ) -> None:
        self._send = send
        self._spawn = spawn
        self._behaviour = behaviour
        self._rng = rng
        self._on_change = on_change
        self._on_turn_end = on_turn_end
        self._setup = SessionSetup()
        #: What the model generation being simulated does (set when the player starts).
        self.traits = ModelTraits()
        self._degrade_next: str | None = None  # a fault for the next answer (degrade())
        self._queue: deque[ModelTurn] = deque()
        self._queue_ready = asyncio.Event()
        self._current: ModelTurn | None = None  # the turn the player is working on
        self._audible: ModelTurn | None = None  # the last turn that sent audio
        self._samples_out = 0
        #: Tokens of the conversation so far (the session adds the caller's side).
        self.context = ContextTokens()
        #: Model audio sent, ms.
        self.audio_out_ms = 0.0
        #: (loop time the chunk was handed to the socket, 24 kHz samples sent before it).
        self.chunk_log: list[tuple[float, int]] = []
        #: Turns cut short by :meth:`interrupt`.
        self.interruptions = 0
        #: Turns that ran to ``turnComplete`` without being interrupted.
        self.turns_completed = 0

    # --- State -------------------------------------------------------------------------------

    @property
    def current(self) -> ModelTurn | None:
        """The turn being worked on (thinking, speaking or holding ``turnComplete``)."""
        return self._current

    @property
    def audible(self) -> ModelTurn | None:
        """The last turn that sent audio."""
        return self._audible

    @property
    def model_speaking(self) -> bool:
        """The last turn that sent audio is being heard (:meth:`ModelTurn.is_heard`)."""
        audible = self._audible
        return audible is not None and audible.is_heard(asyncio.get_running_loop().time())

    # --- What the session asks for ----------------------------------------------------------

    def enqueue(self, turn: ModelTurn) -> ModelTurn:
        """Speak ``turn`` after those already queued."""
        self._queue.append(turn)
        self._queue_ready.set()
        return turn

    def drop_queued(self, which: Callable[[ModelTurn], bool]) -> None:
        """Drop the queued turns ``which`` selects: they finish unspoken."""
        for turn in self._queue:
            if which(turn):
                self._drop(turn)

    async def cancel(self, turn: ModelTurn) -> None:
        """Drop a turn the player has started (nothing more of it is sent)."""
        turn.phase = Phase.DROPPED
        await self._stop(turn)

    async def interrupt(self, turn: ModelTurn) -> None:
        """Barge-in: stop the turn; ``interrupted`` and ``turnComplete`` follow, as with the
        real service (no ``generationComplete`` if it was still generating)."""
        if turn.phase is Phase.DONE:  # hold_turn_complete=False: turnComplete already sent
            turn.phase = Phase.INTERRUPTED
            await self._announce_interruption(turn, usage=False)
        else:
            turn.phase = Phase.INTERRUPTED
            await self._stop(turn)  # the turn's own task announces it (see _play)

    def close(self) -> None:
        """The connection has ended: every turn not yet spoken finishes as not sent."""
        for turn in [*self._queue, *([self._current] if self._current else [])]:
            turn.finish(False)
        self._queue.clear()

    # --- Playing -----------------------------------------------------------------------------

    def degrade(self, kind: str) -> None:
        """Fault: the next answer to the caller is ``"silent"`` (near-zero amplitude) or
        ``"rejected"`` (an empty turn ending RESPONSE_REJECTED)."""
        self._degrade_next = kind

    async def run(self, setup: SessionSetup) -> None:
        """Speak queued turns with ``setup``'s voice and transcription, until cancelled.

        The session starts it once ``setupComplete`` was sent: nothing is spoken before (a
        scripted ``say()`` waits for it).
        """
        self._setup = setup
        self.traits = model_traits(self._behaviour(), setup.model or "")
        while True:
            while not self._queue:
                self._queue_ready.clear()
                await self._queue_ready.wait()
            turn = self._queue.popleft()
            if turn.phase is not Phase.QUEUED:
                continue
            self._current = turn
            turn.task = self._spawn(self._play(turn))
            # wait() rather than await: a cancelled turn (barge-in) must not stop the player.
            await asyncio.wait({turn.task})
            self._current = None

    async def _play(self, turn: ModelTurn) -> None:
        try:
            await self._speak(turn)
        except asyncio.CancelledError:
            if turn.phase is Phase.INTERRUPTED:
                # Announced from the cancelled turn itself: the player starts the next turn
                # only when this task ends, so nothing of it can get ahead of these messages.
                await self._announce_interruption(turn, usage=True)
            raise

    async def _speak(self, turn: ModelTurn) -> None:
        if self.traits.interaction_status:
            await self._send(wire.interaction_status("IN_PROGRESS"))
        if turn.think_s > 0:
            turn.phase = Phase.THINKING
            await asyncio.sleep(turn.think_s)
        turn.phase = Phase.SPEAKING
        behaviour = self._behaviour()
        degrade = None
        if turn.is_answer and self._degrade_next is not None:
            degrade, self._degrade_next = self._degrade_next, None
        if behaviour.reject_answers or degrade == "rejected":
            turn.finish(True)
            turn.phase = Phase.DONE
            await self._send(wire.turn_complete(reason="RESPONSE_REJECTED"))
            self.turns_completed += 1
            await self._idle()
            await self._on_turn_end(turn)
            return
        pcm, words = await self._render(turn, behaviour)
        gain = behaviour.answer_gain * (SILENT_GAIN if degrade == "silent" else 1.0)
        if gain != 1.0:
            scaled = np.frombuffer(pcm, "<i2") * gain
            pcm = np.clip(np.round(scaled), -32768, 32767).astype("<i2").tobytes()
        if await self._stream(turn, pcm, words) and await self._send(wire.generation_complete()):
            await self._complete(turn)
        else:
            self._drop(turn)

    async def _render(
        self, turn: ModelTurn, behaviour: SimBehaviour
    ) -> tuple[bytes, list[tuple[str, int]]]:
        voice = self._setup.voice or ""
        if turn.speech_text is not None and behaviour.dialogue == "converse":
            speech = await espeak.synthesize(turn.speech_text, voice)
            if speech is not None:
                return speech.pcm, list(speech.words)
        return render(turn, voice)

    async def _stream(self, turn: ModelTurn, pcm: bytes, words: list[tuple[str, int]]) -> bool:
        """Send the audio in paced chunks, transcript in step; ``False`` if a send failed."""
        loop = asyncio.get_running_loop()
        transcribe = self._setup.output_transcription
        traits = self.traits
        pos = 0
        next_word = 0
        split_at = len(pcm) // 4 if traits.split_answers else None  # half-way, in samples
        for n in chunk_sizes(len(pcm) // 2, self._behaviour().chunk_ms, self._rng):
            emitted_at = loop.time()
            riding = None
            if traits.combined_messages and transcribe:
                # The words whose audio starts in this chunk go in the same message.
                pieces = []
                while next_word < len(words) and words[next_word][1] < pos + n:
                    pieces.append(words[next_word][0])
                    next_word += 1
                riding = "".join(pieces) or None
            if not await self._send(wire.audio_chunk(pcm[pos * 2 : (pos + n) * 2], riding)):
                return False
            if split_at is not None and pos + n >= split_at:
                # The extended-thinking model ends a "turn" mid-answer (once what it said has
                # played, as turnComplete comes), thinks on, and goes on speaking.
                split_at = None
                turn.audio_sent_s = (pos + n) / OUTPUT_RATE
                await asyncio.sleep(max(0.0, turn.playing_until() - loop.time()))
                await self._send(wire.turn_complete())
                await asyncio.sleep(SPLIT_PAUSE_S)
            self.chunk_log.append((emitted_at, self._samples_out))
            self._samples_out += n
            if turn.first_chunk_at is None:
                turn.first_chunk_at = loop.time()
                self._audible = turn
                self._on_change()  # the model is speaking (see model_speaking)
            pos += n
            turn.audio_sent_s = pos / OUTPUT_RATE
            self.audio_out_ms += n * 1000 / OUTPUT_RATE
            # Transcript pieces go out as the audio of their word starts.
            while next_word < len(words) and words[next_word][1] < pos:
                if transcribe:
                    await self._send(wire.output_transcription(words[next_word][0]))
                next_word += 1
            await self._pace(turn, loop.time())
        for piece, _ in words[next_word:]:
            if transcribe:
                await self._send(wire.output_transcription(piece))
        return True

    async def _complete(self, turn: ModelTurn) -> None:
        """All audio was sent: ``turnComplete`` once it has played (``hold_turn_complete``)."""
        turn.finish(True)
        if self._behaviour().hold_turn_complete:
            # The real service waits for the audio to have played before turnComplete; the
            # turn stays interruptible until then.
            turn.phase = Phase.HOLDING
            await asyncio.sleep(max(0.0, turn.playing_until() - asyncio.get_running_loop().time()))
        turn.phase = Phase.DONE
        await self._send(wire.turn_complete(self.context.account(turn)))
        self.turns_completed += 1
        await self._idle()
        await self._on_turn_end(turn)

    async def _idle(self) -> None:
        if self.traits.interaction_status and not self._queue:
            await self._send(wire.interaction_status("IDLE"))

    async def _announce_interruption(self, turn: ModelTurn, *, usage: bool) -> None:
        self.interruptions += 1
        await self._send(wire.interrupted())
        await self._send(wire.turn_complete(self.context.account(turn) if usage else None))
        await self._idle()
        await self._on_turn_end(turn)

    async def _pace(self, turn: ModelTurn, now: float) -> None:
        pace = self._behaviour().pace
        if pace > 0 and math.isfinite(pace) and turn.first_chunk_at is not None:
            due = turn.first_chunk_at + turn.audio_sent_s / pace
            await asyncio.sleep(max(0.0, due - now))
        else:
            await asyncio.sleep(0)  # let other sessions run between chunks

    def _drop(self, turn: ModelTurn) -> None:
        turn.phase = Phase.DROPPED
        turn.finish(False)

    async def _stop(self, turn: ModelTurn) -> None:
        turn.finish(False)
        task = turn.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})


def _future() -> asyncio.Future[bool]:
    return asyncio.get_running_loop().create_future()
