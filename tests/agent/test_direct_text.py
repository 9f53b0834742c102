"""``agent.ws_direct.DirectText``: audio written at once only when websockets' ``send()``
would not have waited; every other case is left to ``send()``."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from agent.ws_direct import DirectText, direct_text


class _Protocol:
    def __init__(self) -> None:
        self.state = State.OPEN
        self.framed: list[bytes] = []

    def send_text(self, data: bytes) -> None:
        self.framed.append(data)


class _Transport:
    def __init__(self) -> None:
        self.closing = False
        self.aborted = False

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = True


class _Connection:
    def __init__(self, fail: bool = False) -> None:
        self.protocol = _Protocol()
        self.transport = _Transport()
        self.paused = False
        self.send_in_progress: object | None = None
        self.flushed = 0
        self.fail = fail

    def send_data(self) -> None:
        if self.fail:
            raise OSError("broken pipe")
        self.flushed += 1


def test_an_open_connection_gets_the_frame_and_the_write() -> None:
    ws = _Connection()
    assert DirectText(ws).write(b'{"a":1}')
    assert ws.protocol.framed == [b'{"a":1}']
    assert ws.flushed == 1


@pytest.mark.parametrize(
    "why",
    ["paused", "fragmented send", "closing state", "closed state", "transport closing"],
)
def test_whenever_send_would_wait_or_raise_nothing_is_written(why: str) -> None:
    ws = _Connection()
    if why == "paused":
        ws.paused = True
    elif why == "fragmented send":
        ws.send_in_progress = object()
    elif why == "closing state":
        ws.protocol.state = State.CLOSING
    elif why == "closed state":
        ws.protocol.state = State.CLOSED
    else:
        ws.transport.closing = True
    assert not DirectText(ws).write(b"x")
    assert ws.protocol.framed == []
    assert ws.flushed == 0


def test_a_failed_write_aborts_the_connection_and_raises_connection_closed() -> None:
    ws = _Connection(fail=True)
    with pytest.raises(ConnectionClosed) as caught:
        DirectText(ws).write(b"x")
    assert isinstance(caught.value.__cause__, OSError)
    assert ws.transport.aborted


def test_a_socket_without_what_it_needs_gets_none() -> None:
    assert isinstance(direct_text(_Connection()), DirectText)

    class Bare:
        async def send(self, message: str) -> None: ...

    assert direct_text(Bare()) is None
    old = _Connection()
    old.protocol = object()  # type: ignore[assignment]
    assert direct_text(old) is None
