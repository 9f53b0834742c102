"""The Live API simulator as a separate process, for benchmarks.

Prints one JSON line when ready (``base_url``, ``ca``), one per new session (``session``: its
id, in connection order), one per ``stats`` line read from its standard input (``stats``:
messages received from and sent to clients so far, all sessions, with the monotonic time),
and, once its standard input closes, one per session with its chunk
log (``chunks``: [(monotonic time the chunk was handed to the socket, 24 kHz samples before
it)]). Monotonic time is system-wide on Linux, so another process can compare it with its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from agent.simulator import LiveSimulator, SimBehaviour


async def main() -> None:
    async with LiveSimulator(behaviour=SimBehaviour(seed=7)) as sim:
        print(json.dumps({"base_url": sim.base_url, "ca": sim.ca_pem_path}), flush=True)

        async def announce() -> None:
            while True:
                session = await sim.next_session(timeout=86_400)
                print(json.dumps({"session": session.id}), flush=True)

        announcer = asyncio.create_task(announce())
        while line := await asyncio.to_thread(sys.stdin.readline):  # until stdin closes
            if line.strip() == "stats":
                stats = {
                    "stats": time.monotonic(),
                    "messages_in": sum(s.messages_in for s in sim.sessions),
                    "messages_out": sum(s.messages_out for s in sim.sessions),
                }
                print(json.dumps(stats), flush=True)
        announcer.cancel()
        for session in sim.sessions:
            print(json.dumps({"chunks": session.id, "log": session.chunk_log}), flush=True)
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
