"""``telephony.server.media_socket``: a call's frames straight from uvicorn's protocol, on a
real uvicorn server on loopback and a real ``websockets`` client."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from support.asgi import serve_asgi
from telephony.call.bridge import SocketClosed
from telephony.server.media_socket import (
    INBOX_HIGH_FRAMES,
    DirectSocket,
    MediaWebSocketProtocol,
    direct_socket,
)

Handler = Callable[[WebSocket, DirectSocket], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    async def route(ws: WebSocket) -> None:
        socket = direct_socket(ws)
        assert socket is not None
        await ws.accept()
        await handler(ws, socket)

    app = Starlette(routes=[WebSocketRoute("/media", route)])
    options = {"ws": MediaWebSocketProtocol, "ws_max_size": 64 * 1024}
    async with serve_asgi(app, ws_per_message_deflate=False, **options) as base:
        yield base.replace("http://", "ws://") + "/media"


def read_to_end(ended: asyncio.Event) -> Handler:
    """A call that reads until its socket ends, then sets ``ended``."""

    async def handler(ws: WebSocket, socket: DirectSocket) -> None:
        while await socket.receive() is not None:
            pass
        ended.set()

    return handler


async def drain(client: ClientConnection) -> list[str]:
    got: list[str] = []
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(5):
            async for message in client:
                got.append(str(message))
    return got


async def test_frames_arrive_in_order_and_sends_reach_the_peer() -> None:
    received: list[str | bytes] = []

    async def handler(ws: WebSocket, socket: DirectSocket) -> None:
        while (frame := await socket.receive()) is not None:
            received.append(frame)
            if isinstance(frame, str):
                await socket.send("echo " + frame)
        assert await socket.receive() is None  # and stays ended

    async with server(handler) as url:
        async with connect(url) as client:
            for i in range(200):
                await client.send(f"frame {i}")
            await client.send(b"\x01\x02")
            echoes = [await client.recv() for _ in range(200)]
        await asyncio.sleep(0.2)
    assert received == [f"frame {i}" for i in range(200)] + [b"\x01\x02"]
    assert echoes == [f"echo frame {i}" for i in range(200)]


async def test_a_call_that_falls_behind_pauses_reading_and_loses_nothing() -> None:
    seen: dict[str, object] = {}
    go = asyncio.Event()

    async def handler(ws: WebSocket, socket: DirectSocket) -> None:
        protocol = socket._protocol
        frames: list[str | bytes] = []
        frames.append(await socket.receive() or "")  # attached
        await go.wait()  # the client has sent everything meanwhile
        seen["paused_while_behind"] = protocol.read_paused
        seen["inbox_when_behind"] = len(socket._inbox)
        while (frame := await socket.receive()) is not None:
            frames.append(frame)
            if len(frames) == 1000:
                seen["paused_after"] = protocol.read_paused
                await socket.send("done")
        seen["frames"] = frames

    async with server(handler) as url:
        async with connect(url) as client:
            for i in range(1000):
                await client.send(f"{i:04d}" + "x" * 300)
            await asyncio.sleep(0.3)  # the server reads until its inbox is full
            go.set()
            async with asyncio.timeout(5):
                assert await client.recv() == "done"
        await asyncio.sleep(0.2)
    assert seen["paused_while_behind"] is True
    # Bounded: the inbox stops at the high mark, plus at most what one read brought.
    assert INBOX_HIGH_FRAMES <= int(str(seen["inbox_when_behind"])) < 1000
    assert seen["paused_after"] is False
    assert seen["frames"] == [f"{i:04d}" + "x" * 300 for i in range(1000)]


async def test_the_peer_closing_ends_receive_and_later_sends_fail_cleanly() -> None:
    outcome: dict[str, object] = {}

    async def handler(ws: WebSocket, socket: DirectSocket) -> None:
        outcome["first"] = await socket.receive()
        outcome["end"] = await socket.receive()
        try:
            await socket.send("too late")
        except SocketClosed:
            outcome["send"] = "closed"
        await socket.close(1000, "bye")  # a no-op, not an error

    async with server(handler) as url:
        async with connect(url) as client:
            await client.send("hello")
        await asyncio.sleep(0.3)
    assert outcome == {"first": "hello", "end": None, "send": "closed"}


async def test_invalid_utf8_closes_with_1007() -> None:
    ended = asyncio.Event()
    async with server(read_to_end(ended)) as url:
        async with connect(url) as client:
            await client.send("ok")
            # A text frame whose payload is not UTF-8, as a broken peer would write it.
            client.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe"))
            client.send_data()
            await drain(client)
            assert client.close_code == 1007
            async with asyncio.timeout(5):
                await ended.wait()


async def test_a_full_send_buffer_makes_sends_wait_in_order() -> None:
    done: list[str] = []

    async def handler(ws: WebSocket, socket: DirectSocket) -> None:
        protocol = socket._protocol
        await socket.receive()
        protocol.writable.clear()  # as uvicorn's pause_writing() does
        first = asyncio.create_task(socket.send("one", "two"))
        second = asyncio.create_task(socket.send("three"))
        await asyncio.sleep(0.05)
        done.append(f"waiting {first.done()} {second.done()}")
        protocol.writable.set()  # resume_writing()
        await asyncio.gather(first, second)
        await socket.send("four")
        await socket.close(1000, "done")

    async with server(handler) as url:
        async with connect(url) as client:
            await client.send("go")
            got = await drain(client)
    assert done == ["waiting False False"]
    assert got == ["one", "two", "three", "four"]


async def test_messages_sent_together_go_in_one_write_and_arrive_as_messages() -> None:
    writes: list[bytes] = []

    async def handler(ws: WebSocket, socket: DirectSocket) -> None:
        transport = socket._protocol.transport
        write = transport.write

        def spy(data: bytes) -> None:
            writes.append(bytes(data))
            write(data)

        await socket.receive()
        transport.write = spy  # type: ignore[method-assign]
        try:
            await socket.send("media " + "x" * 300, "mark 1")
            await socket.send("media 2")
        finally:
            transport.write = write  # type: ignore[method-assign]
        await socket.close(1000, "done")

    async with server(handler) as url:
        async with connect(url) as client:
            await client.send("go")
            got = await drain(client)
    assert got == ["media " + "x" * 300, "mark 1", "media 2"]
    assert len(writes) == 2  # two sends, two writes: the first carries both frames
    assert writes[0].endswith(b"mark 1") and b"media " + b"x" * 300 in writes[0]


async def test_server_shutdown_ends_receive() -> None:
    ended = asyncio.Event()
    async with server(read_to_end(ended)) as url:
        client = await connect(url)
        await client.send("x")
        await asyncio.sleep(0.1)
    # uvicorn shut down: it closed the stream with 1012 and our receive ended.
    async with asyncio.timeout(5):
        await ended.wait()
    await drain(client)
    assert client.close_code == 1012


def test_direct_socket_needs_our_protocol() -> None:
    plain = SimpleNamespace(scope={"extensions": {}})  # a WebSocket on plain uvicorn
    assert direct_socket(plain) is None  # type: ignore[arg-type]


async def test_on_frame_is_offered_frames_only_while_the_call_waits_with_nothing_queued() -> None:
    log: list[str] = []
    busy = {"now": False}

    def take(frame: str) -> bool:
        assert not busy["now"], "offered a frame while the call was busy"
        log.append("took " + frame)
        return frame.startswith("take")

    async def handler(ws: WebSocket, socket: DirectSocket) -> None:
        socket.on_frame = take
        while (frame := await socket.receive()) is not None:
            log.append("loop " + str(frame))
            if frame == "slow":
                busy["now"] = True  # the loop is awaiting something else: frames queue
                await asyncio.sleep(0.2)
                busy["now"] = False
            if frame == "end":
                await socket.send("ok")

    async with server(handler) as url:
        async with connect(url) as client:
            for text in ("take 1", "keep 2", "take 3"):
                await client.send(text)
                await asyncio.sleep(0.05)  # the loop waits again before the next
            await client.send("slow")
            await asyncio.sleep(0.05)
            for text in ("take 4", "take 5"):  # while the loop sleeps: queued, in order
                await client.send(text)
            await asyncio.sleep(0.3)
            await client.send("end")
            async with asyncio.timeout(5):
                assert await client.recv() == "ok"
    assert log == [
        "took take 1",
        "took keep 2",
        "loop keep 2",
        "took take 3",
        "took slow",
        "loop slow",
        "loop take 4",
        "loop take 5",
        "took end",
        "loop end",
    ]


def client_frame(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    """One masked frame as a client writes it, as bytes the tests can cut anywhere."""
    return Frame(opcode, payload, fin).serialize(mask=True, extensions=[])


async def test_frames_cut_anywhere_by_the_network_arrive_whole_and_in_order() -> None:
    """The protocol reads final text frames itself: whatever the reads' boundaries, every
    message arrives whole, in order, and the other frames (binary, fragmented, ping) are
    still websockets' own."""
    received: list[str | bytes] = []
    read_here: list[bool] = []
    ended = asyncio.Event()

    async def handler(ws: WebSocket, socket: DirectSocket) -> None:
        while (frame := await socket.receive()) is not None:
            received.append(frame)
            read_here.append(socket._protocol._reading)
        ended.set()

    # Lengths on both sides of 126 (7-bit and 16-bit lengths; the 1009 test has a 64-bit one).
    texts = [f"frame {i} " + "x" * (i * 37 % 400) for i in range(150)]
    stream = b"".join(client_frame(Opcode.TEXT, t.encode()) for t in texts[:70])
    stream += client_frame(Opcode.BINARY, b"\x00\x01")
    stream += client_frame(Opcode.TEXT, b"frag", fin=False)
    stream += client_frame(Opcode.CONT, b"mented")
    stream += b"".join(client_frame(Opcode.TEXT, t.encode()) for t in texts[70:])
    rng = random.Random(7)
    async with server(handler) as url:
        async with connect(url) as client:
            await client.send("first")  # through websockets' own framing
            pos = 0
            while pos < len(stream):
                n = rng.choice([1, 2, 3, 5, 9, 64, 700, 4096])
                client.transport.write(stream[pos : pos + n])
                pos += n
                await asyncio.sleep(0.001 if n < 10 else 0)  # separate reads, mostly
            async with asyncio.timeout(5):
                await (await client.ping())  # a control frame between two: answered
            await client.send("last " * 5000)
        async with asyncio.timeout(5):
            await ended.wait()
    expected = ["first", *texts[:70], b"\x00\x01", "fragmented", *texts[70:], "last " * 5000]
    assert received == expected
    assert all(read_here[1:])  # read by our protocol, not handed to websockets for good


async def test_an_unmasked_frame_is_refused_with_1002() -> None:
    ended = asyncio.Event()
    async with server(read_to_end(ended)) as url:
        async with connect(url) as client:
            await client.send("ok")
            client.transport.write(bytes([0x81, 5]) + b"hello")  # a client must mask
            await drain(client)
            assert client.close_code == 1002
            async with asyncio.timeout(5):
                await ended.wait()


async def test_a_frame_over_the_limit_is_refused_with_1009_from_its_header() -> None:
    ended = asyncio.Event()
    async with server(read_to_end(ended)) as url:
        async with connect(url) as client:
            await client.send("ok")
            frame = client_frame(Opcode.TEXT, b"x" * (64 * 1024 + 1))
            client.transport.write(frame[:100])  # the header says enough
            await drain(client)
            assert client.close_code == 1009
            async with asyncio.timeout(5):
                await ended.wait()
