"""The soak machinery (bench/soak.py): a tiny real run, and its report when the server does not
say which model connections a call used."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from support import ROOT
from telephony.caller import SimulatedCall

SOAK_PATH = ROOT / "bench" / "soak.py"
EPSILON_MS = 1.0


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    """bench/soak.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_soak", SOAK_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def check_consistent(report: dict[str, Any], soak: ModuleType) -> None:
    """Numbers that must agree with each other in any report."""
    calls, audio, model = report["calls"], report["caller_audio"], report["model"]
    per_call = report["per_call"]
    assert calls["total"] == len(per_call) == report["config"]["calls"]
    assert (
        calls["dropped"] == len(calls["drops"]) == sum(c["dropped"] is not None for c in per_call)
    )
    for call in per_call:
        if call["dropped"] is None:
            assert call["ended_by"] in soak.NORMAL_ENDS and call["outcome"] == "completed"
    assert audio["sent_ms"] == pytest.approx(sum(c["caller_audio"]["sent_ms"] for c in per_call))
    assert audio["received_ms"] <= audio["sent_ms"] + EPSILON_MS * len(per_call)
    if report["connections_reported"]:
        for call in per_call:
            a = call["caller_audio"]
            assert a["received_ms"] <= a["sent_ms"] + EPSILON_MS
            assert a["lost_ms"] == pytest.approx(max(0.0, a["sent_ms"] - a["received_ms"]))
            assert 0 <= a["unexplained_ms"] <= a["lost_ms"]
        assert audio["lost_ms"] == pytest.approx(audio["sent_ms"] - audio["received_ms"], abs=1)
        assert audio["worst_call"]["lost_ms"] == max(c["caller_audio"]["lost_ms"] for c in per_call)
        assert sum(model["reconnects_by_reason"].values()) == model["reconnects"]
        mapped = sum(len(c["simulator_sessions"]) for c in per_call)
        assert mapped + audio["unmapped_sessions"] == model["connections"]
    assert model["reconnects"] >= 0 and model["connections"] >= 0
    assert report["faults"]["total"] == sum(report["faults"]["by_kind"].values())
    assert 0 <= report["stalls"]["recovered"] <= report["stalls"]["detected"]
    heard = report["heard"]
    assert 0 <= heard["unanswered_turns"] <= heard["turns"]
    for worst in (heard["worst_gap"], heard["worst_latency"]):
        assert worst is None or (worst["ms"] >= 0 and worst["call_sid"].startswith("CA"))


async def test_a_short_soak_runs_and_reports(soak: ModuleType) -> None:
    config = soak.SoakConfig(calls=2, duration_s=15.0, mean_fault_interval_s=3.0, seed=5)
    report = await soak.soak(config)

    assert set(report) >= {
        "config",
        "elapsed_s",
        "connections_reported",
        "calls",
        "caller_audio",
        "model",
        "faults",
        "stalls",
        "heard",
        "per_call",
    }
    assert report["config"]["seed"] == 5
    assert report["elapsed_s"] < config.deadline_s
    check_consistent(report, soak)
    # Both calls were placed and heard the agent; faults were injected (the seed fixes when
    # the first one comes: well within the calls).
    assert all(c["duration_s"] > 0 for c in report["per_call"])
    assert report["model"]["connections"] >= 2
    assert report["faults"]["total"] >= 1
    assert report["heard"]["turns"] >= 1
    text = soak.render(report)
    assert "calls dropped" in text and "faults injected" in text
    assert text.splitlines()[-1].startswith("result: ")
    # The SDK's variables were set for the run only.
    assert "GOOGLE_GEMINI_BASE_URL" not in os.environ and "SSL_CERT_FILE" not in os.environ


async def test_a_short_hostile_soak_drops_nothing(soak: ModuleType) -> None:
    """Broken-model faults beside the connection faults: no call dropped, nothing lost."""
    config = soak.SoakConfig(
        calls=2,
        duration_s=25.0,
        mean_fault_interval_s=6.0,
        seed=7,
        weights={
            **soak.HOSTILE_WEIGHTS,
            **dict.fromkeys(("go_away", "refuse_resumption", "stall", "protocol_close"), 0.0),
        },
        drop_after_setup_probability=0.15,
    )
    report = await soak.soak(config)
    check_consistent(report, soak)
    kinds = set(report["faults"]["by_kind"])
    assert kinds & {"damaged_audio", "silent_answer", "rejected_answer", "oversized"}
    assert report["calls"]["dropped"] == 0, report["calls"]["drops"]
    assert report["caller_audio"]["unexplained_ms"] <= soak.AUDIO_EPSILON_MS
    assert report["model"]["connections_per_call_max"] <= 12
    assert soak.passed(report)


def finished_call(sid: str, seconds: float) -> SimulatedCall:
    """A call that ran ``seconds`` and was hung up by the caller at its time limit."""
    call = SimulatedCall(b"", call_sid=sid, max_duration_s=seconds)
    call.open(0.0)
    call.due(seconds)
    call.finish(seconds, "max_duration")
    return call


def fake_session(sid: str, port: int, audio_in_ms: float) -> SimpleNamespace:
    return SimpleNamespace(
        id=sid,
        peer_port=port,
        connected_at=0.0,
        audio_in_ms=audio_in_ms,
        faults_injected=[(1.0, "close_1011")],
        resumption_refused=False,
    )


def test_report_with_and_without_the_servers_connection_list(soak: ModuleType) -> None:
    config = soak.SoakConfig(calls=1, duration_s=10.0, seed=1)
    sim = SimpleNamespace(
        sessions=[fake_session("s1", 40001, 6000.0), fake_session("s2", 40002, 3000.0)],
        fault_counts={"close_1011": 2},
    )
    summary = SimpleNamespace(
        call_sid="CA1",
        outcome="completed",
        reason="caller hung up",
        frames_in=500,  # 10 s
        dropped_pre_session_frames=0,
    )

    # A server without the resilience layer: no model_connections, so only totals compare.
    entry = soak._Call(0, "CA1", summary=summary, result=finished_call("CA1", 10.0).result())
    assert not soak._map_sessions(sim.sessions, [entry])
    report = soak._report(config, 1, 10.0, sim, [entry], False)
    check_consistent(report, soak)
    audio = report["caller_audio"]
    assert (audio["sent_ms"], audio["received_ms"]) == (10_000, 9_000)
    assert audio["lost_ms"] is None and audio["worst_call"] is None
    assert report["calls"]["dropped"] == 0 and report["model"]["reconnects"] == 0
    assert "n/a" in soak.render(report)
    assert soak.passed(report)  # nothing to hold against it: the loss cannot be attributed

    # With it: sessions are tied to the call by port, and the missing second is unexplained.
    summary.model_connections = [
        {"local_port": 40001, "reason": "initial", "resumed": False, "primed": False, "at_s": 0},
        {"local_port": 40002, "reason": "error", "resumed": True, "primed": False, "at_s": 6},
    ]
    summary.reconnects = 1
    entry = soak._Call(0, "CA1", summary=summary, result=finished_call("CA1", 10.0).result())
    assert soak._map_sessions(sim.sessions, [entry])
    report = soak._report(config, 1, 10.0, sim, [entry], True)
    check_consistent(report, soak)
    audio = report["caller_audio"]
    assert (audio["lost_ms"], audio["unexplained_ms"]) == (1_000, 1_000)
    assert audio["worst_call"]["call_sid"] == "CA1"
    assert report["model"]["reconnects_by_reason"] == {"error": 1}
    assert [f["kind"] for f in report["per_call"][0]["faults"]] == ["close_1011"] * 2
    assert not soak.passed(report)
    assert "unexplained 1000 ms" in soak.render(report)


def test_config_rejects_unknown_fault_kinds(soak: ModuleType) -> None:
    with pytest.raises(ValueError):
        soak.SoakConfig(weights={"meteor": 1.0})
    plan = soak.SoakConfig(weights={"stall": 0.0, "go_away": 2.0}).fault_plan()
    assert (plan.stall_weight, plan.go_away_weight, plan.close_weight) == (0.0, 2.0, 1.0)
