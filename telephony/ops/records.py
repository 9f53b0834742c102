"""Call records: what the database keeps of a call, built from its ``CallSummary``.

Pure (no I/O): ``record_from_summary`` turns a summary into a plain dict of columns, the
shape the store writes and the API returns. The transcript is a list of entries in spoken
order::

    {"role": "caller", "text": "I'd like to book a table", "at_s": 4.2}
    {"role": "agent", "text": "Sure, for how", "at_s": 6.1, "interrupted": true,
     "generated": "Sure, for how many people?", "response_ms": 812.0}

``at_s`` is when that side began speaking, in seconds since the stream started. An agent
entry cut off by the caller holds what the caller actually *heard* (from Twilio's
mark echoes, see ``telephony.call.Heard``) in ``text``, flagged ``interrupted``, with what
the model had generated in ``generated``.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from dataclasses import asdict
from typing import Any, Final

from telephony.call.summary import CallSummary, clean_text
from telephony.ops.pii import mask_number, redact_value

__all__ = [
    "COLUMN_CHARS",
    "DIALING",
    "INTERRUPTED",
    "IN_PROGRESS",
    "OUTCOMES",
    "bounded",
    "dialing_record",
    "record_from_summary",
    "transcript_of",
]

#: ``outcome`` of a call whose stream has started and not ended yet.
IN_PROGRESS: Final = "in_progress"
#: ``outcome`` of an outbound call placed through Twilio that hasn't connected (yet).
DIALING: Final = "dialing"
#: ``outcome`` of a call whose server stopped (crashed, was killed) without ending it: set by
#: another instance, or the same one restarted (``telephony.ops.store``), on the last snapshot.
INTERRUPTED: Final = "interrupted"
#: Every outcome a record can have: the call's own (``telephony.call.Outcome``), the three
#: above, and the ends of outbound calls that never reached the agent (Twilio's statuses).
OUTCOMES: Final = (
    "completed",
    "ended_by_agent",
    "transfer",
    "failed",
    "rejected",
    "shutdown",
    INTERRUPTED,
    IN_PROGRESS,
    DIALING,
    "busy",
    "no-answer",
    "canceled",
)

#: The length of each bounded text column (the store's schema is built from this): PostgreSQL
#: refuses a longer value (SQLite would keep it), so rows are cut to fit before any write.
COLUMN_CHARS: Final = {
    "call_sid": 64,
    "stream_sid": 64,
    "direction": 16,
    "caller": 64,
    "callee": 64,
    "outcome": 32,
    "instance_id": 64,
}
#: Free-text columns are unbounded in the schema; a reason is one line, kept short anyway.
REASON_MAX_CHARS: Final = 1000


def _bounded_sid(sid: str, limit: int) -> str:
    """A SID that fits: real ones (34 characters) are kept; a longer one (hostile) is cut
    and tagged with a digest of the whole, so two long SIDs never share one record."""
    if len(sid) <= limit and sid.isprintable():
        return sid
    digest = hashlib.sha256(sid.encode("utf-8", "replace")).hexdigest()[:16]
    return clean_text(sid, limit - 17) + "~" + digest


def bounded(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every bounded column cut to what the schema stores (a copy if changed).

    Never fails: a value that is not text becomes text. Cheap when nothing needs cutting.
    """
    out = row
    for name, limit in COLUMN_CHARS.items():
        value = out.get(name)
        if value is None or (
            isinstance(value, str) and len(value) <= limit and value.isprintable()
        ):
            continue
        if out is row:
            out = dict(row)
        if name == "call_sid":
            out[name] = _bounded_sid(str(value), limit)
        else:
            out[name] = clean_text(value, limit)
    reason = out.get("reason")
    if isinstance(reason, str) and len(reason) > REASON_MAX_CHARS:
        if out is row:
            out = dict(row)
        out["reason"] = reason[: REASON_MAX_CHARS - 1] + "…"
    return out


def transcript_of(summary: CallSummary) -> list[dict[str, Any]]:
    """The conversation as caller/agent entries, agent turns cut to what was heard."""
    entries: list[dict[str, Any]] = []
    for turn in summary.turns:
        if turn.caller:
            # Each side is dated when it began speaking (else when the turn ended).
            at = turn.caller_at_s if turn.caller_at_s is not None else turn.at_s
            entries.append({"role": "caller", "text": turn.caller, "at_s": at})
        if not turn.agent:
            continue
        entry: dict[str, Any] = {
            "role": "agent",
            "text": turn.agent,
            "at_s": turn.agent_at_s if turn.agent_at_s is not None else turn.at_s,
        }
        if turn.interrupted:
            entry["text"] = (turn.agent_heard or "").strip()
            entry["interrupted"] = True
            entry["generated"] = turn.agent
        if turn.response_ms is not None:
            entry["response_ms"] = turn.response_ms
        entries.append(entry)
    return entries


def _latency(summary: CallSummary) -> dict[str, Any]:
    responses = [t.response_ms for t in summary.turns if t.response_ms]
    clears = [i.clear_latency_ms for i in summary.interruptions]
    return {
        "model_connect_ms": summary.model_connect_ms,
        "greeting_ms": summary.first_audio_ms,
        "response_ms": responses,
        "response_ms_p50": round(statistics.median(responses), 1) if responses else None,
        "response_ms_max": round(max(responses), 1) if responses else None,
        "clear_ms_max": round(max(clears), 3) if clears else None,
    }


def _duration(summary: CallSummary, ended_at: float | None) -> float:
    # A call cut off at shutdown has no duration of its own yet: take it from the clock.
    if summary.duration_s or ended_at is None:
        return summary.duration_s
    return round(max(0.0, ended_at - summary.started_at), 3)


def record_from_summary(
    summary: CallSummary,
    *,
    in_progress: bool = False,
    redact: bool = False,
    now: float | None = None,
) -> dict[str, Any]:
    """The database row for a call (``in_progress``: a snapshot of a call still running).

    ``redact`` masks phone numbers: the caller/callee fields and any number spoken in the
    transcript, tool arguments/results or DTMF-free text (see ``telephony.ops.pii``).
    """
    ended_at = None if in_progress else (now if now is not None else time.time())
    latency = _latency(summary)
    transcript = transcript_of(summary)
    tool_calls: list[dict[str, Any]] = [dict(t) for t in summary.tool_calls]
    interruptions = [asdict(i) for i in summary.interruptions]
    caller, callee = summary.caller, summary.callee
    if redact:
        caller, callee = mask_number(caller), mask_number(callee)
        transcript = redact_value(transcript)
        tool_calls = redact_value(tool_calls)
        interruptions = redact_value(interruptions)
    row = {
        "call_sid": summary.call_sid,
        "stream_sid": summary.stream_sid,
        "direction": summary.direction or "inbound",
        "caller": caller,
        "callee": callee,
        "outcome": IN_PROGRESS if in_progress else str(summary.outcome),
        "reason": "" if in_progress else summary.reason,
        "started_at": summary.started_at,
        "ended_at": ended_at,
        "duration_s": None if in_progress else _duration(summary, ended_at),
        "turns": len(summary.turns),
        "interruptions": len(summary.interruptions),
        "reconnects": summary.reconnects,
        "stalls": summary.stalls,
        "tokens_total": summary.tokens.get("total", 0),
        "greeting_ms": latency["greeting_ms"],
        "response_ms_p50": latency["response_ms_p50"],
        "transcript": transcript,
        "detail": {
            "tool_calls": tool_calls,
            "dtmf": list(summary.dtmf),
            "latency": latency,
            "tokens": dict(summary.tokens),
            "reconnects": summary.reconnects,
            "stalls": summary.stalls,
            "stalls_recovered": summary.stalls_recovered,
            "silent_answers": summary.silent_answers,
            "rejected_answers": summary.rejected_answers,
            "model_audio_damaged": summary.model_audio_damaged,
            "agent_audio_dropped_ms": summary.agent_audio_dropped_ms,
            "model_connections": [dict(c) for c in summary.model_connections],
            "interruptions": interruptions,
            "frames_in": summary.frames_in,
            "frames_out": summary.frames_out,
            "bad_frames": summary.bad_frames,
            "caller_audio_ms": summary.caller_audio_ms,
            "caller_audio_dropped_ms": summary.caller_audio_dropped_ms,
            "rest_failures": summary.rest_failures,
            "recording_failed": summary.recording_failed,
            "redacted": redact,
        },
    }
    return bounded(row)


def dialing_record(
    call_sid: str, caller: str, callee: str, *, redact: bool = False
) -> dict[str, Any]:
    """The record of an outbound call Twilio accepted, until its stream starts."""
    row = record_from_summary(
        CallSummary(call_sid=call_sid, direction="outbound", caller=caller, callee=callee),
        in_progress=True,
        redact=redact,
    )
    row["outcome"] = DIALING
    return row
