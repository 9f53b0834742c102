"""``.env`` in the working directory: read at startup, under the process environment.

A line python-dotenv cannot parse is an error that names the file and line (python-dotenv
alone would only log a warning and skip it, so a typo would silently fall back to a default).
A name the service does not read is reported as a warning: it is usually a typo too.
"""

from __future__ import annotations

import io
import os
from collections.abc import Collection, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from telephony.errors import TelephonyError

__all__ = ["EnvFile", "EnvFileError", "env_sources", "load_env_file"]


class EnvFileError(TelephonyError, ValueError):
    """The ``.env`` file cannot be read or parsed (the message names the file and line)."""


@dataclass(frozen=True)
class EnvFile:
    """What loading ``.env`` did."""

    path: Path | None  # None: there was no file
    #: Variables whose value came from the file (the process environment did not set them).
    applied: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def sources(self) -> dict[str, str]:
        """For error messages: where each applied variable came from."""
        label = str(self.path) if self.path is not None else ".env"
        return dict.fromkeys(self.applied, label)


def load_env_file(
    path: Path | str = ".env",
    *,
    known: Collection[str] = (),
    environ: MutableMapping[str, str] | None = None,
) -> EnvFile:
    """Apply ``path`` to ``environ`` (default ``os.environ``) without overriding anything.

    The values go into the process environment, not only into our settings, because the
    google-genai SDK reads its own variables (``GOOGLE_GEMINI_BASE_URL``, ``SSL_CERT_FILE``,
    ``GOOGLE_CLOUD_PROJECT`` …) from there.
    """
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    env = os.environ if environ is None else environ
    if environ is None:
        _SOURCES.clear()
    file = Path(path)
    if not file.is_file():
        return EnvFile(None)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvFileError(f"cannot read {file}: {exc}") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.string.strip()
            raise EnvFileError(
                f"{file}, line {binding.original.line}: cannot parse {line[:60]!r} "
                "(expected NAME=value)"
            )
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    applied: dict[str, str] = {}
    warnings: list[str] = []
    for name, value in values.items():
        if known and name not in known:
            warnings.append(f"{file} sets {name}, which voice-agent does not read (a typo?)")
        if value is None or name in env:
            continue  # a bare NAME line, or the process environment wins
        env[name] = value
        applied[name] = value
    loaded = EnvFile(file, applied, tuple(warnings))
    if environ is None:
        _SOURCES.update(loaded.sources)
    return loaded


#: What the last load into the process environment set, for error messages.
_SOURCES: dict[str, str] = {}


def env_sources() -> dict[str, str]:
    """Variables of the process environment that came from ``.env`` (name → file)."""
    return dict(_SOURCES)
