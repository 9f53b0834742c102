"""The Live API simulator's converse dialogue: recognition accuracy and CPU per call-second.

1. Word error rate of the simulator's recognizer (pocketsphinx, as ``dialogue="converse"``
   runs it) on the project's labelled human clips (telephony/caller/samples: LibriVox WAVs
   with transcripts) through the phone path as the server hears them: the clip → 8 kHz μ-law
   (what Twilio carries) → the server's uplink conversion to 16 kHz (``CallerToModel``).
2. CPU of the simulator per simulated call-second: ``--calls`` sessions in this process, each
   over a raw TLS WebSocket (a thin client: setup, caller audio in 20 ms messages, tool
   responses), saying each clip in turn and waiting for the answer. A call-second is a second
   of the call's timeline: the caller's audio sent plus the model's audio received. The CPU
   is this whole process (simulator + the thin clients + the recognizer threads), with the
   recognizer's own share shown; ``--dialogue echo`` gives today's echo for comparison.

    python bench/simulator.py [--calls 4] [--dialogue converse|echo]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import time
import wave
from pathlib import Path

import orjson

from agent.simulator import LiveSimulator, SimBehaviour, recognizer
from telephony.audio import CallerToModel, pcm16_to_ulaw_8k

SAMPLES = Path(__file__).resolve().parents[1] / "telephony" / "caller" / "samples"
RATE = 16_000
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = {
    "setup": {
        "model": "models/gemini-2.5-flash-native-audio",
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "search_knowledge",
                        "description": "Search the business's documents.",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"query": {"type": "STRING"}},
                            "required": ["query"],
                        },
                    }
                ]
            }
        ],
    }
}
PASSAGE = {"result": "ok", "passages": [{"source": "faq.md", "text": "We are open all week."}]}


def phone_path(name: str) -> bytes:
    """A clip as the server hands it to the model: 8 kHz μ-law, back to 16 kHz PCM."""
    with wave.open(str(SAMPLES / f"{name}.wav")) as w:
        ulaw = pcm16_to_ulaw_8k(w.readframes(w.getnframes()), w.getframerate())
    return CallerToModel().process(ulaw)


def words(text: str) -> list[str]:
    """Lower-case words; the recognizer's dictionary spells "mister" as "mr"."""
    return [{"mr": "mister"}.get(w, w) for w in re.findall(r"[a-z']+", text.lower())]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


async def wer(names: list[str]) -> None:
    pool = recognizer.shared_pool(1)
    assert pool is not None, "pocketsphinx is not installed (pip install '.[simulator]')"
    errors = total = 0
    audio_s = 0.0
    print(
        "Word error rate, phone path (8 kHz μ-law → 16 kHz), pocketsphinx 5, phrase by "
        "phrase as the simulator decodes:"
    )
    for name in names:
        pcm = phone_path(name)
        job = pool.open(RATE)
        job.feed(pcm)
        job.close()
        hyp = await job.text()
        ref = words((SAMPLES / f"{name}.txt").read_text())
        e = edit_distance(ref, words(hyp))
        errors, total, audio_s = errors + e, total + len(ref), audio_s + len(pcm) / 2 / RATE
        print(f"  {name}: {e}/{len(ref)} errors  heard: {hyp!r}")
    print(f"  WER {errors}/{total} = {100 * errors / total:.1f} %")
    print(f"  recognizer CPU {1000 * pool.cpu_s / audio_s:.0f} ms per second of caller speech")


async def one_call(sim: LiveSimulator, clips: list[bytes]) -> float:
    """A thin client's call; returns the call's seconds (caller audio + model audio)."""
    from websockets.asyncio.client import connect

    seconds = 0.0
    async with connect(
        f"wss://127.0.0.1:{sim.port}{PATH}",
        ssl=sim.client_ssl_context(),
        additional_headers={"x-goog-api-key": "bench"},
        max_size=None,
    ) as ws:
        await ws.send(orjson.dumps(SETUP).decode())
        await asyncio.wait_for(ws.recv(), 30)  # setupComplete
        step = RATE // 50 * 2
        for pcm in clips:
            for i in range(0, len(pcm), step):
                b64 = base64.b64encode(pcm[i : i + step]).decode()
                message = {
                    "realtimeInput": {"audio": {"data": b64, "mimeType": "audio/pcm;rate=16000"}}
                }
                await ws.send(orjson.dumps(message).decode())
                await asyncio.sleep(0)
            seconds += len(pcm) / 2 / RATE
            while True:  # the answer: through turnComplete (after a tool call, if any)
                message = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                if call := message.get("toolCall"):
                    responses = [
                        {"id": c["id"], "name": c["name"], "response": PASSAGE}
                        for c in call["functionCalls"]
                    ]
                    reply = {"toolResponse": {"functionResponses": responses}}
                    await ws.send(orjson.dumps(reply).decode())
                content = message.get("serverContent") or {}
                for part in (content.get("modelTurn") or {}).get("parts", []):
                    data = (part.get("inlineData") or {}).get("data", "")
                    seconds += len(base64.b64decode(data)) / 2 / 24_000
                if content.get("turnComplete"):
                    break
    return seconds


async def cpu(calls: int, dialogue: str, names: list[str]) -> None:
    clips = [phone_path(n) + bytes(2 * RATE * 3 // 2) for n in names]
    behaviour = SimBehaviour(dialogue=dialogue, pace=0, think_ms=0, hold_turn_complete=False)
    async with LiveSimulator(behaviour=behaviour) as sim:
        pool = recognizer.shared_pool() if dialogue == "converse" else None
        asr_before = pool.cpu_s if pool is not None else 0.0
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        seconds = await asyncio.gather(*(one_call(sim, clips) for _ in range(calls)))
        used = time.process_time() - cpu_before
        wall = time.perf_counter() - wall_before
        asr = (pool.cpu_s if pool is not None else 0.0) - asr_before
    call_s = sum(seconds)
    print(
        f"CPU per simulated call-second ({dialogue}, {calls} calls, {call_s:.0f} call-seconds "
        f"in {wall:.1f} s): {1000 * used / call_s:.0f} ms (simulator + thin clients), of which "
        f"recognition {1000 * asr / call_s:.0f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--dialogue", choices=("converse", "echo"), default="converse")
    p.add_argument("--skip-wer", action="store_true")
    args = p.parse_args()
    names = sorted(f.stem for f in SAMPLES.glob("*.txt"))

    async def run() -> None:
        if not args.skip_wer:
            await wer(names)
        await cpu(args.calls, args.dialogue, names)

    asyncio.run(run())


if __name__ == "__main__":
    main()
