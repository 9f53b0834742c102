"""The simulator's server: handshake checks, sessions in order, SDK pass-through."""

from __future__ import annotations

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from agent.simulator import LiveSimulator, SimSession
from support.sim import MODEL, live_config, make_client, raw_connect, raw_recv


async def test_handshake_checks_path_and_api_key(sim: LiveSimulator) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with raw_connect(sim, path="/ws/nope"):
            pass
    assert info.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as info:
        async with raw_connect(sim, key=None):
            pass
    assert info.value.response.status_code == 401
    vertex = "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
    async with raw_connect(sim, path=vertex) as ws:
        await ws.send(orjson.dumps({"setup": {"model": "m"}}).decode())
        assert await raw_recv(ws) == {"setupComplete": {}}


async def test_next_session_order_and_timeout(sim: LiveSimulator) -> None:
    with pytest.raises(TimeoutError):
        await sim.next_session(timeout=0.05)
    client = make_client(sim)
    async with (
        client.aio.live.connect(model=MODEL, config=live_config()),
        client.aio.live.connect(model=MODEL, config=live_config()),
    ):
        a = await sim.next_session()
        b = await sim.next_session()
    assert isinstance(a, SimSession) and (a.id, b.id) == ("s1", "s2")


async def test_async_client_args_reach_websockets(sim: LiveSimulator) -> None:
    # The SDK passes every async_client_args key that websockets.connect accepts.
    client = make_client(sim, ping_interval=7, ping_timeout=33, max_size=2**22)
    async with client.aio.live.connect(model=MODEL, config=live_config()) as live:
        ws = live._ws
        assert (ws.ping_interval, ws.ping_timeout) == (7, 33)
        assert ws.protocol.max_message_size == 2**22
