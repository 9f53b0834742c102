"""Documents into blocks and chunks: every format, heading paths, the size bound."""

from __future__ import annotations

import pytest

from agent.knowledge.documents import (
    Block,
    BrokenDocument,
    Chunk,
    blocks_of,
    chunk,
    html_blocks,
    kind_of,
    markdown_blocks,
    pdf_blocks,
    text_blocks,
)
from support.knowledge import FAQ, pdf


def test_markdown_chunks_know_their_heading_path() -> None:
    chunks = chunk(markdown_blocks(FAQ))
    assert [c.heading for c in chunks] == [
        "Bright Smile Dental > Visiting us > Parking",
        "Bright Smile Dental > Visiting us > Opening hours",
        "Bright Smile Dental > Billing > Payment",
    ]
    assert chunks[0].text.startswith("Free parking is available behind the building")
    assert chunks[0].searchable == f"{chunks[0].heading}\n{chunks[0].text}"


def test_markdown_syntax_becomes_the_words_a_reader_sees() -> None:
    text = """---
title: ignored front matter
---
Intro
=====

We take **Visa** and [HSA cards](https://example.com/hsa), see `billing`.
This line continues the paragraph.

* first item
* second item

| Plan | Price |
|------|-------|
| Basic | $10 |

```
code stays
```

[ref]: https://example.com
Subsection
----------
<b>Bold</b> &amp; done.
"""
    blocks = markdown_blocks(text)
    assert blocks[0] == Block("Intro", 1)
    assert blocks[1].text == (
        "We take Visa and HSA cards, see billing. This line continues the paragraph."
    )
    assert blocks[2].text == "- first item\n- second item"
    assert blocks[3].text == "Plan | Price\nBasic | $10"
    assert blocks[4].text == "code stays"
    assert blocks[5] == Block("Subsection", 2)
    assert blocks[6].text == "Bold & done."
    assert all("title" not in b.text for b in blocks)


def test_a_heading_closes_the_section_and_a_shallower_one_pops_the_path() -> None:
    blocks = [
        Block("A", 1),
        Block("B", 2),
        Block("under B"),
        Block("C", 3),
        Block("under C"),
        Block("D", 2),
        Block("under D"),
    ]
    assert chunk(blocks) == [
        Chunk("A > B", "under B"),
        Chunk("A > B > C", "under C"),
        Chunk("A > D", "under D"),
    ]


def test_paragraphs_are_packed_and_long_ones_cut_at_sentences_within_the_bound() -> None:
    sentence = "The clinic offers cleaning, whitening and check-ups for the whole family. "
    long_paragraph = sentence * 30  # ~2,200 characters
    chunks = chunk([Block("Services", 1), Block("Short one."), Block(long_paragraph)], 800)
    assert all(len(c.text) <= 800 for c in chunks)
    assert len(chunks) == 3
    assert chunks[0].text.startswith("Short one.\nThe clinic")
    assert all(c.heading == "Services" for c in chunks)
    # Nothing lost, nothing doubled.
    words = " ".join(c.text for c in chunks).split()
    assert len(words) == len(("Short one. " + long_paragraph).split())
    # One endless "sentence" is cut between words.
    [*pieces] = chunk([Block("word " * 500)], 100)
    assert all(len(p.text) <= 100 for p in pieces) and len(pieces) > 20


def test_html_keeps_headings_and_drops_scripts_navigation_and_styles() -> None:
    page = """<html><head><title>T</title><style>p {color: red}</style></head><body>
    <nav><a href="/">Home</a> | <a href="/x">Menu</a></nav>
    <h1>Our clinic</h1><p>We are on <b>Elm&nbsp;Street</b>.</p>
    <script>var secret = "never indexed";</script>
    <h2>Prices</h2><table><tr><td>Cleaning</td><td>$80</td></tr></table>
    <ul><li>one</li><li>two</li></ul><footer>© 2026</footer></body></html>"""
    blocks = html_blocks(page)
    assert blocks == [
        Block("Our clinic", 1),
        Block("We are on Elm Street."),
        Block("Prices", 2),
        Block("Cleaning | $80"),
        Block("one"),
        Block("two"),
    ]


def test_plain_text_paragraphs() -> None:
    assert text_blocks("line one\nline two\n\n\nnext   para\n") == [
        Block("line one line two"),
        Block("next para"),
    ]


def test_pdf_pages_become_headings_and_the_page_count_is_bounded() -> None:
    data = pdf([["Parking is behind the building.", "Use the Elm Street entrance."], ["Page 2."]])
    blocks, warning = pdf_blocks(data, max_pages=10)
    assert warning == ""
    assert blocks[:2] == [
        Block("Page 1", 1),
        Block("Parking is behind the building. Use the Elm Street entrance."),
    ]
    blocks, warning = pdf_blocks(pdf([["text"]] * 6), max_pages=2)
    assert [b.text for b in blocks if b.level] == ["Page 1", "Page 2"]
    assert warning == "only the first 2 of its 6 pages are indexed"


@pytest.mark.parametrize(
    ("kind", "data", "why"),
    [
        ("pdf", b"%PDF-1.4 truncated", "not a readable PDF"),
        ("pdf", b"not a pdf at all", "not a readable PDF"),
        ("pdf", pdf([[]]), "no text in the PDF"),
        ("text", b"ab\x00\x01\x02", "binary"),
        ("markdown", b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
    ],
)
def test_broken_documents_say_why(kind: str, data: bytes, why: str) -> None:
    with pytest.raises(BrokenDocument, match=why):
        blocks_of(kind, data)  # type: ignore[arg-type]


def test_kinds_come_from_the_name() -> None:
    assert kind_of("a/FAQ.MD") == "markdown"
    assert kind_of("x.htm") == "html"
    assert kind_of("manual.pdf") == "pdf"
    assert kind_of("notes.txt") == "text"
    assert kind_of("photo.jpg") is None and kind_of("Makefile") is None
