"""A local stand-in for the operator's end-of-call webhook receiver (CALL_WEBHOOK_URL).

A real HTTP server on loopback (uvicorn). It answers 500 to the first ``fail_first``
requests (or to all while ``failing``), 200 otherwise, and records every request: headers,
raw body, the status it answered, and whether the signature was valid for ``secret``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support.asgi import serve_asgi


@dataclass
class Receiver:
    secret: str
    url: str = ""
    fail_first: int = 0
    failing: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def signature_ok(self, headers: dict[str, str], body: bytes) -> bool:
        stamp = headers.get("x-agent-timestamp", "")
        expected = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(
            headers.get("x-agent-signature", ""), "v1=" + expected.hexdigest()
        )

    def delivered(self) -> list[dict[str, Any]]:
        """The reports answered 200, first delivery per idempotency key only."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.requests:
            if r["status"] == 200:
                seen.setdefault(r["headers"].get("idempotency-key", ""), orjson.loads(r["body"]))
        return list(seen.values())

    async def wait(self, predicate: Any, timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def _app(state: Receiver) -> Starlette:
    async def handle(request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        fail = state.failing or len(state.requests) < state.fail_first
        status = 500 if fail else 200
        state.requests.append(
            {
                "headers": headers,
                "body": body,
                "status": status,
                "signed": state.signature_ok(headers, body),
            }
        )
        state.changed.set()
        if fail:
            return JSONResponse({"error": "not now"}, status_code=500)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/reports", handle, methods=["POST"])])


@asynccontextmanager
async def webhook_receiver(secret: str, *, fail_first: int = 0) -> AsyncIterator[Receiver]:
    state = Receiver(secret=secret, fail_first=fail_first)
    async with serve_asgi(_app(state)) as base:
        state.url = base + "/reports"
        yield state
