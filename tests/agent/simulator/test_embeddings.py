"""The simulator's embedding endpoint, as the SDK calls it (pure; over TLS in tests/e2e)."""

from __future__ import annotations

import numpy as np
import orjson

from agent.simulator.embeddings import MAX_BATCH, embed_text, is_embed_path, respond

PATH = "/v1beta/models/gemini-embedding-001:batchEmbedContents"
KEY = {"x-goog-api-key": "k"}


def _request(*texts: str, dim: int = 8) -> bytes:
    return orjson.dumps(
        {
            "requests": [
                {
                    "content": {"parts": [{"text": t}], "role": "user"},
                    "taskType": "RETRIEVAL_DOCUMENT",
                    "outputDimensionality": dim,
                    "model": "models/gemini-embedding-001",
                }
                for t in texts
            ]
        }
    )


def test_a_batch_is_answered_in_order_with_normalised_vectors() -> None:
    status, body, texts = respond("POST", PATH, KEY, _request("free parking", "open late"))
    assert status == 200 and texts == ["free parking", "open late"]
    rows = np.array([e["values"] for e in orjson.loads(body)["embeddings"]])
    assert rows.shape == (2, 8)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_shared_words_are_near_and_unrelated_texts_score_one_half() -> None:
    a, b, c = (np.array(embed_text(t, 256)) for t in ("Parking behind", "where to park", "Visa"))
    assert a @ b > 0.7
    assert abs(a @ c - 0.5) < 1e-5


def test_single_embed_content_and_errors() -> None:
    single = "/v1beta/models/gemini-embedding-001:embedContent"
    body = orjson.dumps({"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 4})
    status, out, _ = respond("POST", single, KEY, body)
    assert status == 200 and len(orjson.loads(out)["embedding"]["values"]) == 4
    assert respond("POST", PATH, {}, _request("x"))[0] == 400  # no API key
    assert respond("POST", PATH, KEY, b"{nope")[0] == 400
    too_many = _request(*["x"] * (MAX_BATCH + 1))
    assert respond("POST", PATH, KEY, too_many)[0] == 400
    assert respond("POST", "/v1beta/models/gemini-3.8-live:embedContent", KEY, body)[0] == 404
    assert respond("GET", PATH, KEY, b"")[0] == 405
    assert is_embed_path(PATH + "?alt=json") and not is_embed_path("/v1beta/models/x:generate")
