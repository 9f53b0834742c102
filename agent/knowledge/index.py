"""The knowledge index: one SQLite file with the passages, BM25 (FTS5) and vectors (sqlite-vec).

The file is read-mostly and belongs to one instance: built ahead (``voice-agent knowledge
index``, e.g. while building the image) or at startup, then only read during calls. It
records which embedder made its vectors, and refuses to be used with another.

SQLite is reached through apsw, which bundles a current SQLite (with FTS5) and can load
extensions on every platform: the standard library's ``sqlite3`` cannot load sqlite-vec in
Pythons built without ``--enable-loadable-sqlite-extensions`` (pyenv's default, macOS's
system Python). Reads run in worker threads (``asyncio.to_thread``), each with its own
read-only connection; writes go through one connection, one document per transaction.

``update`` brings the index in step with the files: a file whose bytes hash as before is
left alone (never embedded again); a changed file's passages are replaced, reusing the vectors
of passages whose text did not change; files that are gone are removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from agent.knowledge import KnowledgeError, MissingExtra
from agent.knowledge.documents import BrokenDocument, Chunk, blocks_of, chunk
from agent.knowledge.embed import Embedder, EmbeddingFailed, Vectors
from agent.knowledge.sources import DEFAULT_LIMITS, Limits, Scan, SourceFile
from agent.logs import fields

__all__ = [
    "DocumentRow",
    "IndexMismatch",
    "IndexReport",
    "KnowledgeIndex",
    "Passage",
    "update",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = "1"
#: Recorded as the embedder of an index without vectors (KNOWLEDGE_EMBEDDINGS=off).
NO_EMBEDDER: Final = "off"
#: BM25 weights of the columns: a word of the heading path counts twice a word of the text.
BM25_WEIGHTS: Final = "bm25(2.0, 1.0)"


def _apsw() -> Any:
    try:
        import apsw
        import sqlite_vec
    except ModuleNotFoundError as exc:
        raise MissingExtra(exc.name or "apsw") from None
    return apsw, sqlite_vec


class IndexMismatch(KnowledgeError):
    """The index was built with another embedder (or another version of this schema)."""


@dataclass(frozen=True, slots=True)
class Passage:
    """A passage as searched: its chunk id, where it comes from, and its text."""

    id: int
    source: str
    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class DocumentRow:
    source: str
    kind: str
    sha256: str
    size: int
    chunks: int
    embedded: bool
    indexed_at: float
    warning: str


@dataclass
class IndexReport:
    """What an update did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # warnings, one per file
    not_embedded: list[str] = field(default_factory=list)  # embedder failed: keywords only
    embedded_chunks: int = 0
    reused_vectors: int = 0
    chunks: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "unchanged": self.unchanged,
            "removed": len(self.removed),
            "skipped": len(self.skipped),
            "not_embedded": len(self.not_embedded),
            "embedded_chunks": self.embedded_chunks,
            "reused_vectors": self.reused_vectors,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }


def _chunk_hash(item: Chunk) -> str:
    return hashlib.blake2b(item.searchable.encode(), digest_size=16).hexdigest()


class KnowledgeIndex:
    """One index file. ``open`` it; ``search`` from any thread; ``update`` from one task."""

    def __init__(self, path: Path, embedder_id: str, dim: int, *, writable: bool) -> None:
        self.path = path
        self.embedder_id = embedder_id
        self.dim = dim
        self.writable = writable
        self._apsw, self._vec = _apsw()
        self._local = threading.local()
        self._readers: list[Any] = []
        self._readers_lock = threading.Lock()
        self._writer: Any = None

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        embedder_id: str,
        dim: int,
        *,
        write: bool = True,
        rebuild: bool = False,
        wanted: str = "",
    ) -> KnowledgeIndex:
        """Open (creating it when ``write``) the index at ``path`` for vectors of
        ``embedder_id``/``dim``. ``IndexMismatch`` if it holds another embedder's vectors
        (``wanted`` names the setting for the message), unless ``rebuild``: then it starts
        empty. A file that cannot be written is opened read-only."""
        if rebuild and path.exists():
            for leftover in (path, path.with_name(path.name + "-journal")):
                leftover.unlink(missing_ok=True)
        exists = path.exists()
        if not exists and not write:
            raise KnowledgeError(f"no knowledge index at {path}: run `voice-agent knowledge index`")
        writable = write and (not exists or _writable(path))
        index = cls(path, embedder_id, dim, writable=writable)
        try:
            if not exists:
                path.parent.mkdir(parents=True, exist_ok=True)
                index._create()
            index._check(wanted)
        except BaseException:
            index.close()
            raise
        return index

    def _connect(self, *, readonly: bool) -> Any:
        apsw = self._apsw
        flags = (
            apsw.SQLITE_OPEN_READONLY
            if readonly
            else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        )
        try:
            conn = apsw.Connection(str(self.path), flags=flags)
            conn.set_busy_timeout(5_000)
            conn.enable_load_extension(True)
            conn.load_extension(self._vec.loadable_path())
            conn.enable_load_extension(False)
        except apsw.Error as exc:
            raise KnowledgeError(f"cannot open the knowledge index {self.path}: {exc}") from None
        return conn

    def _write_conn(self) -> Any:
        if not self.writable:
            raise KnowledgeError(f"the knowledge index {self.path} is read-only")
        if self._writer is None:
            self._writer = self._connect(readonly=False)
        return self._writer

    def _read_conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _create(self) -> None:
        conn = self._write_conn()
        with conn:
            conn.execute(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE documents(id INTEGER PRIMARY KEY, source TEXT NOT NULL UNIQUE, "
                "  kind TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, "
                "  chunks INTEGER NOT NULL, embedded INTEGER NOT NULL, indexed_at REAL NOT NULL,"
                "  warning TEXT NOT NULL DEFAULT '');"
                "CREATE TABLE chunks(id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL, "
                "  ord INTEGER NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL, "
                "  hash TEXT NOT NULL);"
                "CREATE INDEX chunks_doc ON chunks(doc_id);"
                "CREATE INDEX chunks_hash ON chunks(hash);"
                "CREATE VIRTUAL TABLE chunks_fts USING fts5(heading, text, "
                "  tokenize='porter unicode61 remove_diacritics 2');"
                f"INSERT INTO chunks_fts(chunks_fts, rank) VALUES('rank', '{BM25_WEIGHTS}');"
            )
            if self.dim:
                conn.execute(
                    f"CREATE VIRTUAL TABLE vectors USING vec0("
                    f"embedding float[{int(self.dim)}] distance_metric=cosine)"
                )
            conn.executemany(
                "INSERT INTO meta(key, value) VALUES(?, ?)",
                [
                    ("schema", SCHEMA_VERSION),
                    ("embedder", self.embedder_id),
                    ("dim", str(self.dim)),
                    ("created_at", str(time.time())),
                ],
            )

    def meta(self) -> dict[str, str]:
        try:
            rows = self._read_conn().execute("SELECT key, value FROM meta").fetchall()
        except self._apsw.Error as exc:
            raise KnowledgeError(f"{self.path} is not a knowledge index ({exc})") from None
        return {str(k): str(v) for k, v in rows}

    def _check(self, wanted: str) -> None:
        meta = self.meta()
        if meta.get("schema") != SCHEMA_VERSION:
            raise IndexMismatch(
                f"the knowledge index {self.path} has format {meta.get('schema')!r}, this "
                f"version reads {SCHEMA_VERSION!r}: rebuild it with "
                "`voice-agent knowledge index --rebuild`"
            )
        found = (meta.get("embedder"), meta.get("dim"))
        if found != (self.embedder_id, str(self.dim)):
            setting = f"{wanted} " if wanted else ""
            raise IndexMismatch(
                f"the knowledge index {self.path} was built with {found[0]} embeddings "
                f"({found[1]} dimensions), but {setting}needs {self.embedder_id} ({self.dim} "
                "dimensions): set KNOWLEDGE_EMBEDDINGS to what built it, or rebuild it with "
                "`voice-agent knowledge index --rebuild`"
            )

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- reading (any thread) ------------------------------------------------------------------

    def documents(self) -> list[DocumentRow]:
        rows = (
            self._read_conn()
            .execute(
                "SELECT source, kind, sha256, size, chunks, embedded, indexed_at, warning "
                "FROM documents ORDER BY source"
            )
            .fetchall()
        )
        return [
            DocumentRow(str(s), str(k), str(h), int(n), int(c), bool(e), float(t), str(w))
            for s, k, h, n, c, e, t, w in rows
        ]

    def chunk_count(self) -> int:
        [(count,)] = self._read_conn().execute("SELECT count(*) FROM chunks").fetchall()
        return int(count)

    def lexical(self, match: str, limit: int) -> list[tuple[int, float]]:
        """(chunk id, BM25 score: higher is better) for an FTS5 query, best first."""
        rows = (
            self._read_conn()
            .execute(
                "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
                (match, limit),
            )
            .fetchall()
        )
        return [(int(rowid), -float(rank)) for rowid, rank in rows]

    def nearest(self, vector: Vectors, limit: int) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) of the ``limit`` nearest vectors, best first."""
        if not self.dim:
            return []
        rows = (
            self._read_conn()
            .execute(
                "SELECT rowid, distance FROM vectors WHERE embedding MATCH ? AND k = ?",
                (np.asarray(vector, dtype=np.float32).tobytes(), limit),
            )
            .fetchall()
        )
        return [(int(rowid), 1.0 - float(distance)) for rowid, distance in rows]

    def passages(self, ids: Iterable[int]) -> dict[int, Passage]:
        wanted = list(ids)
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = (
            self._read_conn()
            .execute(
                "SELECT c.id, d.source, c.heading, c.text FROM chunks c "
                f"JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})",
                wanted,
            )
            .fetchall()
        )
        return {int(i): Passage(int(i), str(s), str(h), str(t)) for i, s, h, t in rows}

    # -- writing (one task) --------------------------------------------------------------------

    def known(self) -> dict[str, tuple[str, bool]]:
        """source → (sha256, embedded) of what the index holds."""
        rows = self._read_conn().execute("SELECT source, sha256, embedded FROM documents")
        return {str(s): (str(h), bool(e)) for s, h, e in rows}

    def vectors_by_hash(self, hashes: Iterable[str]) -> dict[str, bytes]:
        """Vectors already in the index for passages of these texts (by their hash)."""
        if not self.dim:
            return {}
        conn = self._read_conn()
        found: dict[str, bytes] = {}
        for digest in set(hashes):
            for (chunk_id,) in conn.execute(
                "SELECT id FROM chunks WHERE hash = ? ORDER BY id LIMIT 1", (digest,)
            ):
                for (blob,) in conn.execute(
                    "SELECT embedding FROM vectors WHERE rowid = ?", (chunk_id,)
                ):
                    found[digest] = bytes(blob)
        return found

    def replace(
        self,
        file: SourceFile,
        chunks: list[Chunk],
        vectors: list[bytes] | None,
        warning: str = "",
    ) -> None:
        """The document's passages (and their vectors, when embedded), in one transaction."""
        conn = self._write_conn()
        with conn:
            self._delete(conn, file.name)
            conn.execute(
                "INSERT INTO documents(source, kind, sha256, size, chunks, embedded, indexed_at, "
                "warning) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    file.name,
                    file.kind,
                    file.sha256,
                    file.size,
                    len(chunks),
                    int(vectors is not None),
                    time.time(),
                    warning,
                ),
            )
            doc_id = conn.last_insert_rowid()
            for ordinal, item in enumerate(chunks):
                conn.execute(
                    "INSERT INTO chunks(doc_id, ord, heading, text, hash) VALUES(?, ?, ?, ?, ?)",
                    (doc_id, ordinal, item.heading, item.text, _chunk_hash(item)),
                )
                chunk_id = conn.last_insert_rowid()
                conn.execute(
                    "INSERT INTO chunks_fts(rowid, heading, text) VALUES(?, ?, ?)",
                    (chunk_id, item.heading, item.text),
                )
                if vectors is not None and self.dim:
                    conn.execute(
                        "INSERT INTO vectors(rowid, embedding) VALUES(?, ?)",
                        (chunk_id, vectors[ordinal]),
                    )

    def remove(self, source: str) -> None:
        conn = self._write_conn()
        with conn:
            self._delete(conn, source)

    def _delete(self, conn: Any, source: str) -> None:
        for (doc_id,) in conn.execute("SELECT id FROM documents WHERE source = ?", (source,)):
            ids = [i for (i,) in conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
            for chunk_id in ids:
                conn.execute("DELETE FROM chunks_fts WHERE rowid = ?", (chunk_id,))
                if self.dim:
                    conn.execute("DELETE FROM vectors WHERE rowid = ?", (chunk_id,))
            conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
            conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


# --- bringing the index in step with the files ----------------------------------------------


def _chunks_of(file: SourceFile, limits: Limits) -> tuple[list[Chunk], str]:
    blocks, warning = blocks_of(file.kind, file.data, max_pdf_pages=limits.max_pdf_pages)
    chunks = chunk(blocks)
    if len(chunks) > limits.max_chunks_per_file:
        warning = "; ".join(
            w
            for w in (warning, f"only its first {limits.max_chunks_per_file} passages are indexed")
            if w
        )
        chunks = chunks[: limits.max_chunks_per_file]
    return chunks, warning


async def update(
    index: KnowledgeIndex,
    scan: Scan,
    embedder: Embedder | None,
    limits: Limits = DEFAULT_LIMITS,
    *,
    warn: Callable[[str], None] | None = None,
) -> IndexReport:
    """Index what changed in ``scan`` since the last update (see the module docstring).

    A file that cannot be parsed is skipped (the index keeps its last good version); when the
    embedder fails, the file is indexed for keyword search and embedded at the next update.
    """
    began = time.perf_counter()
    report = IndexReport(skipped=list(scan.warnings))

    def warning(message: str) -> None:
        log.warning("knowledge.skipped", extra=fields(message=message))
        if warn is not None:
            warn(message)

    for message in scan.warnings:
        warning(message)
    known = await asyncio.to_thread(index.known)
    present = {f.name for f in scan.files}

    def current(file: SourceFile) -> bool:
        old = known.get(file.name)
        return old is not None and old[0] == file.sha256 and (old[1] or embedder is None)

    if not index.writable:
        stale = [f.name for f in scan.files if not current(f)] + sorted(set(known) - present)
        if stale:
            warning(
                f"{index.path} is read-only and {len(stale)} file(s) changed since it was "
                f"built ({', '.join(stale[:5])}): searching the indexed version; run "
                "`voice-agent knowledge index` where it can be written"
            )
        report.unchanged = len(scan.files) - len(stale)
        report.chunks = await asyncio.to_thread(index.chunk_count)
        report.seconds = time.perf_counter() - began
        return report
    sizes = {d.source: d.chunks for d in await asyncio.to_thread(index.documents)}
    total_chunks = sum(sizes[f.name] for f in scan.files if current(f))
    for file in scan.files:
        old = known.get(file.name)
        if current(file):
            report.unchanged += 1
            continue
        try:
            chunks, note = await asyncio.to_thread(_chunks_of, file, limits)
        except BrokenDocument as exc:
            message = f"{file.path}: skipped, {exc}"
            report.skipped.append(message)
            warning(message)
            continue
        if total_chunks + len(chunks) > limits.max_chunks:
            message = f"{file.path}: skipped, the index holds at most {limits.max_chunks} passages"
            report.skipped.append(message)
            warning(message)
            continue
        total_chunks += len(chunks)
        vectors = await _vectors(index, chunks, embedder, report, file)
        await asyncio.to_thread(index.replace, file, chunks, vectors, note)
        if note:
            warning(f"{file.path}: {note}")
        (report.updated if old is not None else report.added).append(file.name)
    for source in sorted(set(known) - present):
        await asyncio.to_thread(index.remove, source)
        report.removed.append(source)
    report.chunks = await asyncio.to_thread(index.chunk_count)
    report.seconds = time.perf_counter() - began
    return report


async def _vectors(
    index: KnowledgeIndex,
    chunks: list[Chunk],
    embedder: Embedder | None,
    report: IndexReport,
    file: SourceFile,
) -> list[bytes] | None:
    """The chunks' vectors (reusing those of unchanged texts), or None: keywords only."""
    if embedder is None or not chunks:
        return None if embedder is None else []
    hashes = [_chunk_hash(c) for c in chunks]
    reused = await asyncio.to_thread(index.vectors_by_hash, hashes)
    todo = [i for i, h in enumerate(hashes) if h not in reused]
    fresh: dict[int, bytes] = {}
    if todo:
        try:
            rows = await embedder.documents([chunks[i].searchable for i in todo])
        except EmbeddingFailed as exc:
            report.not_embedded.append(file.name)
            log.warning(
                "knowledge.embedding_failed",
                extra=fields(source=file.name, error=str(exc), fallback="keyword search"),
            )
            return None
        fresh = {i: rows[n].tobytes() for n, i in enumerate(todo)}
    report.embedded_chunks += len(todo)
    report.reused_vectors += len(chunks) - len(todo)
    return [fresh[i] if i in fresh else reused[hashes[i]] for i in range(len(chunks))]
