"""A local stand-in for an operator's tool server, for tests.

A real HTTP server on loopback (uvicorn) that answers the server's tool requests the way a
good or a bad backend would, by path:

- ``/ok``: the JSON object ``{"echo": <arguments>, "status": "found"}``;
- ``/slow``: answers after ``slow_s`` seconds (noting whether the client went away first);
- ``/fail``: HTTP 500 with ``{"error": "database unavailable"}``;
- ``/busy``: HTTP 429;
- ``/notjson``: HTTP 200 with an HTML page;
- ``/big``: HTTP 200 with a 64 KiB JSON object.

Every request is recorded (path, headers, raw body) for tests to assert on.
"""

from __future__ import annotations

import asyncio
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
class Backend:
    base_url: str = ""
    slow_s: float = 10.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Paths of requests whose client disconnected before the answer (cancelled calls).
    disconnected: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        return [orjson.loads(r["body"]) for r in self.requests if path is None or r["path"] == path]


def _app(state: Backend) -> Starlette:
    async def handle(request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        state.requests.append({"path": path, "headers": dict(request.headers), "body": body})
        state.arrived.set()
        if path == "/ok":
            return JSONResponse({"echo": orjson.loads(body)["arguments"], "status": "found"})
        if path == "/slow":
            loop = asyncio.get_running_loop()
            deadline = loop.time() + state.slow_s
            while loop.time() < deadline:
                if await request.is_disconnected():
                    state.disconnected.append(path)
                    return Response(status_code=499)
                await asyncio.sleep(0.05)
            return JSONResponse({"status": "finally"})
        if path == "/fail":
            return JSONResponse({"error": "database unavailable"}, status_code=500)
        if path == "/busy":
            return Response("slow down", status_code=429)
        if path == "/notjson":
            return Response("<html><body>Oops</body></html>", media_type="text/html")
        if path == "/big":
            return JSONResponse({"blob": "x" * 65536})
        return Response(status_code=404)

    return Starlette(routes=[Route("/{path:path}", handle, methods=["POST", "PUT", "PATCH"])])


@asynccontextmanager
async def tool_backend() -> AsyncIterator[Backend]:
    state = Backend()
    async with serve_asgi(_app(state)) as base:
        state.base_url = base
        yield state
