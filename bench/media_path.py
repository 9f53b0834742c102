"""What receiving one Twilio media frame costs the server before any of our code runs.

The capacity benchmark's server spends ~15 ms of CPU per call-second; this isolates the floor
under it: the web stack alone, receiving Twilio's 50 media frames per call-second and
discarding them. Two servers, each measured from ``/proc`` while N clients (another process,
pinned to another core when there is one) send a real media frame every 20 ms:

- ``asgi``: what the server runs today, uvicorn (uvloop, ``websockets-sansio``) and a
  Starlette WebSocket route awaiting ``receive()``;
- ``direct``: the server's path since December 2026, the same uvicorn and Starlette route
  with ``telephony.server.media_socket``: frames go from uvicorn's protocol straight to the
  route's ``DirectSocket`` (no ASGI message, no pause of the socket's reading per frame),
  final text frames read by the protocol itself, without ``websockets``' parser;
- ``protocol``: a bare ``asyncio.Protocol`` on uvloop parsing frames with ``websockets``'
  sans-I/O ``ServerProtocol`` in ``data_received``: no ASGI queue, no task switch per frame.

    python bench/media_path.py [--calls 50] [--seconds 10] [--kinds asgi,direct,protocol]

It prints server CPU per call-second and per frame for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

from agent.ws_direct import direct_text
from telephony.twilio.media_stream import InboundBuilder

CLK_TCK = os.sysconf("SC_CLK_TCK")
FRAME_S = 0.02


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- the two servers (run as child processes: ``python bench/media_path.py --serve KIND``) ----


def serve_asgi(port: int, direct: bool = False) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from telephony.server.media_socket import MediaWebSocketProtocol, direct_socket

    async def media(ws: WebSocket) -> None:
        await ws.accept()
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    async def media_direct(ws: WebSocket) -> None:
        socket = direct_socket(ws)
        assert socket is not None
        await ws.accept()
        while await socket.receive() is not None:
            pass

    app = Starlette(routes=[WebSocketRoute("/twilio/media", media_direct if direct else media)])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        ws=MediaWebSocketProtocol if direct else "websockets-sansio",
        ws_per_message_deflate=False,
        loop="uvloop",
        log_level="warning",
    )


def serve_protocol(port: int) -> None:
    import uvloop
    from websockets.frames import Frame
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    class Media(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
            self.ws = ServerProtocol()
            self.frames = 0

        def data_received(self, data: bytes) -> None:
            ws = self.ws
            ws.receive_data(data)
            for event in ws.events_received():
                if isinstance(event, Request):
                    ws.send_response(ws.accept(event))
                elif isinstance(event, Frame):
                    self.frames += 1  # a media frame: the bridge would take it from here
            for out in ws.data_to_send():
                if out:
                    self.transport.write(out)
                else:
                    self.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Media, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- the clients -------------------------------------------------------------------------------


async def clients(port: int, calls: int, seconds: float) -> None:
    from websockets.asyncio.client import connect

    frame = InboundBuilder("MZ" + "0" * 32, "CA" + "0" * 32).media(b"\xff" * 160, 20).encode()
    conns = [await connect(f"ws://127.0.0.1:{port}/twilio/media") for _ in range(calls)]
    writers = [(ws, direct_text(ws)) for ws in conns]
    loop = asyncio.get_running_loop()
    print(json.dumps({"connected": calls}), flush=True)
    start = loop.time()
    tick = 0
    while loop.time() - start < seconds + 2:
        for ws, direct in writers:
            if direct is None or not direct.write(frame):
                await ws.send(frame, text=True)
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * FRAME_S - loop.time()))
    for ws in conns:
        await ws.close()


def wait_listening(port: int, timeout_s: float = 15.0) -> None:
    """Until something accepts connections on ``port`` (``TimeoutError`` after the bound)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no server on port {port} after {timeout_s:g} s") from None
            time.sleep(0.05)


def measure(kind: str, calls: int, seconds: float, port: int) -> dict[str, float]:
    me = Path(__file__)
    cores = sorted(os.sched_getaffinity(0))
    server = subprocess.Popen([sys.executable, str(me), "--serve", kind, "--port", str(port)])
    try:
        if len(cores) >= 2:
            os.sched_setaffinity(server.pid, cores[:1])
        wait_listening(port)
        load = subprocess.Popen(
            [
                sys.executable,
                str(me),
                "--load",
                "--port",
                str(port),
                "--calls",
                str(calls),
                "--seconds",
                str(seconds),
            ],
            stdout=subprocess.PIPE,
        )
        if len(cores) >= 2:
            os.sched_setaffinity(load.pid, cores[1:])
        assert load.stdout is not None
        ready, _, _ = select.select([load.stdout], [], [], 60)  # all connected
        if not ready or not load.stdout.readline():
            load.kill()
            raise RuntimeError(f"the load generator did not connect to the {kind} server")
        time.sleep(1.0)
        cpu0, t0 = proc_cpu_s(server.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = proc_cpu_s(server.pid), time.monotonic()
        if load.wait(timeout=seconds + 30) != 0:
            raise RuntimeError(f"the load generator failed against the {kind} server")
    finally:
        server.terminate()
        server.wait(timeout=10)
    call_s = calls * (t1 - t0)
    ms_per_call_s = (cpu1 - cpu0) * 1000 / call_s
    return {
        "cpu_ms_per_call_s": round(ms_per_call_s, 2),
        "cpu_us_per_frame": round(ms_per_call_s * 1000 * FRAME_S, 1),
        "core_busy_pct": round((cpu1 - cpu0) * 100 / (t1 - t0), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kinds", default="asgi,direct,protocol", help="servers to measure")
    parser.add_argument("--serve", choices=("asgi", "direct", "protocol"), help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve in ("asgi", "direct"):
        serve_asgi(args.port, direct=args.serve == "direct")
        return
    if args.serve == "protocol":
        serve_protocol(args.port)
        return
    if args.load:
        asyncio.run(clients(args.port, args.calls, args.seconds))
        return
    from telephony.server.runner import free_port

    print(f"{args.calls} clients, one Twilio media frame each every 20 ms, {args.seconds:g} s")
    for kind in args.kinds.split(","):
        figures = measure(kind, args.calls, args.seconds, free_port())
        print(
            f"  {kind:<9} {figures['cpu_ms_per_call_s']:6.2f} ms CPU per call-second, "
            f"{figures['cpu_us_per_frame']:6.1f} µs per frame, "
            f"core {figures['core_busy_pct']}% busy"
        )


if __name__ == "__main__":
    main()
