"""Which files make up the knowledge base, within the limits on untrusted input.

The documents are the operator's, but they come from anywhere (a CMS export, a vendor's
PDF): every limit here bounds what one bad file can cost at startup. A file over a limit,
unreadable or of an unknown kind is left out with a warning naming it; nothing here stops
the rest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agent.knowledge.documents import Kind, kind_of

__all__ = ["Limits", "Scan", "SourceFile", "scan"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what is indexed (the defaults are documented in docs/knowledge.md)."""

    max_files: int = 1_000
    max_file_bytes: int = 20 * 1024 * 1024
    max_pdf_pages: int = 300
    max_chunks_per_file: int = 2_000
    max_chunks: int = 50_000


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file to index: its name in answers (relative to the folder given), where it is,
    what it is and the hash of its bytes."""

    name: str
    path: Path
    kind: Kind
    size: int
    sha256: str
    data: bytes = field(repr=False)


@dataclass
class Scan:
    """The files found, and what was left out (one warning per file)."""

    files: list[SourceFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _candidates(root: Path) -> Iterable[tuple[str, Path]]:
    """(name, path) of every file under ``root``, sorted; hidden files and folders skipped,
    symbolic links to folders not followed."""
    if root.is_file():
        yield root.name, root
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                path = Path(folder) / name
                yield path.relative_to(root).as_posix(), path


def scan(paths: Iterable[Path], limits: Limits = DEFAULT_LIMITS) -> Scan:
    """Read the files of ``paths`` (folders or files) that we can index."""
    found = Scan()
    seen: set[str] = set()
    for root in paths:
        if not root.exists():
            found.warnings.append(f"{root}: does not exist")
            continue
        for name, path in _candidates(root):
            kind = kind_of(name)
            if kind is None:
                continue  # not a document (images, spreadsheets, ...): silently not ours
            if name in seen:
                found.warnings.append(f"{path}: skipped, another file is already named {name}")
                continue
            if len(found.files) >= limits.max_files:
                found.warnings.append(
                    f"{path}: skipped, more than {limits.max_files} files (and any after it)"
                )
                return found
            try:
                if not path.is_file():
                    continue
                size = path.stat().st_size
                if size > limits.max_file_bytes:
                    found.warnings.append(
                        f"{path}: skipped, {size} bytes is over the limit of "
                        f"{limits.max_file_bytes}"
                    )
                    continue
                with path.open("rb") as f:
                    data = f.read(limits.max_file_bytes + 1)
            except OSError as exc:
                found.warnings.append(f"{path}: skipped, cannot read it ({exc.strerror or exc})")
                continue
            if len(data) > limits.max_file_bytes:  # grew while we looked
                found.warnings.append(f"{path}: skipped, over the limit of bytes")
                continue
            seen.add(name)
            digest = hashlib.sha256(data).hexdigest()
            found.files.append(SourceFile(name, path, kind, len(data), digest, data))
    return found
