"""Many instances for real: two ``voice-agent serve`` processes behind HAProxy (Debian's),
sharing one PostgreSQL (Debian's), called the way Twilio calls: the webhook through the load
balancer, then the stream at the URL its TwiML names.

With ``STREAM_ROUTING=instance`` the TwiML names the instance that answered the webhook
(``/twilio/media/<INSTANCE_ID>``) and HAProxy routes the stream there, so the model session
pre-connected at the webhook is claimed, never wasted. One instance is then drained (SIGTERM)
with a call up: its call finishes, the load balancer stops sending it calls (``/readyz``), and
the other instance takes every new call.
"""

from __future__ import annotations

import asyncio
import re
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from support import speech
from support.serve import Served, serve_subprocess
from support.services import haproxy, haproxy_config, postgres
from telephony.caller import CallResult, place_call
from telephony.loadtest.target import Target, dial
from telephony.server.runner import free_port

pytestmark = pytest.mark.asyncio

ACCOUNT_SID = "AC" + "0" * 32
NAMES = ("alpha", "beta")


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^voice_agent_{name}(?:_total)?{re.escape(labels)} (\S+)$"
    values = [float(m) for m in re.findall(pattern, text, re.M)]
    return sum(values)


async def metrics(server: Served) -> str:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        return (await http.get("/metrics")).text


async def call_through(
    http: httpx.AsyncClient, target: Target, n: int, *, say: bytes, linger_s: float = 1.0
) -> CallResult:
    call_sid = f"CA{n:032x}"
    plan = await dial(http, target, call_sid, ACCOUNT_SID)
    return await place_call(
        plan.connect_url,
        say,
        call_sid=call_sid,
        account_sid=ACCOUNT_SID,
        custom_parameters=plan.custom_parameters,
        linger_s=linger_s,
        max_duration_s=30.0,
    )


async def test_calls_spread_over_two_instances_share_postgres_and_survive_a_drain(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as resources:
        url = resources.enter_context(postgres(tmp_path / "postgres"))
        lb_port = free_port()
        public = f"http://127.0.0.1:{lb_port}"
        servers: dict[str, Served] = {}
        for name in NAMES:
            env = {
                "DATABASE_URL": url,
                "INSTANCE_ID": name,
                "STREAM_ROUTING": "instance",
                "PUBLIC_URL": public,
                "RECORDS_SPOOL_DIR": str(tmp_path / f"{name}-spool"),
                "AGENT_GREETING": "Hello!",
            }
            servers[name] = await resources.enter_async_context(
                serve_subprocess(tmp_path, drain_timeout_s=20.0, env=env, name=name)
            )
        config = haproxy_config(lb_port, {n: s.port for n, s in servers.items()})
        resources.enter_context(haproxy(tmp_path, config, lb_port))
        target = Target(webhook_url=f"{public}/twilio/voice", public_url=public)
        http = await resources.enter_async_context(httpx.AsyncClient())
        await asyncio.sleep(1.0)  # both pass HAProxy's health check (rise 2, 300 ms apart)

        # Six calls at once, through the load balancer.
        hello = speech("hello, I would like to book a table")
        first = await asyncio.gather(*(call_through(http, target, n, say=hello) for n in range(6)))
        assert all(r.ended_by == "caller" and r.time_to_first_audio_s for r in first)

        # Pre-connects were claimed by their streams on the instance that made them.
        before = {n: await metrics(s) for n, s in servers.items()}
        claimed = {n: metric(t, "preconnects", '{result="claimed"}') for n, t in before.items()}
        assert sum(claimed.values()) == 6
        assert all(claimed[n] >= 1 for n in NAMES), claimed  # round robin: both served
        for text in before.values():
            assert metric(text, "preconnects", '{result="expired"}') == 0
            assert metric(text, "streams_misrouted") == 0

        # A long call lands on alpha; alpha is told to stop while it is up.
        long_call: asyncio.Task[CallResult] | None = None
        n = 100
        while long_call is None:
            n += 1
            call_sid = f"CA{n:032x}"
            plan = await dial(http, target, call_sid, ACCOUNT_SID)
            if not plan.connect_url.endswith("/alpha"):
                # Beta answered this webhook: take the call briefly and try again.
                await place_call(
                    plan.connect_url,
                    b"",
                    call_sid=call_sid,
                    account_sid=ACCOUNT_SID,
                    custom_parameters=plan.custom_parameters,
                    linger_s=0.5,
                )
                continue
            long_call = asyncio.create_task(
                place_call(
                    plan.connect_url,
                    hello + speech("and one more thing about the reservation"),
                    call_sid=call_sid,
                    account_sid=ACCOUNT_SID,
                    custom_parameters=plan.custom_parameters,
                    linger_s=2.0,
                    max_duration_s=30.0,
                )
            )
        long_sid = f"CA{n:032x}"
        await asyncio.sleep(1.5)
        alpha = servers["alpha"]
        alpha.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)  # HAProxy sees /readyz 503 (inter 300 ms, fall 1)

        # Meanwhile every new call goes to beta, and is served.
        during = await asyncio.gather(
            *(call_through(http, target, 200 + i, say=hello) for i in range(3))
        )
        assert all(r.ended_by == "caller" and r.time_to_first_audio_s for r in during)
        kept = await long_call
        assert kept.ended_by == "caller"  # the drained instance finished its call
        async with asyncio.timeout(30):
            assert await alpha.proc.wait() == 0

        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT call_sid, instance_id, outcome FROM calls")
                ).all()
        finally:
            engine.dispose()
    by_sid = {sid: (instance, outcome) for sid, instance, outcome in rows}
    expected = {f"CA{i:032x}" for i in (*range(6), *range(200, 203))} | {long_sid}
    assert expected <= set(by_sid)  # every call recorded in the shared database
    assert all(outcome == "completed" for _, outcome in by_sid.values()), by_sid
    assert by_sid[long_sid][0] == "alpha"
    assert {by_sid[f"CA{200 + i:032x}"][0] for i in range(3)} == {"beta"}
    assert {by_sid[f"CA{i:032x}"][0] for i in range(6)} == set(NAMES)
