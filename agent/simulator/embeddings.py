"""The embedding endpoint of the simulated API (``models/{model}:batchEmbedContents`` and
``:embedContent``), as the google-genai SDK calls it: pure, bytes in and out.

Not a real model: a text's vector is its bag of words, each word (crudely stemmed) hashed to
a dimension with a sign, plus an equal share of one direction common to every text, then
normalised. Texts that share words are near; texts that share none score 0.5, as unrelated
texts do with gemini-embedding-001 (its vectors all lean one way). The client's real
embedding and search paths are tested end to end with answers that can be predicted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import orjson

from agent.simulator import wire

__all__ = ["MAX_BATCH", "embed_text", "is_embed_path", "respond"]

#: gemini-embedding-001's size when the request names none.
DEFAULT_DIM: Final = 3072
#: Requests in one batchEmbedContents call, at most (the real API's limit).
MAX_BATCH: Final = 100
_PATH = re.compile(
    r"/(?:v1|v1beta|v1alpha)/models/([A-Za-z0-9._-]+):(batchEmbedContents|embedContent)"
)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "my",
        "of",
        "on",
        "or",
        "the",
        "to",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def is_embed_path(path: str) -> bool:
    return _PATH.fullmatch(path.partition("?")[0]) is not None


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def embed_text(text: str, dim: int) -> list[float]:
    """The simulator's vector of ``text``: hashed, signed bag of stemmed words, normalised."""
    vector = np.zeros(dim, dtype=np.float64)
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        digest = int.from_bytes(hashlib.blake2b(_stem(word).encode(), digest_size=8).digest())
        vector[1 + digest % (dim - 1)] += 1.0 if (digest >> 63) & 1 else -1.0
    norm = float(np.linalg.norm(vector))
    if norm:
        vector /= norm
    vector[0] = 1.0  # the common direction: every text shares it
    return [round(float(x), 6) for x in vector / np.linalg.norm(vector)]


def _error(code: int, status: str, message: str) -> tuple[int, bytes]:
    return code, orjson.dumps({"error": {"code": code, "message": message, "status": status}})


def _texts(request: Any) -> str | None:
    content = wire.field(request, "content")
    parts = wire.field(content, "parts")
    if not isinstance(parts, list):
        return None
    texts = [wire.field(p, "text") for p in parts]
    if not all(isinstance(t, str) for t in texts):
        return None
    return " ".join(texts)


def respond(
    method: str, path: str, headers: Mapping[str, str], body: bytes
) -> tuple[int, bytes, list[str]]:
    """(HTTP status, JSON body, the texts embedded) for one REST request."""
    match = _PATH.fullmatch(path.partition("?")[0])
    if match is None:
        status, out = _error(404, "NOT_FOUND", f"no such method: {path}")
        return status, out, []
    if method != "POST":
        status, out = _error(405, "METHOD_NOT_ALLOWED", "use POST")
        return status, out, []
    if not wire.credential(headers, path):
        status, out = _error(
            400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
        )
        return status, out, []
    model, method_name = match.groups()
    if "embedding" not in model:
        status, out = _error(
            404,
            "NOT_FOUND",
            f"models/{model} is not found for API version v1beta, or is not supported for "
            "embedContent.",
        )
        return status, out, []
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        status, out = _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        return status, out, []
    items = wire.field(request, "requests") if method_name == "batchEmbedContents" else [request]
    if not isinstance(items, list) or not items:
        status, out = _error(400, "INVALID_ARGUMENT", "* BatchEmbedContentsRequest.requests: empty")
        return status, out, []
    if len(items) > MAX_BATCH:
        status, out = _error(
            400, "INVALID_ARGUMENT", f"at most {MAX_BATCH} requests can be in one batch"
        )
        return status, out, []
    texts: list[str] = []
    dims: list[int] = []
    for item in items:
        text = _texts(item)
        if text is None:
            status, out = _error(400, "INVALID_ARGUMENT", "content must have text parts")
            return status, out, []
        dim = wire.field(item, "output_dimensionality") or DEFAULT_DIM
        if not isinstance(dim, int) or not 2 <= dim <= DEFAULT_DIM:
            status, out = _error(400, "INVALID_ARGUMENT", f"bad outputDimensionality {dim!r}")
            return status, out, []
        texts.append(text)
        dims.append(dim)
    vectors = [{"values": embed_text(t, d)} for t, d in zip(texts, dims, strict=True)]
    batch = method_name == "batchEmbedContents"
    payload = {"embeddings": vectors} if batch else {"embedding": vectors[0]}
    return 200, orjson.dumps(payload), texts
