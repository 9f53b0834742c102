"""The call's lifecycle: every allowed transition, and a refusal for everything else."""

from __future__ import annotations

import itertools

import pytest

from telephony.call.state import CallState, IllegalTransition, State
from telephony.errors import TelephonyError

ALLOWED = {
    (State.WAITING_FOR_START, State.CONNECTING),
    (State.WAITING_FOR_START, State.ENDED),
    (State.CONNECTING, State.ACTIVE),
    (State.CONNECTING, State.ENDED),
    (State.ACTIVE, State.ENDING),
    (State.ACTIVE, State.ENDED),
    (State.ENDING, State.ACTIVE),
    (State.ENDING, State.ENDED),
    (State.ENDED, State.ENDED),
}


def reach(state: State) -> CallState:
    machine = CallState()
    path = {
        State.WAITING_FOR_START: [],
        State.CONNECTING: [State.CONNECTING],
        State.ACTIVE: [State.CONNECTING, State.ACTIVE],
        State.ENDING: [State.CONNECTING, State.ACTIVE, State.ENDING],
        State.ENDED: [State.ENDED],
    }[state]
    for step in path:
        machine.to(step)
    return machine


@pytest.mark.parametrize(("old", "new"), list(itertools.product(State, State)))
def test_transitions(old: State, new: State) -> None:
    machine = reach(old)
    if (old, new) in ALLOWED:
        machine.to(new)
        assert machine.current is new
    else:
        with pytest.raises(IllegalTransition, match=f"{old.name} -> {new.name}"):
            machine.to(new)
        assert machine.current is old


def test_a_new_call_waits_for_start_and_errors_share_the_root() -> None:
    machine = CallState()
    assert machine.current is State.WAITING_FOR_START
    assert machine.is_(State.WAITING_FOR_START, State.ENDED)
    assert not machine.is_(State.ACTIVE)
    assert issubclass(IllegalTransition, TelephonyError)
