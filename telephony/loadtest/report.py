"""Load-test output: per-call rows (CSV and JSONL), a JSON summary, and a self-contained HTML
page with inline SVG charts (no scripts, no downloads: it opens anywhere, offline).

The page shows, for each latency, every sample against the time it happened in the run
(does latency grow as load builds up?) with its p50/p95/p99 lines, and its histogram; then
the number of active calls over time with failed calls marked, and the failures by reason.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from telephony.loadtest.metrics import CallRecord, Distribution, SloResult, Summary

__all__ = ["ReportPaths", "nice_ticks", "render_html", "summary_document", "write_report"]

_W: Final = 760
_H: Final = 230
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 56, 16, 28, 34
_COLOURS: Final = {
    "response": "#1f77b4",
    "greeting": "#2ca02c",
    "barge_in": "#9467bd",
    "gap": "#d62728",
}


@dataclass(frozen=True, slots=True)
class ReportPaths:
    calls_csv: Path
    calls_jsonl: Path
    summary_json: Path
    html: Path


def summary_document(
    summary: Summary,
    slos: Sequence[SloResult],
    config: Mapping[str, Any],
    deadline_hit: bool = False,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON summary: figures, SLO verdicts and the run's configuration."""
    return {
        **summary.to_json(),
        "deadline_hit": deadline_hit,
        "slos": [
            {
                "metric": r.slo.metric,
                "limit": r.slo.limit,
                "value": r.value,
                "passed": r.passed,
                "text": r.describe(),
            }
            for r in slos
        ],
        "passed": all(r.passed for r in slos),
        "warnings": list(warnings),
        "config": dict(config),
    }


def write_report(
    out: str | Path,
    records: Sequence[CallRecord],
    summary: Summary,
    slos: Sequence[SloResult],
    config: Mapping[str, Any],
    *,
    deadline_hit: bool = False,
    jsonl_written: bool = False,
    warnings: Sequence[str] = (),
) -> ReportPaths:
    """Write ``calls.csv``, ``calls.jsonl`` (unless already written as calls finished),
    ``summary.json`` and ``report.html`` into ``out``."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        root / "calls.csv", root / "calls.jsonl", root / "summary.json", root / "report.html"
    )
    rows = [r.row() for r in records]
    with paths.calls_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["index"])
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ";".join(str(x) for x in v) if isinstance(v, list) else v
                    for k, v in row.items()
                }
            )
    if not jsonl_written:
        paths.calls_jsonl.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    doc = summary_document(summary, slos, config, deadline_hit, warnings)
    paths.summary_json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    paths.html.write_text(
        render_html(records, summary, slos, config, deadline_hit=deadline_hit, warnings=warnings)
    )
    return paths


# ---------------------------------------------------------------------------------------------
# HTML + SVG
# ---------------------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values, the first <= ``lo``, the last >= ``hi``."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw - 1e-12)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [round(first, 10)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(first + len(ticks) * step, 10))
    return ticks


@dataclass(frozen=True, slots=True)
class _Frame:
    """Maps data to pixels for one chart."""

    x0: float
    x1: float
    y0: float
    y1: float

    def x(self, v: float) -> float:
        return _PAD_L + (v - self.x0) / (self.x1 - self.x0) * (_W - _PAD_L - _PAD_R)

    def y(self, v: float) -> float:
        return _H - _PAD_B - (v - self.y0) / (self.y1 - self.y0) * (_H - _PAD_T - _PAD_B)


def _axes(frame: _Frame, xticks: list[float], yticks: list[float], xlabel: str, ylabel: str) -> str:
    parts = [
        f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{_W - _PAD_L - _PAD_R}" '
        f'height="{_H - _PAD_T - _PAD_B}" fill="#fafafa" stroke="#ccc"/>'
    ]
    for t in yticks:
        y = frame.y(t)
        parts.append(
            f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>'
        )
    for t in xticks:
        x = frame.x(t)
        parts.append(f'<text x="{x:.1f}" y="{_H - _PAD_B + 16}" text-anchor="middle">{t:g}</text>')
    parts.append(
        f'<text x="{(_W + _PAD_L) / 2:.0f}" y="{_H - 4}" text-anchor="middle">'
        f"{html.escape(xlabel)}</text>"
        f'<text x="14" y="{(_H) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_H / 2:.0f})">{html.escape(ylabel)}</text>'
    )
    return "".join(parts)


def _svg(title: str, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" font-family="sans-serif" font-size="11">'
        f'<text x="{_PAD_L}" y="17" font-size="13" font-weight="bold">{html.escape(title)}</text>'
        f"{body}</svg>"
    )


def _percentile_lines(frame: _Frame, dist: Distribution, horizontal: bool) -> str:
    parts = []
    lines = (("p50", dist.p50, "6 3"), ("p95", dist.p95, "3 3"), ("p99", dist.p99, "1 3"))
    for i, (name, value, dash) in enumerate(lines):
        if value is None:
            continue
        # Labels are staggered: the three lines are often a few pixels apart.
        if horizontal:
            y = frame.y(value)
            parts.append(
                f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#333" '
                f'stroke-dasharray="{dash}"/><text x="{_W - _PAD_R - 4 - 78 * (2 - i)}" '
                f'y="{y - 3:.1f}" text-anchor="end">{name} {value:.0f}</text>'
            )
        else:
            x = frame.x(value)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_PAD_T}" y2="{_H - _PAD_B}" stroke="#333" '
                f'stroke-dasharray="{dash}"/><text x="{x + 3:.1f}" y="{_PAD_T + 11 + 12 * i}">'
                f"{name} {value:.0f}</text>"
            )
    return "".join(parts)


def scatter_svg(
    title: str,
    samples: Sequence[tuple[float, float]],
    dist: Distribution,
    colour: str,
    x_max: float,
) -> str:
    """Samples ``(run time s, ms)`` as dots, with the distribution's percentile lines."""
    if not samples:
        return _svg(
            title, f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle">no samples</text>'
        )
    y_max = max(ms for _, ms in samples) * 1.1 or 1.0
    xticks, yticks = nice_ticks(0, max(x_max, 1e-3)), nice_ticks(0, y_max)
    frame = _Frame(0, xticks[-1], 0, yticks[-1])
    dots = "".join(
        f'<circle cx="{frame.x(t):.1f}" cy="{frame.y(ms):.1f}" r="2.5" fill="{colour}" '
        f'fill-opacity="0.6"/>'
        for t, ms in samples
    )
    body = (
        _axes(frame, xticks, yticks, "time since the run started (s)", "ms")
        + dots
        + _percentile_lines(frame, dist, horizontal=True)
    )
    return _svg(title, body)


def histogram_svg(title: str, values: Sequence[float], dist: Distribution, colour: str) -> str:
    """A histogram of ``values`` (ms) with percentile markers."""
    if not values:
        return _svg(
            title, f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle">no samples</text>'
        )
    lo, hi = min(values), max(values)
    # Zoom on where the samples are (a tight cluster at 800 ms would be one bar from 0).
    margin = max((hi - lo) * 0.1, hi * 0.02, 1.0)
    xticks = nice_ticks(max(0.0, lo - margin), hi + margin)
    x0, x1 = xticks[0], xticks[-1]
    bins = min(40, max(8, int(math.sqrt(len(values))) * 2))
    width = (x1 - x0) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - x0) / width))] += 1
    yticks = nice_ticks(0, max(*counts, 5))  # whole numbers of samples
    frame = _Frame(x0, x1, 0, yticks[-1])
    bars = "".join(
        f'<rect x="{frame.x(x0 + i * width) + 0.5:.1f}" y="{frame.y(c):.1f}" '
        f'width="{max(0.5, frame.x(width) - frame.x(0) - 1):.1f}" '
        f'height="{frame.y(0) - frame.y(c):.1f}" fill="{colour}" fill-opacity="0.75"/>'
        for i, c in enumerate(counts)
        if c
    )
    body = (
        _axes(frame, xticks, yticks, "ms", "samples")
        + bars
        + _percentile_lines(frame, dist, horizontal=False)
    )
    return _svg(title, body)


def concurrency_svg(records: Sequence[CallRecord], x_max: float) -> str:
    """Active calls over time (a step line), failed calls as red ticks at their start."""
    events = sorted(
        [(r.started_s, 1) for r in records] + [(r.started_s + r.duration_s, -1) for r in records]
    )
    points: list[tuple[float, int]] = [(0.0, 0)]
    level = 0
    for t, delta in events:
        points.append((t, level))
        level += delta
        points.append((t, level))
    peak = max((p for _, p in points), default=1) or 1
    xticks, yticks = nice_ticks(0, max(x_max, 1e-3)), nice_ticks(0, peak * 1.1)
    frame = _Frame(0, xticks[-1], 0, yticks[-1])
    path = " ".join(f"{frame.x(t):.1f},{frame.y(n):.1f}" for t, n in points)
    fails = "".join(
        f'<line x1="{frame.x(r.started_s):.1f}" x2="{frame.x(r.started_s):.1f}" '
        f'y1="{_H - _PAD_B}" y2="{_H - _PAD_B - 10}" stroke="#d62728" stroke-width="2">'
        f"<title>{html.escape(r.failure)}: {html.escape(r.detail)}</title></line>"
        for r in records
        if not r.ok
    )
    body = (
        _axes(frame, xticks, yticks, "time since the run started (s)", "active calls")
        + f'<polyline points="{path}" fill="none" stroke="#ff7f0e" stroke-width="1.5"/>'
        + fails
    )
    return _svg("Active calls (red ticks: failed calls, at their start)", body)


_CSS: Final = """
.warnings { background: #fff4e5; border-left: 4px solid #b26a00; padding: .2em 1em; }
body{font-family:sans-serif;margin:24px;color:#222;max-width:1600px}
table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:12px}
code{background:#f3f3f3;padding:1px 4px}
"""


def _cell(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


#: Configuration keys (the load tester's options) → what the report calls them, and a unit.
_CONFIG_LABELS: Final[dict[str, tuple[str, str]]] = {
    "url": ("Media Stream URL", ""),
    "webhook": ("webhook URL", ""),
    "recordings": ("recordings", ""),
    "mode": ("replay mode", ""),
    "concurrency": ("concurrency", " calls"),
    "rate": ("new calls per second", "/s"),
    "ramp_up": ("ramp-up", " s"),
    "calls": ("calls", ""),
    "duration": ("duration", " s"),
    "deadline": ("deadline of the run", " s"),
    "think_time": ("think time", " s"),
    "answer_timeout": ("answer timeout", " s"),
    "greeting_timeout": ("greeting timeout", " s"),
    "barge_in_after": ("barge in after", " s"),
    "linger": ("linger", " s"),
    "max_call_s": ("longest call", " s"),
    "connect_timeout": ("connect timeout", " s"),
    "no_greeting": ("agent speaks first", ""),
    "signed": ("signed like Twilio", ""),
    "public_url": ("server's PUBLIC_URL", ""),
    "channel": ("caller channel", ""),
    "started_at": ("started (UTC)", ""),
}
#: Options that only shape the output, not the test.
_CONFIG_HIDDEN: Final = frozenset({"out", "quiet"})


def describe_config(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run's configuration as (label, text) rows a person reads: no ``None``, no epoch."""
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        if key in _CONFIG_HIDDEN:
            continue
        label, unit = _CONFIG_LABELS.get(key, (key.replace("_", " "), ""))
        if key.startswith("max_") and key not in _CONFIG_LABELS:  # an SLO: max_p95_gap_ms
            what = key[4:].removesuffix("_ms").replace("_", " ")
            label, unit = f"SLO: {what} at most", " ms" if key.endswith("_ms") else ""
        if key == "no_greeting":
            value = not value
        if value is None or value == []:
            text = "not set"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif key == "started_at":
            moment = dt.datetime.fromtimestamp(float(value), dt.UTC)
            text = moment.strftime("%Y-%m-%d %H:%M:%S")
        elif isinstance(value, list | tuple):
            text = ", ".join(str(v) for v in value)
        elif isinstance(value, float):
            text = f"{value:g}{unit}"
        else:
            text = f"{value}{unit}"
        rows.append((label, text))
    return rows


def render_html(
    records: Sequence[CallRecord],
    summary: Summary,
    slos: Sequence[SloResult],
    config: Mapping[str, Any],
    *,
    deadline_hit: bool = False,
    warnings: Sequence[str] = (),
) -> str:
    """The report page (one self-contained HTML document)."""
    x_max = max((r.started_s + r.duration_s for r in records), default=1.0)
    passed = all(r.passed for r in slos)
    verdict = (
        '<p class="pass">All SLOs passed.</p>' if passed else '<p class="fail">SLO failed.</p>'
    )
    if not slos:
        verdict = "<p>No SLOs given.</p>"
    slo_rows = "".join(
        f'<tr><td class="{"pass" if r.passed else "fail"}">{html.escape(r.describe())}</td></tr>'
        for r in slos
    )
    measures = [
        ("time to greeting", summary.greeting_ms),
        ("response latency", summary.response_ms),
        ("barge-in latency (speech → clear)", summary.barge_in_ms),
        ("audio gap duration", summary.gap_ms),
        ("connect (webhook + handshake)", summary.connect_ms),
        ("load generator: max send lag per call", summary.send_lag_ms),
    ]
    measure_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{d.count}</td><td>{_cell(d.p50)}</td>"
        f"<td>{_cell(d.p95)}</td><td>{_cell(d.p99)}</td><td>{_cell(d.max)}</td></tr>"
        for name, d in measures
    )
    failure_rows = "".join(
        f"<tr><td>{html.escape(kind)}</td><td>{n}</td></tr>" for kind, n in summary.failures.items()
    )
    charts = []
    series = [
        (
            "Response latency",
            "response",
            [s for r in records for s in r.response_ms],
            summary.response_ms,
        ),
        (
            "Time to greeting",
            "greeting",
            [(r.started_s, r.greeting_ms) for r in records if r.greeting_ms is not None],
            summary.greeting_ms,
        ),
        (
            "Barge-in latency",
            "barge_in",
            [s for r in records for s in r.barge_in_ms],
            summary.barge_in_ms,
        ),
        ("Audio gaps", "gap", [s for r in records for s in r.gap_ms], summary.gap_ms),
    ]
    for title, key, samples, dist in series:
        if key in ("barge_in", "gap") and not samples:
            continue  # not exercised in this run: no empty charts
        colour = _COLOURS[key]
        charts.append(scatter_svg(f"{title} over the run (ms)", samples, dist, colour, x_max))
        charts.append(
            histogram_svg(f"{title}: distribution", [ms for _, ms in samples], dist, colour)
        )
    charts.append(concurrency_svg(records, x_max))
    config_rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{html.escape(text)}</td></tr>"
        for label, text in describe_config(config)
    )
    warning_items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    warning_list = (
        f'<div class="warnings"><h2>Warnings</h2><ul>{warning_items}</ul></div>' if warnings else ""
    )
    rate = summary.failure_rate
    failures = (
        f"<h2>Failures</h2><table><tr><th>reason</th><th>calls</th></tr>{failure_rows}</table>"
        if failure_rows
        else ""
    )
    deadline = (
        '<p class="fail">The run hit its overall deadline: calls still going were cut off.</p>'
        if deadline_hit
        else ""
    )
    answers = (
        f"<br>Answer accuracy {100 * (summary.answer_accuracy or 0.0):.1f} %: "
        f"{summary.expected_said} of {summary.expected} expected phrases said"
        + (f" ({summary.answers_unread} calls unread)" if summary.answers_unread else "")
        + "."
        if summary.expected
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>voice-agent load test</title>
<style>{_CSS}</style></head><body>
<h1>voice-agent load test</h1>
{verdict}{deadline}
<table>{slo_rows}</table>
{warning_list}
<p>{summary.calls} calls in {summary.wall_s:.1f} s: {summary.ok} ok, {summary.failed} failed
(failure rate {_cell(None if rate is None else rate * 100, 1)} %);
{summary.turns} caller turns, {summary.unanswered} unanswered;
{summary.gap_ms.count} audio gaps in {summary.calls_with_gaps} calls;
{summary.barge_ins_without_clear} barge-ins without a clear.{answers}</p>
<table><tr><th>measure (ms)</th><th>n</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>
{measure_rows}</table>
{failures}
<div class="charts">{"".join(charts)}</div>
<h2>Configuration</h2><table>{config_rows}</table>
</body></html>
"""
