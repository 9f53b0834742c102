"""End to end: AGENT_KNOWLEDGE indexed at startup, the simulated model's search_knowledge call
answered by the real server with the right passage, over the real SDK; and the SDK's real
embedding path (KNOWLEDGE_EMBEDDINGS=gemini) against the simulator's embedding endpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from support import run_stack, silence
from support.knowledge import FAQ

PRICES = """<html><body><h1>Prices</h1>
<h2>Cleaning</h2><p>A routine cleaning costs $95 and takes about 45 minutes.</p>
<h2>Whitening</h2><p>In-office whitening is $350 per session.</p></body></html>"""


def knowledge_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.md").write_text(FAQ)
    (docs / "prices.html").write_text(PRICES)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7 cut short")
    return {
        "AGENT_KNOWLEDGE": str(docs),
        "KNOWLEDGE_INDEX": str(tmp_path / "index" / "knowledge.db"),
        "AGENT_GREETING": "",
        **extra,
    }


async def ask(stack: Any, *queries: str) -> list[dict[str, Any]]:
    """Place a call; the simulated model calls search_knowledge once per query; the answers."""
    call = asyncio.create_task(stack.call(silence(0.5), linger_s=3.0))
    session = await stack.sim.next_session()
    await session.wait_setup()
    assert "search_knowledge" in session.function_names
    answers = []
    for query in queries:
        fc_id = await session.send_tool_call("search_knowledge", {"query": query})
        answers.append((await session.wait_tool_response(fc_id))["response"])
    await call
    return answers


async def test_the_model_searches_the_knowledge_and_gets_the_passage_and_its_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = knowledge_env(tmp_path, KNOWLEDGE_EMBEDDINGS="local")
    async with run_stack(monkeypatch, env) as stack:
        # No word in common with the passage: found by meaning (the bundled embeddings).
        parking, price, nothing = await ask(
            stack,
            "Where can I leave my car?",
            "how much is a cleaning",
            "what is the capital of France",
        )
        summary = await stack.summary()
    assert parking["result"] == "ok"
    first = parking["passages"][0]
    assert first["source"] == "faq.md"
    assert first["section"] == "Bright Smile Dental > Visiting us > Parking"
    assert "behind the building" in first["text"]
    assert price["passages"][0]["source"] == "prices.html"
    assert "$95" in price["passages"][0]["text"]
    assert nothing["result"] == "no_results"
    assert sum(len(p["text"]) for p in parking["passages"]) <= 1500
    records = [t for t in summary.tool_calls if t["name"] == "search_knowledge"]
    assert [t["outcome"] for t in records] == ["ok", "ok", "no_results"]
    assert all(0 <= t["latency_ms"] < 2000 for t in records)
    assert records[0]["args"] == {"query": "Where can I leave my car?"}
    assert (tmp_path / "index" / "knowledge.db").exists()


async def test_gemini_embeddings_go_through_the_sdk_to_the_embedding_endpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GEMINI_API_KEY is set by run_stack: KNOWLEDGE_EMBEDDINGS=auto means gemini.
    env = knowledge_env(tmp_path)
    async with run_stack(monkeypatch, env) as stack:
        sim = stack.sim
        indexed = sim.embedded_texts
        assert indexed == 5  # 3 FAQ passages + 2 prices; the broken PDF was skipped
        assert all(
            path.endswith("/models/gemini-embedding-001:batchEmbedContents")
            for path, _ in sim.embed_requests
        )
        [found] = await ask(stack, "where do I park")
        assert sim.embed_requests[-1][1] == ["where do I park"]
        # The embedding service fails: the search goes on with keywords alone.
        sim.embedding_failures = 1
        [degraded] = await ask(stack, "parking behind the building")
        assert sim.embedding_failures == 0
    assert found["result"] == "ok"
    assert found["passages"][0]["section"].endswith("Parking")
    assert degraded["result"] == "ok"
    assert degraded["passages"][0]["section"].endswith("Parking")


async def test_a_restart_embeds_nothing_that_did_not_change(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = knowledge_env(tmp_path, KNOWLEDGE_EMBEDDINGS="gemini")
    async with run_stack(monkeypatch, env) as stack:
        assert stack.sim.embedded_texts == 5
    (tmp_path / "docs" / "hours.txt").write_text("We are closed on public holidays.")
    async with run_stack(monkeypatch, env) as stack:
        assert [texts for _, texts in stack.sim.embed_requests] == [
            ["We are closed on public holidays."]
        ]
