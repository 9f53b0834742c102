"""The operator's HTTP API and page: call records, and placing outbound calls.

- ``GET  /calls``          recent calls, newest first (``limit``, ``before``, ``outcome``,
                           ``direction``); ``next_before`` pages back
- ``GET  /calls/{sid}``    one call's record: transcript, tool calls, DTMF, latency, tokens…
- ``POST /calls``          place an outbound call: ``{"to": "+1…", "from": "+1…"?}``
- ``GET  /calls/events``   live events (``text/event-stream``): ``call.started``, ``call.ended``
- ``GET  /calls/stats``    the dashboard: calls per bucket by outcome, latency percentiles…
- ``GET  /calls/{sid}/recording?leg=caller|agent|both``   the call's recording (WAV)
- ``POST /calls/{sid}/feedback``   ``{"rating": 1-5, "comment": "…"}``, kept with the record
- ``GET  /ui``             a page listing calls with their transcripts (uses the API above)

Every ``/calls`` route needs ``Authorization: Bearer <API_TOKEN>`` (the page reads the event
stream with ``fetch``, so the token never goes in a URL). Without ``API_TOKEN`` the
API is disabled (503), never open. The page itself holds no data: it asks for the token and
calls the API from the browser, so it needs no auth of its own.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import logging
import math
import re
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from agent.logs import fields
from telephony.call.recorder import safe_dirname
from telephony.ops.events import TooManyClients
from telephony.ops.pii import mask_number, redact_value
from telephony.ops.recordings import Leg, recording_file
from telephony.ops.records import OUTCOMES, dialing_record
from telephony.ops.stats import dashboard
from telephony.ops.store import MAX_LIMIT, StoreError
from telephony.twilio.rest import TwilioRestError

__all__ = ["DialRequest", "Feedback", "install", "page_headers", "page_html", "public"]

log = logging.getLogger(__name__)

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class DialRequest(BaseModel):
    """``POST /calls``: whom to call, and (optionally) from which of our numbers."""

    to: str = Field(description="E.164 number to call, like +14155550100")
    from_: str | None = Field(
        default=None, alias="from", description="our Twilio number (default OUTBOUND_CALLER_ID)"
    )


#: A feedback comment is at most this long.
MAX_COMMENT_CHARS: Final = 2000
#: The dashboard looks back at most this far (31 days).
MAX_STATS_HOURS: Final = 24 * 31


class Feedback(BaseModel):
    """``POST /calls/{sid}/feedback``: the operator's verdict (1: bad … 5: good)."""

    rating: int = Field(ge=1, le=5, description="1 (thumbs down) to 5 (thumbs up)")
    comment: str = Field(default="", max_length=MAX_COMMENT_CHARS)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A record as the API returns it: the epoch times also as ISO 8601 (UTC)."""
    out = dict(row)
    out["started"] = iso(row.get("started_at"))
    out["ended"] = iso(row.get("ended_at"))
    out.pop("updated_at", None)
    return out


def page_html(name: str = "calls.html") -> tuple[str, str]:
    """A page, and the CSP hash of its one inline script (so no other script can run)."""
    html = resources.files("telephony.ops").joinpath(f"static/{name}").read_text("utf-8")
    script = html.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return html, f"'sha256-{digest}'"


def install(app: FastAPI, service: Any) -> None:
    """Add the operator routes to ``app`` (``service``: ``telephony.server.Service``)."""
    settings = service.settings
    router = APIRouter()

    def authorized(request: Request) -> None:
        token = settings.api_token
        if token is None:
            raise HTTPException(
                503,
                "the operator API is off: start the server with API_TOKEN set "
                "(at least 16 characters)",
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            log.warning(
                "api.unauthorized",
                extra=fields(path=request.url.path, client=_client(request)),
            )
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    def store() -> Any:
        if service.records is None:
            raise HTTPException(503, "call records are off (DATABASE_URL=off)")
        return service.records

    auth = [Depends(authorized)]

    @router.get("/calls", dependencies=auth)
    async def list_calls(
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        before: Annotated[float | None, Query(description="started_at of the last call seen")] = (
            None
        ),
        outcome: Annotated[str | None, Query()] = None,
        direction: Annotated[str | None, Query(pattern="^(inbound|outbound|browser)$")] = None,
    ) -> JSONResponse:
        if outcome is not None and outcome not in OUTCOMES:
            raise HTTPException(422, f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
        writer = store()
        rows = await writer.read(
            writer.store.list, limit=limit, before=before, outcome=outcome, direction=direction
        )
        next_before = rows[-1]["started_at"] if len(rows) == limit else None
        return JSONResponse({"calls": [public(r) for r in rows], "next_before": next_before})

    @router.get("/calls/events", dependencies=auth)
    async def call_events() -> StreamingResponse:
        events = service.events
        try:
            subscriber = events.subscribe()
        except TooManyClients as exc:
            raise HTTPException(503, f"too many event streams: {exc}") from None
        return StreamingResponse(
            events.stream(subscriber),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/calls/stats", dependencies=auth)
    async def call_stats(
        hours: Annotated[int, Query(ge=1, le=MAX_STATS_HOURS)] = 24,
        bucket_minutes: Annotated[int, Query(ge=5, le=1440)] = 60,
    ) -> JSONResponse:
        writer = store()
        bucket_s = bucket_minutes * 60.0
        until = math.ceil(time.time() / bucket_s) * bucket_s  # buckets on round hours
        since = until - hours * 3600.0

        def compute() -> dict[str, Any]:
            return dashboard(writer.store.window(since, until), since, until, bucket_s)

        return JSONResponse(await writer.read(compute))

    @router.get("/calls/{call_sid}/recording", dependencies=auth, response_model=None)
    async def get_recording(call_sid: str, leg: Annotated[Leg, Query()] = "both") -> FileResponse:
        root = settings.record_calls
        if root is None or not _SID.match(call_sid):
            raise HTTPException(404, "no such recording")
        name = safe_dirname(call_sid)
        if service.records is not None:
            row = await service.records.read(service.records.store.get, call_sid)
            if row is None:
                raise HTTPException(404, "no such call")
            name = str((row.get("detail") or {}).get("recording") or name)
        try:
            path = await asyncio.to_thread(recording_file, Path(root), name, leg)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("api.recording_failed", extra=fields(call_sid=call_sid, error=str(exc)))
            raise HTTPException(500, "the recording cannot be read") from None
        if path is None:
            raise HTTPException(404, "no such recording")
        return FileResponse(
            path,
            media_type="audio/wav",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    @router.post("/calls/{call_sid}/feedback", dependencies=auth)
    async def post_feedback(call_sid: str, body: Feedback) -> JSONResponse:
        if not _SID.match(call_sid):
            raise HTTPException(404, "no such call")
        writer = store()
        comment = body.comment.replace("\x00", "").strip()
        if settings.redact_phone_numbers:
            comment = redact_value(comment)
        at = time.time()
        try:
            found = await writer.in_order(
                writer.store.set_feedback, call_sid, body.rating, comment, at
            )
        except (StoreError, TimeoutError) as exc:
            raise HTTPException(503, f"the call database is not taking writes: {exc}") from None
        if not found:
            raise HTTPException(404, "no such call")
        log.info("call.feedback", extra=fields(call_sid=call_sid, rating=body.rating))
        return JSONResponse(
            {
                "call_sid": call_sid,
                "feedback_rating": body.rating,
                "feedback_comment": comment,
                "feedback_at": at,
            }
        )

    @router.get("/calls/{call_sid}", dependencies=auth)
    async def get_call(call_sid: str) -> JSONResponse:
        if not _SID.match(call_sid):
            raise HTTPException(404, "no such call")
        writer = store()
        row = await writer.read(writer.store.get, call_sid)
        if row is None:
            raise HTTPException(404, "no such call")
        return JSONResponse(public(row))

    @router.post("/calls", dependencies=auth, status_code=201)
    async def place_call(body: DialRequest, request: Request) -> JSONResponse:
        to = body.to.strip()
        from_ = (body.from_ or settings.outbound_caller_id or "").strip()
        if not _E164.match(to):
            raise HTTPException(422, f"'to' must be an E.164 number like +14155550100, got {to!r}")
        if not from_:
            raise HTTPException(422, "'from' is required (or set OUTBOUND_CALLER_ID)")
        if not _E164.match(from_):
            raise HTTPException(422, f"'from' must be an E.164 number, got {from_!r}")
        if service.rest is None:
            raise HTTPException(
                503, "placing calls needs Twilio REST: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        if not service.ready:
            raise HTTPException(503, "not taking calls now (draining or at capacity)")
        host = request.headers.get("host")
        try:
            placed = await service.rest.place_call(
                to,
                from_,
                url=settings.public_http_url("/twilio/voice", host),
                status_callback=settings.public_http_url("/twilio/status", host),
            )
        except TwilioRestError as exc:
            service.metrics.outbound.labels(result="failed").inc()
            raise HTTPException(502, f"Twilio refused the call: {exc}") from None
        service.metrics.outbound.labels(result="placed").inc()
        redact = settings.redact_phone_numbers
        log.info(
            "call.dialed",
            extra=fields(
                call_sid=placed.call_sid,
                callee=mask_number(to) if redact else to,
                status=placed.status,
            ),
        )
        if service.records is not None:
            service.records.submit(dialing_record(placed.call_sid, from_, to, redact=redact))
        return JSONResponse(
            {"call_sid": placed.call_sid, "status": placed.status, "to": to, "from": from_},
            status_code=201,
        )

    html, script_hash = page_html()

    @router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    async def ui() -> HTMLResponse:
        return HTMLResponse(html, headers=page_headers(script_hash))

    app.include_router(router)


def page_headers(script_hash: str) -> dict[str, str]:
    """The headers of an operator page: it loads nothing from anywhere else, runs only its
    own script, and may only talk to this server."""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {script_hash}; style-src 'unsafe-inline'; "
            "connect-src 'self'; media-src blob:; img-src data:; form-action 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _client(request: Request) -> str:
    return request.client.host if request.client else ""
