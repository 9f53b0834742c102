"""Tool round-trip benchmark: what the server adds between the operator's backend answering
and the model receiving the function response.

Runs the real server (uvicorn, in this process) with the embedded Live API simulator, the real
google-genai SDK, and a local HTTP backend (uvicorn) for one HTTP tool from a tools file. Each
simulated call asks the tool ``--per-call`` times in a row, ``--calls`` calls at once. For every
tool call it prints:

- server overhead: the tool's answer in hand (the backend's JSON read and parsed) → the
  function response handed to the model's socket (the toolbox's checks, the call's runner and
  record, the conversation layer, the SDK's send); from each call's record; target p99 ≤ 5 ms;
- backend → model: the backend's handler returns → the simulator holds the function response
  (adds the loopback HTTP response, httpx, TLS and the simulator's own parsing: an upper
  bound);
- round trip: the model's tool call sent → its response received (what the model waits).

    python bench/tools.py [--calls 10] [--per-call 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from telephony.caller import place_call
from telephony.loadtest.metrics import percentile
from telephony.server.runner import local_server
from telephony.settings import Settings
from telephony.twilio.media_stream import FRAME_BYTES, ULAW_SILENCE


async def _backend(answered_at: dict[str, float]) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    async def answer(request: Request) -> JSONResponse:
        body = await request.json()
        response = JSONResponse({"status": "found", "order": body["arguments"].get("order")})
        answered_at[body["function_call_id"]] = time.monotonic()
        return response

    app = Starlette(routes=[Route("/lookup", answer, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    return server, task, server.servers[0].sockets[0].getsockname()[1]


def _stats(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values, default=None),
    }


async def run(calls: int, per_call: int) -> dict[str, Any]:
    answered_at: dict[str, float] = {}
    backend, backend_task, port = await _backend(answered_at)
    overhead_ms: list[float] = []
    server_ms: list[float] = []
    round_trip_ms: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tools = Path(tmp) / "tools.json"
            tools.write_text(
                json.dumps(
                    {
                        "tools": [
                            {
                                "name": "lookup_order",
                                "description": "Look up an order.",
                                "parameters": {
                                    "type": "object",
                                    "properties": {"order": {"type": "string"}},
                                },
                                "url": f"http://127.0.0.1:{port}/lookup",
                            }
                        ]
                    }
                )
            )
            env = {
                **os.environ,
                "LIVE_SIMULATOR": "on",
                "LIVE_SIMULATOR_DIALOGUE": "echo",  # scripted tool calls, no recognition
                "AGENT_TOOLS_FILE": str(tools),
                "AGENT_GREETING": "",
                "MAX_CONCURRENT_CALLS": str(max(calls, 1)),
                "DATABASE_URL": "off",
            }
            settings = Settings.from_env(env)
            async with local_server(settings) as local:
                sim = local.service.simulator
                silence = ULAW_SILENCE * (8000 * 600 // FRAME_BYTES)

                async def one(i: int) -> None:
                    call = asyncio.create_task(
                        place_call(local.media_url, silence[: 8000 * 2], linger_s=120.0)
                    )
                    session = await sim.next_session()
                    await session.wait_setup()
                    for k in range(per_call):
                        sent = time.monotonic()
                        fc_id = await session.send_tool_call(
                            "lookup_order", {"order": f"A{i}-{k}"}, id=f"fc-{i}-{k}"
                        )
                        await session.wait_tool_response(fc_id)
                        got = session.tool_response_at[fc_id]
                        overhead_ms.append((got - answered_at[fc_id]) * 1000)
                        round_trip_ms.append((got - sent) * 1000)
                    end = await session.send_tool_call("end_call", {})
                    await session.wait_tool_response(end)
                    await call

                # Sessions are handed out in connection order: one call at a time connects.
                tasks = []
                for i in range(calls):
                    tasks.append(asyncio.create_task(one(i)))
                    await asyncio.sleep(0.05)
                await asyncio.gather(*tasks)
                async with asyncio.timeout(10):
                    while len(local.service.recent) < calls:  # noqa: ASYNC110 - bench polling
                        await asyncio.sleep(0.01)
                server_ms = [
                    t["overhead_ms"]
                    for s in local.service.recent
                    for t in s.tool_calls
                    if "overhead_ms" in t
                ]
    finally:
        backend.should_exit = True
        await backend_task
    return {
        "calls": calls,
        "tool_calls": len(overhead_ms),
        "server_overhead_ms": _stats(server_ms),
        "backend_to_model_ms": _stats(overhead_ms),
        "round_trip_ms": _stats(round_trip_ms),
        "target_overhead_p99_ms": 5.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="calls at once")
    parser.add_argument("--per-call", type=int, default=50, help="tool calls in each call")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(run(args.calls, args.per_call))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    s, o, r = result["server_overhead_ms"], result["backend_to_model_ms"], result["round_trip_ms"]
    print(f"{result['tool_calls']} tool calls over {result['calls']} concurrent calls")
    print(
        f"server overhead (answer in hand -> function response sent): p50 {s['p50']:.3f} ms, "
        f"p99 {s['p99']:.3f} ms, max {s['max']:.3f} ms (target p99 <= 5 ms)"
    )
    print(
        f"backend handler returns -> function response at the model: p50 {o['p50']:.2f} ms, "
        f"p99 {o['p99']:.2f} ms, max {o['max']:.2f} ms"
    )
    print(
        f"tool call sent -> response received (round trip): p50 {r['p50']:.2f} ms, "
        f"p99 {r['p99']:.2f} ms, max {r['max']:.2f} ms"
    )


if __name__ == "__main__":
    main()
