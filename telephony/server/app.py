"""The HTTP/WebSocket surface Twilio talks to (the process-wide state is ``service``).

Routes (keep the paths: users paste them into the Twilio console):

- ``POST /twilio/voice``  the voice webhook: ``<Connect action=/twilio/after><Stream url=wss://…/twilio/media>``
- ``WS   /twilio/media``  the bidirectional Media Stream (one ``Call`` per connection)
- ``POST /twilio/after``  ``<Connect action>``: what Twilio does once the stream ends
- ``GET  /healthz``       alive;  ``GET /readyz``  ready for new calls (not draining, not full)
- ``GET  /metrics``       Prometheus text exposition (``telephony.server.metrics``): bearer
                          ``METRICS_TOKEN`` when set; on its own port with ``METRICS_PORT``
- ``POST /twilio/status`` status callback of outbound calls (busy, no answer, failed)
- ``/calls``, ``/ui``      the operator API and page (``telephony.ops.api``)
- ``/console``            a call from the browser (``telephony.server.console``)

With no model credentials, the lifespan starts the local Live API simulator in-process and
the service talks to it through the real google-genai SDK (loudly logged: not a real model).

Signatures are checked over the URL Twilio called: PUBLIC_URL's scheme, host and base path
followed by the request's own path and query string, exactly as received. A Media Stream
takes a call slot only once it has sent a valid ``start``; until then it counts against the
pending limits (per client address ``MAX_PENDING_STREAMS_PER_CLIENT``, refused beyond it;
overall ``MAX_PENDING_STREAMS``, where the longest-waiting stream makes room). There are no
documentation routes (``/docs``, ``/redoc``, ``/openapi.json``).
"""

from __future__ import annotations

import gc
import logging
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from agent.logs import call_id_var, fields
from telephony.call.bridge import Call, CallObserver, TwilioSocket
from telephony.call.recorder import CallRecorder
from telephony.ops import api as operator_api
from telephony.server import console
from telephony.server.media_socket import DirectSocket, direct_socket
from telephony.server.metrics import CONTENT_TYPE_LATEST
from telephony.server.metrics_port import MetricsListener, bearer_ok
from telephony.server.service import Service, client_key, start_knowledge, start_model
from telephony.server.websocket import StarletteSocket
from telephony.settings import MEDIA_PATH, Settings
from telephony.twilio import twiml
from telephony.twilio.rest import TwilioRest
from telephony.twilio.signature import SIGNATURE_HEADER, is_valid

log = logging.getLogger(__name__)

XML = "application/xml"


def _dial_outcome(status: str, form: dict[str, str]) -> tuple[str | None, str]:
    """The record outcome of an outbound call that ended with Twilio status ``status``."""
    if status in {"busy", "no-answer", "canceled"}:
        return status, f"Twilio: {status}"
    if status == "failed":
        return "failed", f"Twilio: call failed (SIP {form.get('SipResponseCode', '?')})"
    if status == "completed":
        # Only applies if the stream never started (the record is still "dialing").
        return "failed", "answered, but the agent's media stream never started"
    return None, ""


def _target(scope: Mapping[str, object]) -> str:
    """The request's path and query string exactly as received (what Twilio signed)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", ""))
    query = scope.get("query_string")
    if isinstance(query, bytes) and query:
        return f"{path}?{query.decode('latin-1')}"
    return path


def create_app(
    settings: Settings, *, freeze_gc: bool = False, metrics_socket: socket.socket | None = None
) -> FastAPI:
    """The ASGI app. ``app.state.service`` holds the shared state.

    ``metrics_socket``: a bound socket for ``METRICS_PORT``; ``/metrics`` is served there
    (and not on the app's own port).

    ``freeze_gc``: after startup, move every object that exists (FastAPI, the SDK, pydantic
    schemas: ~100 MiB) out of the cyclic garbage collector's reach. Otherwise each full
    collection walks all of them and stalls every call for 100+ ms (measured: 148 ms at 100
    calls). For the real server process; not for servers run inside a test process.
    """
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for warning in settings.warnings:
            log.warning("config.warning", extra=fields(message=warning))
        await service.open_records()  # fatal if it fails; off the loop
        await service.open_webhook()
        await start_model(service)
        await start_knowledge(service)
        listener = None
        if metrics_socket is not None:
            listener = MetricsListener(
                metrics_socket,
                service.metrics.exposition,
                token=settings.metrics_token,
                header_timeout_s=settings.http_header_timeout_s,
            )
            await listener.start()
            service.metrics_port = listener.port
        if settings.rest_enabled:
            assert settings.twilio_account_sid and settings.twilio_auth_token
            service.rest = TwilioRest(
                settings.twilio_account_sid,
                settings.twilio_auth_token,
                base_url=settings.twilio_api_base_url,
            )
        if freeze_gc:
            gc.collect()
            gc.freeze()
        log.info(
            "server.ready",
            extra=fields(
                model=settings.model.model,
                model_backend=settings.model.backend,
                model_path=service.agent.path if service.agent is not None else None,
                persona_voice=settings.persona.voice,
                language=settings.persona.language,
                tools=list(settings.persona.tools),
                max_concurrent_calls=settings.max_concurrent_calls,
                signatures=settings.signatures_enforced,
                rest=settings.rest_enabled,
                operator_api="on (/calls, /ui)" if settings.api_token else "off: set API_TOKEN",
                record_calls=str(settings.record_calls) if settings.record_calls else None,
            ),
        )
        try:
            yield
        finally:
            await service.aclose()
            if listener is not None:
                await listener.aclose()

    # No /docs, /redoc or /openapi.json: the route list is nobody's business on a public port.
    app = FastAPI(
        title="Gemini Live phone agent",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service

    def signature_ok(request_url: str, params: dict[str, str], signature: str | None) -> bool:
        token = settings.twilio_auth_token
        return token is None or is_valid(token, request_url, params, signature)

    async def signed_form(request: Request) -> dict[str, str] | None:
        """A Twilio webhook's form, or None (logged) if its signature does not match."""
        try:
            form = {k: str(v) for k, v in (await request.form()).items()}
        except ClientDisconnect:  # gone (or closed for a slow body): nobody to answer
            return None
        url = settings.public_url_for(_target(request.scope), request.headers.get("host"))
        if not signature_ok(url, form, request.headers.get(SIGNATURE_HEADER)):
            log.warning("webhook.bad_signature", extra=fields(url=url))
            return None
        return form

    def forbidden() -> Response:
        return Response("invalid signature", status_code=403)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        body = {
            "ready": service.ready,
            "draining": service.draining,
            "active_calls": service.streams,
            "load": service.load,
            "max_concurrent_calls": settings.max_concurrent_calls,
            "model_backend": settings.model.backend,
            "model_circuit": str(service.agent.breaker.state) if service.agent else None,
        }
        return JSONResponse(body, status_code=200 if service.ready else 503)

    if metrics_socket is None:

        @app.get("/metrics")
        async def metrics(request: Request) -> Response:
            if not bearer_ok(settings.metrics_token, request.headers.get("authorization")):
                return Response(
                    "bearer token required",
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
            return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        form = await signed_form(request)
        if form is None:
            return forbidden()
        host = request.headers.get("host")
        call_sid = form.get("CallSid", "")
        token = call_id_var.set(call_sid or None)
        try:
            if service.model_failing:
                # Most new model connections fail right now: don't make the caller wait
                # through retries to hear the apology (agent.breaker).
                log.warning("call.turned_away", extra=fields(reason="model_unavailable"))
                service.metrics.turned_away.labels(reason="model_unavailable").inc()
                body = twiml.say_and_hang_up(
                    settings.unavailable_message, settings.persona.language
                )
                return Response(body, media_type=XML)
            if not service.ready:
                log.warning(
                    "call.turned_away",
                    extra=fields(
                        draining=service.draining, load=service.load, caller=form.get("From", "")
                    ),
                )
                service.metrics.call_turned_away(draining=service.draining)
                body = twiml.say_and_hang_up(settings.busy_message, settings.persona.language)
                return Response(body, media_type=XML)
            if call_sid:
                # Not for a call SID seen before, nor beyond MAX_PRECONNECTS: then the stream
                # opens its session itself when it starts.
                service.preconnect(call_sid)
            params = {
                "from": form.get("From", ""),
                "to": form.get("To", ""),
                "direction": form.get("Direction", ""),
            }
            body = twiml.connect_stream(
                settings.stream_url(host),
                settings.public_http_url("/twilio/after", host),
                {k: v for k, v in params.items() if v},
            )
            log.info("webhook.answered", extra=fields(caller=params["from"], callee=params["to"]))
            return Response(body, media_type=XML)
        finally:
            call_id_var.reset(token)

    @app.post("/twilio/after")
    async def after(request: Request) -> Response:
        form = await signed_form(request)
        if form is None:
            return forbidden()
        call_sid = form.get("CallSid", "")
        outcome = service.outcome_of(call_sid)
        token = call_id_var.set(call_sid or None)
        try:
            log.info("call.after_stream", extra=fields(outcome=outcome))
        finally:
            call_id_var.reset(token)
        if service.call_sids.get(call_sid) == "busy":  # its stream found no call slot
            body = twiml.say_and_hang_up(settings.busy_message, settings.persona.language)
            return Response(body, media_type=XML)
        body = twiml.after_stream(
            outcome,
            unavailable_message=settings.unavailable_message,
            transfer_number=settings.transfer_number,
            language=settings.persona.language,
        )
        return Response(body, media_type=XML)

    @app.post("/twilio/status")
    async def status(request: Request) -> Response:
        """Outbound calls: how a call ended when it never reached the agent."""
        form = await signed_form(request)
        if form is None:
            return forbidden()
        call_sid = form.get("CallSid", "")
        call_status = form.get("CallStatus", "")
        token = call_id_var.set(call_sid or None)
        try:
            log.info("call.status", extra=fields(status=call_status))
            if service.records is not None and call_sid:
                outcome, reason = _dial_outcome(call_status, form)
                if outcome is not None:
                    try:
                        await service.records.in_order(
                            service.records.store.set_outcome_if_open, call_sid, outcome, reason
                        )
                    except Exception:  # the database: logged; Twilio must not retry us
                        log.exception("records.status_write_failed", extra=fields(outcome=outcome))
        finally:
            call_id_var.reset(token)
        return Response(status_code=204)

    operator_api.install(app, service)

    async def serve_stream(
        ws: WebSocket,
        socket: TwilioSocket,
        *,
        direction: str | None = None,
        observer: CallObserver | None = None,
        rest: TwilioRest | None = None,
        on_call: Callable[[Call], None] | None = None,
        subprotocol: str | None = None,
    ) -> None:
        """One stream, Twilio's or the console's, through the same admission and the same
        ``Call``: the call slots, the pending limits, the record and the metrics."""
        if service.draining or service.streams >= settings.max_concurrent_calls:
            log.warning(
                "stream.refused", extra=fields(draining=service.draining, active=service.streams)
            )
            service.metrics.call_turned_away(draining=service.draining)
            await ws.close(code=1013)
            return
        slot = False

        def started(call: Call) -> bool:
            """``start`` arrived: the stream stops being pending and takes a call slot."""
            nonlocal slot
            service.stream_unpending(call)
            call_sid = call.summary.call_sid
            if not service.take_slot():
                service.saw_call_sid(call_sid, "busy")
                service.metrics.call_turned_away(draining=False)
                return False
            slot = True
            service.saw_call_sid(call_sid, "started")
            service.metrics.call_started()
            service.call_started(call)
            return True

        recorder = (
            CallRecorder(settings.record_calls, max_audio_s=settings.record_calls_max_s)
            if settings.record_calls is not None
            else None
        )
        call = Call(
            socket,
            service.open_conversation,
            greeting=settings.persona.greeting,
            caller_silence_end_ms=settings.persona.vad.silence_duration_ms,
            max_call_s=settings.max_call_s,
            caller_silence_s=settings.caller_silence_s,
            stream_start_timeout_s=settings.stream_start_timeout_s,
            transfer_number=settings.transfer_number,
            rest=rest,
            on_started=started,
            recorder=recorder,
            outbound_greeting=settings.outbound_greeting,
            answer_timeout_s=settings.outbound_answer_timeout_s,
            toolbox=service.toolbox,
            tool_filler_after_s=settings.tool_filler_after_s,
            direction=direction,
            observer=observer,
            model_audio_chunk_ms=settings.model_audio_chunk_ms,
            model_audio_quiet_chunk_ms=settings.model_audio_quiet_chunk_ms,
            model_audio_speech_chunk_ms=settings.model_audio_speech_chunk_ms,
        )
        if isinstance(socket, DirectSocket):
            socket.on_frame = call.take_frame  # most media frames handled as they arrive
        if on_call is not None:
            on_call(call)
        # Behind a proxy in FORWARDED_ALLOW_IPS, the address it forwarded for.
        client = client_key(ws.client.host if ws.client is not None else "unknown")
        refused = service.stream_pending(call, client)
        if refused is not None:
            # Connected streams that have not started are bounded per address (and overall,
            # the longest-waiting making room): sockets that never send start hold no slot.
            service.metrics.streams_refused.labels(reason=refused).inc()
            log.debug("stream.refused", extra=fields(reason=refused, client=client))
            await ws.close(code=1013)
            return
        try:
            await ws.accept(subprotocol=subprotocol)
        except BaseException:
            service.stream_unpending(call)
            raise
        try:
            await call.run()
        except Exception:
            # The per-call boundary: a bug in one call must not take the server down. The
            # caller hears the apology (via <Connect action>) rather than silence.
            log.exception("call.crashed")
            call.fail("internal error")
        finally:
            service.stream_unpending(call)  # if it never started
            # No await between these two: a <Connect action> request always finds the outcome.
            if service.calls.get(call.summary.call_sid) is call:
                del service.calls[call.summary.call_sid]
            service.remember(call.summary)
            recording = recorder.path.name if recorder is not None and recorder.path else None
            row = service.call_ended(call, recording=recording)
            if slot:
                service.saw_call_sid(call.summary.call_sid, "ended")
                service.stream_closed()
                service.metrics.call_finished(call.summary)
            else:
                service.metrics.stream_rejected(call.summary)
            await call.socket.close(1000, "call ended")
            await service.report_call(row)

    @app.websocket(MEDIA_PATH)
    async def media(ws: WebSocket) -> None:
        url = settings.public_url_for(_target(ws.scope), ws.headers.get("host"), websocket=True)
        if not signature_ok(url, {}, ws.headers.get(SIGNATURE_HEADER)):
            log.warning("stream.bad_signature", extra=fields(url=url))
            await ws.close(code=1008)  # before accept: the upgrade is refused (HTTP 403)
            return
        await serve_stream(ws, direct_socket(ws) or StarletteSocket(ws), rest=service.rest)

    console.install(app, service, serve_stream)

    @app.websocket(MEDIA_PATH + "/{instance}")
    async def media_for_instance(ws: WebSocket, instance: str) -> None:
        """STREAM_ROUTING=instance: the stream names the instance that answered its webhook
        (and pre-connected its model session); the load balancer routes it there."""
        if instance != settings.instance_id:
            # Misrouted (or an instance replaced meanwhile): serve it anyway, without the
            # pre-connected session, rather than drop a caller.
            service.metrics.streams_misrouted.inc()
            log.warning(
                "stream.misrouted", extra=fields(instance=instance[:64], us=settings.instance_id)
            )
        await media(ws)

    return app
