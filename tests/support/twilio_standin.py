"""A local stand-in for Twilio's REST API (the parts the service uses), for tests.

A real HTTP server on loopback (uvicorn), reached by the real twilio SDK through
``TWILIO_API_BASE_URL``. It checks HTTP Basic auth like Twilio, answers with Twilio's JSON
shapes, and records every request so tests can assert on what the service asked for.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from support.asgi import serve_asgi

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "standin-auth-token-0123456789"


@dataclass
class StandIn:
    base_url: str = ""
    created: list[dict[str, str]] = field(default_factory=list)  # Calls.json POST forms
    updated: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (call sid, form)
    refuse_with: tuple[int, int, str] | None = None  # (HTTP status, Twilio code, message)
    unauthorized: int = 0
    call_created: asyncio.Event = field(default_factory=asyncio.Event)


def _app(state: StandIn) -> FastAPI:
    app = FastAPI()
    expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()

    def error(status: int, code: int, message: str) -> JSONResponse:
        return JSONResponse(
            {"code": code, "message": message, "status": status, "more_info": ""},
            status_code=status,
        )

    @app.post("/2010-04-01/Accounts/{account}/Calls.json")
    async def create(account: str, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != expected or account != ACCOUNT_SID:
            state.unauthorized += 1
            return error(401, 20003, "Authenticate")
        form = {k: str(v) for k, v in (await request.form()).items()}
        if state.refuse_with is not None:
            return error(*state.refuse_with)
        sid = "CA" + uuid.uuid4().hex
        form["Sid"] = sid
        state.created.append(form)
        state.call_created.set()
        return JSONResponse(_call(sid, form, "queued"), status_code=201)

    @app.post("/2010-04-01/Accounts/{account}/Calls/{sid}.json")
    async def update(account: str, sid: str, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != expected or account != ACCOUNT_SID:
            state.unauthorized += 1
            return error(401, 20003, "Authenticate")
        form = {k: str(v) for k, v in (await request.form()).items()}
        state.updated.append((sid, form))
        return JSONResponse(_call(sid, form, form.get("Status", "in-progress")))

    return app


def _call(sid: str, form: dict[str, str], status: str) -> dict[str, Any]:
    return {
        "sid": sid,
        "account_sid": ACCOUNT_SID,
        "to": form.get("To"),
        "from": form.get("From"),
        "status": status,
        "direction": "outbound-api",
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json",
    }


@asynccontextmanager
async def twilio_standin() -> AsyncIterator[StandIn]:
    state = StandIn()
    async with serve_asgi(_app(state)) as base:
        state.base_url = base
        yield state
