"""Sample caller speech shipped with the package (public-domain LibriVox clips; README.md).

``DEFAULT`` is what ``voice-agent call`` says when given no audio file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["DEFAULT", "DIRECTORY", "all_samples", "transcript"]

DIRECTORY: Final = Path(__file__).resolve().parent
DEFAULT: Final = DIRECTORY / "librivox-0880.wav"


def all_samples() -> list[Path]:
    """Every bundled clip, in name order."""
    return sorted(DIRECTORY.glob("*.wav"))


def transcript(sample: Path) -> str:
    """The words of a bundled clip (its ``.txt``), as one line."""
    return " ".join(sample.with_suffix(".txt").read_text(encoding="utf-8").split())
