"""Structured logs: one line per event, each carrying the call SID of the call it belongs to.

The convention (event name + ``fields``, the call id in a context variable) is
``agent.logs``'s, shared by both sides; this module formats and filters the records.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from agent.logs import FIELDS as _FIELDS
from agent.logs import call_id_var
from telephony.ops.pii import redact_text, redact_value


class _CallContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_sid = call_id_var.get()
        return True


class _RedactNumbers(logging.Filter):
    """``REDACT_PHONE_NUMBERS``: mask phone numbers in every event's fields and message."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = getattr(record, _FIELDS, None)
        if isinstance(values, dict):
            setattr(record, _FIELDS, redact_value(values))
        if record.args:
            record.msg, record.args = record.getMessage(), None
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        return True


def _event_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    value = getattr(record, _FIELDS, None)
    return value if isinstance(value, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, call_sid, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "call_sid": getattr(record, "call_sid", None),
        }
        entry.update(_event_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable, for development: ``12:00:01.123 INFO  [CA…] event k=v``."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        sid = getattr(record, "call_sid", None)
        parts = [
            f"{clock}.{int(record.msecs):03d}",
            f"{record.levelname:<7}",
            f"[{sid}]" if sid else "[-]",
            record.getMessage(),
        ]
        parts.extend(
            f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
            for k, v in _event_fields(record).items()
        )
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(
    level: str = "INFO",
    fmt: Literal["json", "text", "auto"] = "auto",
    *,
    redact_numbers: bool = False,
) -> None:
    """Route every logger to stderr in the chosen format (auto: text on a terminal).

    ``redact_numbers``: mask phone numbers in every line (``telephony.ops.pii``).
    """
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_CallContext())
    if redact_numbers:
        handler.addFilter(_RedactNumbers())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn installs its own handlers; send its records through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Access logs for a 20 ms media stream are noise; keep warnings.
    logging.getLogger("uvicorn.access").setLevel("WARNING")
    logging.getLogger("websockets").setLevel("WARNING")
    logging.getLogger("httpx").setLevel("WARNING")
    # The twilio SDK logs every request at INFO ("-- BEGIN Twilio API Request --" …).
    logging.getLogger("twilio").setLevel("WARNING")
