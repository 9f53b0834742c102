"""The index file: updates by content hash, the embedder's identity, degradation, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.config import KnowledgeSettings
from agent.knowledge.index import IndexMismatch, KnowledgeIndex
from agent.knowledge.search import KnowledgeBase
from agent.knowledge.sources import Limits
from support.knowledge import FAQ, CountingEmbedder, pdf


def settings(tmp_path: Path, **overrides: object) -> KnowledgeSettings:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    base: dict[str, object] = {"paths": (docs,), "index": tmp_path / "index.db"}
    base.update(overrides)
    return KnowledgeSettings(**base)  # type: ignore[arg-type]


async def open_base(
    s: KnowledgeSettings, embedder: CountingEmbedder | None, **kwargs: object
) -> tuple[KnowledgeBase, object]:
    return await KnowledgeBase.open(s, embedder, **kwargs)  # type: ignore[arg-type]


async def test_unchanged_files_are_not_embedded_again(tmp_path: Path) -> None:
    s = settings(tmp_path)
    (tmp_path / "docs" / "faq.md").write_text(FAQ)
    (tmp_path / "docs" / "hours.txt").write_text("Closed on public holidays.\n")
    embedder = CountingEmbedder()
    base, report = await open_base(s, embedder)
    base.close()
    assert sorted(report.added) == ["faq.md", "hours.txt"]  # type: ignore[attr-defined]
    assert len(embedder.embedded) == 4
    # Restart: nothing changed, nothing embedded.
    embedder.embedded.clear()
    base, report = await open_base(s, embedder)
    base.close()
    assert report.unchanged == 2 and embedder.embedded == []  # type: ignore[attr-defined]
    # One passage edited: only it is embedded; the others' vectors are reused.
    (tmp_path / "docs" / "faq.md").write_text(FAQ.replace("Elm Street", "Oak Avenue"))
    (tmp_path / "docs" / "hours.txt").unlink()
    base, report = await open_base(s, embedder)
    assert report.updated == ["faq.md"] and report.removed == ["hours.txt"]  # type: ignore[attr-defined]
    assert len(embedder.embedded) == 1 and "Oak Avenue" in embedder.embedded[0]
    assert report.reused_vectors == 2  # type: ignore[attr-defined]
    assert [d.source for d in base.index.documents()] == ["faq.md"]
    result = await base.search("where is the entrance for parking")
    base.close()
    assert result.mode == "hybrid"
    assert result.passages[0].heading.endswith("Parking")
    assert "Oak Avenue" in result.passages[0].text


async def test_hybrid_search_finds_by_keyword_and_by_vector(tmp_path: Path) -> None:
    s = settings(tmp_path)
    (tmp_path / "docs" / "faq.md").write_text(FAQ)
    base, _ = await open_base(s, CountingEmbedder())
    try:
        result = await base.search("Do you take Mastercard?")
        assert result.passages[0].heading.endswith("Payment")
        assert result.lexical_hits >= 1 and result.vector_hits >= 1
        assert result.response()["passages"][0]["source"] == "faq.md"
        nothing = await base.search("quantum chromodynamics lecture")
        assert nothing.passages == [] and nothing.response()["result"] == "no_results"
    finally:
        base.close()


async def test_an_index_refuses_another_embedder(tmp_path: Path) -> None:
    s = settings(tmp_path)
    (tmp_path / "docs" / "faq.md").write_text(FAQ)
    base, _ = await open_base(s, CountingEmbedder())
    base.close()
    other = CountingEmbedder(dim=32, id="fake:other")
    with pytest.raises(IndexMismatch) as err:
        await open_base(s, other)
    message = str(err.value)
    assert "fake:bag-of-words" in message and "fake:other" in message
    assert "KNOWLEDGE_EMBEDDINGS" in message and "--rebuild" in message
    with pytest.raises(IndexMismatch, match="off"):
        await open_base(s, None)
    # --rebuild starts over with the new embedder.
    base, report = await open_base(s, other, rebuild=True)
    base.close()
    assert report.added == ["faq.md"] and len(other.embedded) == 3  # type: ignore[attr-defined]


async def test_lexical_only_index(tmp_path: Path) -> None:
    s = settings(tmp_path, embeddings="off")
    (tmp_path / "docs" / "faq.md").write_text(FAQ)
    base, _ = await open_base(s, None)
    try:
        result = await base.search("opening hours on saturday")
        assert result.mode == "lexical" and result.passages[0].heading.endswith("Opening hours")
        assert base.index.meta()["embedder"] == "off"
    finally:
        base.close()


async def test_a_failing_embedder_at_query_time_degrades_to_keywords(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path)
    (tmp_path / "docs" / "faq.md").write_text(FAQ)
    embedder = CountingEmbedder()
    base, _ = await open_base(s, embedder)
    try:
        embedder.fail = True
        with caplog.at_level(logging.WARNING):
            result = await base.search("parking behind the building")
        assert result.mode == "lexical" and "503" in result.degraded
        assert result.passages[0].heading.endswith("Parking")
        assert any(r.message == "knowledge.degraded" for r in caplog.records)
        # A slow one (not in-process) is given half the deadline, then keywords alone.
        embedder.fail = False
        embedder.in_process = False
        embedder.delay_s = 5.0
        base.timeout_s = 0.2
        result = await base.search("parking behind the building")
        assert result.mode == "lexical" and "took over 0.1 s" in result.degraded
        assert result.passages and result.ms < 1000
    finally:
        base.close()


async def test_a_failing_embedder_at_index_time_indexes_keywords_and_retries_later(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path)
    (tmp_path / "docs" / "faq.md").write_text(FAQ)
    embedder = CountingEmbedder(fail=True)
    base, report = await open_base(s, embedder)
    assert report.not_embedded == ["faq.md"]  # type: ignore[attr-defined]
    assert [d.embedded for d in base.index.documents()] == [False]
    embedder.fail = False
    result = await base.search("parking")
    assert result.passages and result.vector_hits == 0
    base.close()
    # The next start embeds it, though its bytes did not change.
    base, report = await open_base(s, embedder)
    base.close()
    assert report.updated == ["faq.md"] and report.embedded_chunks == 3  # type: ignore[attr-defined]


async def test_bad_documents_are_skipped_and_named_and_the_rest_indexed(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "faq.md").write_text(FAQ)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7 not really")
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02 nope")
    (docs / "huge.txt").write_text("x" * 5000)
    (docs / "manual.pdf").write_bytes(pdf([["Replace the filter every six months."]]))
    (docs / "sub" / "page.html").write_text("<h1>Team</h1><p>Dr. Ada Smith, dentist.</p>")
    (docs / ".hidden.md").write_text("# secret")
    (docs / "photo.jpg").write_bytes(b"\xff\xd8")
    limits = Limits(max_file_bytes=4000)
    base, report = await open_base(settings(tmp_path), CountingEmbedder(), limits=limits)
    try:
        assert sorted(report.added) == ["faq.md", "manual.pdf", "sub/page.html"]  # type: ignore[attr-defined]
        skipped = "\n".join(report.skipped)  # type: ignore[attr-defined]
        assert "broken.pdf: skipped, not a readable PDF" in skipped
        assert "binary.txt: skipped, binary data" in skipped
        assert "huge.txt: skipped, 5000 bytes is over the limit of 4000" in skipped
        assert "hidden" not in skipped and "photo" not in skipped
        result = await base.search("how often do I replace the filter")
        assert result.passages[0].source == "manual.pdf"
        assert result.passages[0].heading == "Page 1"
    finally:
        base.close()


async def test_file_and_passage_counts_are_bounded(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(5):
        (docs / f"f{n}.md").write_text("\n\n".join(f"# H{i}\nText {i}." for i in range(10)))
    limits = Limits(max_files=3, max_chunks_per_file=4, max_chunks=10)
    base, report = await open_base(settings(tmp_path), CountingEmbedder(), limits=limits)
    base.close()
    skipped = "\n".join(report.skipped)  # type: ignore[attr-defined]
    assert "f3.md: skipped, more than 3 files" in skipped
    assert "f2.md: skipped, the index holds at most 10 passages" in skipped
    assert report.added == ["f0.md", "f1.md"] and report.chunks == 8  # type: ignore[attr-defined]
    assert next(d.warning for d in base.index.documents()) == (
        "only its first 4 passages are indexed"
    )


async def test_an_unwritable_index_is_searched_as_built(tmp_path: Path) -> None:
    s = settings(tmp_path)
    (tmp_path / "docs" / "faq.md").write_text(FAQ)
    base, _ = await open_base(s, CountingEmbedder())
    base.close()
    (tmp_path / "docs" / "faq.md").write_text("# New\nSomething else entirely.")
    warnings: list[str] = []
    index = KnowledgeIndex(s.index, "fake:bag-of-words", 256, writable=False)
    from agent.knowledge.index import update
    from agent.knowledge.sources import scan

    try:
        report = await update(index, scan(s.paths), CountingEmbedder(), warn=warnings.append)
        assert report.unchanged == 0 and report.updated == []
        assert "read-only" in warnings[0] and "faq.md" in warnings[0]
        base = KnowledgeBase(index, CountingEmbedder())
        result = await base.search("parking")
        assert result.passages[0].heading.endswith("Parking")  # the version that was indexed
    finally:
        index.close()
