"""Load test, pure parts: the call schedule and run bound, recordings → scenario, the
webhook flow as Twilio does it (form, signatures, TwiML), the report files and the
progress display."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest
import soundfile as sf

from agent.simulator.voice import synthesize
from telephony.caller import RecordingError, TurnTaking
from telephony.loadtest.cli import ProgressDisplay
from telephony.loadtest.metrics import CallRecord, Slo, check_slos, failed_record, summarize
from telephony.loadtest.report import nice_ticks, render_html, write_report
from telephony.loadtest.runner import LoadPlan, Progress
from telephony.loadtest.scenario import Scenario, expand_recordings, load_scripts
from telephony.loadtest.target import (
    DialFailed,
    Target,
    direct_plan,
    parse_stream_twiml,
    stream_plan,
    webhook_request,
)
from telephony.twilio.signature import is_valid
from telephony.twilio.twiml import connect_stream, say_and_hang_up

# ---------------------------------------------------------------------------------------------
# Schedule and bounds
# ---------------------------------------------------------------------------------------------


def test_closed_loop_ramps_the_first_wave_then_refills_slots() -> None:
    plan = LoadPlan(concurrency=4, calls=10, ramp_up_s=2.0)
    assert [plan.start_s(k) for k in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert LoadPlan(concurrency=4, calls=10).start_s(7) == 0.0


def test_open_loop_arrivals_with_a_linear_ramp() -> None:
    steady = LoadPlan(concurrency=100, calls=10, rate=4.0)
    assert [steady.start_s(k) for k in range(4)] == [0.0, 0.25, 0.5, 0.75]
    ramped = LoadPlan(concurrency=100, calls=100, rate=4.0, ramp_up_s=5.0)
    starts = [ramped.start_s(k) for k in range(60)]
    assert starts == sorted(starts) and starts[0] == 0.0
    # Arrivals during the ramp: N(t) = r t² / (2 ramp); 10 arrivals by the end of the ramp.
    assert ramped.start_s(10) == pytest.approx(5.0)
    assert ramped.start_s(2) == pytest.approx(np.sqrt(2 * 2 * 5 / 4))
    # After the ramp, one every 1/r seconds.
    assert ramped.start_s(14) - ramped.start_s(13) == pytest.approx(0.25)


def test_run_deadline_bounds_everything() -> None:
    bound = 20.0
    assert LoadPlan(concurrency=5, calls=10).deadline_s_for(bound) == 2 * 20 + 10
    assert LoadPlan(concurrency=5, calls=None, duration_s=30).deadline_s_for(bound) == 60
    # Both limits: whichever stops the run first.
    assert LoadPlan(concurrency=1, calls=100, duration_s=30).deadline_s_for(bound) == 60
    rate = LoadPlan(concurrency=2, calls=4, rate=1.0)
    assert rate.deadline_s_for(bound) == pytest.approx(3.0 + 2 * 20 + 10)
    assert LoadPlan(deadline_s=7.0).deadline_s_for(bound) == 7.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"calls": None},
        {"calls": 0},
        {"rate": 0.0},
        {"duration_s": -1.0},
        {"ramp_up_s": -1.0},
    ],
)
def test_bad_plans(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoadPlan(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Recordings and the scenario
# ---------------------------------------------------------------------------------------------


def write_speech(path: Path, *texts: str, pause_s: float = 1.0) -> Path:
    """Synthesized caller speech at 24 kHz: each text after ``pause_s`` of silence."""
    pause = np.zeros(round(pause_s * 24000), dtype=np.int16)
    parts = [x for t in texts for x in (pause, np.frombuffer(synthesize(t, "Charon").pcm, "<i2"))]
    sf.write(path, np.concatenate([*parts, pause]), 24000, subtype="PCM_16")
    return path


def write_call_dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    audio = np.frombuffer(synthesize(text, "Kore").pcm, "<i2")[::3]  # crude 8 kHz is fine here
    sf.write(path / "caller.wav", audio, 8000, subtype="PCM_16")
    meta = {"type": "meta", "version": 1, "call_sid": "CA1", "stream_sid": "MZ1"}
    (path / "events.jsonl").write_text(json.dumps(meta | {"custom_parameters": {}}) + "\n")
    return path


def test_expand_recordings(tmp_path: Path) -> None:
    a = write_speech(tmp_path / "a.wav", "hello")
    b = write_speech(tmp_path / "b.flac", "good morning")
    (tmp_path / "notes.txt").write_text("not audio")
    calls = tmp_path / "recorded"
    one = write_call_dir(calls / "CA1", "one")
    two = write_call_dir(calls / "CA2", "two")
    assert expand_recordings([str(tmp_path)]) == [a, b]  # audio files in a folder
    assert expand_recordings([str(calls)]) == [one, two]  # a RECORD_CALLS root
    assert expand_recordings([str(one)]) == [one]  # one recorded call
    assert expand_recordings([str(tmp_path / "*.wav"), str(b)]) == [a, b]
    with pytest.raises(RecordingError, match="no recordings"):
        expand_recordings([str(tmp_path / "*.ogg")])
    with pytest.raises(RecordingError, match="no recordings"):
        expand_recordings([str(tmp_path / "missing.wav")])


def test_scenario_cycles_recordings_and_builds_calls(tmp_path: Path) -> None:
    paths = [
        write_speech(tmp_path / "a.wav", "I would like a table", "for two people"),
        write_speech(tmp_path / "b.wav", "Hello"),
    ]
    scripts = load_scripts(paths)
    assert [s.name for s in scripts] == ["a.wav", "b.wav"]
    assert len(scripts[0].turns) == 2 and len(scripts[1].turns) == 1
    assert scripts[1].speech_s > 0.3
    scenario = Scenario(tuple(scripts), turn_taking=TurnTaking(think_s=0.2))
    assert [scenario.script(i).name for i in range(5)] == ["a.wav", "b.wav"] * 2 + ["a.wav"]
    first, second = scenario.new_call(0), scenario.new_call(2, call_sid="CA" + "7" * 32)
    start = json.loads(second.open(0.0)[1])["start"]
    assert start["callSid"] == "CA" + "7" * 32
    assert first.call_sid != second.call_sid and first.stream_sid != second.stream_sid
    # One account places every call of a run.
    assert start["accountSid"] == json.loads(first.open(0.0)[1])["start"]["accountSid"]
    assert scenario.max_call_s == second.max_duration_s == 120.0
    with pytest.raises(ValueError):
        Scenario(())
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, dtype=np.int16), 8000)
    with pytest.raises(RecordingError, match="no speech"):
        load_scripts([silent])


# ---------------------------------------------------------------------------------------------
# The webhook flow, as Twilio does it
# ---------------------------------------------------------------------------------------------


def test_webhook_request_is_twilios_form_signed() -> None:
    target = Target(webhook_url="https://agent.example.com/twilio/voice", auth_token="tok")
    url, form, headers = webhook_request(target, "CA1", "AC1", {"from": "+15550100"})
    assert url == "https://agent.example.com/twilio/voice"
    assert form == {
        "CallSid": "CA1",
        "AccountSid": "AC1",
        "From": "+15550100",
        "To": target.to_number,
        "Direction": "inbound",
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
    }
    assert is_valid("tok", url, form, headers["X-Twilio-Signature"])
    # Against a backend behind its proxy: signed over the server's PUBLIC_URL.
    behind = Target(
        webhook_url="http://10.0.0.5:8080/twilio/voice",
        auth_token="tok",
        public_url="https://agent.example.com",
    )
    _, form, headers = webhook_request(behind, "CA1", "AC1")
    assert is_valid(
        "tok", "https://agent.example.com/twilio/voice", form, headers["X-Twilio-Signature"]
    )
    assert "X-Twilio-Signature" not in webhook_request(Target(webhook_url=url), "C", "A")[2]


def test_parse_stream_twiml_of_our_server() -> None:
    twiml = connect_stream(
        "wss://agent.example.com/twilio/media",
        "https://agent.example.com/twilio/after",
        {"from": "+15550100", "direction": "inbound"},
    )
    url, params = parse_stream_twiml(twiml)
    assert url == "wss://agent.example.com/twilio/media"
    assert params == {"from": "+15550100", "direction": "inbound"}
    with pytest.raises(DialFailed) as busy:
        parse_stream_twiml(say_and_hang_up("All lines are busy."))
    assert busy.value.kind == "turned_away" and "All lines are busy." in str(busy.value)
    for bad in (
        "<Response/>",
        "not xml",
        "<Other/>",
        "<Response><Connect><Stream/></Connect></Response>",
    ):
        with pytest.raises(DialFailed) as info:
            parse_stream_twiml(bad)
        assert info.value.kind == "bad_twiml"


def test_stream_plan_signs_the_stream_url_as_written() -> None:
    local = Target(webhook_url="http://127.0.0.1:8080/twilio/voice", auth_token="tok")
    plan = stream_plan(local, "wss://127.0.0.1:8080/twilio/media", {"a": "b"})
    # Twilio only opens wss://; a plain-HTTP local server is reached over ws://.
    assert plan.connect_url == "ws://127.0.0.1:8080/twilio/media"
    assert is_valid(
        "tok", "wss://127.0.0.1:8080/twilio/media", {}, plan.headers["X-Twilio-Signature"]
    )
    assert plan.custom_parameters == {"a": "b"}
    behind = Target(
        webhook_url="http://10.0.0.5:8080/twilio/voice", public_url="https://agent.example.com"
    )
    plan = stream_plan(behind, "wss://agent.example.com/twilio/media", {})
    assert plan.connect_url == "ws://10.0.0.5:8080/twilio/media" and plan.headers == {}
    public = Target(webhook_url="https://agent.example.com/twilio/voice")
    elsewhere = stream_plan(public, "wss://media.example.net/stream", {})
    assert elsewhere.connect_url == "wss://media.example.net/stream"
    assert stream_plan(public, "wss://agent.example.com/twilio/media", {}).connect_url == (
        "wss://agent.example.com/twilio/media"
    )


def test_direct_plan() -> None:
    plan = direct_plan(Target(media_url="ws://127.0.0.1:9/twilio/media", auth_token="tok"))
    assert plan.connect_url == "ws://127.0.0.1:9/twilio/media"
    # Straight to the stream, start still carries the numbers Twilio's webhook would add.
    assert plan.custom_parameters == {
        "from": "+15005550006",
        "to": "+15005550001",
        "direction": "inbound",
    }
    recorded = direct_plan(Target(media_url="ws://h/twilio/media"), {"from": "+14155550100"})
    assert recorded.custom_parameters is not None
    assert recorded.custom_parameters["from"] == "+14155550100"
    assert is_valid("tok", "wss://127.0.0.1:9/twilio/media", {}, plan.headers["X-Twilio-Signature"])
    behind = direct_plan(
        Target(
            media_url="ws://10.0.0.5/twilio/media",
            auth_token="tok",
            public_url="https://agent.example.com",
        )
    )
    assert is_valid(
        "tok", "wss://agent.example.com/twilio/media", {}, behind.headers["X-Twilio-Signature"]
    )
    with pytest.raises(ValueError):
        Target()
    with pytest.raises(ValueError):
        Target(media_url="ws://a", webhook_url="http://b")


# ---------------------------------------------------------------------------------------------
# Report and progress
# ---------------------------------------------------------------------------------------------


def test_nice_ticks_cover_the_range() -> None:
    for lo, hi in [(0, 29.3), (0, 880), (760, 835), (0, 1), (0, 0), (3, 3.001), (0, 12345)]:
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi
        assert 2 <= len(ticks) <= 12
        steps = np.diff(ticks)
        assert np.allclose(steps, steps[0])
    assert nice_ticks(0, 29.3) == [0, 10, 20, 30]


def some_records() -> list[CallRecord]:
    rows = [
        CallRecord(
            i,
            "a.wav",
            f"CA{i}",
            i * 0.5,
            6.0,
            True,
            greeting_ms=310.0 + i,
            response_ms=[(i * 0.5 + 3, 800.0 + i), (i * 0.5 + 5, 790.0)],
            barge_in_ms=[(i * 0.5 + 4, 100.0 + i)],
            gap_ms=[(i * 0.5 + 4.5, 180.0)] if i == 2 else [],
            turns=2,
            connect_ms=15.0,
        )
        for i in range(6)
    ]
    return [*rows, failed_record(6, "b.wav", "CA6", 3.0, 0.01, "turned_away", "busy <&>")]


def test_write_report_files_parse(tmp_path: Path) -> None:
    records = some_records()
    summary = summarize(records, wall_s=9.0)
    verdicts = check_slos(summary, [Slo("p95_response_ms", 1000), Slo("failure_rate", 0.0)])
    paths = write_report(tmp_path / "out", records, summary, verdicts, {"mode": "turns"})
    with paths.calls_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and rows[0]["response_ms"] == "800.0;790.0"
    assert rows[6]["failure"] == "turned_away" and rows[6]["ok"] == "False"
    lines = [orjson.loads(line) for line in paths.calls_jsonl.read_bytes().splitlines()]
    assert [r["index"] for r in lines] == list(range(7))
    doc = orjson.loads(paths.summary_json.read_bytes())
    assert doc["calls"]["failed"] == 1 and doc["passed"] is False
    assert [s["passed"] for s in doc["slos"]] == [True, False]
    assert doc["config"] == {"mode": "turns"} and doc["response_ms"]["count"] == 12
    page = paths.html.read_text()
    # Self-contained: inline SVG, no scripts, nothing fetched from anywhere.
    assert page.count("<svg") == 9
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "src=" not in page
    assert "busy &lt;&amp;&gt;" in page and "SLO failed" in page


def test_html_without_samples() -> None:
    records = [failed_record(0, "a", "CA0", 0.0, 0.01, "connect_refused", "refused")]
    page = render_html(records, summarize(records), [], {})
    assert "no samples" in page and "No SLOs given" in page


def test_progress_display_tty_and_log() -> None:
    p = Progress(12.34, 3, 10, 1, 805.0, None)
    assert p.line() == (
        "[  12.3 s] active   3  done   10  failed   1  response p50 805 ms p95 - ms"
    )
    tty = io.StringIO()
    show = ProgressDisplay(tty, tty=True)
    show(p)
    show(p)
    show.close()
    assert tty.getvalue().count("\r") == 2 and tty.getvalue().endswith("\n")
    log = io.StringIO()
    periodic = ProgressDisplay(log, tty=False, every_s=5.0)
    for t in (1.0, 2.0, 6.5, 7.0, 12.0):
        periodic(Progress(t, 1, 0, 0, None, None))
    assert len(log.getvalue().splitlines()) == 3  # at 1.0, 6.5 and 12.0 s


def test_barge_in_mode_says_when_recordings_cannot_measure_it(tmp_path: Path) -> None:
    from telephony.loadtest.scenario import scenario_warnings

    one = write_speech(tmp_path / "one.wav", "Hello")
    two = write_speech(tmp_path / "two.wav", "I would like a table", "for two people")
    scripts = tuple(load_scripts([one, two]))
    assert scenario_warnings(Scenario(scripts, mode="turns")) == []
    assert scenario_warnings(Scenario(scripts[1:], mode="barge-in")) == []
    [warning] = scenario_warnings(Scenario(scripts, mode="barge-in"))
    assert "1 of 2 recordings have one (one.wav)" in warning
    assert "two or more utterances" in warning


def test_result_warnings_explain_missing_or_inflated_figures() -> None:
    from telephony.loadtest.metrics import result_warnings

    records = some_records()
    assert result_warnings(summarize(records), mode="turns", deadline_hit=False) == []
    no_barge = [replace(r, barge_in_ms=[]) for r in records]
    warnings = result_warnings(summarize(no_barge), mode="barge-in", deadline_hit=True)
    assert any("no barge-in was measured" in w for w in warnings)
    assert any("overall deadline" in w for w in warnings)
    late = [replace(r, max_send_lag_ms=80.0) for r in records]
    assert any(
        "ran late" in w for w in result_warnings(summarize(late), mode="turns", deadline_hit=False)
    )
    unanswered = [replace(r, response_ms=[], unanswered=r.turns) for r in records]
    assert any(
        "answered none" in w
        for w in result_warnings(summarize(unanswered), mode="turns", deadline_hit=False)
    )


def test_the_report_lists_every_warning_and_a_readable_configuration(tmp_path: Path) -> None:
    records = some_records()
    config = {
        "url": "ws://127.0.0.1:8080/twilio/media",
        "webhook": None,
        "mode": "barge-in",
        "think_time": 0.6,
        "no_greeting": False,
        "max_p95_response_ms": 1500.0,
        "max_p95_gap_ms": None,
        "recordings": ["a.wav", "b.wav"],
        "signed": False,
        "started_at": 1_700_000_000.0,
        "out": "report",
        "quiet": False,
    }
    paths = write_report(
        tmp_path, records, summarize(records), [], config, warnings=["first <b>", "second"]
    )
    page = paths.html.read_text()
    assert "<li>first &lt;b&gt;</li><li>second</li>" in page
    assert orjson.loads(paths.summary_json.read_bytes())["warnings"] == ["first <b>", "second"]
    section = page.split("<h2>Configuration</h2>", 1)[1]
    for raw in ("None", "1700000000", "True", "False", "['a.wav'"):
        assert raw not in section, raw
    for row in (
        "<td>webhook URL</td><td>not set</td>",
        "<td>think time</td><td>0.6 s</td>",
        "<td>agent speaks first</td><td>yes</td>",
        "<td>SLO: p95 response at most</td><td>1500 ms</td>",
        "<td>SLO: p95 gap at most</td><td>not set</td>",
        "<td>recordings</td><td>a.wav, b.wav</td>",
        "<td>started (UTC)</td><td>2023-11-14 22:13:20</td>",
    ):
        assert row in section, row
    assert "<td>out</td>" not in section and "<td>quiet</td>" not in section


def test_the_locust_integration_without_locust_says_which_extra_to_install() -> None:
    # A fresh interpreter in which Locust cannot be imported (as without the loadtest extra).
    code = (
        "import sys; sys.modules['locust'] = None\n"
        "try:\n"
        "    import telephony.loadtest.locust_user\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'gemini-phone-agent[loadtest]'" in out.stdout
