"""A call's lifecycle as an explicit state machine that refuses an illegal transition.

::

    WAITING_FOR_START ──start──► CONNECTING ──model ready──► ACTIVE ◄──tool cancelled──┐
            │                        │                          │                       │
            └──── no start / hostile ┴─────── ended ────────────┴──end_call/limit──► ENDING
                                     ▼                                                  │
                                   ENDED ◄──────────────────────────────────────────────┘

``ENDED`` is final. A transition the table does not allow raises ``IllegalTransition``: a
bug in the bridge, never something a peer can cause.
"""

from __future__ import annotations

import enum
from typing import Final

from telephony.errors import TelephonyError

__all__ = ["CallState", "IllegalTransition", "State"]


class State(enum.Enum):
    WAITING_FOR_START = "waiting_for_start"
    CONNECTING = "connecting"  # started; the model's conversation is being opened
    ACTIVE = "active"
    ENDING = "ending"  # the agent's last words play out, then the call ends
    ENDED = "ended"


_ALLOWED: Final[dict[State, frozenset[State]]] = {
    State.WAITING_FOR_START: frozenset({State.CONNECTING, State.ENDED}),
    State.CONNECTING: frozenset({State.ACTIVE, State.ENDED}),
    State.ACTIVE: frozenset({State.ENDING, State.ENDED}),
    State.ENDING: frozenset({State.ACTIVE, State.ENDED}),
    State.ENDED: frozenset(),
}


class IllegalTransition(TelephonyError):
    """The bridge tried to move the call along a transition the machine does not allow."""


class CallState:
    """The current state, changed only through ``to``."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = State.WAITING_FOR_START

    @property
    def current(self) -> State:
        return self._state

    def __repr__(self) -> str:
        return f"CallState({self._state.name})"

    def is_(self, *states: State) -> bool:
        return self._state in states

    def to(self, new: State) -> None:
        """Move to ``new``; ``IllegalTransition`` unless the table allows it. Moving to the
        state the call is already in is allowed for ``ENDED`` only (ending is idempotent)."""
        if new is self._state is State.ENDED:
            return
        if new not in _ALLOWED[self._state]:
            raise IllegalTransition(f"{self._state.name} -> {new.name}")
        self._state = new
