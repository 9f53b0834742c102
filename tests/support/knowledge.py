"""Doubles for knowledge-base tests: an embedder that counts and can fail, PDFs made here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from agent.knowledge.embed import EmbeddingFailed, Vectors
from agent.simulator.embeddings import embed_text

FAQ = """\
# Bright Smile Dental

## Visiting us

### Parking
Free parking is available behind the building; the entrance is on Elm Street.

### Opening hours
We are open Monday to Friday from 8am to 6pm, and on Saturday from 9am to 1pm.

## Billing

### Payment
We accept Visa, Mastercard and HSA cards. Payment is due at the time of the visit.
"""


@dataclass
class CountingEmbedder:
    """In-process, deterministic (the simulator's bag-of-words vectors), counting every text;
    ``fail`` makes every call raise ``EmbeddingFailed``, ``delay_s`` makes queries slow."""

    dim: int = 256
    id: str = "fake:bag-of-words"
    in_process: bool = True
    min_similarity: float = 0.55
    fail: bool = False
    delay_s: float = 0.0
    embedded: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)

    def _rows(self, texts: list[str]) -> Vectors:
        if self.fail:
            raise EmbeddingFailed("503 UNAVAILABLE")
        rows = np.array([embed_text(t, self.dim) for t in texts], dtype=np.float32)
        return rows.reshape(len(texts), self.dim)

    async def documents(self, texts: list[str]) -> Vectors:
        self.embedded += texts
        return self._rows(texts)

    async def query(self, text: str) -> Vectors:
        self.queries.append(text)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        row: Vectors = self._rows([text])[0]
        return row

    def query_now(self, text: str) -> Vectors:
        self.queries.append(text)
        row: Vectors = self._rows([text])[0]
        return row


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF whose pages show these lines of text (Helvetica, one line each)."""
    objects: list[bytes] = []
    count = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            ops += [f"({_escape(line)}) Tj", "T*"]
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)
