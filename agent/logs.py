"""The log-event convention both sides share: an event name, structured fields, a call id.

Usage: ``log.info("call.started", extra=fields(caller="+1…"))``. The message is the event
name; ``fields`` become keys (JSON) or ``k=v`` pairs (text) when ``telephony.server.logs``
formats them. The call id lives in a context variable set by the per-call object before it
starts its tasks; asyncio copies the context into every task, so any logger (ours, the SDK's,
uvicorn's) used on behalf of a call gets its id without passing it around.
"""

from __future__ import annotations

import contextvars
from typing import Any, Final

__all__ = ["FIELDS", "call_id_var", "fields"]

#: The ``LogRecord`` attribute that carries an event's fields.
FIELDS: Final = "event_fields"

#: The id of the call being served (Twilio's CallSid), or None outside a call.
call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: structured fields of the event."""
    return {FIELDS: values}
