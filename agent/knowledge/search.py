"""Searching the knowledge base: keywords and meaning, fused; the answer bounded for a phone.

The pure parts (the FTS5 query from a question, reciprocal-rank fusion, the bounded answer)
are plain functions. ``KnowledgeBase`` joins the index and the embedder: the SQLite work runs
in a worker thread, the whole search has a deadline, and when the embedder fails or is slow
the search goes on with keywords alone (logged as ``knowledge.degraded``): a call never fails
because of it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agent.config import KnowledgeSettings
from agent.knowledge.embed import Embedder, EmbeddingFailed, Vectors
from agent.knowledge.index import NO_EMBEDDER, IndexReport, KnowledgeIndex, Passage, update
from agent.knowledge.sources import DEFAULT_LIMITS, Limits, scan
from agent.logs import fields
from agent.prompts import KNOWLEDGE_FOUND_NOTE, KNOWLEDGE_NONE_NOTE
from agent.stopwords import STOPWORDS

__all__ = [
    "MAX_ANSWER_CHARS",
    "KnowledgeBase",
    "SearchResult",
    "answer",
    "describe",
    "fts_query",
    "rrf",
    "terms",
]

log = logging.getLogger(__name__)

#: Passages in an answer: the model reads them before it speaks, so few and short.
RESULTS: Final = 3
#: The whole answer's passages, at most (~1 minute read aloud; a turn uses a fraction).
MAX_ANSWER_CHARS: Final = 1500
#: Candidates taken from each ranking before fusion.
CANDIDATES: Final = 20
#: Reciprocal-rank fusion's constant (Cormack, Clarke & Büttcher 2009): a document's score
#: is the sum over rankings of weight / (RRF_K + rank).
RRF_K: Final = 60
#: A passage shorter than this is not worth adding once the answer is nearly full.
MIN_PASSAGE_CHARS: Final = 120

Mode = Literal["hybrid", "lexical"]

_WORD = re.compile(r"\w+", re.UNICODE)


def terms(question: str) -> list[str]:
    """The words of a question worth looking for, in order, once each."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(question.lower().replace("'", "")):
        if word not in STOPWORDS and len(word) < 40:
            seen.setdefault(word, None)
    return list(seen)[:32]


def fts_query(words: Sequence[str]) -> str | None:
    """An FTS5 query matching any of the words (BM25 ranks the passages with more and rarer
    ones first); None when there is nothing to look for."""
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', "") + '"' for w in words)


def rrf(
    rankings: Sequence[Sequence[int]], weights: Sequence[float] | None = None, k: int = RRF_K
) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of rankings (ids, best first): (id, score), best first; ties go
    to the id ranked best in any one ranking."""
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for n, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[n]
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            best[item] = min(best.get(item, rank), rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a sentence end (or a word), marked with …"""
    if len(text) <= limit:
        return text
    cut = ""
    for sentence in _SENTENCE.split(text):
        candidate = f"{cut} {sentence}".strip()
        if len(candidate) + 1 > limit:
            break
        cut = candidate
    if not cut:
        cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def answer(passages: Sequence[Passage], max_chars: int = MAX_ANSWER_CHARS) -> dict[str, Any]:
    """The function response for the model: the passages with their sources, at most
    ``max_chars`` of text in all, or ``no_results``."""
    out: list[dict[str, str]] = []
    left = max_chars
    for p in passages:
        if left < MIN_PASSAGE_CHARS and out:
            break
        text = _shorten(p.text.strip(), left)
        left -= len(text)
        item = {"source": p.source, "text": text}
        if p.heading:
            item = {"source": p.source, "section": p.heading, "text": text}
        out.append(item)
    if not out:
        return {"result": "no_results", "note": KNOWLEDGE_NONE_NOTE}
    return {"result": "ok", "passages": out, "note": KNOWLEDGE_FOUND_NOTE}


@dataclass
class SearchResult:
    """One search: the passages (best first), how they were found, and how long it took."""

    passages: list[Passage]
    mode: Mode
    #: Why the vectors were not used ("" when they were, or when there are none).
    degraded: str = ""
    ms: float = 0.0
    lexical_hits: int = 0
    vector_hits: int = 0
    scores: list[float] = field(default_factory=list)

    def response(self, max_chars: int = MAX_ANSWER_CHARS) -> dict[str, Any]:
        return answer(self.passages, max_chars)


class KnowledgeBase:
    """The index and its embedder, searched with a deadline."""

    def __init__(
        self,
        index: KnowledgeIndex,
        embedder: Embedder | None,
        *,
        timeout_s: float = 2.0,
        results: int = RESULTS,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.timeout_s = timeout_s
        self.results = results
        #: (keyword, vector) weights of the fusion.
        self.weights = weights

    @classmethod
    async def open(
        cls,
        settings: KnowledgeSettings,
        embedder: Embedder | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        rebuild: bool = False,
        write: bool = True,
        warn: Callable[[str], None] | None = None,
    ) -> tuple[KnowledgeBase, IndexReport]:
        """Open the index (refusing another embedder's), bring it up to date with the files,
        and return it ready to search, with what the update did."""
        embedder_id = embedder.id if embedder is not None else NO_EMBEDDER
        dim = embedder.dim if embedder is not None else 0
        index = await asyncio.to_thread(
            KnowledgeIndex.open,
            settings.index,
            embedder_id,
            dim,
            write=write,
            rebuild=rebuild,
            wanted=f"KNOWLEDGE_EMBEDDINGS={settings.embeddings}",
        )
        try:
            found = await asyncio.to_thread(scan, settings.paths, limits)
            report = await update(index, found, embedder, limits, warn=warn)
        except BaseException:
            index.close()
            raise
        return cls(index, embedder, timeout_s=settings.search_timeout_s), report

    def close(self) -> None:
        self.index.close()

    async def search(self, question: str) -> SearchResult:
        """The best passages for ``question`` within the deadline (``TimeoutError`` past it)."""
        began = time.perf_counter()
        async with asyncio.timeout(self.timeout_s):
            embedder = self.embedder
            if embedder is None or embedder.in_process:
                result = await asyncio.to_thread(self.search_now, question, None, True)
            else:
                vector: Vectors | None = None
                why = ""
                try:
                    async with asyncio.timeout(self.timeout_s / 2):
                        vector = await embedder.query(question)
                except TimeoutError:
                    why = f"embedding the question took over {self.timeout_s / 2:g} s"
                except EmbeddingFailed as exc:
                    why = f"embedding failed: {exc}"
                result = await asyncio.to_thread(self.search_now, question, vector, False)
                if why:
                    result.degraded = why
        result.ms = (time.perf_counter() - began) * 1000
        if result.degraded:
            log.warning(
                "knowledge.degraded",
                extra=fields(reason=result.degraded, fallback="keyword search"),
            )
        return result

    def search_now(
        self, question: str, vector: Vectors | None = None, embed_here: bool = False
    ) -> SearchResult:
        """The search itself, synchronously (in a worker thread during calls; the CLI and the
        benchmark call it directly). ``embed_here``: embed with the in-process embedder."""
        degraded = ""
        embedder = self.embedder
        if embed_here and embedder is not None and vector is None:
            try:
                vector = embedder.query_now(question)
            except EmbeddingFailed as exc:
                degraded = f"embedding failed: {exc}"
        words = terms(question)
        query = fts_query(words)
        lexical = self.index.lexical(query, CANDIDATES) if query else []
        nearest: list[tuple[int, float]] = []
        if vector is not None and embedder is not None:
            floor = embedder.min_similarity
            nearest = [(i, s) for i, s in self.index.nearest(vector, CANDIDATES) if s >= floor]
        fused = rrf([[i for i, _ in lexical], [i for i, _ in nearest]], self.weights)
        top = fused[: self.results]
        found = self.index.passages(i for i, _ in top)
        return SearchResult(
            passages=[found[i] for i, _ in top if i in found],
            mode="hybrid" if vector is not None else "lexical",
            degraded=degraded,
            lexical_hits=len(lexical),
            vector_hits=len(nearest),
            scores=[round(s, 5) for _, s in top],
        )


def describe(settings: KnowledgeSettings, embedder: Embedder | None) -> str:
    """One line for logs and the CLI: where the index is and how it is searched."""
    how = f"{embedder.id} ({embedder.dim} dimensions)" if embedder else "keywords only"
    return f"{settings.index} ({how})"
