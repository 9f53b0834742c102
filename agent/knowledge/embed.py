"""Text into vectors: Gemini's embedding model through the SDK, or wordllama in-process.

Every embedder returns L2-normalised float32 rows, so the index compares them by cosine.
``Embedder.id`` and ``dim`` are recorded in the index: vectors of two embedders never mix.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from agent.config import KnowledgeSettings, ModelAccess
from agent.knowledge import KnowledgeError, MissingExtra

__all__ = [
    "Embedder",
    "EmbeddingFailed",
    "GeminiEmbedder",
    "LocalEmbedder",
    "Vectors",
    "embedder_identity",
    "gemini_client",
    "make_embedder",
]

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

#: Asked of gemini-embedding-001 (it makes 3072; 768 keeps most of the quality).
GEMINI_DIM: Final = 768
#: Texts per batchEmbedContents request (the API's limit is 100).
GEMINI_BATCH: Final = 100
#: The bundled wordllama model and its size.
WORDLLAMA_CONFIG: Final = "l2_supercat"
WORDLLAMA_DIM: Final = 256


class EmbeddingFailed(KnowledgeError):
    """The embedder could not embed (the service failed, timed out, or answered nonsense)."""


class Embedder(Protocol):
    """Turns texts into normalised vectors of ``dim`` floats."""

    #: Recorded in the index: "local:wordllama/l2_supercat", "gemini:gemini-embedding-001".
    id: str
    dim: int
    #: Runs in this process, in microseconds (the search can call ``query_now`` in its thread).
    in_process: bool
    #: Below this cosine similarity a passage is not related to the question at all.
    min_similarity: float

    async def documents(self, texts: list[str]) -> Vectors: ...

    async def query(self, text: str) -> Vectors: ...

    def query_now(self, text: str) -> Vectors: ...


def _normalised(rows: npt.ArrayLike, dim: int) -> Vectors:
    array = np.asarray(rows, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise EmbeddingFailed(f"expected vectors of {dim} numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise EmbeddingFailed("the embedder returned non-finite numbers")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(array / norms, dtype=np.float32)


class LocalEmbedder:
    """wordllama's bundled 256-dimension model: offline, ~0.1 ms per question on one core.

    Its weights and tokenizer ship inside the wheel; ``load(disable_download=True)`` alone
    looks for the tokenizer in the wrong folder, so the package's own folder is passed as the
    cache (measured with wordllama 0.4.0).
    """

    in_process = True
    dim = WORDLLAMA_DIM
    id = f"local:wordllama/{WORDLLAMA_CONFIG}"
    #: wordllama's similarities run low: a question and the passage that answers it score
    #: ~0.2-0.6, unrelated text ~-0.05-0.1 (bench/knowledge.py prints the distribution).
    min_similarity = 0.15

    def __init__(self) -> None:
        try:
            import wordllama
            from wordllama import WordLlama
        except ModuleNotFoundError:
            raise MissingExtra("wordllama") from None
        folder = Path(wordllama.__file__).parent
        self._model: Any = WordLlama.load(
            config=WORDLLAMA_CONFIG, dim=WORDLLAMA_DIM, disable_download=True, cache_dir=folder
        )

    def embed_now(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalised(self._model.embed(texts, norm=True), self.dim)

    def query_now(self, text: str) -> Vectors:
        row: Vectors = self.embed_now([text])[0]
        return row

    async def documents(self, texts: list[str]) -> Vectors:
        return await asyncio.to_thread(self.embed_now, texts)

    async def query(self, text: str) -> Vectors:
        return self.query_now(text)


class GeminiEmbedder:
    """``gemini-embedding-001`` (or KNOWLEDGE_EMBEDDING_MODEL) through the SDK's
    ``client.aio.models.embed_content``: documents as RETRIEVAL_DOCUMENT, questions as
    RETRIEVAL_QUERY, 768 dimensions (normalised here: the API normalises only at 3072)."""

    in_process = False
    dim = GEMINI_DIM

    def __init__(self, client: Any, model: str, *, min_similarity: float = 0.55) -> None:
        self._client = client
        self.model = model
        self.id = f"gemini:{model}"
        #: gemini-embedding-001's vectors all lean one way: unrelated English texts score
        #: around 0.5 (an estimate from published use, not measured here: no credentials).
        self.min_similarity = min_similarity

    async def _embed(self, texts: list[str], task: str) -> Vectors:
        from google.genai import types

        rows: list[list[float]] = []
        for start in range(0, len(texts), GEMINI_BATCH):
            batch = texts[start : start + GEMINI_BATCH]
            try:
                response = await self._client.aio.models.embed_content(
                    model=self.model,
                    contents=batch,
                    config=types.EmbedContentConfig(task_type=task, output_dimensionality=self.dim),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A remote service: whatever it or the transport raises (the SDK's APIError,
                # httpx2's errors, TLS, timeouts) means "no vectors this time", never a failed
                # call or a failed startup.
                raise EmbeddingFailed(f"{type(exc).__name__}: {exc}") from exc
            embeddings = response.embeddings or []
            if len(embeddings) != len(batch):
                raise EmbeddingFailed(f"asked for {len(batch)} embeddings, got {len(embeddings)}")
            rows += [list(e.values or []) for e in embeddings]
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalised(rows, self.dim)

    async def documents(self, texts: list[str]) -> Vectors:
        return await self._embed(texts, "RETRIEVAL_DOCUMENT")

    async def query(self, text: str) -> Vectors:
        row: Vectors = (await self._embed([text], "RETRIEVAL_QUERY"))[0]
        return row

    def query_now(self, text: str) -> Vectors:
        raise NotImplementedError("GeminiEmbedder is asynchronous: await query()")


def gemini_client(
    access: ModelAccess,
    *,
    base_url: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    api_key: str | None = None,
) -> Any:
    """An SDK client for embeddings: the model's credentials, no WebSocket options, and no
    retries of its own (a search has a deadline; indexing retries at the next start)."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))
    if base_url is not None:
        options.base_url = base_url
    if ssl_context is not None:
        # The SDK's async REST goes through httpx2 ("verify"), or aiohttp ("ssl") when that
        # is installed; each drops the other's argument.
        options.async_client_args = {"verify": ssl_context, "ssl": ssl_context}
    if access.backend == "vertex":
        return genai.Client(vertexai=True, http_options=options)
    return genai.Client(api_key=api_key or access.api_key, http_options=options)


def embedder_identity(settings: KnowledgeSettings) -> tuple[str, int]:
    """(id, dimensions) of the configured embedder without loading it (``off``: no vectors)."""
    if settings.embeddings == "off":
        return "off", 0
    if settings.embeddings == "local":
        return LocalEmbedder.id, LocalEmbedder.dim
    return f"gemini:{settings.embedding_model}", GEMINI_DIM


def make_embedder(settings: KnowledgeSettings, client: Any = None) -> Embedder | None:
    """The configured embedder (None for ``off``); ``client``: the SDK client for gemini."""
    if settings.embeddings == "off":
        return None
    if settings.embeddings == "local":
        return LocalEmbedder()
    if client is None:
        raise KnowledgeError("KNOWLEDGE_EMBEDDINGS=gemini needs a model client")
    return GeminiEmbedder(client, settings.embedding_model)
