"""Knobs of the simulated Live API: timing, voice activity detection and fault injection."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SimBehaviour"]


@dataclass(frozen=True, slots=True)
class SimBehaviour:
    """How a :class:`~agent.simulator.LiveSimulator` behaves. Change with ``dataclasses.replace``.

    A session reads its behaviour live (``SimSession.behaviour`` may be reassigned mid-call);
    the simulator's behaviour is copied to each new session when it connects.
    """

    #: Reply audio is sent at this multiple of real time (the real service streams faster
    #: than real time). ``0`` or ``inf``: as fast as possible.
    pace: float = 4.0
    #: Reply audio chunk durations are drawn uniformly from this range (ms); sample counts
    #: are arbitrary, odd ones included, as with the real service.
    chunk_ms: tuple[float, float] = (20.0, 120.0)
    #: Delay between the end of the caller's input and the first reply chunk.
    think_ms: float = 300.0
    #: A 20 ms frame of caller audio at or above this RMS level counts as speech.
    vad_threshold_dbfs: float = -40.0
    #: Speech starts after this much uninterrupted loudness (setup's
    #: ``automaticActivityDetection.prefixPaddingMs`` overrides it).
    vad_start_ms: float = 100.0
    #: An utterance ends after this much quiet (setup's ``silenceDurationMs`` overrides it).
    silence_ms: float = 500.0
    #: Like the real service, hold ``turnComplete`` until the reply audio would have finished
    #: playing in real time (``generationComplete`` comes as soon as all audio is sent).
    #: ``False``: send ``turnComplete`` right after ``generationComplete``.
    hold_turn_complete: bool = True
    #: Wait this long before answering ``setup`` with ``setupComplete``.
    setup_delay_s: float = 0.0
    #: Fault: ``False`` = never send ``setupComplete`` (the SDK's connect() then hangs).
    complete_setup: bool = True
    #: Fault: close the connection with this ``(code, reason)`` instead of completing setup,
    #: e.g. ``(1008, "Quota exceeded")``.
    reject_setup: tuple[int, str] | None = None
    #: Fault: refuse every resumption handle, even ones this simulator issued.
    refuse_resumption: bool = False
    #: Close code and reason for a refused or unknown resumption handle.
    resumption_refusal: tuple[int, str] = (1008, "Session resumption handle is invalid.")
    #: Send ``goAway`` this many seconds after ``setupComplete`` (``None``: never), then close
    #: with 1011 when ``go_away_time_left_s`` has passed, like the real per-connection limit.
    go_away_after_s: float | None = None
    go_away_time_left_s: float = 50.0
    #: Negotiate permessage-deflate. Off by default: it costs CPU on both ends at load.
    #: Read once, when the simulator starts.
    compression: bool = False
    #: Seed for chunk sizes and tool call ids (``None``: unpredictable). Read once, when the
    #: simulator is created; each session gets its own stream derived from it.
    seed: int | None = None
