"""search_knowledge's answer: always a dict the model can act on, within the deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.config import KnowledgeSettings
from agent.knowledge.search import KnowledgeBase, SearchResult
from agent.knowledge.tool import DECLARATION, MAX_QUERY_CHARS, SEARCH_KNOWLEDGE, KnowledgeTool
from support.knowledge import FAQ, CountingEmbedder


class _Base:
    """A knowledge base that is slow, broken, or records the query."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.timeout_s = 0.05
        self.queries: list[str] = []

    async def search(self, question: str) -> SearchResult:
        self.queries.append(question)
        if self.behaviour == "slow":
            async with asyncio.timeout(self.timeout_s):
                await asyncio.sleep(10)
        if self.behaviour == "broken":
            raise RuntimeError("database disk image is malformed")
        return SearchResult([], "lexical")


def tool(behaviour: str) -> tuple[KnowledgeTool, _Base]:
    base = _Base(behaviour)
    return KnowledgeTool(base), base  # type: ignore[arg-type]


def test_the_declaration_asks_for_a_query() -> None:
    assert DECLARATION.name == SEARCH_KNOWLEDGE == "search_knowledge"
    assert DECLARATION.parameters is not None
    assert DECLARATION.parameters.required == ["query"]


async def test_bad_arguments_get_an_error_answer() -> None:
    t, base = tool("ok")
    for args in ({}, {"query": ""}, {"query": 42}, {"query": "   "}):
        response: dict[str, Any] = await t.answer(args)
        assert response["result"] == "error" and "query" in response["error"]
    assert base.queries == []
    await t.answer({"query": "x " * 1000})
    assert len(base.queries[0]) <= MAX_QUERY_CHARS


async def test_a_slow_or_broken_search_is_an_error_answer_never_an_exception() -> None:
    slow, _ = tool("slow")
    response = await slow.answer({"query": "parking"})
    assert response["result"] == "error" and "longer than" in response["error"]
    broken, _ = tool("broken")
    response = await broken.answer({"query": "parking"})
    assert response == {
        "result": "error",
        "error": "the search failed",
        "note": response["note"],
    }
    empty, _ = tool("ok")
    assert (await empty.answer({"query": "parking"}))["result"] == "no_results"


async def test_a_real_search_answers_with_passages_and_sources(tmp_path: Path) -> None:
    (tmp_path / "faq.md").write_text(FAQ)
    settings = KnowledgeSettings(paths=(tmp_path / "faq.md",), index=tmp_path / "i.db")
    base, _ = await KnowledgeBase.open(settings, CountingEmbedder())  # type: ignore[arg-type]
    try:
        response = await KnowledgeTool(base).answer({"query": "When are you open on Saturday?"})
    finally:
        base.close()
    assert response["result"] == "ok"
    first = response["passages"][0]
    assert first["source"] == "faq.md" and first["section"].endswith("Opening hours")
    assert "Saturday from 9am to 1pm" in first["text"]
