"""Documents into chunks: pure functions, no I/O beyond the bytes they are given.

A document becomes a list of ``Block``s (headings with their level, and paragraphs), whatever
its format; ``chunk`` then cuts the blocks into passages short enough to read out on a phone,
never across a heading, each knowing its heading path ("Visiting us > Parking"), which is
searched and embedded with it: a passage under "Parking" that says "behind the building" is
found by "where do I park".
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final, Literal

from agent.knowledge import KnowledgeError, MissingExtra

__all__ = [
    "KINDS",
    "MAX_CHUNK_CHARS",
    "Block",
    "BrokenDocument",
    "Chunk",
    "Kind",
    "blocks_of",
    "chunk",
    "html_blocks",
    "kind_of",
    "markdown_blocks",
    "pdf_blocks",
    "text_blocks",
]

Kind = Literal["markdown", "text", "html", "pdf"]

#: File name endings we read, and as what.
KINDS: Final[dict[str, Kind]] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}

#: A passage is at most this long (~20 s read aloud); paragraphs are packed up to it.
MAX_CHUNK_CHARS: Final = 800
#: Text kept of one page of a PDF (a page of dense prose is ~3,000-4,000 characters).
MAX_PAGE_CHARS: Final = 20_000
HEADING_SEPARATOR: Final = " > "


class BrokenDocument(KnowledgeError):
    """A file cannot be read as what its name says (the index skips it, with a warning)."""


@dataclass(frozen=True, slots=True)
class Block:
    """A heading (``level`` 1-6) or a paragraph (``level`` 0)."""

    text: str
    level: int = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage: its heading path ("" when the document has no headings) and its text."""

    heading: str
    text: str

    @property
    def searchable(self) -> str:
        """What is embedded: the heading path gives the passage its context."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def kind_of(name: str) -> Kind | None:
    """The format of a file, from its name (None: not one we read)."""
    dot = name.rfind(".")
    return KINDS.get(name[dot:].lower()) if dot >= 0 else None


def blocks_of(kind: Kind, data: bytes, *, max_pdf_pages: int = 300) -> tuple[list[Block], str]:
    """The blocks of a document, and a warning ("" when none). ``BrokenDocument`` if it
    cannot be read."""
    if kind == "pdf":
        return pdf_blocks(data, max_pdf_pages)
    if b"\x00" in data[:8192]:
        raise BrokenDocument("binary data, not text")
    text = data.decode("utf-8-sig", errors="replace")
    if kind == "markdown":
        return markdown_blocks(text), ""
    if kind == "html":
        return html_blocks(text), ""
    return text_blocks(text), ""


# --- chunking ---------------------------------------------------------------------------------


def chunk(blocks: Iterable[Block], max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """Passages of at most ``max_chars``: paragraphs of one section packed together, long
    paragraphs cut at sentence ends (or, failing that, between words)."""
    out: list[Chunk] = []
    path: list[tuple[int, str]] = []
    pending: list[str] = []

    def flush() -> None:
        heading = HEADING_SEPARATOR.join(text for _, text in path)
        size = 0
        parts: list[str] = []
        for piece in _pieces(pending, max_chars):
            if parts and size + 1 + len(piece) > max_chars:
                out.append(Chunk(heading, "\n".join(parts)))
                parts, size = [], 0
            parts.append(piece)
            size += len(piece) + (1 if size else 0)
        if parts:
            out.append(Chunk(heading, "\n".join(parts)))
        pending.clear()

    for block in blocks:
        text = block.text.strip()
        if not text:
            continue
        if block.level:
            flush()
            while path and path[-1][0] >= block.level:
                path.pop()
            path.append((block.level, text))
        else:
            pending.append(text)
    flush()
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def _pieces(paragraphs: list[str], max_chars: int) -> Iterator[str]:
    """Each paragraph, or its sentences (words, for a sentence too long) when it is too long."""
    for paragraph in paragraphs:
        if len(paragraph) <= max_chars:
            yield paragraph
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            if len(sentence) <= max_chars:
                yield sentence
                continue
            line = ""
            for word in sentence.split():
                word = word[:max_chars]
                if line and len(line) + 1 + len(word) > max_chars:
                    yield line
                    line = ""
                line = f"{line} {word}" if line else word
            if line:
                yield line


# --- plain text -------------------------------------------------------------------------------

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


def text_blocks(text: str) -> list[Block]:
    """Paragraphs separated by blank lines; lines within one are joined."""
    return [Block(p) for p in _paragraphs(text.splitlines())]


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    current: list[str] = []
    for line in lines:
        line = _SPACES.sub(" ", line).strip()
        if line:
            current.append(line)
        elif current:
            yield " ".join(current)
            current = []
    if current:
        yield " ".join(current)


# --- Markdown ---------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_HRULE = re.compile(r"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_LINK_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s+\S+")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1")
_CODE = re.compile(r"`+([^`]+)`+")
_TAG = re.compile(r"</?[A-Za-z][^>]*>")


def _inline(text: str) -> str:
    """Markdown inline syntax to the words a reader sees."""
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _REF_LINK.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


def markdown_blocks(text: str) -> list[Block]:
    """Headings (ATX ``#`` and setext underlines) and paragraphs; list items keep a line each,
    table rows too; front matter, link definitions and rules are dropped."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":  # YAML front matter
        for end in range(1, len(lines)):
            if lines[end].strip() in {"---", "..."}:
                lines = lines[end + 1 :]
                break
    blocks: list[Block] = []
    current: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if current:
            blocks.append(Block("\n".join(current)))
            current.clear()

    for raw in lines:
        if fence is not None:
            if raw.strip().startswith(fence):
                fence = None
                flush()
            elif raw.strip():
                current.append(raw.rstrip())
            continue
        if (opened := _FENCE.match(raw)) is not None:
            flush()
            fence = opened.group(1)
            continue
        line = _SPACES.sub(" ", raw).strip()
        if not line:
            flush()
            continue
        if (atx := _ATX.match(raw)) is not None:
            flush()
            blocks.append(Block(_inline(atx.group(2) or ""), len(atx.group(1))))
            continue
        if _SETEXT.match(raw) and len(current) == 1 and not _LIST_ITEM.match(current[0]):
            level = 1 if raw.strip().startswith("=") else 2
            blocks.append(Block(_inline(current.pop()), level))
            continue
        if "|" in line and _TABLE_RULE.match(raw):
            continue  # the rule under a table's header row
        if _HRULE.match(raw) or _LINK_DEF.match(raw):
            flush()
            continue
        if line.startswith(">"):
            line = line.lstrip("> ").strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            current.append(_inline(" | ".join(c for c in cells if c)))
        elif _LIST_ITEM.match(line) or not current:
            current.append(_inline(_LIST_ITEM.sub("- ", line, count=1)))
        else:
            current[-1] += " " + _inline(line)
    flush()
    return [b for b in blocks if b.text.strip()]


# --- HTML -------------------------------------------------------------------------------------

_SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "head", "nav", "footer"})
_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "main",
        "header",
        "aside",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "tr",
        "table",
        "pre",
        "blockquote",
        "br",
        "hr",
        "form",
        "figure",
        "figcaption",
        "address",
    }
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "wbr", "source", "area", "col"})


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._text: list[str] = []
        self._skip = 0
        self._heading = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skip += 1
        elif tag in _HEADINGS:
            self._flush()
            self._heading = _HEADINGS[tag]
        elif tag in _BLOCK_TAGS:
            self._flush()
        elif tag == "td" or tag == "th":
            self._text.append(" | ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skip = max(0, self._skip - 1)
        elif tag in _HEADINGS or tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._text.append(data)

    def _flush(self) -> None:
        text = _SPACES.sub(" ", " ".join("".join(self._text).split())).strip(" |")
        self._text = []
        if text:
            self.blocks.append(Block(text, self._heading))
        self._heading = 0

    def close(self) -> None:
        super().close()
        self._flush()


def html_blocks(text: str) -> list[Block]:
    """Headings (h1-h6) and the text of block elements; scripts, styles, navigation and
    footers are dropped."""
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    return parser.blocks


# --- PDF --------------------------------------------------------------------------------------


def pdf_blocks(data: bytes, max_pages: int) -> tuple[list[Block], str]:
    """A heading per page ("Page 3") and its paragraphs; at most ``max_pages`` pages."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ModuleNotFoundError:
        raise MissingExtra("pypdf") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise BrokenDocument("encrypted PDF")
        total = len(reader.pages)
        warning = ""
        if total > max_pages:
            warning = f"only the first {max_pages} of its {total} pages are indexed"
        blocks: list[Block] = []
        for number, page in enumerate(reader.pages, start=1):
            if number > max_pages:
                break
            text = page.extract_text()[:MAX_PAGE_CHARS]
            paragraphs = list(_paragraphs(text.splitlines()))
            if paragraphs:
                blocks.append(Block(f"Page {number}", 1))
                blocks += [Block(p) for p in paragraphs]
    except BrokenDocument:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        # pypdf reports damaged files with its own errors, and with these from its parser.
        raise BrokenDocument(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    if not blocks:
        raise BrokenDocument("no text in the PDF (scanned pages need OCR first)")
    return blocks, warning
