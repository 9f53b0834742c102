"""Session resumption handles (HandleRegistry)."""

from __future__ import annotations

from agent.simulator.handles import HandleRegistry


def test_handles_are_valid_across_sessions_until_revoked() -> None:
    handles = HandleRegistry()
    a = handles.issue("s1")
    b = handles.issue("s1", "chosen")
    c = handles.issue("s2")
    assert b == "chosen" and len({a, b, c}) == 3 and len(a) >= 32
    assert a in handles and "chosen" in handles and c in handles
    assert "bogus" not in handles and 7 not in handles and None not in handles
    assert (handles.session_of(a), handles.session_of(c), handles.session_of("x")) == (
        "s1",
        "s2",
        None,
    )
    handles.revoke("s1")  # its state is lost: none of its handles resumes any more
    assert a not in handles and "chosen" not in handles and c in handles
    assert handles.session_of(a) == "s1"
