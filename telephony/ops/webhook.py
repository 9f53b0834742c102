"""CALL_WEBHOOK_URL: an end-of-call report POSTed to the operator's server, never lost.

When a call ends, ``report_of(row, ...)`` (pure) turns its final record into the report: the
outcome, timings, transcript, tool calls, usage and a link to the call on the operator page.
``WebhookSender.enqueue()`` writes it to a durable queue (one JSON file per report in
``CALL_WEBHOOK_QUEUE_DIR/<INSTANCE_ID>/``, ``fsync``-ed) and returns; one task of its own
delivers the queue, oldest first:

- each attempt is signed like tool requests (``X-Agent-Timestamp``, ``X-Agent-Signature:
  v1=<hex HMAC-SHA256 of "<timestamp>." + body>``, with ``CALL_WEBHOOK_SECRET``) and carries
  ``Idempotency-Key: <call sid>``, the same on every attempt: the receiver drops repeats;
- a 2xx answer delivers it (the file is deleted); a network error, a timeout, 408, 429 or a
  5xx is retried with exponential backoff and full jitter (``BACKOFF_S`` doubling up to
  ``BACKOFF_MAX_S``); any other 4xx is a refusal: the report is dropped (logged, counted);
- what is queued when the process stops stays on disk and is sent by the next process with
  the same ``INSTANCE_ID``; the queue holds at most ``CALL_WEBHOOK_QUEUE_MAX`` reports (beyond,
  the oldest is dropped, logged and counted).

Nothing here runs on a call's path: the call's end only queues a file write.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from agent.logs import fields
from agent.tools.http import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

__all__ = ["WebhookSender", "WebhookStats", "report_of"]

log = logging.getLogger(__name__)

#: The first retry waits up to this long; each next one twice as long, up to BACKOFF_MAX_S.
BACKOFF_S: Final = 1.0
BACKOFF_MAX_S: Final = 300.0
REQUEST_TIMEOUT_S: Final = 10.0
DEFAULT_QUEUE_MAX: Final = 1000
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
_RETRYABLE: Final = frozenset({408, 425, 429})
_NAME = re.compile(r"^(\d{12})-[A-Za-z0-9_-]{0,64}\.json$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def report_of(row: dict[str, Any], *, page_url: str | None, recorded: bool) -> dict[str, Any]:
    """The end-of-call report of a call's final record (``telephony.ops.records``)."""
    detail = row.get("detail") or {}
    latency = detail.get("latency") or {}
    sid = str(row.get("call_sid", ""))
    return {
        "event": "call.ended",
        "call_sid": sid,
        "stream_sid": row.get("stream_sid"),
        "direction": row.get("direction"),
        "from": row.get("caller"),
        "to": row.get("callee"),
        "outcome": row.get("outcome"),
        "reason": row.get("reason"),
        "instance_id": row.get("instance_id"),
        "started_at": row.get("started_at"),
        "ended_at": row.get("ended_at"),
        "duration_s": row.get("duration_s"),
        "timings": {
            "model_connect_ms": latency.get("model_connect_ms"),
            "greeting_ms": latency.get("greeting_ms"),
            "response_ms": latency.get("response_ms") or [],
            "response_ms_p50": latency.get("response_ms_p50"),
            "response_ms_max": latency.get("response_ms_max"),
        },
        "transcript": row.get("transcript") or [],
        "tool_calls": detail.get("tool_calls") or [],
        "dtmf": detail.get("dtmf") or [],
        "usage": {
            "tokens": detail.get("tokens") or {},
            "turns": row.get("turns"),
            "barge_ins": row.get("interruptions"),
            "reconnects": row.get("reconnects"),
            "stalls": row.get("stalls"),
        },
        "recorded": recorded,
        "url": f"{page_url}#call={sid}" if page_url else None,
    }


@dataclass
class WebhookStats:
    delivered: int = 0
    failed_attempts: int = 0
    dropped: int = 0


class WebhookSender:
    """The durable queue and its delivery task (start with ``start()``, end with ``aclose()``)."""

    def __init__(
        self,
        url: str,
        directory: Path,
        *,
        secret: str | None = None,
        max_reports: int = DEFAULT_QUEUE_MAX,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.dir = directory
        self.secret = secret
        self.max_reports = max_reports
        self.stats = WebhookStats()
        # Read at construction, so that tests can make the backoff short.
        self.backoff_s = BACKOFF_S
        self.backoff_max_s = BACKOFF_MAX_S
        self.dir.mkdir(parents=True, exist_ok=True)
        self._files = sorted(p for p in self.dir.iterdir() if _NAME.match(p.name))
        last = max((int(p.name[:12]) for p in self._files), default=0)
        self._seq = itertools.count(last + 1)
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, transport=transport)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # the file list, between enqueue and delivery

    @property
    def depth(self) -> int:
        """Reports queued, not delivered yet."""
        return len(self._files)

    def start(self) -> None:
        if self._files:
            log.warning(
                "webhook.queue_found", extra=fields(reports=len(self._files), dir=str(self.dir))
            )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="call-webhook")

    async def enqueue(self, report: dict[str, Any]) -> None:
        """Queue a report durably (a file write in a worker thread)."""
        body = orjson.dumps(report, default=str)
        sid = _UNSAFE.sub("_", str(report.get("call_sid", "")))[:64]
        name = f"{next(self._seq):012d}-{sid}.json"
        async with self._lock:
            try:
                path = await asyncio.to_thread(_write, self.dir / name, body)
            except OSError as exc:
                self._drop(sid, f"cannot write the queue: {exc}")
                return
            self._files.append(path)
            while len(self._files) > self.max_reports:
                oldest = self._files.pop(0)
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(oldest.unlink)
                self._drop(oldest.name, f"the queue is full ({self.max_reports} reports)")
        self._wake.set()

    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._files:
                self._wake.clear()
                await self._wake.wait()
                continue
            path = self._files[0]
            try:
                body = await asyncio.to_thread(path.read_bytes)
                sid = str(orjson.loads(body).get("call_sid", ""))
            except (OSError, ValueError) as exc:
                await self._forget(path, f"unreadable: {exc}")
                continue
            result = await self._post(body, sid, attempt)
            if result == "retry":
                attempt += 1
                cap = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(cap / 2, cap))  # jitter: no herd
                continue
            attempt = 0
            if result == "delivered":
                self.stats.delivered += 1
                await self._forget(path, None)
            else:
                await self._forget(path, result)

    async def _post(self, body: bytes, sid: str, attempt: int) -> str:
        """ "delivered", "retry", or why the receiver refused it."""
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: sid}
        if self.secret:
            stamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = sign(self.secret, stamp, body)
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return self._failed(sid, attempt, f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            log.info("webhook.delivered", extra=fields(call_sid=sid, attempts=attempt + 1))
            return "delivered"
        if status >= 500 or status in _RETRYABLE:
            return self._failed(sid, attempt, f"HTTP {status}")
        return f"the receiver refused it: HTTP {status}"

    def _failed(self, sid: str, attempt: int, error: str) -> str:
        self.stats.failed_attempts += 1
        log.warning(
            "webhook.failed",
            extra=fields(call_sid=sid, attempt=attempt + 1, error=error, queued=self.depth),
        )
        return "retry"

    async def _forget(self, path: Path, dropped: str | None) -> None:
        async with self._lock:
            if self._files and self._files[0] == path:
                self._files.pop(0)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(path.unlink)
        if dropped is not None:
            self._drop(path.name, dropped)

    def _drop(self, what: str, why: str) -> None:
        self.stats.dropped += 1
        log.error("webhook.dropped", extra=fields(report=what, reason=why))

    async def aclose(self) -> None:
        """Stop delivering (what is queued stays on disk for the next start)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        await self._client.aclose()
        if self._files:
            log.warning(
                "webhook.left_queued",
                extra=fields(
                    reports=len(self._files),
                    dir=str(self.dir),
                    message="delivered at the next start with this INSTANCE_ID",
                ),
            )


def _write(path: Path, body: bytes) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename itself, durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path
