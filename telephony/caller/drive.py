"""The asyncio driver: opens the Media Stream WebSocket as Twilio does (:func:`open_stream`,
signed by :func:`connect_headers`) and only moves frames between it and a
:class:`~telephony.caller.simulated.SimulatedCall` (:func:`drive_call`); :func:`run_call`
and :func:`place_call` wrap the two. :class:`CallFailed` says why a call could not be
placed; the client options and that classification (:func:`connect_options`,
:func:`connect_failure`) are shared with the synchronous driver
(:mod:`telephony.caller.drive_sync`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State

from agent.ws_direct import DirectText, direct_text
from telephony.caller.result import CallResult
from telephony.caller.script import BargeIn
from telephony.caller.simulated import SimulatedCall
from telephony.errors import TelephonyError
from telephony.twilio.signature import SIGNATURE_HEADER, sign

__all__ = [
    "MAX_SERVER_MESSAGE",
    "CallFailed",
    "FailureKind",
    "connect_failure",
    "connect_headers",
    "connect_options",
    "drive_call",
    "open_stream",
    "place_call",
    "run_call",
    "signature_url_for",
    "websocket_url",
]

#: Why a call could not be placed (:attr:`CallFailed.kind`).
FailureKind = Literal[
    "connect_refused", "connect_timeout", "connect_error", "handshake_rejected", "handshake_error"
]


class CallFailed(TelephonyError):
    """The call could not be placed (connection refused, handshake rejected, timeout).

    ``kind`` classifies it; ``status`` is the HTTP status of a rejected handshake.
    """

    def __init__(
        self, message: str, kind: FailureKind = "connect_error", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.status = status


def _with_scheme(url: str, mapping: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=mapping.get(parts.scheme, parts.scheme)))


def signature_url_for(url: str) -> str:
    """The URL Twilio signs the upgrade with: the secure form, as written in ``<Stream url>``."""
    return _with_scheme(url, {"ws": "wss", "http": "https"})


async def place_call(
    url: str,
    audio_ulaw: bytes,
    *,
    auth_token: str | None = None,
    signature_url: str | None = None,
    custom_parameters: Mapping[str, str] | None = None,
    call_sid: str | None = None,
    stream_sid: str | None = None,
    account_sid: str | None = None,
    dtmf: Sequence[tuple[float, str]] = (),
    lead_silence_s: float = 0.0,
    linger_s: float = 3.0,
    max_duration_s: float = 120.0,
    barge_in: BargeIn | None = None,
    after_greeting_s: float | None = None,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
) -> CallResult:
    """Call the Media Streams endpoint at ``url`` as Twilio would and report what was heard.

    ``audio_ulaw`` (8 kHz μ-law) is what the caller says, after ``lead_silence_s`` of silence
    (and, with ``after_greeting_s``, once the agent's greeting has played, or that many
    seconds have passed without one);
    ``dtmf`` holds ``(seconds since stream start, digit)``; ``barge_in`` makes the caller talk
    over the agent. Once the caller is done, the line stays open (silence frames) until the
    agent has been quiet for ``linger_s``; the server may hang up first; ``max_duration_s``
    caps the call. With ``auth_token`` the upgrade carries ``X-Twilio-Signature`` over
    ``signature_url`` (default: the ``wss://`` form of ``url``).

    Raises :class:`CallFailed` when the connection cannot be established; once connected,
    every ending (including an abnormal close) is reported in the :class:`CallResult`.
    """
    call = SimulatedCall(
        audio_ulaw,
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=account_sid,
        custom_parameters=custom_parameters,
        dtmf=dtmf,
        lead_silence_s=lead_silence_s,
        linger_s=linger_s,
        max_duration_s=max_duration_s,
        barge_in=barge_in,
        after_greeting_s=after_greeting_s,
    )
    return await run_call(
        url,
        call,
        headers=connect_headers(url, auth_token, signature_url),
        connect_timeout_s=connect_timeout_s,
        close_timeout_s=close_timeout_s,
    )


async def run_call(
    url: str,
    call: SimulatedCall,
    *,
    headers: Mapping[str, str] | None = None,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
) -> CallResult:
    """Connect to ``url`` (:func:`open_stream`), play ``call`` (:func:`drive_call`) and
    return its result. Raises :class:`CallFailed` when the connection cannot be made."""
    ws = await open_stream(
        url, headers=headers, connect_timeout_s=connect_timeout_s, close_timeout_s=close_timeout_s
    )
    await drive_call(ws, call, close_timeout_s=close_timeout_s)
    return call.result()


def connect_headers(
    url: str, auth_token: str | None = None, signature_url: str | None = None
) -> dict[str, str]:
    """Headers of Twilio's upgrade request: ``X-Twilio-Signature`` over ``signature_url``
    (default: the ``wss://`` form of ``url``) when ``auth_token`` is given."""
    if auth_token is None:
        return {}
    return {SIGNATURE_HEADER: sign(auth_token, signature_url or signature_url_for(url), {})}


async def open_stream(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
) -> ClientConnection:
    """Open the Media Stream WebSocket as Twilio does (no compression).

    Raises :class:`CallFailed`, classified: refused, timed out, handshake rejected (with the
    HTTP status, e.g. 403 for a bad signature) or another connection/handshake error.
    """
    try:
        return await connect(
            websocket_url(url), **connect_options(headers, connect_timeout_s, close_timeout_s)
        )
    except (OSError, WebSocketException) as exc:
        raise connect_failure(url, exc) from exc


def connect_options(
    headers: Mapping[str, str] | None, connect_timeout_s: float, close_timeout_s: float
) -> dict[str, Any]:
    """websockets client options for a Media Stream (shared by the asyncio and sync drivers)."""
    return {
        "additional_headers": dict(headers or {}),
        "open_timeout": connect_timeout_s,
        "close_timeout": close_timeout_s,
        "compression": None,  # Twilio doesn't compress
        # Servers may send long utterances in one media message.
        "max_size": MAX_SERVER_MESSAGE,
    }


#: The largest server message accepted (servers may send a long utterance in one message).
MAX_SERVER_MESSAGE: Final = 2**24


def websocket_url(url: str) -> str:
    """``url`` with an ``http``/``https`` scheme turned into ``ws``/``wss``."""
    return _with_scheme(url, {"http": "ws", "https": "wss"})


def connect_failure(url: str, exc: OSError | WebSocketException) -> CallFailed:
    """Why opening the stream at ``url`` failed, as a classified :class:`CallFailed`
    (shared by the asyncio and the synchronous drivers)."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return CallFailed(
            f"{url} rejected the upgrade with HTTP {status}", "handshake_rejected", status
        )
    if isinstance(exc, ConnectionRefusedError):
        return CallFailed(f"could not connect to {url}: {exc!r}", "connect_refused")
    if isinstance(exc, TimeoutError):
        return CallFailed(f"could not connect to {url}: timed out", "connect_timeout")
    if isinstance(exc, OSError):
        return CallFailed(f"could not connect to {url}: {exc!r}", "connect_error")
    return CallFailed(f"could not connect to {url}: {exc!r}", "handshake_error")


async def drive_call(
    ws: ClientConnection, call: SimulatedCall, *, close_timeout_s: float = 5.0
) -> None:
    """Play ``call`` over the open socket ``ws`` until it ends (the caller hangs up, the
    server closes, or the call's ``max_duration_s`` plus the close handshake has passed).

    Cancelling it drops the TCP connection at once; the caller then records how the call
    ended with :meth:`SimulatedCall.abort` and still gets its :meth:`~SimulatedCall.result`.
    """
    loop = asyncio.get_running_loop()
    try:
        # The overall bound: the caller ends the call at max_duration_s in any case.
        async with asyncio.timeout(call.max_duration_s + close_timeout_s + 5.0):
            try:
                for frame in call.open(loop.time()):
                    await ws.send(frame)
            except ConnectionClosed:
                pass
            direct = direct_text(ws)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_send_loop(ws, direct, call))
                tg.create_task(_receive_loop(ws, direct, call))
    except TimeoutError:
        call.abort(loop.time(), "overall timeout")
    finally:
        if ws.state is not State.CLOSED:
            # Cancelled or timed out mid-call: drop the TCP connection, do not wait for it.
            ws.transport.abort()


async def _send(ws: ClientConnection, direct: DirectText | None, frame: str) -> None:
    # 50 frames per call-second: written at once when websockets' send() would not wait (a
    # load test of hundreds of calls must not be limited by its own sending).
    if direct is None or not direct.write(frame.encode()):
        await ws.send(frame)


async def _send_loop(ws: ClientConnection, direct: DirectText | None, call: SimulatedCall) -> None:
    loop = asyncio.get_running_loop()
    try:
        while not call.ended:
            now = loop.time()
            for frame in call.due(now):
                await _send(ws, direct, frame)
            reason = call.should_end(now)
            if reason is not None:
                for frame in call.finish(now, reason):
                    await _send(ws, direct, frame)
                await ws.close()  # bounded by close_timeout
                return
            await asyncio.sleep(max(0.0, call.next_wakeup() - loop.time()))
    except ConnectionClosed:
        pass  # the receive loop records how it closed


async def _receive_loop(
    ws: ClientConnection, direct: DirectText | None, call: SimulatedCall
) -> None:
    loop = asyncio.get_running_loop()
    try:
        async for frame in ws:
            for reply in call.receive(loop.time(), frame):
                await _send(ws, direct, reply)
    except ConnectionClosed:
        pass
    call.server_closed(loop.time(), ws.close_code, ws.close_reason or "")
