"""The live event fan-out: bounded clients, slow ones dropped, the SSE wire format."""

from __future__ import annotations

import pytest

from telephony.ops.events import HEARTBEAT, CallEvents, TooManyClients, sse


def test_the_wire_format() -> None:
    assert sse("call.started", {"call_sid": "CA1"}, 7) == (
        b'id: 7\nevent: call.started\ndata: {"call_sid":"CA1"}\n\n'
    )


async def test_events_reach_every_stream_and_close_ends_them() -> None:
    events = CallEvents(max_clients=2)
    a, b = events.subscribe(), events.subscribe()
    with pytest.raises(TooManyClients):
        events.subscribe()
    stream = events.stream(a, heartbeat_s=0.01)
    assert b"event: hello" in await anext(stream)
    assert await anext(stream) == HEARTBEAT  # nothing happened for a while
    events.publish("call.started", {"call_sid": "CA1"})
    assert b'"call_sid":"CA1"' in await anext(stream)
    assert b.queue.qsize() == 1
    events.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert events.clients == 0
    with pytest.raises(TooManyClients):
        events.subscribe()


async def test_a_stream_that_does_not_read_is_dropped_not_waited_for() -> None:
    events = CallEvents(max_clients=4, queue_events=3)
    slow, fast = events.subscribe(), events.subscribe()
    fast_stream = events.stream(fast)
    await anext(fast_stream)
    for i in range(5):
        events.publish("call.ended", {"n": i})
        assert b'"n":' + str(i).encode() in await anext(fast_stream)
    assert slow.dropped and events.dropped == 1 and events.clients == 1
    # The dropped stream ends after what it had queued (the page reconnects and catches up).
    slow_stream = events.stream(slow)
    got = [m async for m in slow_stream]
    # (its oldest made room for the end marker)
    assert len(got) == 1 + 2 and b'"n":1' in got[1] and b'"n":2' in got[2]
    events.publish("call.ended", {"n": 9})  # never raises, never blocks
    assert fast.queue.qsize() == 1
