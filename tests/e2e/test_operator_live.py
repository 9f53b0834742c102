"""End to end: the operator's live events, recordings, feedback and dashboard over the API,
and end-of-call reports (CALL_WEBHOOK_URL) delivered to a real receiver, across a restart.

The real server (uvicorn) and the real google-genai SDK against the Live API simulator;
the receiver is a real HTTP server on loopback (``support.webhook_receiver``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import Stack, run_stack, speech
from support.webhook_receiver import webhook_receiver
from telephony.ops import webhook

API_TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SECRET = "webhook-secret-0123456789"
PUBLIC = "https://agent.example.com"


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling what another task writes
            await asyncio.sleep(0.02)


async def read_events(http: httpx.AsyncClient, into: list[tuple[str, dict[str, Any]]]) -> None:
    async with http.stream("GET", "/calls/events", headers=AUTH, timeout=None) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                into.append((kind, json.loads(line[6:])))


async def one_call(stack: Stack) -> str:
    result = await stack.call(speech("I would like a table"), linger_s=1.0)
    await stack.summary()
    records = stack.service.records
    await until(lambda: records is not None and not records.pending)
    return result.call_sid


async def test_live_events_recordings_feedback_and_stats(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(webhook, "BACKOFF_S", 0.05)
    async with webhook_receiver(SECRET, fail_first=2) as receiver:
        env = {
            "API_TOKEN": API_TOKEN,
            "RECORD_CALLS": str(tmp_path / "rec"),
            "PUBLIC_URL": PUBLIC,
            "CALL_WEBHOOK_URL": receiver.url,
            "CALL_WEBHOOK_SECRET": SECRET,
        }
        async with run_stack(monkeypatch, env) as stack, stack.client() as http:
            events: list[tuple[str, dict[str, Any]]] = []
            reader = asyncio.create_task(read_events(http, events))
            await until(lambda: stack.service.events.clients == 1)
            sid = await one_call(stack)
            await until(lambda: [k for k, _ in events] == ["hello", "call.started", "call.ended"])
            # The report: retried through two 500s, then delivered once, signed each time.
            await receiver.wait(lambda: len(receiver.delivered()) == 1)
            metrics = (await http.get("/metrics")).text
            r = {
                "no_token": [
                    (await http.get(path)).status_code
                    for path in (
                        "/calls/events",
                        "/calls/stats",
                        f"/calls/{sid}/recording",
                    )
                ]
                + [(await http.post(f"/calls/{sid}/feedback", json={"rating": 5})).status_code],
                "wrong_token": (
                    await http.get("/calls/stats", headers={"Authorization": "Bearer nope"})
                ).status_code,
                "both": await http.get(f"/calls/{sid}/recording", headers=AUTH),
                "caller": await http.get(f"/calls/{sid}/recording?leg=caller", headers=AUTH),
                "range": await http.get(
                    f"/calls/{sid}/recording?leg=agent", headers={**AUTH, "Range": "bytes=0-43"}
                ),
                "bad_leg": await http.get(f"/calls/{sid}/recording?leg=events", headers=AUTH),
                "unknown": await http.get("/calls/CAnothere/recording", headers=AUTH),
                "traversal": [
                    (await http.get(path, headers=AUTH)).status_code
                    for path in (
                        "/calls/..%2F..%2Fetc/recording",
                        "/calls/%2E%2E/recording",
                        "/calls/CA%00x/recording",
                    )
                ],
                "feedback_bad": [
                    (await http.post(f"/calls/{sid}/feedback", json=body, headers=AUTH)).status_code
                    for body in ({"rating": 7}, {"rating": 3, "comment": "x" * 2001}, {})
                ],
                "feedback_unknown": (
                    await http.post("/calls/CAnothere/feedback", json={"rating": 3}, headers=AUTH)
                ).status_code,
                "feedback": await http.post(
                    f"/calls/{sid}/feedback",
                    json={"rating": 2, "comment": "  greeting too slow  "},
                    headers=AUTH,
                ),
                "stats": await http.get("/calls/stats?hours=6", headers=AUTH),
            }
            record = (await http.get(f"/calls/{sid}", headers=AUTH)).json()
            reader.cancel()
            await asyncio.wait([reader])
    # Live events, from the call's own start and end.
    started, ended = events[1][1], events[2][1]
    assert started["call_sid"] == ended["call_sid"] == sid
    assert started["outcome"] == "in_progress" and started["direction"] == "inbound"
    assert ended["outcome"] == "completed" and ended["duration_s"] > 1
    # Every operator route needs the token.
    assert r["no_token"] == [401, 401, 401, 401] and r["wrong_token"] == 401
    # Recordings: both legs as stereo WAV, each leg, byte ranges; nothing else.
    both, caller = r["both"], r["caller"]
    assert both.status_code == 200 and both.headers["content-type"] == "audio/wav"
    assert both.content[:4] == b"RIFF" and both.content[22] == 2  # two channels
    assert caller.status_code == 200 and caller.content[22] == 1
    assert len(both.content) > len(caller.content)  # the longer leg, twice over
    assert r["range"].status_code == 206 and len(r["range"].content) == 44
    assert r["bad_leg"].status_code == 422
    assert r["unknown"].status_code == 404
    assert r["traversal"] == [404, 404, 404]
    # Feedback: validated, kept with the record.
    assert r["feedback_bad"] == [422, 422, 422]
    assert r["feedback_unknown"] == 404
    assert r["feedback"].status_code == 200
    assert record["feedback_rating"] == 2 and record["feedback_comment"] == "greeting too slow"
    assert record["detail"]["recording"] == sid
    # The dashboard's figures come from the records.
    stats = r["stats"].json()
    assert stats["calls"] == 1 and stats["total"]["outcomes"] == {"completed": 1}
    assert len(stats["buckets"]) == 6 and stats["total"]["greeting_ms"]["count"] == 1
    # The report: three attempts, one key, all signed; what the operator needs of the call.
    assert [q["status"] for q in receiver.requests] == [500, 500, 200]
    assert {q["headers"]["idempotency-key"] for q in receiver.requests} == {sid}
    assert all(q["signed"] for q in receiver.requests)
    [report] = receiver.delivered()
    assert report["call_sid"] == sid and report["outcome"] == "completed"
    assert report["url"] == f"{PUBLIC}/ui#call={sid}" and report["recorded"] is True
    assert report["transcript"] and report["timings"]["greeting_ms"] is not None
    assert "tokens" in report["usage"] and report["tool_calls"] == []
    assert "voice_agent_webhook_delivered_total 1.0" in metrics
    assert "voice_agent_webhook_failed_attempts_total 2.0" in metrics
    assert "voice_agent_webhook_queue_depth 0.0" in metrics


async def test_reports_queued_at_a_stop_are_delivered_after_the_restart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(webhook, "BACKOFF_S", 0.05)
    monkeypatch.setattr(webhook, "BACKOFF_MAX_S", 0.2)
    queue = tmp_path / "webhooks" / "web-1"
    async with webhook_receiver(SECRET) as receiver:
        receiver.failing = True
        env = {
            "API_TOKEN": API_TOKEN,
            "INSTANCE_ID": "web-1",
            "CALL_WEBHOOK_URL": receiver.url,
            "TOOLS_SIGNING_SECRET": SECRET,  # the default signing secret
        }
        async with run_stack(monkeypatch, env) as stack:
            first = await one_call(stack)
            second = await one_call(stack)
            sender = stack.service.webhook
            assert sender is not None
            await until(lambda: sender.depth == 2)  # queued once the call's socket is closed
            await receiver.wait(lambda: len(receiver.requests) >= 2)
        # Stopped with both reports undelivered: they are on disk.
        assert len(list(queue.glob("*.json"))) == 2
        receiver.failing = False
        async with run_stack(monkeypatch, env) as stack:
            await receiver.wait(lambda: len(receiver.delivered()) == 2)
            await until(
                lambda: stack.service.webhook is not None and not stack.service.webhook.depth
            )
    assert [d["call_sid"] for d in receiver.delivered()] == [first, second]  # in order
    assert all(q["signed"] for q in receiver.requests)
    assert list(queue.glob("*.json")) == []
