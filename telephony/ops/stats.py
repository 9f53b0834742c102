"""The operator dashboard's figures, from call records (pure: rows in, buckets out).

``dashboard(rows, since, until, bucket_s)`` takes rows of ``CallStore.window`` (``started_at``,
``outcome``, ``greeting_ms``, ``interruptions``, ``reconnects``, ``detail``) and returns, per
bucket of ``bucket_s`` seconds from ``since``: calls by outcome, response-latency and
time-to-greeting percentiles (p50, p95: nearest rank), barge-ins, reconnects, tool calls and
tool errors (a tool call whose outcome is not ``ok``), plus the same over the whole window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeGuard

__all__ = ["MAX_BUCKETS", "dashboard", "percentile"]

#: A window is cut into at most this many buckets (the page draws one bar each).
MAX_BUCKETS: Final = 24 * 31


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(float(ordered[rank - 1]), 1)


class _Bucket:
    __slots__ = ("barge_ins", "calls", "greeting", "outcomes", "reconnects", "response", "tools")

    def __init__(self) -> None:
        self.calls = 0
        self.outcomes: dict[str, int] = {}
        self.response: list[float] = []
        self.greeting: list[float] = []
        self.barge_ins = 0
        self.reconnects = 0
        self.tools = [0, 0]  # calls, errors

    def add(self, row: dict[str, Any]) -> None:
        self.calls += 1
        outcome = str(row.get("outcome") or "")
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        detail = row.get("detail") or {}
        latency = detail.get("latency") or {}
        self.response.extend(_numbers(latency.get("response_ms")))
        greeting = row.get("greeting_ms")
        if _is_number(greeting):
            self.greeting.append(float(greeting))
        self.barge_ins += int(row.get("interruptions") or 0)
        self.reconnects += int(row.get("reconnects") or 0)
        for tool in detail.get("tool_calls") or ():
            if isinstance(tool, dict):
                self.tools[0] += 1
                if (tool.get("outcome") or "ok") != "ok":
                    self.tools[1] += 1

    def merge(self, other: _Bucket) -> None:
        self.calls += other.calls
        for k, v in other.outcomes.items():
            self.outcomes[k] = self.outcomes.get(k, 0) + v
        self.response += other.response
        self.greeting += other.greeting
        self.barge_ins += other.barge_ins
        self.reconnects += other.reconnects
        self.tools[0] += other.tools[0]
        self.tools[1] += other.tools[1]

    def figures(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "outcomes": dict(sorted(self.outcomes.items())),
            "response_ms": {
                "p50": percentile(self.response, 50),
                "p95": percentile(self.response, 95),
                "count": len(self.response),
            },
            "greeting_ms": {
                "p50": percentile(self.greeting, 50),
                "p95": percentile(self.greeting, 95),
                "count": len(self.greeting),
            },
            "barge_ins": self.barge_ins,
            "reconnects": self.reconnects,
            "tool_calls": self.tools[0],
            "tool_errors": self.tools[1],
        }


def dashboard(
    rows: Iterable[dict[str, Any]], since: float, until: float, bucket_s: float = 3600.0
) -> dict[str, Any]:
    """Figures per bucket of ``bucket_s`` seconds over [since, until), and in total."""
    if bucket_s <= 0 or until <= since:
        raise ValueError("need until > since and bucket_s > 0")
    count = min(MAX_BUCKETS, math.ceil((until - since) / bucket_s))
    buckets = [_Bucket() for _ in range(count)]
    seen = 0
    for row in rows:
        started = row.get("started_at")
        if not _is_number(started) or not since <= started < until:
            continue
        index = min(count - 1, int((started - since) // bucket_s))
        buckets[index].add(row)
        seen += 1
    total = _Bucket()
    for bucket in buckets:
        total.merge(bucket)
    return {
        "since": since,
        "until": until,
        "bucket_s": bucket_s,
        "calls": seen,
        "outcomes": sorted(total.outcomes),
        "buckets": [
            {"start": since + i * bucket_s, **bucket.figures()} for i, bucket in enumerate(buckets)
        ],
        "total": total.figures(),
    }


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(values: Any) -> list[float]:
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if _is_number(v)]
