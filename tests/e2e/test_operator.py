"""End to end: call records in the database, the operator API and CLI, outbound calls.

The real server (uvicorn) and the real google-genai SDK against the Live API simulator, as in
the other end-to-end tests; Twilio's REST API is the local stand-in (``twilio_standin``),
reached by the real twilio SDK through ``TWILIO_API_BASE_URL``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from agent.prompts import greeting_prompt, outbound_greeting_prompt
from support import Stack, run_stack, silence, speech
from support.twilio_standin import ACCOUNT_SID, AUTH_TOKEN, twilio_standin
from telephony.caller import BargeIn, place_call
from telephony.ops.store import CallStore
from telephony.twilio.signature import sign

API_TOKEN = "operator-token-0123456789"
PUBLIC = "https://agent.example.com"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def database(tmp_path: Path) -> CallStore:
    return CallStore(f"sqlite:///{tmp_path / 'calls.db'}", create=False)


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling what another task writes
            await asyncio.sleep(0.02)


async def test_every_call_leaves_a_record_readable_through_the_api(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    interjection = speech("sorry, hold on a second")
    async with run_stack(monkeypatch, {"API_TOKEN": API_TOKEN}) as stack:
        result = await stack.call(
            b"",
            barge_in=BargeIn(interjection, after_s=1.0),
            linger_s=2.0,
            custom_parameters={"from": "+14155550100", "to": "+14155550199"},
            dtmf=[(0.5, "7")],
        )
        summary = await stack.summary()
        await until(lambda: stack.service.records is not None and not stack.service.records.pending)
        async with stack.client() as http:
            no_token = await http.get("/calls")
            wrong = await http.get("/calls", headers={"Authorization": "Bearer nope"})
            listing = await http.get("/calls", headers=AUTH)
            one = await http.get(f"/calls/{result.call_sid}", headers=AUTH)
            missing = await http.get("/calls/CAnothere", headers=AUTH)
            bad_filter = await http.get("/calls?outcome=exploded", headers=AUTH)
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert missing.status_code == 404
    assert bad_filter.status_code == 422
    assert listing.status_code == 200
    [entry] = listing.json()["calls"]
    assert entry["call_sid"] == result.call_sid
    assert entry["outcome"] == "completed"
    assert entry["caller"] == "+14155550100" and entry["callee"] == "+14155550199"
    assert "transcript" not in entry
    record = one.json()
    assert record["started"].endswith("+00:00") and record["duration_s"] > 2
    assert record["detail"]["dtmf"] == ["7"]
    assert record["interruptions"] == 1
    # The interrupted greeting is stored cut to what the caller heard, and flagged.
    agent_turns = [t for t in record["transcript"] if t["role"] == "agent"]
    cut = agent_turns[0]
    assert cut["interrupted"] is True
    assert cut["generated"].startswith("Hello! Thanks for calling.")
    assert cut["text"] == summary.interruptions[0].transcript_heard
    assert 0 < len(cut["text"]) < len(cut["generated"])
    # The interjection was answered (the simulator echoes it), with a measured latency.
    assert any(t["role"] == "caller" for t in record["transcript"])
    answered = [t for t in agent_turns if "response_ms" in t]
    assert answered and 0 < answered[0]["response_ms"] < 3000
    assert record["detail"]["latency"]["greeting_ms"] == summary.first_audio_ms
    assert record["tokens_total"] == summary.tokens["total"] > 0
    # The same record is in the database file (what `voice-agent calls` reads).
    stored = database(tmp_path).get(result.call_sid)
    assert stored is not None and stored["transcript"] == record["transcript"]


async def test_without_api_token_the_api_is_disabled_not_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with run_stack(monkeypatch) as stack:
        async with stack.client() as http:
            listing = await http.get("/calls", headers=AUTH)
            dial = await http.post("/calls", json={"to": "+14155550100"}, headers=AUTH)
            page = await http.get("/ui")
    assert listing.status_code == 503 and "API_TOKEN" in listing.json()["detail"]
    assert dial.status_code == 503
    # The page holds no data; it is served, with a strict content security policy.
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "'sha256-" in csp


async def test_redaction_masks_numbers_in_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {"API_TOKEN": API_TOKEN, "REDACT_PHONE_NUMBERS": "true"}
    async with run_stack(monkeypatch, env) as stack:
        result = await stack.call(
            silence(1.0), custom_parameters={"from": "+14155550100", "to": "+14155550199"}
        )
        await stack.summary()
        await until(lambda: stack.service.records is not None and not stack.service.records.pending)
    stored = database(tmp_path).get(result.call_sid)
    assert stored is not None
    assert (stored["caller"], stored["callee"]) == ("+*******0100", "+*******0199")
    # Nowhere else in the record either (not "555" alone: a random id or time may hold it).
    assert "4155550" not in repr(stored) and "5550100" not in repr(stored)


async def test_a_call_in_progress_has_a_record_before_it_ends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with run_stack(monkeypatch) as stack:
        call = asyncio.create_task(stack.call(silence(3.0), linger_s=0.5))
        store = database(tmp_path)
        await until(lambda: store.count() == 1)
        [row] = store.list()
        assert row["outcome"] == "in_progress" and row["ended_at"] is None
        result = await call
        await stack.summary()
        await until(lambda: store.get(result.call_sid)["outcome"] == "completed")  # type: ignore[index]


# -- outbound ----------------------------------------------------------------------------


def outbound_env(standin_url: str, **extra: str) -> dict[str, str]:
    return {
        "API_TOKEN": API_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PUBLIC_URL": PUBLIC,
        "TWILIO_API_BASE_URL": standin_url,
        "OUTBOUND_CALLER_ID": "+14155550100",
        **extra,
    }


async def answer_as_twilio(stack: Stack, call_sid: str, to: str, audio: bytes) -> Any:
    """What Twilio does once the callee picks up: fetch the TwiML, open the stream."""
    form = {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": "+14155550100",
        "To": to,
        "Direction": "outbound-api",
        "CallStatus": "in-progress",
    }
    signature = sign(AUTH_TOKEN, PUBLIC + "/twilio/voice", form)
    async with stack.client() as http:
        twiml = await http.post(
            "/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}
        )
    assert twiml.status_code == 200, twiml.text
    stream = ET.fromstring(twiml.text).find("./Connect/Stream")
    assert stream is not None
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    assert params["direction"] == "outbound-api"
    return await place_call(
        stack.media_url,
        audio,
        auth_token=AUTH_TOKEN,
        signature_url=PUBLIC.replace("https://", "wss://") + "/twilio/media",
        call_sid=call_sid,
        custom_parameters=params,
        linger_s=3.0,
        max_duration_s=30.0,
    )


async def test_outbound_call_agent_speaks_only_after_the_callee_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hello = speech("hello, who is this?")
    callee_audio = silence(1.0) + hello + silence(4.0)
    async with twilio_standin() as standin:
        async with run_stack(monkeypatch, outbound_env(standin.base_url)) as stack:
            async with stack.client() as http:
                unauthorized = await http.post("/calls", json={"to": "+14155550111"})
                bad_number = await http.post("/calls", json={"to": "555-0111"}, headers=AUTH)
                placed = await http.post("/calls", json={"to": "+14155550111"}, headers=AUTH)
            assert placed.status_code == 201, placed.text
            body = placed.json()
            [created] = standin.created
            result = await answer_as_twilio(stack, body["call_sid"], "+14155550111", callee_audio)
            summary = await stack.summary()
            sim = stack.sim.sessions[0]
            await until(lambda: not stack.service.records.pending)  # type: ignore[union-attr]
    assert unauthorized.status_code == 401 and bad_number.status_code == 422
    assert standin.unauthorized == 0
    assert body == {
        "call_sid": created["Sid"],
        "status": "queued",
        "to": "+14155550111",
        "from": "+14155550100",
    }
    # What the service asked Twilio for: call the number, fetch our TwiML when answered, and
    # report how it ended.
    assert created["To"] == "+14155550111" and created["From"] == "+14155550100"
    assert created["Url"] == PUBLIC + "/twilio/voice" and created["Method"] == "POST"
    assert created["StatusCallback"] == PUBLIC + "/twilio/status"
    # The agent said nothing until the callee had answered and finished their first words.
    hello_end_s = 1.0 + len(hello) / 8000
    assert result.played, "the agent spoke"
    assert result.played[0].start >= hello_end_s
    assert result.played[0].start < hello_end_s + 3.0
    # It was cued with the outbound greeting, never the inbound one.
    assert outbound_greeting_prompt(stack.service.settings.outbound_greeting) in sim.texts
    assert greeting_prompt(stack.service.settings.persona.greeting or "") not in sim.texts
    assert summary.direction == "outbound"
    stored = database(tmp_path).get(body["call_sid"])
    assert stored is not None
    assert stored["direction"] == "outbound" and stored["outcome"] == "completed"
    assert stored["transcript"][0]["role"] == "agent"
    assert stored["transcript"][0]["text"] == stack.service.settings.outbound_greeting


async def test_a_silent_callee_is_greeted_after_the_answer_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"OUTBOUND_ANSWER_TIMEOUT_S": "1.5"}
    async with twilio_standin() as standin:
        async with run_stack(monkeypatch, outbound_env(standin.base_url, **env)) as stack:
            async with stack.client() as http:
                placed = await http.post("/calls", json={"to": "+14155550111"}, headers=AUTH)
            result = await answer_as_twilio(
                stack, placed.json()["call_sid"], "+14155550111", silence(5.0)
            )
    assert result.played
    assert 1.5 <= result.played[0].start < 4.0


async def test_unanswered_and_refused_outbound_calls_are_recorded_and_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with twilio_standin() as standin:
        async with run_stack(monkeypatch, outbound_env(standin.base_url)) as stack:
            async with stack.client() as http:
                placed = await http.post("/calls", json={"to": "+14155550111"}, headers=AUTH)
                sid = placed.json()["call_sid"]
                form = {"CallSid": sid, "CallStatus": "no-answer", "AccountSid": ACCOUNT_SID}
                unsigned = await http.post("/twilio/status", data=form)
                status = await http.post(
                    "/twilio/status",
                    data=form,
                    headers={
                        "X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC + "/twilio/status", form)
                    },
                )
                record = await http.get(f"/calls/{sid}", headers=AUTH)
                standin.refuse_with = (400, 21211, "Invalid 'To' Phone Number")
                refused = await http.post("/calls", json={"to": "+14155550112"}, headers=AUTH)
                metrics = (await http.get("/metrics")).text
    assert unsigned.status_code == 403
    assert status.status_code == 204
    assert record.json()["outcome"] == "no-answer"
    assert record.json()["direction"] == "outbound"
    assert refused.status_code == 502 and "Invalid 'To' Phone Number" in refused.json()["detail"]
    assert 'voice_agent_outbound_calls_total{result="placed"} 1.0' in metrics
    assert 'voice_agent_outbound_calls_total{result="failed"} 1.0' in metrics


async def test_dial_and_calls_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async def cli(*args: str) -> tuple[int, str, str]:
        env = {**os.environ, "API_TOKEN": API_TOKEN}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "telephony.cli",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async with twilio_standin() as standin:
        async with run_stack(monkeypatch, outbound_env(standin.base_url)) as stack:
            code, out, err = await cli("dial", "+14155550111", "--server", stack.http_url)
            assert code == 0, err
            [created] = standin.created
            assert out.startswith(created["Sid"] + " queued: calling +14155550111")
            code, _, err = await cli("dial", "not-a-number", "--server", stack.http_url)
            assert code == 1 and "E.164" in err
            result = await answer_as_twilio(
                stack, created["Sid"], "+14155550111", silence(0.5) + speech("hello") + silence(3)
            )
            await stack.summary()
            await until(lambda: not stack.service.records.pending)  # type: ignore[union-attr]
            code, api_list, err = await cli("calls", "list", "--api", stack.http_url)
            assert code == 0, err
    assert result.played
    # Straight from the database (DATABASE_URL), as an operator would after the fact.
    code, listing, err = await cli("calls", "list")
    assert code == 0, err
    assert created["Sid"] in listing and "outbound" not in listing  # DIR column is "out"
    assert " out " in listing and "completed" in listing
    assert created["Sid"] in api_list
    code, shown, err = await cli("calls", "show", created["Sid"])
    assert code == 0, err
    assert "outcome   completed" in shown
    assert "Agent : Hello! This is an automated assistant calling." in shown
    code, _, err = await cli("calls", "show", "CAmissing")
    assert code == 1 and "no call CAmissing" in err
    code, as_json, _ = await cli("calls", "show", created["Sid"], "--json")
    assert code == 0 and '"direction": "outbound"' in as_json
    code, pruned, _ = await cli("calls", "prune", "--older-than-days", "30")
    assert code == 0 and pruned.strip() == "deleted 0 call records older than 30 days"
    assert database(tmp_path).get(created["Sid"]) is not None
