"""Typed reading of environment variables, shared by the model side and the phone side.

Every variable the service reads is declared once as a :class:`Variable` (name, default as
written in a ``.env`` file, one-line meaning, section). The declarations are the single list
behind ``.env.example``, the README's configuration tables and the hermetic test setup.
:class:`EnvReader` reads only declared variables, converts them, and raises
:class:`ConfigError` naming the variable (and the file it came from, for ``.env``) on a bad
value, so a typo stops startup with one line instead of failing at the first call.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from agent.events import AgentError

__all__ = ["ConfigError", "EnvReader", "Variable", "env_example"]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(AgentError, ValueError):
    """A configuration variable has an invalid value. The message names the variable."""

    def __init__(self, variable: str, problem: str, *, source: str | None = None) -> None:
        where = f" (set in {source})" if source else ""
        super().__init__(f"configuration error: {variable}{where}: {problem}", retryable=False)
        self.variable = variable
        self.problem = problem
        self.source = source


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable: what ``.env.example`` and the docs say about it."""

    name: str
    #: The default as it would be written in a ``.env`` file ("" when unset by default).
    default: str
    #: One line: what it does.
    meaning: str
    section: str
    #: Holds a credential: never printed, and ``.env.example`` leaves it empty.
    secret: bool = False
    #: Read by the google-genai SDK itself (we only look at it).
    sdk: bool = False


class EnvReader:
    """Reads declared variables from a mapping; records what it read and its warnings.

    ``sources`` maps a variable name to where its value came from when that is not the
    process environment (e.g. ``".env"``), for error messages.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        declared: Iterable[Variable],
        *,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self.env = env
        self.declared = {v.name: v for v in declared}
        self.sources = dict(sources or {})
        self.warnings: list[str] = []
        self.read: set[str] = set()

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(name, problem, source=self.sources.get(name))

    def get(self, name: str) -> str | None:
        """The raw value (None when unset); only declared variables may be read."""
        if name not in self.declared:
            raise KeyError(f"{name} is not a declared variable (add it to the declarations)")
        self.read.add(name)
        return self.env.get(name)

    def raw(self, name: str) -> str | None:
        """The value stripped of whitespace; None when unset or blank."""
        value = self.get(name)
        if value is None:
            return None
        value = value.strip()
        return value if value else None

    def parse(self, name: str, default: T, convert: Callable[[str], T], what: str) -> T:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError:
            raise self.error(name, f"expected {what}, got {raw!r}") from None

    def positive_int(self, name: str, default: int, upper: int = 1_000_000) -> int:
        value = self.parse(name, default, int, "a whole number")
        if not 1 <= value <= upper:
            raise self.error(name, f"must be between 1 and {upper}, got {value}")
        return value

    def int_between(self, name: str, default: int, lower: int, upper: int, what: str) -> int:
        value = self.parse(name, default, int, what)
        if not lower <= value <= upper:
            raise self.error(name, f"must be between {lower} and {upper}, got {value}")
        return value

    def seconds(self, name: str, default: float, upper: float = 86_400.0) -> float:
        value = self.parse(name, default, float, "a number of seconds")
        if not 0 < value <= upper:
            raise self.error(name, f"must be > 0 and <= {upper:g} seconds, got {value:g}")
        return value

    def seconds_or_off(self, name: str, default: float, upper: float = 86_400.0) -> float:
        """Seconds, where 0 turns the feature off."""
        value = self.parse(name, default, float, "a number of seconds (0: off)")
        if not 0 <= value <= upper:
            raise self.error(name, f"must be between 0 and {upper:g} seconds, got {value:g}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        if raw is None:
            return default
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise self.error(name, f"expected true/false, got {raw!r}")

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        """One of ``choices`` (case-insensitive; returned as written in ``choices``)."""
        options = list(choices)
        raw = self.raw(name)
        if raw is None:
            return default
        for option in options:
            if raw.lower() == option.lower():
                return option
        listed = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
        raise self.error(name, f"expected {listed}, got {raw!r}")


def env_example(variables: Iterable[Variable], header: str) -> str:
    """The text of ``.env.example``: every variable, commented out at its default."""
    lines = [header.rstrip()]
    section = None
    for var in variables:
        if var.section != section:
            section = var.section
            lines += ["", "", f"# --- {section} " + "-" * max(3, 88 - len(section))]
        meaning = var.meaning + (" (read by the google-genai SDK)" if var.sdk else "")
        lines.append("")
        lines += textwrap.wrap(meaning, 94, initial_indent="# ", subsequent_indent="# ")
        value = "" if var.secret else var.default
        lines.append(f"# {var.name}={_quoted(value)}")
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    if value == "" or all(c.isalnum() or c in "._-/:+@,=" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
