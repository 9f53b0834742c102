"""The phone side's exceptions: one root, carrying the call's SID where there is one.

Everything the ``telephony`` package raises on purpose derives from ``TelephonyError``, so a
caller can catch the package's errors without catching bugs. Errors of one call carry its
``call_sid``; the per-call boundary logs it with the error.
"""

from __future__ import annotations

__all__ = ["TelephonyError"]


class TelephonyError(Exception):
    """A problem on the phone side, of one call (``call_sid``) or of the process (None)."""

    def __init__(self, message: str, *, call_sid: str | None = None) -> None:
        super().__init__(message)
        self.call_sid = call_sid
