"""Knobs of the simulated Live API: timing, voice activity detection and fault injection."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FaultPlan", "ModelTraits", "SimBehaviour", "model_traits"]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Random faults for soak runs: what can go wrong with a Live API connection, and how often.

    Every session that completes setup injects faults at random times: the waits are
    exponential with mean ``mean_interval_s`` (a Poisson process), and each fault is drawn
    with the relative ``*_weight``s (0 turns a kind off). Faults that end the connection
    (goAway, closes, a refused resumption) are the session's last; a stall is followed by
    more faults once it is over. Independently, each new connection may fail its setup
    (``setup_hang_probability``, ``quota_probability``).

    Every injected fault is recorded on the session (``SimSession.faults_injected``) under one
    of these names:

    - ``go_away``: ``goAway`` with a ``timeLeft`` drawn from ``go_away_time_left_s``, then a
      close with 1011 "Deadline expired…" when that has passed (the real per-connection limit);
    - ``close_1011``: an abrupt close with 1011 "Internal error encountered.";
    - ``close_1007`` / ``close_1008``: closes with the codes and messages reported around
      goAway rotation ("Request contains an invalid argument.", "The operation was aborted.");
    - ``refuse_resumption``: the connection is lost (1011) and its resumption handles are
      revoked, so the reconnect must start a fresh session;
    - ``stall``: the session goes silent (nothing is sent, input is still read) for a time
      drawn from ``stall_s``, while the socket stays open and answers pings;
    - ``setup_hang``: ``setupComplete`` never comes (the client must time out);
    - ``quota``: setup is refused with 1008 "Quota exceeded";
    - ``drop_after_setup``: the connection is closed (1011) right after ``setupComplete``;
    - ``damaged_audio``: an audio chunk with invalid base64, then one of odd length;
    - ``silent_answer``: the next answer is spoken at near-zero amplitude;
    - ``rejected_answer``: the next answer is an empty turn ending ``RESPONSE_REJECTED``;
    - ``oversized``: one message far over any sane size (the client must refuse it).

    The last four are "hostile model" faults, off by default (weight 0).

    The closes (``close_*``, ``refuse_resumption``) wait up to ``align_s`` for a moment when
    the model's answer is playing or the caller is speaking: losses there are the ones a
    caller notices. Draws come from the session's random stream (``SimBehaviour.seed``).
    """

    #: Mean time between faults on one connection (exponential waits).
    mean_interval_s: float = 20.0
    go_away_weight: float = 1.0
    close_weight: float = 1.0
    #: 1007 or 1008, even odds.
    protocol_close_weight: float = 1.0
    stall_weight: float = 1.0
    refuse_resumption_weight: float = 1.0
    damaged_audio_weight: float = 0.0
    silent_answer_weight: float = 0.0
    rejected_answer_weight: float = 0.0
    oversized_weight: float = 0.0
    #: ``timeLeft`` of an injected goAway, drawn uniformly from this range (s).
    go_away_time_left_s: tuple[float, float] = (2.0, 10.0)
    #: Length of an injected stall, drawn uniformly from this range (s).
    stall_s: tuple[float, float] = (3.0, 15.0)
    #: The longest a close waits for speech (either side) before it happens anyway.
    align_s: float = 5.0
    #: At most this many faults per connection (``None``: no limit).
    max_per_session: int | None = None
    #: Fraction of new connections whose setup never completes.
    setup_hang_probability: float = 0.0
    #: Fraction of new connections refused at setup with 1008 "Quota exceeded".
    quota_probability: float = 0.0
    #: Fraction of new connections closed (1011) right after ``setupComplete``.
    drop_after_setup_probability: float = 0.0

    def __post_init__(self) -> None:
        if not (self.mean_interval_s > 0 and math.isfinite(self.mean_interval_s)):
            raise ValueError("mean_interval_s must be a positive number")
        weights = self.weights
        if min(weights.values()) < 0 or not all(math.isfinite(w) for w in weights.values()):
            raise ValueError("fault weights must be finite and >= 0")
        for name in ("go_away_time_left_s", "stall_s"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi or not math.isfinite(hi):
                raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi")
        if self.align_s < 0:
            raise ValueError("align_s must be >= 0")
        if self.max_per_session is not None and self.max_per_session < 0:
            raise ValueError("max_per_session must be >= 0")
        for name in ("setup_hang_probability", "quota_probability", "drop_after_setup_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")

    @property
    def weights(self) -> dict[str, float]:
        """Relative weight of each connection fault, by kind (``protocol_close`` = 1007/1008)."""
        return {
            "go_away": self.go_away_weight,
            "close": self.close_weight,
            "protocol_close": self.protocol_close_weight,
            "stall": self.stall_weight,
            "refuse_resumption": self.refuse_resumption_weight,
            "damaged_audio": self.damaged_audio_weight,
            "silent_answer": self.silent_answer_weight,
            "rejected_answer": self.rejected_answer_weight,
            "oversized": self.oversized_weight,
        }


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
    #: Wait this long before answering ``setup`` with ``setupComplete`` (the real service
    #: takes hundreds of ms).
    setup_delay_s: float = 0.0
    #: Fault: close every connection with this ``(code, reason)`` right after
    #: ``setupComplete`` (a service that accepts connections and drops them).
    close_after_setup: tuple[int, str] | None = None
    #: Fault: reply audio is scaled by this (e.g. 0.001: full-length answers at near-zero
    #: amplitude, as seen on real lines).
    answer_gain: float = 1.0
    #: Which generation of Live model to act like. ``"auto"``: from the setup's model name.
    #: ``"2.5"``: every message carries one kind of content. ``"3.8"``: audio and its
    #: transcript in one message, and a blocking function call still unanswered is cancelled
    #: (``toolCallCancellation``) when the caller starts speaking. ``"3.8-thinking"`` (the
    #: extended-thinking model): also ``interactionStatus`` (``IN_PROGRESS`` while it works,
    #: ``IDLE`` when done), and each answer split by a ``turnComplete`` half-way, so that
    #: ``turnComplete`` alone does not say the answer is over.
    model_generation: str = "auto"
    #: Fault: every model turn is an empty one with ``turnCompleteReason:
    #: RESPONSE_REJECTED`` (no audio, no transcript).
    reject_answers: bool = False
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
    #: Random faults for soak runs (``None``: none). Read when a session completes setup
    #: (and, for setup faults, when it receives ``setup``).
    faults: FaultPlan | None = None
    #: What the simulated model says (NOT A REAL MODEL either way). ``"echo"``: caller speech
    #: is played back and transcribed as ``[caller speech N s]``. ``"converse"``: the caller is
    #: transcribed with pocketsphinx (if installed), answered by the small rule-based policy of
    #: :mod:`agent.simulator.converse` (tool calls, knowledge search, goodbye + ``end_call``)
    #: and spoken with espeak-ng (if installed; else the numpy voice). Read live.
    dialogue: str = "echo"
    #: Speech recognition threads (each with its own pocketsphinx decoder) of the process's
    #: shared pool; read when the pool is first made.
    recognizer_threads: int = 2
    #: Seed for chunk sizes, tool call ids and faults (``None``: unpredictable). Read once, when
    #: the simulator is created; each session gets its own streams derived from it.
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.dialogue not in ("echo", "converse"):
            raise ValueError(f"unknown dialogue {self.dialogue!r} (echo, converse)")


@dataclass(frozen=True, slots=True)
class ModelTraits:
    """What a model generation does differently (see ``SimBehaviour.model_generation``)."""

    combined_messages: bool = False
    cancel_blocking_on_speech: bool = False
    interaction_status: bool = False
    split_answers: bool = False


def model_traits(behaviour: SimBehaviour, model: str) -> ModelTraits:
    """The traits for ``behaviour`` in a session set up for ``model``."""
    generation = behaviour.model_generation
    if generation == "auto":
        name = model.lower()
        if "3.8" in name or "3-8" in name:
            generation = "3.8-thinking" if "thinking" in name else "3.8"
        else:
            generation = "2.5"
    if generation == "3.8":
        return ModelTraits(combined_messages=True, cancel_blocking_on_speech=True)
    if generation == "3.8-thinking":
        return ModelTraits(True, True, interaction_status=True, split_answers=True)
    if generation == "2.5":
        return ModelTraits()
    raise ValueError(f"unknown model generation {generation!r} (auto, 2.5, 3.8, 3.8-thinking)")
