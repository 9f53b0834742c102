"""``voice-agent calls list|show|export|prune`` and ``voice-agent dial``: the operator's commands.

``calls`` reads the call records straight from the database (``DATABASE_URL``, as the server
uses it), or, with ``--api URL``, from a running server's ``/calls`` API (``API_TOKEN``).
``dial`` asks a running server to place an outbound call (``POST /calls``): the server holds
the Twilio credentials and serves the call, so the command needs only its URL and the token.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from telephony.errors import TelephonyError
from telephony.ops.records import OUTCOMES
from telephony.settings import DEFAULT_DATABASE_URL

__all__ = ["calls_main", "dial_main"]

DEFAULT_SERVER = "http://127.0.0.1:8080"


class CommandError(TelephonyError):
    """Printed as one line, exit status 1."""


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}" if isinstance(value, float) else str(value)


def _token() -> str:
    token = os.environ.get("API_TOKEN", "").strip()
    if not token:
        raise CommandError("set API_TOKEN to the server's API token")
    return token


def _api_get(base: str, path: str, params: dict[str, Any] | None = None) -> Any:
    url = base.rstrip("/") + path
    try:
        response = httpx.get(
            url,
            params={k: v for k, v in (params or {}).items() if v is not None},
            headers={"Authorization": f"Bearer {_token()}"},
            timeout=15,
        )
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {url}: {exc}") from None
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise CommandError(f"{url}: HTTP {response.status_code}: {_detail(response)}")
    return response.json()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]


def _store(*, create: bool = False) -> Any:
    from telephony.ops.store import CallStore, StoreError

    url = os.environ.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    if url.lower() == "off":
        raise CommandError("DATABASE_URL=off: there are no call records")
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise CommandError(f"DATABASE_URL is not a database URL: {url!r}") from None
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in {"", ":memory:"}:
        path = Path(database).expanduser()
        if not path.exists():
            # Opening it would create an empty file: say where we looked instead.
            raise CommandError(
                f"no call records at {path.resolve()} (DATABASE_URL={url}): run this where the "
                "server runs, or set DATABASE_URL to the server's"
            )
    try:
        return CallStore(url, create=create)
    except StoreError as exc:
        raise CommandError(str(exc)) from None


def list_calls(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.api:
        data = _api_get(
            args.api,
            "/calls",
            {"limit": args.limit, "outcome": args.outcome, "direction": args.direction},
        )
        return list(data["calls"]) if data else []
    store = _store()
    try:
        rows: list[dict[str, Any]] = store.list(
            limit=args.limit, outcome=args.outcome, direction=args.direction
        )
        return rows
    except Exception as exc:
        raise CommandError(f"cannot read calls from {store.url}: {exc}") from None
    finally:
        store.close()


def get_call(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.api:
        result: dict[str, Any] | None = _api_get(args.api, f"/calls/{args.call_sid}")
        return result
    store = _store()
    try:
        row: dict[str, Any] | None = store.get(args.call_sid)
        return row
    except Exception as exc:
        raise CommandError(f"cannot read calls from {store.url}: {exc}") from None
    finally:
        store.close()


_DIRECTIONS = {"inbound": "in", "outbound": "out", "browser": "web"}


def format_list(rows: list[dict[str, Any]]) -> str:
    header = ("STARTED (UTC)", "CALL SID", "DIR", "FROM", "TO", "OUTCOME", "DURATION", "TURNS")
    table = [header]
    for r in rows:
        table.append(
            (
                _when(r.get("started_at")),
                str(r["call_sid"]),
                _DIRECTIONS.get(str(r.get("direction", "")), str(r.get("direction", ""))),
                str(r.get("caller", "")),
                str(r.get("callee", "")),
                str(r.get("outcome", "")),
                _num(r.get("duration_s"), " s"),
                str(r.get("turns", 0)),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def format_call(r: dict[str, Any]) -> str:
    detail = r.get("detail") or {}
    latency = detail.get("latency") or {}
    lines = [
        f"call      {r['call_sid']}  ({r.get('direction', '')})",
        f"from/to   {r.get('caller', '')} -> {r.get('callee', '')}",
        f"outcome   {r.get('outcome', '')}" + (f"  ({r['reason']})" if r.get("reason") else ""),
        f"started   {_when(r.get('started_at'))} UTC   duration {_num(r.get('duration_s'), ' s')}",
        f"latency   greeting {_num(latency.get('greeting_ms'), ' ms')}   response p50 "
        f"{_num(latency.get('response_ms_p50'), ' ms')}   max "
        f"{_num(latency.get('response_ms_max'), ' ms')}",
        f"model     tokens {r.get('tokens_total', 0)}   reconnects {r.get('reconnects', 0)}   "
        f"stalls {r.get('stalls', 0)}   barge-ins {r.get('interruptions', 0)}",
    ]
    if detail.get("dtmf"):
        lines.append(f"dtmf      {' '.join(detail['dtmf'])}")
    lines.append("")
    for entry in r.get("transcript") or []:
        who = "Agent " if entry.get("role") == "agent" else "Caller"
        at = entry.get("at_s")
        stamp = f"[{at:7.2f}]" if isinstance(at, int | float) else "[      ?]"
        text = entry.get("text", "")
        if entry.get("interrupted"):
            lines.append(
                f"{stamp} {who}: {text} [interrupted; generated: {entry.get('generated')}]"
            )
        else:
            lines.append(f"{stamp} {who}: {text}")
    for tool in detail.get("tool_calls") or []:
        args = json.dumps(tool.get("args"), ensure_ascii=False)
        result = json.dumps(tool.get("result"), ensure_ascii=False)
        how = tool.get("outcome") or "ok"
        if tool.get("latency_ms") is not None:
            how += f", {tool['latency_ms']:.0f} ms"
        at = f" at {tool['at_s']:.1f} s" if isinstance(tool.get("at_s"), (int, float)) else ""
        lines.append(f"tool      {tool.get('name')} {args} -> {how}{at}: {result}")
    return "\n".join(lines)


#: The columns of ``calls export --format csv``, in order (the transcript as text).
CSV_COLUMNS = (
    "call_sid",
    "direction",
    "caller",
    "callee",
    "outcome",
    "reason",
    "started",
    "ended",
    "duration_s",
    "turns",
    "interruptions",
    "reconnects",
    "stalls",
    "tokens_total",
    "greeting_ms",
    "response_ms_p50",
    "tool_calls",
    "tool_errors",
    "instance_id",
    "feedback_rating",
    "feedback_comment",
    "feedback_at",
    "transcript",
)
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_UNITS = {"m": 60, "h": 3600, "d": 86_400}


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: ``24h``/``7d``/``30m`` ago, an ISO 8601 date or time (UTC unless it says),
    or epoch seconds."""
    now = time.time() if now is None else now
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * _UNITS[relative.group(2)]
    with contextlib.suppress(ValueError):
        return float(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"--since: expected 24h, 7d, an ISO date like 2026-11-21 or epoch seconds; got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _iso(ts: Any) -> str | None:
    if not isinstance(ts, int | float):
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def export_row(row: dict[str, Any]) -> dict[str, Any]:
    """A record as exported (JSON lines): every column, times also as ISO 8601 (UTC)."""
    out = dict(row)
    out["started"] = _iso(row.get("started_at"))
    out["ended"] = _iso(row.get("ended_at"))
    out["feedback"] = (
        None
        if row.get("feedback_rating") is None
        else {
            "rating": row.get("feedback_rating"),
            "comment": row.get("feedback_comment") or "",
            "at": _iso(row.get("feedback_at")),
        }
    )
    return out


def csv_row(row: dict[str, Any]) -> list[Any]:
    detail = row.get("detail") or {}
    tools = [t for t in detail.get("tool_calls") or [] if isinstance(t, dict)]
    lines = []
    for entry in row.get("transcript") or []:
        who = "Agent" if entry.get("role") == "agent" else "Caller"
        lines.append(f"{who}: {entry.get('text', '')}")
    values = {
        **row,
        "started": _iso(row.get("started_at")),
        "ended": _iso(row.get("ended_at")),
        "feedback_at": _iso(row.get("feedback_at")),
        "tool_calls": len(tools),
        "tool_errors": sum(1 for t in tools if (t.get("outcome") or "ok") != "ok"),
        "transcript": "\n".join(lines),
    }
    return ["" if values.get(c) is None else values[c] for c in CSV_COLUMNS]


def write_export(rows: Iterable[dict[str, Any]], out: IO[str], fmt: str) -> int:
    """Write ``rows`` as CSV (a header first) or JSON lines; how many."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(csv_row(row))
            count += 1
        return count
    for row in rows:
        out.write(json.dumps(export_row(row), ensure_ascii=False, default=str) + "\n")
        count += 1
    return count


def export_calls(fmt: str, since: str | None, output: str | None) -> int:
    start = parse_since(since) if since else None
    store = _store()
    try:
        rows: Iterator[dict[str, Any]] = store.export(start)
        if output:
            target = Path(output)
            tmp = target.with_name(target.name + ".tmp")
            with tmp.open("w", encoding="utf-8", newline="") as out:
                count = write_export(rows, out, fmt)
            tmp.replace(target)
            print(f"exported {count} call records to {target}", file=sys.stderr)
        else:
            write_export(rows, sys.stdout, fmt)
    except CommandError:
        raise
    except Exception as exc:
        raise CommandError(f"cannot export calls from {store.url}: {exc}") from None
    finally:
        store.close()
    return 0


def prune_calls(days: float) -> int:
    if days <= 0:
        raise CommandError("--older-than-days must be > 0")
    store = _store(create=True)  # a write: the tables of this version may be made
    try:
        # Calls whose server stopped without ending them are ended first (as a live instance
        # would), so that they are pruned like finished ones even with no server running.
        ended = sum(store.interrupt_stale("").values())
        deleted = store.prune(time.time() - days * 86_400)
    except Exception as exc:
        raise CommandError(f"cannot prune {store.url}: {exc}") from None
    finally:
        store.close()
    if ended:
        print(
            f"ended {ended} records of calls whose server stopped without ending them (interrupted)"
        )
    print(f"deleted {deleted} call records older than {days:g} days")
    return 0


def calls_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="voice-agent calls",
        description="Read call records (from DATABASE_URL, or a server's API with --api).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="recent calls, newest first")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--outcome", choices=OUTCOMES)
    ls.add_argument("--direction", choices=("inbound", "outbound", "browser"))
    show = sub.add_parser("show", help="one call: outcome, latency, transcript, tools")
    show.add_argument("call_sid")
    prune = sub.add_parser(
        "prune", help="delete records of calls that started more than DAYS ago (retention)"
    )
    prune.add_argument("--older-than-days", type=float, required=True, metavar="DAYS")
    export = sub.add_parser(
        "export", help="every record (with feedback) as CSV or JSON lines, oldest first"
    )
    export.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    export.add_argument("--since", help="24h, 7d, an ISO date/time (UTC), or epoch seconds")
    export.add_argument("--output", "-o", metavar="FILE", help="write here (default: stdout)")
    for p in (ls, show):
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--api", metavar="URL", help="read from a server (needs API_TOKEN)")
    args = parser.parse_args(argv)
    try:
        if args.action == "prune":
            return prune_calls(args.older_than_days)
        if args.action == "export":
            return export_calls(args.format, args.since, args.output)
        if args.action == "list":
            rows = list_calls(args)
            print(json.dumps(rows, indent=2, default=str) if args.json else format_list(rows))
            return 0
        record = get_call(args)
        if record is None:
            print(f"voice-agent calls: no call {args.call_sid}", file=sys.stderr)
            return 1
        print(json.dumps(record, indent=2, default=str) if args.json else format_call(record))
        return 0
    except CommandError as exc:
        print(f"voice-agent calls: {exc}", file=sys.stderr)
        return 1


def dial_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="voice-agent dial",
        description=(
            "Place an outbound call through a running server (POST /calls; needs API_TOKEN). "
            "The agent speaks once the person who picks up has said something."
        ),
    )
    parser.add_argument("number", help="E.164 number to call, like +14155550100")
    parser.add_argument(
        "--from", dest="from_", help="our Twilio number (default: the server's OUTBOUND_CALLER_ID)"
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("VOICE_AGENT_URL", DEFAULT_SERVER),
        help=f"the server's base URL (default: $VOICE_AGENT_URL or {DEFAULT_SERVER})",
    )
    args = parser.parse_args(argv)
    body = {"to": args.number} | ({"from": args.from_} if args.from_ else {})
    url = args.server.rstrip("/") + "/calls"
    try:
        response = httpx.post(
            url, json=body, headers={"Authorization": f"Bearer {_token()}"}, timeout=30
        )
    except CommandError as exc:
        print(f"voice-agent dial: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"voice-agent dial: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 201:
        print(
            f"voice-agent dial: HTTP {response.status_code}: {_detail(response)}", file=sys.stderr
        )
        return 1
    placed = response.json()
    print(f"{placed['call_sid']} {placed['status']}: calling {placed['to']} from {placed['from']}")
    return 0
