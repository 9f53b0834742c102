"""End to end against hostile callers: each test replays one finding of a loopback attack on
``voice-agent serve`` and shows it no longer locks real callers out.

| finding                                                   | test                                |
|-----------------------------------------------------------|-------------------------------------|
| webhooks whose streams never open filled the server       | test_webhooks_without_streams_...   |
| a replayed webhook opened a model session each time       | test_webhooks_without_streams_...   |
| sockets that never send start held every call slot        | test_streams_that_never_start_...   |
| (from many addresses: the longest-waiting makes room)     | test_streams_that_never_start_...   |
| (a started stream takes a slot; none left: busy message)  | test_a_stream_that_starts_when_...  |
| no TWILIO_AUTH_TOKEN with a real model served anyone       | test_a_real_model_without_...       |
| slow clients kept their connections (and fds) for ever    | test_slow_clients_are_closed_...    |
| (a body over 1 MiB: 413, the connection closed)           | test_an_oversized_body_is_...       |
| a webhook URL with a query string failed its signature    | test_signatures_cover_the_query_... |
| /openapi.json and /metrics were public on the call port   | test_no_docs_and_metrics_...        |
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from support import HERMETIC_VARIABLES, ROOT, Stack, free_port, run_stack, silence
from telephony.caller import place_call
from telephony.server.runner import wait_ready
from telephony.settings import Settings
from telephony.twilio.media_stream import InboundBuilder

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://agent.example.com"
SIGNED = {"TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_URL": PUBLIC}
STREAM_URL = "wss://agent.example.com/twilio/media"


def sign(url: str, params: dict[str, str] | None = None) -> str:
    """Twilio's signature, computed by the twilio SDK itself."""
    return str(RequestValidator(TOKEN).compute_signature(url, params or {}))


def sid(prefix: str, n: int) -> str:
    return prefix + f"{n:032x}"


async def metric(stack: Stack, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    async with stack.client() as http:
        text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def closed_with(ws: ClientConnection, within_s: float = 10.0) -> int | None:
    """Wait for the server to close ``ws``; its close code."""
    try:
        async with asyncio.timeout(within_s):
            async for _ in ws:
                pass
    except ConnectionClosed:
        pass
    return ws.close_code


def answered(result: object) -> bool:
    return getattr(result, "time_to_first_audio_s", None) is not None


# -- 1. pre-connect ---------------------------------------------------------------------------


async def test_webhooks_without_streams_neither_fill_the_server_nor_open_unbounded_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MAX_CONCURRENT_CALLS is the default 100: at most max(4, 100 // 4) = 25 pre-connects.
    env = {**SIGNED, "PRECONNECT_TTL_S": "1.5"}
    voice = PUBLIC + "/twilio/voice"
    async with run_stack(monkeypatch, env) as stack, stack.client() as http:

        async def webhook(call_sid: str) -> httpx.Response:
            form = {"CallSid": call_sid, "From": "+14155550100", "To": "+14155550111"}
            headers = {"X-Twilio-Signature": sign(voice, form)}
            return await http.post("/twilio/voice", data=form, headers=headers)

        floods = await asyncio.gather(*(webhook(sid("CA", n)) for n in range(100)))
        assert all(r.status_code == 200 and "<Stream" in r.text for r in floods)
        async with asyncio.timeout(10):
            while len(stack.sim.sessions) < 25:  # noqa: ASYNC110 - test polling
                await asyncio.sleep(0.01)
        ready = await http.get("/readyz")
        # A real caller meanwhile: no pre-connect left for it, so its stream opens its own.
        real = sid("CB", 1)
        assert (await webhook(real)).status_code == 200
        first = await stack.call(
            silence(1.5), call_sid=real, auth_token=TOKEN, signature_url=STREAM_URL, linger_s=0.3
        )
        await stack.summary()
        # Unclaimed pre-connects are closed after PRECONNECT_TTL_S.
        async with asyncio.timeout(10):
            expired_so_far = 0.0
            while expired_so_far < 25:
                await asyncio.sleep(0.1)
                expired_so_far = await metric(
                    stack, "voice_agent_preconnects_total", result="expired"
                )
        # Replays: of the call that has ended, of a flood webhook (expired): no new session.
        sessions_before = len(stack.sim.sessions)
        replays = [await webhook(real), await webhook(real), await webhook(sid("CA", 7))]
        await asyncio.sleep(0.3)
        sessions_after_replays = len(stack.sim.sessions)
        # A new call once the flood has expired is pre-connected and adopts its session.
        second_sid = sid("CB", 2)
        assert (await webhook(second_sid)).status_code == 200
        second = await stack.call(
            silence(1.5),
            call_sid=second_sid,
            auth_token=TOKEN,
            signature_url=STREAM_URL,
            linger_s=0.3,
        )
        summary = await stack.summary(calls=2)
        expired = await metric(stack, "voice_agent_preconnects_total", result="expired")
        refused = await metric(stack, "voice_agent_preconnects_total", result="refused")
        claimed = await metric(stack, "voice_agent_preconnects_total", result="claimed")
        turned_away = await metric(stack, "voice_agent_calls_turned_away_total", reason="busy")
        total_sessions = len(stack.sim.sessions)
    assert ready.status_code == 200 and ready.json()["load"] == 0
    assert answered(first) and answered(second)
    assert all(r.status_code == 200 and "<Stream" in r.text for r in replays)
    assert sessions_after_replays == sessions_before == 26  # 25 pre-connects + the first call
    assert total_sessions == 27  # + the second call's pre-connected session, adopted
    assert summary.call_sid == second_sid and summary.model_connect_ms is not None
    assert (expired, claimed) == (25, 1)
    assert refused == 75 + 1 + 3  # over the bound (the flood, the first call), then replays
    assert turned_away == 0


# -- 2. call slots only for started streams ---------------------------------------------------


async def test_streams_that_never_start_hold_no_call_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default configuration (no TWILIO_AUTH_TOKEN, MAX_CONCURRENT_CALLS 100: at most 25
    # streams pending, 8 per address). 500 sockets from one address that never send start,
    # then 200 more from 50 addresses (4 each). Addresses are given by the (trusted,
    # loopback) proxy's X-Forwarded-For, as uvicorn's proxy headers report them.
    env = {"STREAM_START_TIMEOUT_S": "2"}
    async with run_stack(monkeypatch, env) as stack, stack.client() as http:
        held: list[ClientConnection] = []
        connecting = asyncio.Semaphore(50)

        async def hostile(address: str) -> str:
            try:
                async with connecting:
                    ws = await connect(
                        stack.media_url, additional_headers={"X-Forwarded-For": address}
                    )
            except InvalidStatus as exc:
                return f"refused {exc.response.status_code}"
            held.append(ws)
            await ws.send(InboundBuilder("MZ" + "0" * 32, "CA" + "0" * 32).connected())
            return "accepted"

        began = time.monotonic()
        one_address = await asyncio.gather(*(hostile("203.0.113.7") for _ in range(500)))
        spread = await asyncio.gather(*(hostile(f"198.51.100.{n % 50 + 1}") for n in range(200)))
        flooded_in = time.monotonic() - began
        pending_at_most = stack.service.pending

        async def all_closed() -> tuple[list[int | None], float]:
            codes = await asyncio.gather(*(closed_with(ws) for ws in held))
            return codes, time.monotonic() - began

        closing = asyncio.create_task(all_closed())
        ready = await http.get("/readyz")
        result = await stack.call(silence(2.5), linger_s=0.3)
        codes, closed_after = await closing
        refused = await metric(stack, "voice_agent_streams_refused_total", reason="client_limit")
        evicted = await metric(stack, "voice_agent_streams_refused_total", reason="evicted")
        for ws in held:
            await ws.close()
    assert one_address.count("accepted") == 8  # MAX_PENDING_STREAMS_PER_CLIENT
    assert one_address.count("refused 403") == 492 and refused == 492
    assert spread.count("accepted") == 200  # under the per-address limit, but over 25
    assert pending_at_most <= 25  # the longest-waiting made room for each newer one
    assert ready.status_code == 200 and ready.json()["active_calls"] == 0
    assert answered(result) and result.ended_by == "caller"
    # Every hostile socket was closed by the server: made room for a newer one (1013; the
    # real caller's too), or no start within STREAM_START_TIMEOUT_S (1008).
    assert sorted(set(codes)) <= [1008, 1013] and len(codes) == 208
    assert codes.count(1013) == evicted and evicted >= 208 + 1 - 25 - codes.count(1008)
    assert closed_after < flooded_in + 2 + 1.5  # STREAM_START_TIMEOUT_S, plus slack


async def test_a_stream_that_starts_when_every_slot_is_taken_hears_the_busy_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    late = "CA" + "b" * 32
    async with run_stack(monkeypatch, {"MAX_CONCURRENT_CALLS": "1"}) as stack:
        # Connected while the server was empty: not a call yet, so it holds no slot.
        async with connect(stack.media_url) as ws, stack.client() as http:
            await ws.send(InboundBuilder("MZ" + "b" * 32, late).connected())
            first = asyncio.create_task(stack.call(silence(2.5), linger_s=0.3))
            async with asyncio.timeout(5):
                while stack.service.streams == 0:  # noqa: ASYNC110 - test polling
                    await asyncio.sleep(0.01)
            await ws.send(InboundBuilder("MZ" + "b" * 32, late).start())
            code = await closed_with(ws)
            after = await http.post("/twilio/after", data={"CallSid": late})
            result = await first
    assert code == 1013
    assert [el.tag for el in ET.fromstring(after.text)] == ["Say", "Hangup"]
    assert "busy" in after.text
    assert answered(result) and result.ended_by == "caller"


# -- the startup refusal ----------------------------------------------------------------------


def _serve_env(**extra: str) -> dict[str, str]:
    """The environment of a ``voice-agent serve`` run in a temporary directory: this tree's
    code, none of the developer's settings."""
    clean = {k: v for k, v in os.environ.items() if k not in HERMETIC_VARIABLES}
    path = os.pathsep.join(p for p in (str(ROOT), clean.get("PYTHONPATH", "")) if p)
    return {**clean, "PYTHONPATH": path, "DATABASE_URL": "off", "LOG_FORMAT": "json", **extra}


def test_a_real_model_without_signatures_refuses_to_start(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "telephony.cli", "serve", "--host", "127.0.0.1"]
    refused = subprocess.run(
        [*command, "--port", "0"],
        env=_serve_env(GEMINI_API_KEY="key"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("voice-agent: TWILIO_AUTH_TOKEN is not set")
    assert "ALLOW_UNSIGNED=true" in line
    # Told explicitly, it starts (and says so loudly); the model is never reached here.
    port = free_port()
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        env=_serve_env(
            GEMINI_API_KEY="key",
            ALLOW_UNSIGNED="true",
            GOOGLE_GEMINI_BASE_URL="https://127.0.0.1:9",
        ),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{port}", timeout_s=30))
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "TWILIO_AUTH_TOKEN is not set: requests are NOT checked" in stderr


# -- 3. slow clients, at the socket -----------------------------------------------------------


@asynccontextmanager
async def serve_with_few_files(
    tmp_path: Path, open_files: int, **env: str
) -> AsyncIterator[tuple[int, int]]:
    """``voice-agent serve`` (embedded simulator) with RLIMIT_NOFILE at ``open_files``:
    (its pid, its port)."""
    port = free_port()

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    command = [sys.executable, "-m", "telephony.cli", "serve", "--host", "127.0.0.1"]
    with (tmp_path / "serve.log").open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *command,
            "--port",
            str(port),
            env=_serve_env(LIVE_SIMULATOR="on", LIVE_SIMULATOR_DIALOGUE="echo", **env),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            preexec_fn=limit_files,
        )
        try:
            await wait_ready(f"http://127.0.0.1:{port}")
            yield proc.pid, port
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


#: The finding: this many slowloris connections at this open-file limit starved /healthz and
#: calls (uvicorn on its own; MAX_CONCURRENT_CALLS at its default, 100).
SLOW_CONNECTIONS = 1100
OPEN_FILES = 1024


async def test_slow_clients_are_closed_and_never_lock_out_calls(tmp_path: Path) -> None:
    """The finding's 1,100 slowloris connections at an open-file limit of 1024, with 2 s
    deadlines (10 s by default) and a byte every 0.5 s (5 s in the finding)."""
    env = {"HTTP_HEADER_TIMEOUT_S": "2", "HTTP_BODY_TIMEOUT_S": "2"}
    async with serve_with_few_files(tmp_path, OPEN_FILES, **env) as (pid, port):
        base = f"http://127.0.0.1:{port}"
        baseline = open_fds(pid)

        async def slowloris(request: bytes) -> float:
            """Send ``request`` one byte every 0.5 s; seconds until the server closed."""
            return await trickle(port, b"", request)

        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\n" + b"X: y\r\n" * 50
        body = b"x" * 200
        slow_body = (
            b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"
        )
        headers_tasks = [asyncio.create_task(slowloris(head)) for _ in range(SLOW_CONNECTIONS)]
        await asyncio.sleep(0.5)
        peak = open_fds(pid)
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            # A body sent slowly, after complete headers: the body deadline.
            body_task = asyncio.create_task(trickle(port, slow_body, body))
            health = [(await http.get("/healthz")).status_code for _ in range(5)]
            # A real call through it all, longer than either deadline: its WebSocket is
            # never closed by them, nor evicted for the connection cap.
            call = await place_call(
                f"ws://127.0.0.1:{port}/twilio/media", silence(3.0), linger_s=0.3
            )
            closed_in = await asyncio.gather(*headers_tasks)
            body_closed_in = await body_task
            settled = open_fds(pid)
            metrics = (await http.get("/metrics")).text
    assert health == [200] * 5
    assert answered(call) and call.ended_by == "caller" and call.duration_s > 3.0
    # Every slow connection was closed by the server: the oldest evicted for newer ones at
    # the connection cap, the rest at the header deadline (2 s, plus scheduling slack).
    assert max(closed_in) < 3.5, sorted(closed_in)[-5:]
    assert 1.5 < body_closed_in < 3.5
    # The cap (2 x 100 calls + 25 pending streams + 64) held the process under its limit.
    cap = Settings.from_env({}).connections_limit
    assert peak - baseline <= cap + 5 < OPEN_FILES - 64
    assert settled <= baseline + 5
    assert 'voice_agent_connections_closed_total{reason="header_timeout"}' in metrics
    closed = {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "voice_agent_connections_closed_total"
    }
    assert closed["evicted"] > 0 and closed["header_timeout"] > 0 and closed["body_timeout"] >= 1
    assert closed["evicted"] + closed["header_timeout"] + closed["refused"] >= SLOW_CONNECTIONS


async def trickle(port: int, head: bytes, rest: bytes) -> float:
    """Send ``head``, then ``rest`` one byte every 0.5 s, until the server closes the
    connection (after its 408/503, if any); how long that took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    writer.write(head)
    try:
        for byte in rest:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                async with asyncio.timeout(0.5):
                    data = await reader.read(1024)
            except TimeoutError:
                continue
            if data:  # the server's answer: it closes right after
                async with asyncio.timeout(2):
                    await reader.read()
            break
        else:
            raise AssertionError("the server let the whole request trickle in")
    except OSError:
        pass  # reset by the server
    finally:
        writer.close()
    return time.monotonic() - began


async def test_an_oversized_body_is_refused_and_its_connection_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with run_stack(monkeypatch) as stack:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        writer.write(
            b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: 4000000\r\n\r\n"
        )
        response = b""
        try:
            for _ in range(40):  # 1.25 MiB: over the 1 MiB cap
                writer.write(b"a" * 32768)
                await writer.drain()
            async with asyncio.timeout(5):
                response = await reader.read()
        except OSError:
            pass  # reset: the server closed with our unread bytes in its buffer
        # (had it kept the connection, read() would have timed out: TimeoutError)
        finally:
            writer.close()
        closed = await metric(
            stack, "voice_agent_connections_closed_total", reason="body_too_large"
        )
    # The 413 is sent; whether it is read before the reset depends on the timing.
    assert response == b"" or response.startswith(b"HTTP/1.1 413")
    assert closed == 1


# -- 4. signatures over the URL Twilio called -------------------------------------------------


async def test_signatures_cover_the_query_string_twilio_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    form = {"CallSid": "CA" + "4" * 32, "From": "+14155550100", "To": "+14155550111"}
    configured = PUBLIC + "/twilio/voice?tenant=1"  # as pasted into the Twilio console
    async with run_stack(monkeypatch, SIGNED) as stack, stack.client() as http:
        signature = sign(configured, form)
        ok = await http.post(
            "/twilio/voice?tenant=1", data=form, headers={"X-Twilio-Signature": signature}
        )
        other_query = await http.post(
            "/twilio/voice?tenant=2", data=form, headers={"X-Twilio-Signature": signature}
        )
        dropped_query = await http.post(
            "/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}
        )
        tampered_form = await http.post(
            "/twilio/voice?tenant=1",
            data={**form, "From": "+19995550100"},
            headers={"X-Twilio-Signature": signature},
        )
        status_url = PUBLIC + "/twilio/status?tenant=1&attempt=2"
        status = await http.post(
            "/twilio/status?tenant=1&attempt=2",
            data={"CallSid": form["CallSid"], "CallStatus": "busy"},
            headers={
                "X-Twilio-Signature": sign(
                    status_url, {"CallSid": form["CallSid"], "CallStatus": "busy"}
                )
            },
        )
        after = await http.post(
            "/twilio/after?tenant=1",
            data={"CallSid": form["CallSid"]},
            headers={
                "X-Twilio-Signature": sign(
                    PUBLIC + "/twilio/after?tenant=1", {"CallSid": form["CallSid"]}
                )
            },
        )
        # The stream upgrade: over the wss:// URL exactly as opened.
        with pytest.raises(InvalidStatus):
            await connect(
                stack.media_url + "?x=1",
                additional_headers={"X-Twilio-Signature": sign(STREAM_URL)},
            )
        stream = await place_call(
            stack.media_url + "?x=1",
            silence(1.0),
            auth_token=TOKEN,
            signature_url=STREAM_URL + "?x=1",
            linger_s=0.3,
        )
    assert ok.status_code == 200 and "<Stream" in ok.text
    assert other_query.status_code == 403
    assert dropped_query.status_code == 403
    assert tampered_form.status_code == 403
    assert status.status_code == 204
    assert after.status_code == 200
    assert answered(stream)


# -- 5. no docs, and /metrics guarded ---------------------------------------------------------


async def test_no_docs_and_metrics_behind_a_token_on_their_own_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics_token = "m" * 32
    env = {"METRICS_TOKEN": metrics_token, "METRICS_PORT": "0", "HTTP_HEADER_TIMEOUT_S": "1"}
    async with run_stack(monkeypatch, env) as stack, stack.client() as http:
        docs = [(await http.get(path)).status_code for path in ("/openapi.json", "/docs", "/redoc")]
        on_call_port = await http.get(
            "/metrics", headers={"Authorization": f"Bearer {metrics_token}"}
        )
        assert stack.service.metrics_port is not None
        metrics_base = f"http://127.0.0.1:{stack.service.metrics_port}"
        async with httpx.AsyncClient(base_url=metrics_base, timeout=5) as scrape:
            anonymous = await scrape.get("/metrics")
            wrong = await scrape.get("/metrics", headers={"Authorization": "Bearer nope"})
            ok = await scrape.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
            elsewhere = await scrape.get(
                "/healthz", headers={"Authorization": f"Bearer {metrics_token}"}
            )
        # A silent client on the metrics port is dropped at the header deadline too.
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.service.metrics_port)
        began = time.monotonic()
        async with asyncio.timeout(5):
            eof = await reader.read()
        silent_for = time.monotonic() - began
        writer.close()
    monkeypatch.delenv("METRICS_PORT")
    async with run_stack(monkeypatch, {"METRICS_TOKEN": metrics_token}) as stack:
        async with stack.client() as http:
            same_port_anonymous = await http.get("/metrics")
            same_port_ok = await http.get(
                "/metrics", headers={"Authorization": f"Bearer {metrics_token}"}
            )
    assert docs == [404, 404, 404]
    assert on_call_port.status_code == 404
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert ok.status_code == 200 and "voice_agent_preconnects_total" in ok.text
    assert elsewhere.status_code == 404
    assert eof == b"" and 0.5 < silent_for < 3
    assert same_port_anonymous.status_code == 401
    assert same_port_ok.status_code == 200 and "voice_agent_active_calls" in same_port_ok.text
