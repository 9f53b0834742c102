"""One call driven synchronously: the sans-I/O
:class:`~telephony.caller.simulated.SimulatedCall` over ``websockets.sync.client``, for
Locust's gevent workers.

Why this shape: Locust runs every user in a gevent greenlet and monkey-patches the standard
library at import (sockets, ``selectors``, ``threading``, ``time.sleep``). An asyncio event
loop inside a greenlet would block every other user of that worker while it runs, so the
asyncio driver (:func:`telephony.caller.drive.drive_call`) cannot be used there. The sans-I/O
core does not care who drives it: here a single loop sends what is due, then blocks in
``recv(timeout=until the next 20 ms frame)``. ``websockets.sync`` is built on blocking
sockets, ``selectors`` and a reader thread; patched, those become cooperative greenlet
switches, so hundreds of calls share one worker process. Without gevent (plain threads) the
same function works too, one thread per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection, connect

from telephony.caller.drive import connect_failure, connect_options, websocket_url
from telephony.caller.result import CallResult
from telephony.caller.simulated import SimulatedCall

__all__ = ["drive_call_sync", "open_stream_sync", "run_call_sync"]


def open_stream_sync(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
) -> ClientConnection:
    """Open the Media Stream as Twilio does; raises :class:`~telephony.caller.drive.CallFailed`
    classified like :func:`telephony.caller.drive.open_stream`."""
    try:
        ws: ClientConnection = connect(
            websocket_url(url), **connect_options(headers, connect_timeout_s, close_timeout_s)
        )
        return ws
    except (OSError, WebSocketException) as exc:
        raise connect_failure(url, exc) from exc


def drive_call_sync(
    ws: ClientConnection,
    call: SimulatedCall,
    *,
    close_timeout_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Play ``call`` over ``ws`` until it ends; bounded like the asyncio driver (the call's
    ``max_duration_s`` + the close handshake + 5 s)."""
    deadline = clock() + call.max_duration_s + close_timeout_s + 5.0
    try:
        for frame in call.open(clock()):
            ws.send(frame)
        while not call.ended:
            now = clock()
            if now >= deadline:
                call.abort(now, "overall timeout")
                break
            for frame in call.due(now):
                ws.send(frame)
            reason = call.should_end(now)
            if reason is not None:
                for frame in call.finish(now, reason):
                    ws.send(frame)
                ws.close()  # bounded by close_timeout
                break
            try:
                # Wait for the server, but no longer than until the next frame is due.
                message = ws.recv(timeout=max(0.0, call.next_wakeup() - clock()))
            except TimeoutError:
                continue
            for reply in call.receive(clock(), message):
                ws.send(reply)
    except ConnectionClosed:
        pass
    except BaseException as exc:
        # Locust stopping the user (GreenletExit), Ctrl-C: the call is cut off, not ended.
        call.abort(clock(), f"interrupted: {exc!r}")
        raise
    finally:
        # Records the close code; ends the call as closed by the server if nothing else did.
        call.server_closed(clock(), ws.close_code, ws.close_reason or "")
        ws.close_socket()  # idempotent; never waits


def run_call_sync(
    url: str,
    call: SimulatedCall,
    *,
    headers: Mapping[str, str] | None = None,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
) -> CallResult:
    """Connect, play ``call``, return its result (raises
    :class:`~telephony.caller.drive.CallFailed` when the connection cannot be made)."""
    ws = open_stream_sync(
        url, headers=headers, connect_timeout_s=connect_timeout_s, close_timeout_s=close_timeout_s
    )
    drive_call_sync(ws, call, close_timeout_s=close_timeout_s)
    return call.result()
