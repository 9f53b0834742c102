"""Helpers for tests of the Live API simulator (tests/agent/simulator): signals, SDK clients
and configs, raw WebSocket clients, and the simulator's behaviour presets."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import orjson
from google import genai
from google.genai import types
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from agent.simulator import FaultPlan, LiveSimulator, SimBehaviour

MODEL = "gemini-3.8-live"
IN_RATE = 16_000
GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"

# Fast by default: no pacing, no think time, turnComplete right after generationComplete.
FAST = SimBehaviour(pace=0, think_ms=0, hold_turn_complete=False, seed=7)


# --- Signals -------------------------------------------------------------------------------


def voiced(seconds: float, rate: int = IN_RATE, dbfs: float = -20.0, seed: int = 0) -> bytes:
    """A speech-like signal: harmonics of a gliding ~150 Hz pitch with a syllable rhythm."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f0 = 150 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 15))
    x = x * (0.75 + 0.25 * np.sin(2 * np.pi * 4 * t))  # dips, never silent
    x = x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20)
    return np.asarray(x).astype("<i2").tobytes()


def silence(seconds: float, rate: int = IN_RATE) -> bytes:
    return bytes(2 * round(seconds * rate))


def band_fraction(pcm: bytes, rate: int, lo: float = 300, hi: float = 3400) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(power[(f >= lo) & (f <= hi)].sum() / power.sum())


# --- Clients and helpers -------------------------------------------------------------------


def make_client(sim: LiveSimulator, **ws_args: object) -> genai.Client:
    return genai.Client(
        api_key="test",
        http_options=types.HttpOptions(
            base_url=sim.base_url,
            async_client_args={"ssl": sim.client_ssl_context(), **ws_args},
        ),
    )


def live_config(**overrides: object) -> types.LiveConnectConfig:
    base: dict[str, object] = {
        "response_modalities": [types.Modality.AUDIO],
        "input_audio_transcription": types.AudioTranscriptionConfig(),
        "output_audio_transcription": types.AudioTranscriptionConfig(),
    }
    base.update(overrides)
    return types.LiveConnectConfig(**base)  # type: ignore[arg-type]


async def send_pcm(live: genai.live.AsyncSession, pcm: bytes, frame_ms: int = 20) -> None:
    step = IN_RATE * frame_ms // 1000 * 2
    for i in range(0, len(pcm), step):
        await live.send_realtime_input(
            audio=types.Blob(data=pcm[i : i + step], mime_type="audio/pcm;rate=16000")
        )


async def one_turn(
    live: genai.live.AsyncSession, within_s: float = 10.0
) -> list[types.LiveServerMessage]:
    """Messages up to and including the next turn_complete (receive() stops there)."""
    async with asyncio.timeout(within_s):
        return [m async for m in live.receive()]


def audio_of(messages: list[types.LiveServerMessage]) -> list[bytes]:
    chunks = []
    for m in messages:
        if m.server_content and m.server_content.model_turn:
            for part in m.server_content.model_turn.parts or []:
                if part.inline_data and part.inline_data.data:
                    chunks.append(part.inline_data.data)
    return chunks


def output_text(messages: list[types.LiveServerMessage]) -> str:
    return "".join(
        m.server_content.output_transcription.text or ""
        for m in messages
        if m.server_content and m.server_content.output_transcription
    )


def input_text(messages: list[types.LiveServerMessage]) -> str:
    return "".join(
        m.server_content.input_transcription.text or ""
        for m in messages
        if m.server_content and m.server_content.input_transcription
    )


def flags(messages: list[types.LiveServerMessage]) -> list[str]:
    """The turn-structure events, in order."""
    out = []
    for m in messages:
        sc = m.server_content
        if sc is None:
            continue
        if sc.model_turn:
            out.append("audio")
        for name in ("interrupted", "generation_complete", "turn_complete"):
            if getattr(sc, name):
                out.append(name)
    return out


def raw_connect(sim: LiveSimulator, path: str = GEMINI_PATH, key: str | None = "k") -> ws_connect:
    headers = {"x-goog-api-key": key} if key is not None else {}
    return ws_connect(
        f"wss://127.0.0.1:{sim.port}{path}",
        ssl=sim.client_ssl_context(),
        additional_headers=headers,
    )


async def raw_recv(ws: ClientConnection, within_s: float = 5.0) -> dict[str, object]:
    async with asyncio.timeout(within_s):
        message: dict[str, object] = orjson.loads(await ws.recv())
        return message


# --- Fault plans ---------------------------------------------------------------------------


NO_FAULTS = FaultPlan(
    go_away_weight=0,
    close_weight=0,
    protocol_close_weight=0,
    stall_weight=0,
    refuse_resumption_weight=0,
)


def only(weight: str, **knobs: object) -> FaultPlan:
    """A plan with one kind of connection fault (weight is e.g. ``"stall_weight"``)."""
    return replace(NO_FAULTS, **{weight: 1.0}, **knobs)  # type: ignore[arg-type]
