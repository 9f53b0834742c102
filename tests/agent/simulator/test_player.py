"""The reply player: barge-in, pacing, and turnComplete after playback."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from google.genai import types

from agent.simulator import AUDIO_TOKENS_PER_S, LiveSimulator, SimBehaviour
from agent.simulator.player import ContextTokens, ModelTurn, Phase, ReplyPlayer, chunk_sizes, render
from agent.simulator.setup import SessionSetup
from agent.simulator.voice import OUTPUT_RATE, synthesize
from support.sim import (
    FAST,
    MODEL,
    audio_of,
    flags,
    input_text,
    live_config,
    make_client,
    one_turn,
    output_text,
    send_pcm,
    silence,
    voiced,
)

# --- Barge-in and pacing -------------------------------------------------------------------


async def test_barge_in_interrupts_the_model_turn() -> None:
    behaviour = replace(FAST, pace=4.0, hold_turn_complete=True)
    async with LiveSimulator(behaviour=behaviour) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            speaking = asyncio.create_task(
                s.say("This is a long answer that the caller will not let me finish at all.")
            )
            messages: list[types.LiveServerMessage] = []
            barged_in = False
            async with asyncio.timeout(10):
                async for m in live.receive():
                    messages.append(m)
                    if not barged_in and len(audio_of(messages)) == 3:
                        barged_in = True
                        await send_pcm(live, voiced(0.3) + silence(0.6))
            assert await speaking is False
            first = flags(messages)
            assert first[-2:] == ["interrupted", "turn_complete"]
            assert "generation_complete" not in first
            sent_before = len(audio_of(messages))
            # The caller's interjection is then answered as usual, and nothing of the old turn.
            echo = await one_turn(live)
            assert input_text(echo) == "[caller speech 0.30 s]"
            assert output_text(echo) == "[echo 0.30 s]"
            assert [f for f in flags(echo) if f != "audio"] == [
                "generation_complete",
                "turn_complete",
            ]
        assert s.interruptions == 1
        assert s.turns_completed == 1
        assert sent_before < 12  # pacing stopped the long turn early


async def test_barge_in_after_generation_complete_while_audio_still_plays() -> None:
    behaviour = replace(FAST, pace=0, hold_turn_complete=True)
    async with LiveSimulator(behaviour=behaviour) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            assert await s.say("One two three four five six seven.") is True
            await send_pcm(live, voiced(0.3) + silence(0.6))
            messages = await one_turn(live)
            # All audio had been sent, so generationComplete came; playback was then cut.
            assert [f for f in flags(messages) if f != "audio"] == [
                "generation_complete",
                "interrupted",
                "turn_complete",
            ]
        assert s.interruptions == 1


async def test_barge_in_after_an_early_turn_complete(sim: LiveSimulator) -> None:
    # FAST sends turnComplete at once; the audio is still "playing" for a while after it.
    async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
        s = await sim.next_session()
        assert await s.say("One two three four five six seven.") is True
        assert "turn_complete" in flags(await one_turn(live))
        await send_pcm(live, voiced(0.3) + silence(0.6))
        assert flags(await one_turn(live)) == ["interrupted", "turn_complete"]
        assert input_text(await one_turn(live)) == "[caller speech 0.30 s]"
    assert (s.interruptions, s.turns_completed) == (1, 2)


async def test_default_pacing_and_turn_complete_after_playback() -> None:
    async with (
        LiveSimulator(behaviour=SimBehaviour(think_ms=0, seed=1)) as sim,
        make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live,
    ):
        s = await sim.next_session()
        loop = asyncio.get_running_loop()
        times: dict[str, float] = {}
        audio = 0
        say = asyncio.create_task(s.say("One, two, three, four."))
        async with asyncio.timeout(10):
            async for m in live.receive():
                sc = m.server_content
                if sc and sc.model_turn:
                    times.setdefault("first", loop.time())
                    audio += len(audio_of([m])[0])
                if sc and sc.generation_complete:
                    times["generated"] = loop.time()
                if sc and sc.turn_complete:
                    times["complete"] = loop.time()
        await say
    seconds = audio / 2 / OUTPUT_RATE
    assert seconds > 1.0
    # Sent at ~4x real time; turnComplete once the audio would have played.
    assert times["generated"] - times["first"] == pytest.approx(seconds / 4, abs=0.15)
    assert times["complete"] - times["first"] == pytest.approx(seconds, abs=0.15)


# --- The player on its own -----------------------------------------------------------------


def test_chunk_sizes_cover_the_audio_in_drawn_sizes() -> None:
    rng = np.random.default_rng(5)
    for total in (0, 1, 479, 480, 2881, 48_000):
        sizes = chunk_sizes(total, (20.0, 120.0), rng)
        assert sum(sizes) == total and all(n > 0 for n in sizes)
        assert all(480 <= n <= 2880 for n in sizes[:-1]) and all(n <= 2880 for n in sizes)
    assert chunk_sizes(10_000, (50.0, 50.0), rng) == [1200] * 8 + [400]
    again = [chunk_sizes(48_000, (20.0, 120.0), np.random.default_rng(s)) for s in (1, 1, 2)]
    assert again[0] == again[1] != again[2]


async def test_render_speech_and_echo_at_24_khz() -> None:
    speech = ModelTurn.speech("Hello there.")
    echo = ModelTurn.echo(silence(0.5, rate=8000), 8000, "[echo 0.50 s]", think_s=0.3)
    pcm, words = render(speech, "Puck")
    assert pcm == synthesize("Hello there.", "Puck").pcm
    assert "".join(w for w, _ in words) == "Hello there."
    assert not speech.is_echo and echo.is_echo and echo.think_s == 0.3
    pcm, words = render(echo)
    assert len(pcm) / 2 / OUTPUT_RATE == pytest.approx(0.5, abs=0.01)
    assert words == [("[echo 0.50 s]", 0)]


async def test_context_tokens_grow_with_the_conversation() -> None:
    context = ContextTokens()
    context.add_text("x" * 9)  # ~4 characters per token, rounded up
    context.add_audio(2.0)
    turn = ModelTurn.speech("")
    turn.audio_sent_s = 1.0
    usage = context.account(turn)
    assert (usage["promptTokenCount"], usage["responseTokenCount"]) == (3 + 50, 25)
    assert context.audio == 2 * AUDIO_TOKENS_PER_S + 25  # the reply joins the context


def _audio(message: Mapping[str, Any]) -> bytes:
    return base64.b64decode(message["serverContent"]["modelTurn"]["parts"][0]["inlineData"]["data"])


class _Client:
    """What a player sent, as the client would receive it; ``ok=False`` acts as a stall."""

    def __init__(self) -> None:
        self.messages: list[Mapping[str, Any]] = []
        self.ok = True
        self.turns_ended: asyncio.Queue[Phase] = asyncio.Queue()

    async def send(self, message: Mapping[str, Any]) -> bool:
        if self.ok:
            self.messages.append(message)
        return self.ok

    async def turn_ended(self, turn: ModelTurn) -> None:
        await self.turns_ended.put(turn.phase)

    def kinds(self) -> list[str]:
        return [k for m in self.messages for k in m.get("serverContent", m)]


@asynccontextmanager
async def _playing(client: _Client, **knobs: Any) -> AsyncIterator[ReplyPlayer]:
    """A player in a TaskGroup of its own, as a session runs it; its tasks end on exit."""
    behaviour = replace(FAST, **knobs)
    async with asyncio.TaskGroup() as tg:
        tasks: set[asyncio.Task[None]] = set()

        def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
            task = tg.create_task(coro)
            tasks.add(task)
            return task

        player = ReplyPlayer(
            client.send,
            spawn=spawn,
            behaviour=lambda: behaviour,
            rng=np.random.default_rng(3),
            on_change=lambda: None,
            on_turn_end=client.turn_ended,
        )
        spawn(player.run(SessionSetup(voice="Kore", output_transcription=True)))
        try:
            yield player
        finally:
            for task in tasks:
                task.cancel()


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - polling a test-only view
            await asyncio.sleep(0.01)


async def test_player_sends_timed_chunks_with_the_transcript_in_step() -> None:
    client = _Client()
    async with _playing(client) as player:
        turn = player.enqueue(ModelTurn.speech("One, two, three."))
        assert await turn.done is True
        assert await client.turns_ended.get() is Phase.DONE
        await _until(lambda: player.current is None)
    audio = [m for m in client.messages if "modelTurn" in m["serverContent"]]
    pcm = b"".join(_audio(m) for m in audio)
    assert pcm == synthesize("One, two, three.", "Kore").pcm
    kinds = client.kinds()
    assert kinds[-2:] == ["generationComplete", "turnComplete"]
    # A transcript piece comes right after the chunk in which its word starts.
    assert kinds[:2] == ["modelTurn", "outputTranscription"]
    text = "".join(
        m["serverContent"]["outputTranscription"]["text"]
        for m in client.messages
        if "outputTranscription" in m["serverContent"]
    )
    assert text == "One, two, three."
    usage = client.messages[-1]["usageMetadata"]
    assert usage["responseTokenCount"] == round(len(pcm) / 2 / OUTPUT_RATE * AUDIO_TOKENS_PER_S)
    assert (player.turns_completed, player.interruptions) == (1, 0)
    offsets = np.cumsum([0] + [len(_audio(m)) // 2 for m in audio[:-1]])
    assert [n for _, n in player.chunk_log] == offsets.tolist()
    assert player.audio_out_ms == pytest.approx(len(pcm) / 2 / OUTPUT_RATE * 1000)
    assert player.audible is turn


async def test_player_interrupts_drops_and_closes() -> None:
    client = _Client()
    # Real-time pacing: the turn is still being heard when the caller barges in.
    async with _playing(client, pace=1.0, hold_turn_complete=True) as player:
        long = player.enqueue(ModelTurn.speech("A long answer that will be cut short."))
        echo = player.enqueue(ModelTurn.echo(silence(0.2), 16_000, "[echo]"))
        kept = player.enqueue(ModelTurn.speech("Kept."))
        await _until(lambda: player.model_speaking)
        assert player.current is long
        player.drop_queued(lambda turn: turn.is_echo)
        assert echo.phase is Phase.DROPPED and await echo.done is False
        await player.interrupt(long)
        assert await long.done is False
        assert await client.turns_ended.get() is Phase.INTERRUPTED
        assert client.kinds()[-2:] == ["interrupted", "turnComplete"]
        assert "generationComplete" not in client.kinds()
        assert client.messages[-1]["usageMetadata"]["responseTokenCount"] > 0
        # The next turn plays; a failed send (a stall) drops it.
        await _until(lambda: player.current is kept)
        client.ok = False
        assert await kept.done is False
        assert kept.phase is Phase.DROPPED
        client.ok = True
        # A turn still thinking can be cancelled; close() finishes whatever is left.
        thinking = player.enqueue(ModelTurn.speech("Moot.", think_s=10))
        late = player.enqueue(ModelTurn.speech("Never said."))
        await _until(lambda: thinking.phase is Phase.THINKING)
        await player.cancel(thinking)
        assert await thinking.done is False and thinking.phase is Phase.DROPPED
        await _until(lambda: player.current is late)
        player.close()
        assert await late.done is False
    assert (player.interruptions, player.turns_completed) == (1, 0)
