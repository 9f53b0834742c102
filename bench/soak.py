"""Soak test: do calls survive losing their Live API connection?

Runs the real server in this process (uvicorn, ``telephony.server.runner.local_server``) against an
in-process Live API simulator that injects random faults on every model connection
(``agent.simulator.FaultPlan``: goAway with a short ``timeLeft``, abrupt 1011 closes mid-answer
or mid-caller-speech, 1007/1008 closes, stalls, refused resumptions; optionally setup hangs and
quota refusals). The server reaches the simulator through the SDK's own variables
(``GEMINI_API_KEY``, ``GOOGLE_GEMINI_BASE_URL``, ``SSL_CERT_FILE``), exactly as it would reach a
proxy. N simulated Twilio calls run concurrently for M minutes each, placed like Twilio places
them (voice webhook, then the Media Stream); each caller says synthesized sentences turn by
turn (it waits for the agent's answer, thinks, says the next one) until its time is up and it
hangs up. Then it reports:

- calls dropped (target 0): calls that did not end with the caller hanging up, and why;
- caller audio lost (target 0 beyond documented drops): per call, the caller audio the server
  got from Twilio vs the caller audio the model received over all the call's connections
  (simulator sessions are tied to calls by TCP port: ``SimSession.peer_port`` ==
  ``CallSummary.model_connections[*].local_port``), with the server's own
  ``caller_audio_dropped_ms`` and the pre-session buffer's drops;
- model connections and reconnects by reason, faults injected by kind, stalls detected and
  recovered;
- the worst pause the caller heard inside an answer and the worst response latency.

Every call has a maximum duration and the run a deadline: it stops by itself. Exit code 0 when
no call dropped and no caller audio went missing unexplained, 1 otherwise.

    python bench/soak.py --calls 4 --minutes 1 [--mean-fault-interval 20] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import httpx
import numpy as np

from agent.simulator import FaultPlan, LiveSimulator, SimBehaviour, SimSession
from agent.simulator.voice import OUTPUT_RATE, synthesize
from telephony.audio import pcm16_to_ulaw_8k
from telephony.call.summary import CallSummary
from telephony.caller import (
    CallerTurn,
    CallFailed,
    CallResult,
    SimulatedCall,
    TurnTaking,
    drive_call,
    open_stream,
)
from telephony.loadtest.target import DialFailed, Target, dial
from telephony.server.runner import local_server
from telephony.settings import VARIABLE_NAMES, Settings
from telephony.twilio.media_stream import FRAME_MS

#: What the callers say, one sentence per turn (cycled, in a different order for each call).
SENTENCES: Final = (
    "Hi, I would like to check the opening hours for the weekend please",
    "Can you tell me whether my order has shipped yet",
    "I need to change the delivery address to my office",
    "Yes, that is right, thank you",
    "And how long does a refund usually take",
    "Okay. Could you also send me a confirmation by email",
    "The order number is four five seven, one two nine",
    "No, that was all, thanks",
)
VOICES: Final = ("Charon", "Kore", "Puck", "Aoede", "Fenrir", "Zephyr")
#: A caller thinks this long (drawn per call) after the agent went quiet before talking again.
THINK_S: Final = (0.4, 1.6)
#: Turns are answered within this, or the caller goes on (and the turn counts as unanswered).
ANSWER_TIMEOUT_S: Final = 8.0
#: Variables of the operator's shell that would change what is being tested (another model,
#: signature checks our unsigned calls would fail, recordings on disk).
ISOLATED_VARIABLES: Final = VARIABLE_NAMES
#: A caller ends its call normally by hanging up: when done, or when its time is up.
NORMAL_ENDS: Final = ("caller", "max_duration")
#: Caller audio sent and received are counted in different places (server frames, simulator
#: samples): a difference this small is rounding, not loss.
AUDIO_EPSILON_MS: Final = 1.0


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """One soak run. ``seed`` None: a random one (reported, to repeat the run)."""

    calls: int = 4
    duration_s: float = 60.0
    mean_fault_interval_s: float = 20.0
    seed: int | None = None
    #: Relative weights of the connection faults by kind (``FaultPlan`` field names without
    #: ``_weight``: go_away, close, protocol_close, stall, refuse_resumption); others keep 1.
    weights: Mapping[str, float] = field(default_factory=dict)
    setup_hang_probability: float = 0.0
    quota_probability: float = 0.0
    drop_after_setup_probability: float = 0.0
    #: Calls start this far apart, so that they do not all speak in the same instant.
    stagger_s: float = 0.25
    #: The run's deadline after the last call is due to end (summaries, closing handshakes).
    grace_s: float = 45.0

    def __post_init__(self) -> None:
        if self.calls < 1 or not self.duration_s > 0 or self.stagger_s < 0:
            raise ValueError("calls must be >= 1, duration_s > 0 and stagger_s >= 0")
        unknown = set(self.weights) - set(FaultPlan().weights)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")

    def fault_plan(self) -> FaultPlan:
        weights = {f"{kind}_weight": float(w) for kind, w in self.weights.items()}
        return replace(
            FaultPlan(
                mean_interval_s=self.mean_fault_interval_s,
                setup_hang_probability=self.setup_hang_probability,
                quota_probability=self.quota_probability,
                drop_after_setup_probability=self.drop_after_setup_probability,
            ),
            **weights,  # type: ignore[arg-type]
        )

    @property
    def deadline_s(self) -> float:
        return self.duration_s + self.stagger_s * self.calls + self.grace_s


@dataclass(eq=False)
class _Call:
    """One soak call as it goes: what the caller saw and what the server recorded."""

    index: int
    call_sid: str
    call: SimulatedCall | None = None
    result: CallResult | None = None
    summary: CallSummary | None = None
    #: Why the call could not be placed at all.
    error: str = ""
    sessions: list[SimSession] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The callers
# ---------------------------------------------------------------------------------------------


def _speech(text: str, voice: str) -> bytes:
    """A synthesized sentence as the 8 kHz μ-law a phone sends."""
    return pcm16_to_ulaw_8k(synthesize(text, voice).pcm, OUTPUT_RATE)


def caller_script(
    rng: np.random.Generator, duration_s: float
) -> tuple[list[CallerTurn], TurnTaking]:
    """Turns enough to keep talking for ``duration_s``, and how this caller takes turns.

    Each turn needs at least its words, the agent's answer (the simulator echoes the words
    back) and the think time, so that many turns fill the call; the caller hangs up when its
    time is up, whatever is left.
    """
    voice = str(rng.choice(VOICES))
    think_s = float(rng.uniform(*THINK_S))
    order = rng.permutation(len(SENTENCES))
    turns: list[CallerTurn] = []
    planned_s = 0.0
    while planned_s < duration_s:
        text = SENTENCES[int(order[len(turns) % len(order)])]
        audio = _speech(text, voice)
        turns.append(CallerTurn(audio))
        planned_s += 2 * len(audio) / 8000 + think_s
    taking = TurnTaking(think_s=think_s, answer_timeout_s=ANSWER_TIMEOUT_S, greeting_timeout_s=5.0)
    return turns, taking


async def _place(
    entry: _Call,
    client: httpx.AsyncClient,
    target: Target,
    turns: Sequence[CallerTurn],
    taking: TurnTaking,
    duration_s: float,
) -> None:
    """Place one call as Twilio does (webhook, then the stream) and play it to its end.

    Never raises but CancelledError (the run's deadline); the call's result is taken from
    ``entry.call`` afterwards in every case.
    """
    loop = asyncio.get_running_loop()
    account_sid = "AC" + uuid.uuid4().hex
    try:
        plan = await dial(client, target, entry.call_sid, account_sid)
        entry.call = SimulatedCall(
            b"",
            call_sid=entry.call_sid,
            account_sid=account_sid,
            custom_parameters=plan.custom_parameters,
            turns=turns,
            turn_taking=taking,
            linger_s=1.0,
            max_duration_s=duration_s,
        )
        ws = await open_stream(plan.connect_url, headers=plan.headers)
        await drive_call(ws, entry.call)
    except (DialFailed, CallFailed) as exc:
        entry.error = f"could not place the call ({exc.kind}): {exc}"
    except asyncio.CancelledError:
        if entry.call is not None and entry.call.started:
            entry.call.abort(loop.time(), "soak deadline")
        raise
    except Exception as exc:
        # The per-call boundary: a bug in one call must not end the soak for the others; the
        # call is reported as dropped, with the error.
        if entry.call is not None and entry.call.started:
            entry.call.abort(loop.time(), f"error: {exc!r}")
        else:
            entry.error = f"could not place the call: {exc!r}"


@contextlib.contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) process environment variables; restore them afterwards.

    The SDK reads GOOGLE_GEMINI_BASE_URL and SSL_CERT_FILE from the process environment
    itself, at each connect: they must stay set for the whole run.
    """
    saved = {name: os.environ.get(name) for name in values}

    def apply(state: Mapping[str, str | None]) -> None:
        for name, value in state.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    apply(values)
    try:
        yield
    finally:
        apply(saved)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


async def soak(
    config: SoakConfig, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the soak described by ``config`` and return its report (JSON-ready)."""
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    rng = np.random.default_rng(seed)
    behaviour = SimBehaviour(faults=config.fault_plan(), seed=seed)
    loop = asyncio.get_running_loop()
    began = loop.time()
    entries = [_Call(i, "CA" + uuid.uuid4().hex) for i in range(config.calls)]
    scripts = [caller_script(rng, config.duration_s) for _ in entries]
    async with LiveSimulator(behaviour=behaviour) as sim:
        env: dict[str, str | None] = dict.fromkeys(ISOLATED_VARIABLES)
        env.update(
            GEMINI_API_KEY="soak",
            GOOGLE_GEMINI_BASE_URL=sim.base_url,
            SSL_CERT_FILE=sim.ca_pem_path,
            MAX_CONCURRENT_CALLS=str(config.calls),
        )
        if "MAX_CALL_SECONDS" not in os.environ:
            # The server's own cap on a call (1 h by default) must not end a long soak's calls.
            env["MAX_CALL_SECONDS"] = str(max(3600.0, config.duration_s + 300.0))
        with _environment(env):
            settings = Settings.from_env(os.environ)
            async with (
                local_server(settings) as local,
                httpx.AsyncClient() as client,
            ):
                target = Target(webhook_url=f"{local.http_url}/twilio/voice")
                tasks: list[asyncio.Task[None]] = []
                for entry, (turns, taking) in zip(entries, scripts, strict=True):
                    task = asyncio.create_task(
                        _place(entry, client, target, turns, taking, config.duration_s)
                    )
                    tasks.append(task)
                    await asyncio.sleep(config.stagger_s)
                await _wait_for_calls(tasks, began, config.deadline_s, sim, entries, progress)
                await _collect_summaries(local.service.recent, entries, timeout_s=15.0)
            # The server has shut down: every model connection is closing. Their counters are
            # final once they are closed.
            await _wait_closed(sim.sessions, timeout_s=10.0)
            for entry in entries:
                if entry.call is not None and entry.call.started:
                    if not entry.call.ended:
                        entry.call.abort(loop.time(), "soak deadline")
                    entry.result = entry.call.result()
            mapped = _map_sessions(sim.sessions, entries)
            return _report(config, seed, loop.time() - began, sim, entries, mapped)


async def _wait_for_calls(
    tasks: list[asyncio.Task[None]],
    began: float,
    deadline_s: float,
    sim: LiveSimulator,
    entries: Sequence[_Call],
    progress: Callable[[str], None] | None,
) -> None:
    """Until every call has ended or the deadline has passed (then the rest are cut off),
    with a progress line every 15 s."""
    loop = asyncio.get_running_loop()
    pending = {t for t in tasks if not t.done()}
    while pending:
        remaining = began + deadline_s - loop.time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(remaining, 15.0))
        if progress is not None and pending:
            ended = sum(1 for e in entries if e.error or (e.call is not None and e.call.ended))
            progress(
                f"{loop.time() - began:5.0f} s: {len(pending)} calls in progress, {ended} "
                f"ended, {sum(sim.fault_counts.values())} faults injected, "
                f"{len(sim.sessions)} model connections"
            )
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _collect_summaries(
    recent: Sequence[CallSummary], entries: Sequence[_Call], *, timeout_s: float
) -> None:
    """Each call's summary from the server (it records a call a moment after the caller
    hangs up: wait for that, boundedly)."""
    wanted = {e.call_sid: e for e in entries if e.call is not None and e.call.started}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while True:
                for summary in list(recent):
                    entry = wanted.get(summary.call_sid)
                    if entry is not None:
                        entry.summary = summary
                if all(e.summary is not None for e in wanted.values()):
                    return
                await asyncio.sleep(0.05)


async def _wait_closed(sessions: Sequence[SimSession], *, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            for session in sessions:
                await session.wait_closed(timeout=timeout_s)


def _map_sessions(sessions: Sequence[SimSession], entries: Sequence[_Call]) -> bool:
    """Give each call the simulator sessions of its model connections; False when the server
    does not report its connections (no ``model_connections``), so no call has any.

    Ports are matched, and when a port was reused over the run, the session that connected
    closest to when the server says the connection was made wins.
    """
    by_port: dict[int, list[SimSession]] = {}
    for session in sessions:
        if session.peer_port is not None:
            by_port.setdefault(session.peer_port, []).append(session)
    claimed: set[str] = set()
    mapped = False
    for entry in entries:
        connections = _connections(entry.summary)
        mapped = mapped or bool(connections)
        started = entry.result.started_at if entry.result is not None else None
        for conn in connections:
            port = conn.get("local_port")
            candidates = [
                s
                for s in by_port.get(port if isinstance(port, int) else -1, [])
                if s.id not in claimed
            ]
            if not candidates:
                continue
            at_s = conn.get("at_s")
            if started is not None and isinstance(at_s, int | float):
                expected = started + at_s
                best = min(candidates, key=lambda s: abs(s.connected_at - expected))
            else:
                best = candidates[0]
            claimed.add(best.id)
            entry.sessions.append(best)
    return mapped


def _connections(summary: CallSummary | None) -> list[dict[str, Any]]:
    # getattr: the resilience layer's fields may not exist on the server being tested yet.
    value = getattr(summary, "model_connections", None) if summary is not None else None
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def _number(summary: CallSummary | None, name: str) -> float:
    value = getattr(summary, name, 0) if summary is not None else 0
    return float(value) if isinstance(value, int | float) else 0.0


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _drop_reason(entry: _Call) -> str | None:
    """Why a call counts as dropped, or None when the caller ended it normally."""
    if entry.error:
        return entry.error
    result, summary = entry.result, entry.summary
    if result is None:
        return "the run's deadline passed before the call started"
    why: list[str] = []
    if result.ended_by not in NORMAL_ENDS:
        if result.ended_by == "server":
            code = f"code {result.close_code}" + (
                f' "{result.close_reason}"' if result.close_reason else ""
            )
            why.append(f"the server closed the stream at {result.duration_s:.1f} s ({code})")
        else:
            why.append(f"the call broke off at {result.duration_s:.1f} s: {result.error}")
    if summary is None:
        why.append("no summary from the server")
    elif str(summary.outcome) != "completed":
        why.append(f"outcome {summary.outcome}: {summary.reason}")
    return "; ".join(why) or None


def _call_report(entry: _Call, mapped: bool) -> dict[str, Any]:
    """One call's part of the report (``mapped``: its simulator sessions are known)."""
    result, summary = entry.result, entry.summary
    sent_ms = float(summary.frames_in * FRAME_MS) if summary is not None else 0.0
    received_ms = sum(s.audio_in_ms for s in entry.sessions) if mapped else None
    dropped_ms = _number(summary, "caller_audio_dropped_ms")
    pre_session_ms = float(summary.dropped_pre_session_frames * FRAME_MS) if summary else 0.0
    lost_ms = None if received_ms is None else max(0.0, sent_ms - received_ms)
    gaps = result.gaps if result is not None else []
    worst_gap = max(gaps, key=lambda g: g.duration_s, default=None)
    answered, unanswered = _turns(result)
    worst_turn = max(answered, key=lambda t: t[1], default=None)
    connections = _connections(summary)
    return {
        "call_sid": entry.call_sid,
        "dropped": _drop_reason(entry),
        "outcome": str(summary.outcome) if summary is not None else None,
        "reason": summary.reason if summary is not None else entry.error,
        "ended_by": result.ended_by if result is not None else None,
        "duration_s": round(result.duration_s, 2) if result is not None else 0.0,
        "caller_audio": {
            "sent_ms": round(sent_ms, 1),
            "received_ms": None if received_ms is None else round(received_ms, 1),
            "lost_ms": None if lost_ms is None else round(lost_ms, 1),
            "duplicated_ms": (
                None if received_ms is None else round(max(0.0, received_ms - sent_ms), 1)
            ),
            "dropped_ms": round(dropped_ms, 1),
            "pre_session_dropped_ms": round(pre_session_ms, 1),
            "unexplained_ms": (
                None
                if lost_ms is None
                else round(max(0.0, lost_ms - dropped_ms - pre_session_ms), 1)
            ),
            "server_counted_ms": round(_number(summary, "caller_audio_ms"), 1),
        },
        "model_connections": connections,
        "simulator_sessions": [s.id for s in entry.sessions],
        "reconnects": int(_number(summary, "reconnects")),
        "stalls": int(_number(summary, "stalls")),
        "stalls_recovered": int(_number(summary, "stalls_recovered")),
        "faults": _faults(entry),
        "worst_gap": (
            None
            if worst_gap is None
            else {"ms": round(worst_gap.duration_s * 1000), "at_s": round(worst_gap.start_s, 2)}
        ),
        "worst_latency": (
            None
            if worst_turn is None
            else {"ms": round(worst_turn[1] * 1000), "at_s": round(worst_turn[0], 2)}
        ),
        "turns": len(answered) + unanswered,
        "unanswered_turns": unanswered,
    }


def _faults(entry: _Call) -> list[dict[str, Any]]:
    """The faults a call's model connections got, at call times (seconds since stream start),
    so they can be set against the call's pauses and latencies."""
    origin = entry.result.started_at if entry.result is not None else None
    faults = [
        {
            "at_s": None if origin is None else round(s.connected_at - origin + t, 2),
            "kind": kind,
            "session": s.id,
        }
        for s in entry.sessions
        for t, kind in s.faults_injected
    ]
    return sorted(faults, key=lambda f: -math.inf if f["at_s"] is None else f["at_s"])


def _turns(result: CallResult | None) -> tuple[list[tuple[float, float]], int]:
    """(utterance end, latency) of answered turns, and the number of unanswered ones.

    A turn that ended too close to the end of the call to be answered in time is neither.
    """
    if result is None:
        return [], 0
    answered: list[tuple[float, float]] = []
    unanswered = 0
    for turn in result.turns:
        latency = turn.latency_s
        if latency is not None:
            answered.append((turn.utterance_end_s, latency))
        elif turn.utterance_end_s < result.duration_s - ANSWER_TIMEOUT_S:
            unanswered += 1
    return answered, unanswered


def _worst(calls: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    for call in calls:
        value = call[key]
        if value is not None and (best is None or value["ms"] > best["ms"]):
            best = {**value, "call_sid": call["call_sid"]}
    return best


def _report(
    config: SoakConfig,
    seed: int,
    elapsed_s: float,
    sim: LiveSimulator,
    entries: Sequence[_Call],
    mapped: bool,
) -> dict[str, Any]:
    calls = [_call_report(e, mapped) for e in entries]
    sessions = sim.sessions
    claimed = {s.id for e in entries for s in e.sessions}
    unmapped = [s for s in sessions if s.id not in claimed]
    audio = [c["caller_audio"] for c in calls]
    sent_ms = sum(a["sent_ms"] for a in audio)
    if mapped:
        received_ms = sum(a["received_ms"] for a in audio)
        lost_ms: float | None = sum(a["lost_ms"] for a in audio)
        unexplained_ms: float | None = sum(a["unexplained_ms"] for a in audio)
        worst = max(calls, key=lambda c: c["caller_audio"]["lost_ms"])
        worst_loss: dict[str, Any] | None = {
            "call_sid": worst["call_sid"],
            "lost_ms": worst["caller_audio"]["lost_ms"],
            "sent_ms": worst["caller_audio"]["sent_ms"],
            "dropped": worst["dropped"] is not None,
        }
    else:
        # Without the server's connection list, only the totals can be compared.
        received_ms = sum(s.audio_in_ms for s in sessions)
        lost_ms = unexplained_ms = None
        worst_loss = None
    reasons: Counter[str] = Counter()
    resumed = primed = 0
    for call in calls:
        for conn in call["model_connections"]:
            if conn.get("reason") != "initial":
                reasons[str(conn.get("reason"))] += 1
            resumed += bool(conn.get("resumed"))
            primed += bool(conn.get("primed"))
    dropped = [c for c in calls if c["dropped"] is not None]
    return {
        "config": {
            "calls": config.calls,
            "duration_s": config.duration_s,
            "mean_fault_interval_s": config.mean_fault_interval_s,
            "seed": seed,
            "weights": dict(config.weights),
            "setup_hang_probability": config.setup_hang_probability,
            "quota_probability": config.quota_probability,
        },
        "elapsed_s": round(elapsed_s, 1),
        # The server reports its model connections (the resilience layer is in place).
        "connections_reported": mapped,
        "calls": {
            "total": len(calls),
            "dropped": len(dropped),
            "drops": [{"call_sid": c["call_sid"], "reason": c["dropped"]} for c in dropped],
        },
        "caller_audio": {
            "sent_ms": round(sent_ms, 1),
            "received_ms": round(received_ms, 1),
            "lost_ms": None if lost_ms is None else round(lost_ms, 1),
            "dropped_ms": round(sum(a["dropped_ms"] for a in audio), 1),
            "pre_session_dropped_ms": round(sum(a["pre_session_dropped_ms"] for a in audio), 1),
            "unexplained_ms": None if unexplained_ms is None else round(unexplained_ms, 1),
            "duplicated_ms": (round(sum(a["duplicated_ms"] for a in audio), 1) if mapped else None),
            "worst_call": worst_loss,
            "unmapped_sessions": len(unmapped) if mapped else None,
            "unmapped_received_ms": (
                round(sum(s.audio_in_ms for s in unmapped), 1) if mapped else None
            ),
        },
        "model": {
            "connections": len(sessions),
            "reconnects": sum(c["reconnects"] for c in calls),
            "reconnects_by_reason": dict(sorted(reasons.items())),
            "resumed": resumed,
            "primed": primed,
            "resumptions_refused": sum(s.resumption_refused for s in sessions),
            "connections_per_call_max": max(
                (max(len(c["model_connections"]), len(c["simulator_sessions"])) for c in calls),
                default=0,
            ),
        },
        "faults": {
            "total": sum(sim.fault_counts.values()),
            "by_kind": sim.fault_counts,
        },
        "stalls": {
            "detected": sum(c["stalls"] for c in calls),
            "recovered": sum(c["stalls_recovered"] for c in calls),
        },
        "heard": {
            "worst_gap": _worst(calls, "worst_gap"),
            "worst_latency": _worst(calls, "worst_latency"),
            "turns": sum(c["turns"] for c in calls),
            "unanswered_turns": sum(c["unanswered_turns"] for c in calls),
        },
        "per_call": calls,
    }


def passed(report: Mapping[str, Any]) -> bool:
    """The targets: no call dropped, no caller audio lost beyond documented drops."""
    unexplained = report["caller_audio"]["unexplained_ms"]
    return report["calls"]["dropped"] == 0 and (
        unexplained is None or unexplained <= AUDIO_EPSILON_MS
    )


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def render(report: Mapping[str, Any]) -> str:
    """The report as a compact, printable table."""
    cfg, calls, audio = report["config"], report["calls"], report["caller_audio"]
    model, faults, heard = report["model"], report["faults"], report["heard"]
    lines = [
        f"soak: {cfg['calls']} calls x {cfg['duration_s']:g} s, a fault every "
        f"~{cfg['mean_fault_interval_s']:g} s per model connection, seed {cfg['seed']} "
        f"({report['elapsed_s']:.0f} s)",
        f"calls dropped       {calls['dropped']} of {calls['total']}",
    ]
    lines += [f"  {d['call_sid']}: {d['reason']}" for d in calls["drops"]]
    received = f"model received {audio['received_ms'] / 1000:.1f} s"
    if audio["lost_ms"] is None:
        lines.append(
            f"caller audio        sent {audio['sent_ms'] / 1000:.1f} s, {received} "
            "(per call: n/a, the server does not report model_connections)"
        )
    else:
        worst = audio["worst_call"]
        lines.append(
            f"caller audio        sent {audio['sent_ms'] / 1000:.1f} s, {received}, lost "
            f"{audio['lost_ms']:.0f} ms (server-reported drops {audio['dropped_ms']:.0f} ms, "
            f"pre-session {audio['pre_session_dropped_ms']:.0f} ms, unexplained "
            f"{audio['unexplained_ms']:.0f} ms); worst call {worst['call_sid']} "
            f"{worst['lost_ms']:.0f} ms"
        )
    lines.append(
        f"model connections   {model['connections']}: reconnects {model['reconnects']} "
        f"({_counts(model['reconnects_by_reason'])}); resumed {model['resumed']}, primed "
        f"{model['primed']}, resumptions refused {model['resumptions_refused']}; "
        f"per call at most {model['connections_per_call_max']}"
    )
    lines.append(f"faults injected     {faults['total']} ({_counts(faults['by_kind'])})")
    stalls = report["stalls"]
    lines.append(
        f"stalls              detected {stalls['detected']}, recovered {stalls['recovered']}"
    )
    gap, lat = heard["worst_gap"], heard["worst_latency"]
    lines.append(
        "worst pause heard   "
        + (
            f"{gap['ms']} ms in an answer ({gap['call_sid']} at {gap['at_s']:.1f} s)"
            if gap
            else "none"
        )
    )
    lines.append(
        "worst latency       "
        + (f"{lat['ms']} ms ({lat['call_sid']} at {lat['at_s']:.1f} s)" if lat else "none")
        + f"; unanswered turns {heard['unanswered_turns']} of {heard['turns']}"
    )
    lines.append("")
    lines.append(
        f"{'call':<36} {'end':<12} {'s':>5} {'conns':>5} {'faults':>6} "
        f"{'lost ms':>8} {'gap ms':>6} {'lat ms':>6}"
    )
    for c in report["per_call"]:
        end = "ok" if c["dropped"] is None else (c["outcome"] or "not placed")
        lost = c["caller_audio"]["lost_ms"]
        lines.append(
            f"{c['call_sid']:<36} {end:<12} {c['duration_s']:>5.0f} "
            f"{max(len(c['model_connections']), len(c['simulator_sessions'])):>5} "
            f"{len(c['faults']):>6} {'-' if lost is None else f'{lost:.0f}':>8} "
            f"{c['worst_gap']['ms'] if c['worst_gap'] else '-':>6} "
            f"{c['worst_latency']['ms'] if c['worst_latency'] else '-':>6}"
        )
    lines.append(f"result: {'PASS' if passed(report) else 'FAIL'} (targets: 0 drops, 0 ms lost)")
    return "\n".join(lines)


#: ``--hostile``: the broken-model faults, beside the connection faults.
HOSTILE_WEIGHTS: Final = {
    "damaged_audio": 1.0,
    "silent_answer": 1.0,
    "rejected_answer": 1.0,
    "oversized": 0.5,
}


def _weight(text: str) -> tuple[str, float]:
    kind, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KIND=WEIGHT, got {text!r}")
    try:
        return kind.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4, help="concurrent calls (default 4)")
    parser.add_argument("--minutes", type=float, default=1.0, help="length of each call")
    parser.add_argument(
        "--mean-fault-interval",
        type=float,
        default=20.0,
        metavar="S",
        help="mean time between faults on one model connection (default 20 s)",
    )
    parser.add_argument("--seed", type=int, default=None, help="default: random (reported)")
    parser.add_argument(
        "--weight",
        type=_weight,
        action="append",
        default=[],
        metavar="KIND=W",
        help="relative weight of a fault kind: go_away, close, protocol_close, stall, "
        "refuse_resumption (default 1 each), damaged_audio, silent_answer, rejected_answer, "
        "oversized (default 0; repeatable)",
    )
    parser.add_argument("--setup-hang", type=float, default=0.0, metavar="P")
    parser.add_argument("--quota", type=float, default=0.0, metavar="P")
    parser.add_argument(
        "--drop-after-setup",
        type=float,
        default=None,
        metavar="P",
        help="fraction of connections closed right after setupComplete",
    )
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="add the hostile-model faults: damaged audio, silent and rejected answers, "
        "oversized messages (weight 1, 1, 1, 0.5 unless given), and drops right after "
        "setup (10 %% of connections unless given)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--verbose", action="store_true", help="show the server's warnings")
    args = parser.parse_args(argv)
    weights = dict(args.weight)
    drop_after_setup = args.drop_after_setup
    if args.hostile:
        hostile = HOSTILE_WEIGHTS | weights
        weights = hostile
        drop_after_setup = 0.1 if drop_after_setup is None else drop_after_setup
    try:
        config = SoakConfig(
            calls=args.calls,
            duration_s=args.minutes * 60,
            mean_fault_interval_s=args.mean_fault_interval,
            seed=args.seed,
            weights=weights,
            setup_hang_probability=args.setup_hang,
            quota_probability=args.quota,
            drop_after_setup_probability=drop_after_setup or 0.0,
        )
        config.fault_plan()
    except ValueError as exc:
        parser.error(str(exc))
    # Every fault makes the server log an error: that is expected here, and would bury the report.
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL)

    def show(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = asyncio.run(soak(config, progress=None if args.json else show))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
