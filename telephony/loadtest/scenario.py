"""What each call of a load test says, and how: recordings, replay mode, turn-taking, bounds.

A :class:`Scenario` is pure data plus the loaded recordings; both the asyncio runner and the
Locust user build every call from it with :meth:`Scenario.new_call`, so they replay
identically. Calls cycle through the recordings in order (call ``i`` replays recording
``i mod n``).
"""

from __future__ import annotations

import glob
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from telephony.caller import (
    CallerTurn,
    RecordedCall,
    RecordingError,
    ReplayMode,
    SimulatedCall,
    TurnTaking,
    load_recording,
    simulated_call,
)
from telephony.caller.answers import expectations_for

__all__ = ["AUDIO_SUFFIXES", "Scenario", "Script", "expand_recordings", "load_scripts"]

#: Audio files picked up from a directory (soundfile reads these).
AUDIO_SUFFIXES: Final = frozenset({".wav", ".flac", ".ogg", ".oga"})


@dataclass(frozen=True, slots=True)
class Script:
    """A loaded recording and its turns (cut once, replayed by many calls)."""

    name: str
    recording: RecordedCall
    turns: tuple[CallerTurn, ...]
    #: Phrases the agent's answers must contain (``--expect`` and the recording's own file,
    #: see :mod:`telephony.caller.answers`).
    expect: tuple[str, ...] = ()

    @property
    def speech_s(self) -> float:
        """Seconds of caller audio in the turns."""
        return sum(len(t.audio) for t in self.turns) / 8000


def _is_recorded_call(path: Path) -> bool:
    return (path / "events.jsonl").is_file() and (path / "caller.wav").is_file()


def expand_recordings(specs: Iterable[str]) -> list[Path]:
    """Files, directories and globs → the recordings they name, in a stable order.

    A directory is either one recorded call (it holds ``events.jsonl`` and ``caller.wav``),
    or a ``RECORD_CALLS`` root or folder of audio files: then every recorded call directly
    inside it and every audio file in it (sorted by name). Raises :class:`RecordingError`
    when a spec matches nothing, so a typo does not silently shrink the test.
    """
    found: list[Path] = []
    for spec in specs:
        matches = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
        before = len(found)
        for match in matches:
            path = Path(match)
            if path.is_dir() and not _is_recorded_call(path):
                for child in sorted(path.iterdir()):
                    if (child.is_dir() and _is_recorded_call(child)) or (
                        child.is_file() and child.suffix.lower() in AUDIO_SUFFIXES
                    ):
                        found.append(child)
            elif path.exists():
                found.append(path)
        if len(found) == before:
            raise RecordingError(f"{spec}: no recordings found")
    return found


def load_scripts(
    paths: Sequence[Path], channel: int | None = None, expect: Sequence[str] = ()
) -> list[Script]:
    """Load every recording (:func:`telephony.caller.load_recording`) and cut its turns;
    each expects the phrases ``expect`` and those of its own expectations file.

    A recording with no speech and no key presses is refused: replayed turn by turn it
    would say nothing at all.
    """
    scripts: list[Script] = []
    for path in paths:
        recording = load_recording(path, channel)
        turns = tuple(recording.turns())
        if not turns:
            raise RecordingError(f"{path}: no speech or key presses found")
        phrases = (*expect, *expectations_for(path))
        scripts.append(Script(path.name or str(path), recording, turns, phrases))
    return scripts


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@dataclass(frozen=True)
class Scenario:
    """How every call of a run behaves.

    ``linger_s``: after the caller's last turn has been answered (or the answer timed out),
    hang up once the agent has been quiet this long. ``max_call_s``: hard cap on one call.
    ``expect_greeting``: a call whose agent says nothing before the caller's first words is
    a failure (set False for agents configured to let the caller speak first).
    """

    scripts: tuple[Script, ...]
    mode: ReplayMode = "turns"
    turn_taking: TurnTaking = field(default_factory=TurnTaking)
    linger_s: float = 1.0
    max_call_s: float = 120.0
    expect_greeting: bool = True
    #: One Twilio account places every call of a run, as in production.
    account_sid: str = field(default_factory=lambda: _sid("AC"))

    def __post_init__(self) -> None:
        if not self.scripts:
            raise ValueError("a scenario needs at least one recording")
        if self.max_call_s <= 0 or self.linger_s < 0:
            raise ValueError("max_call_s must be > 0 and linger_s >= 0")

    def script(self, index: int) -> Script:
        """The recording call number ``index`` replays."""
        return self.scripts[index % len(self.scripts)]

    def new_call(
        self,
        index: int,
        *,
        call_sid: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
    ) -> SimulatedCall:
        """The sans-I/O call number ``index``; fresh SIDs unless ``call_sid`` is given (the
        webhook flow uses the CallSid it posted). ``custom_parameters`` default to the
        recording's own."""
        script = self.script(index)
        return simulated_call(
            script.recording,
            self.mode,
            turn_taking=self.turn_taking,
            turns=script.turns,
            custom_parameters=custom_parameters,
            call_sid=call_sid or _sid("CA"),
            stream_sid=_sid("MZ"),
            account_sid=self.account_sid,
            linger_s=self.linger_s,
            max_duration_s=self.max_call_s,
        )


def scenario_warnings(scenario: Scenario) -> list[str]:
    """What this scenario cannot measure, said before the run (and in the report)."""
    warnings: list[str] = []
    if scenario.mode == "barge-in":
        single = [s.name for s in scenario.scripts if len(s.turns) < 2]
        if single:
            names = ", ".join(single[:3]) + (" ..." if len(single) > 3 else "")
            warnings.append(
                f"--mode barge-in talks over the agent's answer to the previous utterance, "
                f"so a recording with one utterance measures no barge-in: {len(single)} of "
                f"{len(scenario.scripts)} recordings have one ({names}). Use recordings with "
                "two or more utterances (a question, then a follow-up)."
            )
    return warnings
