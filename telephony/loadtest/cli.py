"""``voice-agent loadtest``: replay recorded calls against a server, many at once, and judge
the result against SLOs (exit code 0 = every SLO passed, 1 = an SLO failed, 2 = bad input).

    voice-agent loadtest --webhook http://127.0.0.1:8080/twilio/voice \\
        --recordings 'calls/*' --concurrency 20 --rate 2 --calls 200 \\
        --max-p95-response-ms 1500 --out loadtest-report
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson
import soundfile as sf

from telephony.caller import RecordingError, TurnTaking
from telephony.caller.answers import api_base
from telephony.caller.script import GREETING_GAP_S
from telephony.loadtest.metrics import CallRecord, Slo, check_slos, result_warnings
from telephony.loadtest.report import write_report
from telephony.loadtest.runner import AnswerCheck, LoadPlan, Progress, run_load
from telephony.loadtest.scenario import (
    Scenario,
    Script,
    expand_recordings,
    load_scripts,
    scenario_warnings,
)
from telephony.loadtest.target import Target

__all__ = ["ProgressDisplay", "build_parser", "main"]

#: CLI flag → SLO metric (see telephony.loadtest.metrics.SLO_METRICS).
SLO_FLAGS = {
    "max_p95_response_ms": "p95_response_ms",
    "max_p99_response_ms": "p99_response_ms",
    "max_p95_greeting_ms": "p95_greeting_ms",
    "max_p95_barge_in_ms": "p95_barge_in_ms",
    "max_p95_gap_ms": "p95_gap_ms",
    "max_failure_rate": "failure_rate",
    "max_unanswered_rate": "unanswered_rate",
    "max_gap_rate": "gap_rate",
    "max_answer_miss_rate": "answer_miss_rate",
}


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voice-agent loadtest",
        description="Load-test the agent by replaying recorded calls, as Twilio would place them.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="Media Stream URL (ws://…/twilio/media)")
    where.add_argument(
        "--webhook", help="voice webhook URL (https://…/twilio/voice): POST, then <Stream>"
    )
    p.add_argument(
        "--recordings",
        nargs="+",
        required=True,
        metavar="PATH",
        help="audio files, recorded-call directories (RECORD_CALLS), folders of either, "
        "globs; calls cycle through them",
    )
    p.add_argument("--channel", type=int, default=None, help="caller channel of stereo files")
    p.add_argument("--auth-token", default=None, help="sign requests like Twilio")
    p.add_argument(
        "--public-url",
        default=None,
        help="the server's PUBLIC_URL, when it differs from the address tested",
    )
    load = p.add_argument_group("load")
    load.add_argument("--concurrency", type=_count, default=10, help="max simultaneous calls")
    load.add_argument("--rate", type=_positive, default=None, help="new calls per second")
    load.add_argument(
        "--ramp-up", type=_non_negative, default=0.0, metavar="S", help="reach full load over S s"
    )
    load.add_argument("--calls", type=_count, default=None, help="total calls (default 10)")
    load.add_argument(
        "--duration", type=_positive, default=None, metavar="S", help="start calls for S s"
    )
    load.add_argument(
        "--deadline", type=_positive, default=None, metavar="S", help="hard bound of the run"
    )
    replay = p.add_argument_group("replay")
    replay.add_argument(
        "--mode",
        choices=["turns", "realtime", "barge-in"],
        default="turns",
        help="turns: each utterance after the agent's answer (default); realtime: exactly as "
        "recorded; barge-in: each utterance over the agent's answer",
    )
    replay.add_argument(
        "--barge-in-after",
        type=_non_negative,
        default=0.5,
        metavar="S",
        help="barge-in: talk once the answer has played S s",
    )
    replay.add_argument(
        "--think-time",
        type=_non_negative,
        default=GREETING_GAP_S,
        metavar="S",
        help="talk once the agent has been quiet S s",
    )
    replay.add_argument(
        "--answer-timeout",
        type=_non_negative,
        default=8.0,
        metavar="S",
        help="no answer after S s: go on",
    )
    replay.add_argument(
        "--greeting-timeout",
        type=_non_negative,
        default=5.0,
        metavar="S",
        help="no greeting after S s: start talking",
    )
    replay.add_argument(
        "--linger", type=_non_negative, default=1.0, metavar="S", help="hang up after S s quiet"
    )
    replay.add_argument(
        "--max-call-s", type=_positive, default=120.0, metavar="S", help="hard bound of a call"
    )
    replay.add_argument(
        "--connect-timeout",
        type=_positive,
        default=10.0,
        metavar="S",
        help="webhook and handshake timeout",
    )
    replay.add_argument(
        "--no-greeting", action="store_true", help="the agent lets the caller speak first"
    )
    answers = p.add_argument_group(
        "answers (what the agent said, read from the server's call records)"
    )
    answers.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="PHRASE",
        help="a phrase every call's answers must contain (repeatable; each recording may add "
        "its own in a file beside it: call.wav → call.expect, one phrase per line)",
    )
    answers.add_argument(
        "--api-token",
        default=None,
        metavar="TOKEN",
        help="the server's API_TOKEN, to read its call records (default: $API_TOKEN)",
    )
    answers.add_argument(
        "--api-url",
        default=None,
        metavar="URL",
        help="the server's operator API (default: the server of --url/--webhook)",
    )
    answers.add_argument(
        "--record-timeout",
        type=_positive,
        default=10.0,
        metavar="S",
        help="how long after a call its record may take to be final",
    )
    slo = p.add_argument_group("SLOs (exit code 1 when one fails)")
    for flag in ("response", "greeting", "barge-in", "gap"):
        slo.add_argument(f"--max-p95-{flag}-ms", type=float, default=None, metavar="MS")
    slo.add_argument("--max-p99-response-ms", type=float, default=None, metavar="MS")
    slo.add_argument(
        "--max-failure-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="0..1; default 0: any failed call fails the run",
    )
    slo.add_argument(
        "--max-unanswered-rate", type=float, default=None, metavar="R", help="of caller turns"
    )
    slo.add_argument(
        "--max-gap-rate", type=float, default=None, metavar="R", help="of calls with audio gaps"
    )
    slo.add_argument(
        "--max-answer-miss-rate",
        type=float,
        default=None,
        metavar="R",
        help="0..1, of the expected phrases (needs --expect or .expect files)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", default="loadtest-report", metavar="DIR")
    out.add_argument("--quiet", action="store_true", help="no progress display")
    return p


class ProgressDisplay:
    """One line rewritten in place on a terminal; a line every ``every_s`` otherwise."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, every_s: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every_s = every_s
        self._last = -float("inf")

    def __call__(self, progress: Progress) -> None:
        if self.tty:
            self.stream.write("\r" + progress.line() + "\x1b[K")
            self.stream.flush()
        elif progress.elapsed_s - self._last >= self.every_s:
            self._last = progress.elapsed_s
            print(progress.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def slos_from_args(args: argparse.Namespace) -> list[Slo]:
    return [
        Slo(metric, getattr(args, flag))
        for flag, metric in SLO_FLAGS.items()
        if getattr(args, flag) is not None
    ]


def _config(args: argparse.Namespace, recordings: Sequence[Path]) -> dict[str, Any]:
    config = {k: v for k, v in vars(args).items() if k not in ("auth_token", "api_token")}
    config["signed"] = args.auth_token is not None
    config["recordings"] = [str(p) for p in recordings]
    return config


def answer_check(args: argparse.Namespace, scripts: Sequence[Script]) -> AnswerCheck | None:
    """Where to read the agent's words, when some recording expects phrases (else ``None``)."""
    if not any(s.expect for s in scripts):
        if args.max_answer_miss_rate is not None:
            raise ValueError(
                "--max-answer-miss-rate needs expected answers (--expect or .expect files)"
            )
        return None
    token = args.api_token or os.environ.get("API_TOKEN")
    if not token:
        raise ValueError(
            "expected answers are checked against the server's call records: pass "
            "--api-token (or set API_TOKEN) with the server's API_TOKEN"
        )
    url = args.api_url or api_base(args.webhook or args.url)
    return AnswerCheck(url, token, args.record_timeout)


def main(argv: list[str] | None = None) -> int:
    """Run the load test from the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = expand_recordings(args.recordings)
        scripts = load_scripts(paths, args.channel, args.expect)
        answers = answer_check(args, scripts)
        scenario = Scenario(
            tuple(scripts),
            mode=args.mode,
            turn_taking=TurnTaking(
                think_s=args.think_time,
                answer_timeout_s=args.answer_timeout,
                greeting_timeout_s=args.greeting_timeout,
                barge_in_after_s=args.barge_in_after if args.mode == "barge-in" else None,
            ),
            linger_s=args.linger,
            max_call_s=args.max_call_s,
            expect_greeting=not args.no_greeting,
        )
        target = Target(
            media_url=args.url,
            webhook_url=args.webhook,
            auth_token=args.auth_token,
            public_url=args.public_url,
            timeout_s=args.connect_timeout,
        )
        plan = LoadPlan(
            concurrency=args.concurrency,
            calls=args.calls if args.calls or args.duration else 10,
            duration_s=args.duration,
            rate=args.rate,
            ramp_up_s=args.ramp_up,
            deadline_s=args.deadline,
        )
        slos = slos_from_args(args)
    except (RecordingError, OSError, sf.LibsndfileError, ValueError) as exc:
        print(f"voice-agent loadtest: {exc}", file=sys.stderr)
        return 2

    warnings = scenario_warnings(scenario)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(scripts)} recording(s), mode {args.mode}, concurrency {plan.concurrency}"
        + (f", rate {plan.rate}/s" if plan.rate else "")
        + (f", {plan.calls} calls" if plan.calls else "")
        + (f", {plan.duration_s:g} s" if plan.duration_s else "")
        + f" → {target.url}",
        flush=True,
    )
    display = ProgressDisplay(sys.stderr)
    with (out / "calls.jsonl").open("wb") as jsonl:

        def on_record(record: CallRecord) -> None:
            # Written as each call ends: an interrupted run still leaves its calls behind.
            jsonl.write(orjson.dumps(record.row()) + b"\n")
            jsonl.flush()

        started = time.time()
        result = asyncio.run(
            run_load(
                target,
                scenario,
                plan,
                on_progress=None if args.quiet else display,
                on_record=on_record,
                connect_timeout_s=args.connect_timeout,
                answers=answers,
            )
        )
    if not args.quiet:
        display.close()
    summary = result.summary
    verdicts = check_slos(summary, slos)
    config = _config(args, paths) | {"calls": plan.calls, "started_at": round(started, 3)}
    warnings += result_warnings(summary, mode=args.mode, deadline_hit=result.deadline_hit)
    report = write_report(
        out,
        result.records,
        summary,
        verdicts,
        config,
        deadline_hit=result.deadline_hit,
        jsonl_written=True,
        warnings=warnings,
    )
    print(
        f"calls: {summary.calls} ({summary.ok} ok, {summary.failed} failed) "
        f"in {summary.wall_s:.1f} s"
    )
    for kind, n in summary.failures.items():
        example = next(r.detail for r in result.records if r.failure == kind)
        print(f"  failed {kind}: {n} (e.g. {example})")
    print(f"time to greeting:  {summary.greeting_ms.brief()}")
    print(
        f"response latency:  {summary.response_ms.brief()}; "
        f"{summary.unanswered} of {summary.turns} turns unanswered"
    )
    print(
        f"barge-in latency:  {summary.barge_in_ms.brief()}; "
        f"{summary.barge_ins_without_clear} without clear"
    )
    print(
        f"audio gaps:        {summary.gap_ms.count} in {summary.calls_with_gaps} calls"
        + (f" ({summary.gap_ms.brief()})" if summary.gap_ms.count else "")
    )
    print(f"load generator:    max send lag per call {summary.send_lag_ms.brief()}")
    if summary.expected:
        accuracy = summary.answer_accuracy or 0.0
        print(
            f"answer accuracy:   {100 * accuracy:.1f} % ({summary.expected_said} of "
            f"{summary.expected} expected phrases said)"
        )
        for r in result.records:
            if r.missed and r.answer is not None:
                print(f"  call {r.index} ({r.recording}) missed {list(r.missed)}: {r.answer!r}")
                break
    for warning in warnings:
        print(f"warning: {warning}")
    for verdict in verdicts:
        print(f"SLO {verdict.describe()}")
    print(f"report: {report.html} (and {report.calls_csv.name}, calls.jsonl, summary.json)")
    return 0 if all(v.passed for v in verdicts) else 1
