"""Session resumption handles: which session each handle was issued to, and which are valid.

One :class:`HandleRegistry` belongs to a :class:`~agent.simulator.LiveSimulator` and is shared
by its sessions, so a handle issued on one connection resumes on the next. A session issues
handles when it sends ``sessionResumptionUpdate``, checks them when a ``setup`` asks to resume,
and revokes its own when an injected fault says its state is lost.
"""

from __future__ import annotations

import secrets

__all__ = ["HandleRegistry"]


class HandleRegistry:
    """Session resumption handles issued by one simulator; valid across its sessions."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}
        self._revoked: set[str] = set()

    def issue(self, session_id: str, handle: str | None = None) -> str:
        handle = handle or secrets.token_urlsafe(32)
        self._owner[handle] = session_id
        return handle

    def revoke(self, session_id: str) -> None:
        """Invalidate every handle of a session (its state is lost: it cannot be resumed)."""
        self._revoked.add(session_id)

    def __contains__(self, handle: object) -> bool:
        """The handle was issued here and is still valid."""
        owner = self._owner.get(handle) if isinstance(handle, str) else None
        return owner is not None and owner not in self._revoked

    def session_of(self, handle: str) -> str | None:
        """Id of the session that was given ``handle``."""
        return self._owner.get(handle)
