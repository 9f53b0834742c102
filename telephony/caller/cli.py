"""``voice-agent call``: places one simulated call against a running server from the command
line (an audio file, a call the server recorded, or the bundled sample), prints its timeline
and summary, and writes what the caller heard as a WAV. Only the package (for its ``main``)
imports it; the simulator's other modules never do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Final

import soundfile as sf

from telephony.caller.answers import RecordUnavailable, agent_words, api_base, fetch_record, missed
from telephony.caller.drive import CallFailed, connect_headers, run_call
from telephony.caller.recordings import load_caller_audio, load_recording
from telephony.caller.script import (
    GREETING_GAP_S,
    BargeIn,
    ReplayMode,
    TurnTaking,
    caller_identity,
)
from telephony.caller.simulated import SimulatedCall, simulated_call
from telephony.twilio.media_stream import DTMF_DIGITS

__all__ = ["main"]


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected k=v, got {text!r}")
    return key, value


def _parse_dtmf(text: str) -> tuple[float, str]:
    at, sep, digits = text.partition(":")
    try:
        seconds = float(at)
    except ValueError:
        seconds = -1.0
    if not sep or seconds < 0 or len(digits) != 1 or digits not in DTMF_DIGITS:
        raise argparse.ArgumentTypeError(f"expected SECONDS:DIGIT (e.g. 3.5:4), got {text!r}")
    return seconds, digits


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voice-agent call",
        description="Place a simulated Twilio call against a running server and report it.",
    )
    p.add_argument(
        "audio",
        nargs="?",
        default=None,
        help="what the caller says: an audio file (WAV/FLAC/OGG, any rate) or a call the "
        "server recorded (a RECORD_CALLS directory); default: a bundled sample of read "
        "speech (public domain)",
    )
    p.add_argument("--url", default="ws://127.0.0.1:8080/twilio/media")
    p.add_argument("--out", default="heard.wav", help="WAV of what the caller heard")
    p.add_argument("--stereo", action="store_true", help="caller on the right channel")
    p.add_argument("--channel", type=int, default=None, help="pick one input channel")
    p.add_argument("--auth-token", default=None, help="sign the upgrade like Twilio")
    p.add_argument("--signature-url", default=None, help="URL to sign (default: wss:// form)")
    p.add_argument("--param", type=_parse_param, action="append", default=[], metavar="K=V")
    p.add_argument(
        "--replay",
        choices=["whole", "realtime", "turns", "barge-in"],
        default=None,
        help="whole: say all of it after the greeting (default for audio files); realtime: "
        "exactly as recorded (default for recorded calls); turns: utterance by utterance, "
        "each after the agent's answer; barge-in: each over the agent's answer",
    )
    p.add_argument("--think-time", type=float, default=GREETING_GAP_S, metavar="S")
    p.add_argument("--answer-timeout", type=float, default=8.0, metavar="S")
    p.add_argument("--dtmf", type=_parse_dtmf, action="append", default=[], metavar="S:DIGIT")
    p.add_argument(
        "--lead-silence",
        type=float,
        default=None,
        metavar="S",
        help="talk after S seconds (default: after the agent's greeting, or 5 s without one)",
    )
    p.add_argument("--verbose", action="store_true", help="also list every mark sent and echoed")
    p.add_argument("--linger", type=float, default=3.0, metavar="S")
    p.add_argument("--max-duration", type=float, default=120.0, metavar="S")
    p.add_argument("--barge-in", default=None, metavar="AUDIO", help="talk over the agent")
    p.add_argument(
        "--barge-in-after",
        type=float,
        default=0.5,
        metavar="S",
        help="with --barge-in or --replay barge-in: once the agent has spoken for S seconds",
    )
    p.add_argument("--barge-in-not-before", type=float, default=0.0, metavar="S")
    p.add_argument(
        "--api-token",
        default=None,
        metavar="TOKEN",
        help="the server's API_TOKEN: print the agent's words from the server's record of "
        "the call (default: $API_TOKEN)",
    )
    p.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="PHRASE",
        help="a phrase the agent must say (exit status 1 if it does not; needs the API token)",
    )
    return p


def said_lines(record: dict[str, object]) -> list[tuple[float, str]]:
    """Who said what, and when, from the server's record of the call (its transcript)."""
    lines: list[tuple[float, str]] = []
    entries = record.get("transcript")
    for entry in entries if isinstance(entries, list) else []:
        at = entry.get("at_s") if isinstance(entry, dict) else None
        if isinstance(at, int | float) and isinstance(entry, dict):
            cut = " (interrupted)" if entry.get("interrupted") else ""
            said = f"{entry.get('role', '?')} says: {entry.get('text', '')!r}{cut}"
            lines.append((float(at), said))
    return lines


async def _read_record(url: str, call_sid: str, token: str) -> dict[str, object]:
    import httpx

    async with httpx.AsyncClient() as client:
        return await fetch_record(client, api_base(url), call_sid, token)


_REPLAY_MODES: Final[dict[str, ReplayMode]] = {
    "realtime": "realtime",
    "turns": "turns",
    "barge-in": "barge-in",
}


def _call_from_args(args: argparse.Namespace) -> SimulatedCall:
    recording = load_recording(args.audio, args.channel)
    name = args.replay or ("realtime" if Path(args.audio).is_dir() else "whole")
    mode = _REPLAY_MODES.get(name)
    if mode is not None:
        if args.dtmf or args.lead_silence is not None or args.barge_in is not None:
            raise ValueError("--dtmf, --lead-silence and --barge-in go with --replay whole")
        taking = TurnTaking(
            think_s=args.think_time,
            answer_timeout_s=args.answer_timeout,
            barge_in_after_s=args.barge_in_after,
        )
        return simulated_call(
            recording,
            mode,
            turn_taking=taking,
            custom_parameters=caller_identity({**recording.custom_parameters, **dict(args.param)}),
            linger_s=args.linger,
            max_duration_s=args.max_duration,
        )
    barge_in = None
    if args.barge_in is not None:
        barge_in = BargeIn(
            load_caller_audio(args.barge_in, args.channel),
            after_s=args.barge_in_after,
            not_before_s=args.barge_in_not_before,
        )
    return SimulatedCall(
        recording.audio,
        custom_parameters=caller_identity({**recording.custom_parameters, **dict(args.param)}),
        dtmf=[*recording.dtmf, *args.dtmf],
        lead_silence_s=args.lead_silence or 0.0,
        # By default the caller listens to the greeting first, as people do.
        after_greeting_s=None if args.lead_silence is not None else 5.0,
        linger_s=args.linger,
        max_duration_s=args.max_duration,
        barge_in=barge_in,
    )


def main(argv: list[str] | None = None) -> int:
    """``voice-agent call``: 0 for a normal call, 1 for an abnormal close, 2 when the call
    could not be placed (or the input could not be read)."""
    args = _build_parser().parse_args(argv)
    token = args.api_token or os.environ.get("API_TOKEN")
    if args.expect and not token:
        print("error: --expect needs the server's API token (--api-token)", file=sys.stderr)
        return 2
    if args.audio is None:
        from telephony.caller import samples

        args.audio = str(samples.DEFAULT)
        print(f"caller says: {samples.transcript(samples.DEFAULT)!r} (bundled sample)")
    try:
        call = _call_from_args(args)
    except (OSError, ValueError, sf.LibsndfileError) as exc:
        print(f"error: cannot read audio: {exc}", file=sys.stderr)
        return 2
    headers = connect_headers(args.url, args.auth_token, args.signature_url)
    try:
        result = asyncio.run(run_call(args.url, call, headers=headers))
    except CallFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record: dict[str, object] | None = None
    unavailable = ""
    if token:
        try:
            record = asyncio.run(_read_record(args.url, result.call_sid, token))
        except RecordUnavailable as exc:
            unavailable = str(exc)
    for line in result.timeline(said_lines(record) if record is not None else ()):
        if args.verbose or " mark '" not in line:
            print(line)
    print()
    for line in result.summary():
        print(line)
    result.write_wav(args.out, stereo=args.stereo)
    print(f"heard audio written to {args.out}")
    normal = result.ended_by != "error" and result.close_code in (None, 1000, 1001)
    status = 0 if normal else 1
    if not token:
        print("(set API_TOKEN, as the server has it, to see what was said in the timeline)")
        return status
    if record is None:
        print(f"what was said is unavailable: {unavailable}", file=sys.stderr)
        return 2 if args.expect else status
    if args.expect:
        not_said = missed(args.expect, agent_words(record))
        for phrase in args.expect:
            print(f"expected {phrase!r}: {'MISSED' if phrase in not_said else 'said'}")
        if not_said:
            return 1
    return status
