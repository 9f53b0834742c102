"""The console's WebSocket (/console/media) without a browser: the token, the call slots, and
the protocol the page speaks (Twilio's, plus typed text and the call's events)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from support import run_stack
from telephony.server.console import SUBPROTOCOL, offered_token
from telephony.twilio.media_stream import InboundBuilder

API_TOKEN = "operator-token-0123456789"


def protocols(token: str) -> list[Subprotocol]:
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return [Subprotocol(SUBPROTOCOL), Subprotocol(f"bearer.{encoded}")]


async def next_event(ws: ClientConnection, kind: str, within_s: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(within_s):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message.get("event") == kind:
                return message


def test_the_token_is_read_from_its_subprotocol() -> None:
    assert offered_token(protocols("tökén-0123456789")) == "tökén-0123456789"
    assert offered_token([SUBPROTOCOL]) is None
    assert offered_token(["bearer.!!"]) is None


async def test_the_console_is_off_without_an_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    async with run_stack(monkeypatch) as stack:
        async with stack.client() as http:
            page = await http.get("/console")
        assert page.status_code == 503 and "API_TOKEN" in page.text
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                f"ws://127.0.0.1:{stack.port}/console/media", subprotocols=protocols("x" * 16)
            ):
                pass
        assert refused.value.response.status_code == 403


async def test_a_console_call_needs_the_token_and_a_call_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"API_TOKEN": API_TOKEN, "MAX_CONCURRENT_CALLS": "1"}
    async with run_stack(monkeypatch, env) as stack:
        url = f"ws://127.0.0.1:{stack.port}/console/media"
        async with stack.client() as http:
            page = await http.get("/console")
        assert page.status_code == 200
        assert "script-src 'sha256-" in page.headers["content-security-policy"]
        for offered in (
            protocols("wrong-token-0123456789"),
            [Subprotocol(SUBPROTOCOL)],
            protocols(API_TOKEN)[1:],
        ):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, subprotocols=offered):
                    pass
            assert refused.value.response.status_code == 403
        async with connect(url, subprotocols=protocols(API_TOKEN)) as ws:
            assert ws.subprotocol == SUBPROTOCOL  # the token is never echoed
            # The page's start names a call; the server names it itself.
            twilio = InboundBuilder("MZpage", "CApage-chosen")
            await ws.send(twilio.connected())
            await ws.send(twilio.start({"direction": "outbound-api"}))
            started = await next_event(ws, "started")
            assert started["call_sid"].startswith("CO")
            await next_event(ws, "media")  # the greeting, as μ-law frames
            # Every call slot is taken: a second console call is refused like a phone call.
            with pytest.raises(InvalidStatus):
                async with connect(url, subprotocols=protocols(API_TOKEN)):
                    pass
            await next_event(ws, "turn")
            await ws.send(orjson.dumps({"event": "text", "text": 'Say "Hi there."'}).decode())
            said = await next_event(ws, "transcript")
            assert said["who"] == "agent"
            answered = await next_event(ws, "turn")
            assert (answered["caller"], answered["agent"]) == ('Say "Hi there."', "Hi there.")
            assert answered["response_ms"] > 0
            await ws.send(twilio.stop())
            ended = await next_event(ws, "ended")
        summary = await stack.summary()
    assert ended["outcome"] == "completed"
    assert summary.call_sid == started["call_sid"]
    assert summary.direction == "browser"
    assert summary.caller == "console"
    assert stack.sim.sessions[0].texts[-1] == 'Say "Hi there."'
