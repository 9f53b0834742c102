"""The google-genai SDK's own per-message CPU cost, next to our fast path, without any I/O.

For each of the two messages a call exchanges with the Live API every few tens of ms:

- caller audio out: 20 ms of 16 kHz PCM (640 bytes) → the JSON text the socket sends.
  SDK: ``send_realtime_input``'s work before ``ws.send`` (pydantic validation, converters,
  dict conversion, ``json.dumps``); fast path: base64 + string concatenation.
- model audio in: one server message with 40 ms of 24 kHz PCM (1920 bytes) → our events.
  SDK: ``json.loads`` + converters + ``LiveServerMessage`` validation + our mapping; fast path:
  ``orjson.loads`` + dict mapping (``agent.live_wire.events_from_wire``).

For scale, the rest of a 20 ms frame's path (Twilio JSON parse, μ-law, resampling) is printed
too, and the base64 of the audio at the sizes a call sends and receives (a 200 ms quiet
block of caller audio, 200 ms of model audio): the standard library's ``binascii`` next to the
codec the fast path uses (``agent.live_wire.b64encode`` / ``b64decode``).
``python bench/sdk_overhead.py``
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable

from google.genai import _common, _live_converters, types

from agent.live_wire import audio_message, b64decode, b64encode, events_from_wire
from agent.session import events_from_sdk
from telephony.audio import CallerToModel, ModelToCaller
from telephony.twilio.media_stream import InboundBuilder, OutboundBuilder, parse_inbound

PCM_OUT = bytes(640)
PCM_IN = bytes(range(256)) * 7 + bytes(128)  # 1920 bytes = 40 ms at 24 kHz
BLOCK_OUT = bytes(range(256)) * 25  # 6400 bytes: 200 ms at 16 kHz (a quiet block)
MODEL_200MS = (bytes(range(256)) * 38)[:9600]  # 200 ms at 24 kHz
MODEL_200MS_B64 = base64.b64encode(MODEL_200MS).decode()
SERVER_MESSAGE = json.dumps(
    {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": "audio/pcm;rate=24000",
                            "data": base64.b64encode(PCM_IN).decode(),
                        }
                    }
                ]
            }
        }
    }
).encode()


def sdk_send() -> str:
    params = types.LiveSendRealtimeInputParameters.model_validate(
        {"audio": types.Blob(data=PCM_OUT, mime_type="audio/pcm;rate=16000")}
    )
    body = _live_converters._LiveSendRealtimeInputParameters_to_mldev(from_object=params)
    body = _common.encode_unserializable_types(_common.convert_to_dict(body))
    return json.dumps({"realtime_input": body})


def fast_send() -> str:
    return audio_message(PCM_OUT)


def sdk_receive() -> object:
    message = json.loads(SERVER_MESSAGE)
    converted = _live_converters._LiveServerMessage_from_mldev(message)
    return events_from_sdk(types.LiveServerMessage._from_response(response=converted, kwargs={}))


def fast_receive() -> object:
    return events_from_wire(SERVER_MESSAGE)


def cpu_us(fn: Callable[[], object], n: int = 20_000) -> float:
    for _ in range(200):
        fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    inbound = InboundBuilder("MZ" + "0" * 32, "CA" + "0" * 32)
    twilio_frame = inbound.media(b"\xff" * 160, 20)
    out = OutboundBuilder("MZ" + "0" * 32)
    up, down = CallerToModel(), ModelToCaller()
    rows = [
        ("caller audio out: SDK send_realtime_input work", cpu_us(sdk_send)),
        ("caller audio out: fast path", cpu_us(fast_send)),
        ("model audio in:   SDK receive work", cpu_us(sdk_receive)),
        ("model audio in:   fast path", cpu_us(fast_receive)),
        ("for scale: parse a Twilio media frame", cpu_us(lambda: parse_inbound(twilio_frame))),
        ("for scale: 8k μ-law -> 16k PCM (20 ms)", cpu_us(lambda: up.process(b"\xff" * 160))),
        ("for scale: 24k PCM -> 8k μ-law (40 ms)", cpu_us(lambda: down.process(PCM_IN))),
        ("for scale: build a Twilio media message", cpu_us(lambda: out.media(b"\xff" * 320))),
        (
            "base64 out, 200 ms caller block: binascii",
            cpu_us(lambda: binascii.b2a_base64(BLOCK_OUT, newline=False)),
        ),
        ("base64 out, 200 ms caller block: fast path", cpu_us(lambda: b64encode(BLOCK_OUT))),
        (
            "base64 in, 200 ms model audio: binascii",
            cpu_us(lambda: binascii.a2b_base64(MODEL_200MS_B64)),
        ),
        ("base64 in, 200 ms model audio: fast path", cpu_us(lambda: b64decode(MODEL_200MS_B64))),
    ]
    print("CPU per message (µs), no I/O, median machine load; 1 call = 50 caller frames/s")
    for name, us in rows:
        print(f"  {name:<48} {us:8.1f} µs")
    sdk_s, fast_s = rows[0][1], rows[1][1]
    print(
        f"caller audio alone at 50 msg/s: SDK {sdk_s * 50 / 1000:.2f} ms CPU per call-second, "
        f"fast path {fast_s * 50 / 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
